//! What runs in the sandbox: a Python or Bun script under its worker, or a
//! plain command.

use std::path::{Path, PathBuf};

/// The worker kind, chosen by the script's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Python,
    Bun,
    Command,
}

impl Kind {
    pub fn of_script(path: &Path) -> Kind {
        match path.extension().and_then(|e| e.to_str()) {
            Some("py") => Kind::Python,
            Some("ts" | "js" | "mjs" | "cjs" | "tsx" | "jsx" | "mts" | "cts") => Kind::Bun,
            _ => Kind::Command,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Python => "python",
            Kind::Bun => "bun",
            Kind::Command => "command",
        }
    }

    /// The template's `config.json`, compiled in.
    pub fn template(self) -> &'static str {
        match self {
            Kind::Python => include_str!("../../bundle-templates/python.json"),
            Kind::Bun => include_str!("../../bundle-templates/bun.json"),
            Kind::Command => include_str!("../../bundle-templates/command.json"),
        }
    }
}

/// The container path of the project's Bun (inside `/opt/buntime`).
pub const BUN_IN_SANDBOX: &str = "/opt/buntime/bin/bun";
/// The system Python: starts in about 8 ms, unlike a pyenv shim.
pub const DEFAULT_PYTHON: &str = "/usr/bin/python3";

/// What `buntime run` was asked to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `buntime run FILE ARGS…`: the script's absolute host path.
    Script { path: PathBuf, args: Vec<String> },
    /// `buntime run -- COMMAND ARGS…`.
    Command { argv: Vec<String> },
}

impl Target {
    pub fn kind(&self) -> Kind {
        match self {
            Target::Script { path, .. } => Kind::of_script(path),
            Target::Command { .. } => Kind::Command,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_extensions() {
        assert_eq!(Kind::of_script(Path::new("/a/main.py")), Kind::Python);
        for f in ["x.ts", "x.js", "x.mjs", "x.tsx"] {
            assert_eq!(Kind::of_script(Path::new(f)), Kind::Bun, "{f}");
        }
        assert_eq!(Kind::of_script(Path::new("/a/run.sh")), Kind::Command);
        assert_eq!(Kind::of_script(Path::new("/a/noext")), Kind::Command);
    }

    #[test]
    fn templates_parse() {
        for k in [Kind::Python, Kind::Bun, Kind::Command] {
            let v: serde_json::Value = serde_json::from_str(k.template()).unwrap();
            assert!(v["process"]["args"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == "{{args}}"));
        }
    }

    /// A run policy without `isolation` follows the template: it must be
    /// confined by itself.
    #[test]
    fn templates_state_the_secure_values() {
        use libcontainer::oci_spec::runtime::{PosixRlimitType, Spec};
        for k in [Kind::Python, Kind::Bun, Kind::Command] {
            let spec: Spec = serde_json::from_str(k.template()).unwrap();
            let p = spec.process().as_ref().unwrap();
            let caps = p.capabilities().as_ref().expect("capabilities stated");
            for set in [
                caps.bounding(),
                caps.effective(),
                caps.permitted(),
                caps.inheritable(),
                caps.ambient(),
            ] {
                assert_eq!(set.as_ref().map(|s| s.len()), Some(0), "{}", k.name());
            }
            assert_eq!(p.no_new_privileges(), Some(true));
            assert!(p
                .rlimits()
                .iter()
                .flatten()
                .any(|r| r.typ() == PosixRlimitType::RlimitCore && r.hard() == 0));
            assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
            let linux = spec.linux().as_ref().unwrap();
            for m in crate::spec::DEFAULT_MASKED_PATHS {
                assert!(linux.masked_paths().iter().flatten().any(|p| p == m), "{m}");
            }
            for m in crate::spec::DEFAULT_READONLY_PATHS {
                assert!(
                    linux.readonly_paths().iter().flatten().any(|p| p == m),
                    "{m}"
                );
            }
        }
    }
}
