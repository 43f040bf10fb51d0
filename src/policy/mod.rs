//! The buntime policy: what a sandbox may read, write, connect to and execute.
//!
//! Deny by default; an explicit deny wins over an allow. Policies are JSON,
//! versioned (`"version": 1`), and unknown fields are rejected. See
//! `docs/policy.md` for the reference.
//!
//! A leaf: pure data, parsing, loading and intersection. Turning a policy
//! into a spec and a Landlock plan is `crate::prepare`'s.

pub mod decide;
pub mod explain;
pub mod flags;
pub mod intersect;
pub mod load;
mod locate;
pub mod model;
pub mod net;
pub mod paths;
pub mod source;

pub use decide::{decide, BrokerOp, Decision, Denial, FsOp, Request, Resolved, RuleRef, Verdict};
pub use explain::explain;
pub use flags::{FlagError, PolicyFlags};
pub use intersect::intersect;
pub use load::{
    check_policy, load_policy_file, parse_json, parse_policy, Finding, LoadError, PolicyError,
    Severity,
};
pub use locate::locate_pointer;
pub use model::*;
pub use net::{
    numeric_name, AddrClass, Dest, HostAddrs, HostPattern, NetDecision, NetDenyReason, NetRule,
};
pub use paths::{FsAccess, FsDecision, FsField, FsMatch};
pub use source::{
    NodeConfig, PolicyOrigin, PolicySources, ResolvedPolicy, SourceError, ANNOTATION_POLICY,
    ANNOTATION_POLICY_NAME, ANNOTATION_POLICY_SHA256,
};

use sha2::{Digest, Sha256};

/// The policies shipped in `policies/`, by file name, compiled in so the
/// runtime has a default even without an installed policy directory.
pub const BUILTIN_POLICIES: &[(&str, &str)] = &[
    ("default.json", include_str!("../../policies/default.json")),
    ("engine.json", include_str!("../../policies/engine.json")),
    (
        "no-network.json",
        include_str!("../../policies/no-network.json"),
    ),
    ("strict.json", include_str!("../../policies/strict.json")),
    (
        "python-dev.json",
        include_str!("../../policies/python-dev.json"),
    ),
];

/// The built-in node default of engine mode (`policies/engine.json`): what
/// a container `buntime-runc` creates gets when it names no policy and the
/// node has no default policy file. Images run as built, minus what the
/// policy names.
pub fn builtin_default() -> Policy {
    builtin_or_deny_all("engine.json")
}

/// The built-in default of `buntime run` (`policies/default.json`), the
/// strict one: untrusted scripts, no network.
pub fn builtin_run_default() -> Policy {
    builtin_or_deny_all("default.json")
}

fn builtin_or_deny_all(file: &str) -> Policy {
    // The files are compiled in and covered by a test, so this cannot fail
    // for a build that passed its tests; fall back to deny-all regardless.
    builtin_policy(file)
        .and_then(Result::ok)
        .unwrap_or_default()
}

/// A shipped policy by name (`strict` or `strict.json`).
pub fn builtin_policy(name: &str) -> Option<Result<Policy, PolicyError>> {
    let file = if name.ends_with(".json") {
        name.to_string()
    } else {
        format!("{name}.json")
    };
    BUILTIN_POLICIES
        .iter()
        .find(|(n, _)| *n == file)
        .map(|(n, src)| parse_policy(src, &format!("builtin:{n}")))
}

impl Policy {
    /// Canonical form: compact JSON of the parsed policy, fields in
    /// declaration order, maps sorted. Two texts meaning the same policy
    /// (whitespace, field order, `512M` vs `536870912`) share it.
    pub fn canonical_json(&self) -> String {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Hex SHA-256 of [`Policy::canonical_json`]; shown as the
    /// `buntime.dev/policy-sha256` annotation.
    pub fn sha256_hex(&self) -> String {
        let digest = Sha256::digest(self.canonical_json().as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Pretty JSON, as printed by `buntime init-policy`.
    pub fn to_pretty_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// The JSON Schema of a policy, generated from the Rust types.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(Policy);
    serde_json::to_value(&schema).unwrap_or_default()
}

/// The schema as committed in `policies/schema.json` (pretty, newline).
pub fn json_schema_text() -> String {
    let mut s = serde_json::to_string_pretty(&json_schema()).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_policy_checks_clean_with_a_description() {
        for (name, src) in BUILTIN_POLICIES {
            let (p, findings) = check_policy(src, name);
            let errors: Vec<_> = findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .collect();
            assert!(errors.is_empty(), "{name}: {errors:?}");
            let p = p.unwrap();
            assert!(!p.description.is_empty(), "{name} has no description");
            assert!(
                !p.description.contains('\n'),
                "{name}: description must be one line"
            );
        }
    }

    #[test]
    fn the_engine_default_runs_images_as_built_minus_what_it_names() {
        let e = builtin_default();
        assert_eq!(e, builtin_policy("engine").unwrap().unwrap());
        // No wall-clock limit: services run for as long as the engine says.
        assert_eq!(e.resources.timeout, None);
        assert_eq!(e.network.mode, NetMode::Pod);
        assert_eq!(e.landlock, LandlockRequirement::Off);
        let root = [FsPath::new("/").unwrap()];
        assert_eq!(e.filesystem.read, root);
        assert_eq!(e.filesystem.write, root);
        assert_eq!(e.filesystem.exec, root);
        let iso = &e.isolation;
        // The engine's capabilities stay (CHOWN, SETUID, ...) but the
        // dangerous ones go.
        assert_eq!(iso.capabilities.keep, None);
        let dropped: Vec<String> = iso
            .capabilities
            .drop
            .iter()
            .map(|c| c.kernel_name())
            .collect();
        for cap in [
            "CAP_SYS_ADMIN",
            "CAP_SYS_MODULE",
            "CAP_SYS_PTRACE",
            "CAP_BPF",
            "CAP_NET_ADMIN",
        ] {
            assert!(
                dropped.iter().any(|d| d == cap),
                "{cap} not dropped: {dropped:?}"
            );
        }
        for cap in [
            "CAP_CHOWN",
            "CAP_SETUID",
            "CAP_SETGID",
            "CAP_NET_BIND_SERVICE",
        ] {
            assert!(!dropped.iter().any(|d| d == cap), "{cap} dropped");
        }
        assert!(!iso.read_only_root, "writes where the bundle allows them");
        assert!(iso.no_new_privileges && iso.mask_kernel_paths);
        assert_eq!(iso.seccomp, SeccompChoice::Buntime);
        // buntime run keeps its strict default.
        let run = builtin_run_default();
        assert_eq!(run, builtin_policy("default").unwrap().unwrap());
        assert!(run.resources.timeout.is_some());
        assert_eq!(run.network.mode, NetMode::None);
    }

    #[test]
    fn sha_ignores_formatting_but_not_meaning() {
        let a = parse_policy(r#"{"version":1,"resources":{"memory":"512M"}}"#, "a").unwrap();
        let b = parse_policy(
            "{\n \"resources\": {\"memory\": 536870912},\n \"version\": 1\n}",
            "b",
        )
        .unwrap();
        assert_eq!(a.sha256_hex(), b.sha256_hex());
        assert_eq!(a.sha256_hex().len(), 64);
        let c = parse_policy(r#"{"version":1,"resources":{"memory":"256M"}}"#, "c").unwrap();
        assert_ne!(a.sha256_hex(), c.sha256_hex());
    }

    #[test]
    fn pretty_json_round_trips() {
        for (name, src) in BUILTIN_POLICIES {
            let p = parse_policy(src, name).unwrap();
            let again = parse_policy(&p.to_pretty_json(), name).unwrap();
            assert_eq!(p, again, "{name}");
        }
    }

    #[test]
    fn committed_schema_matches_the_types() {
        let committed = include_str!("../../policies/schema.json");
        if std::env::var_os("BUNTIME_UPDATE_GOLDEN").is_some() {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/schema.json");
            std::fs::write(path, json_schema_text()).unwrap();
            return;
        }
        assert_eq!(
            committed,
            json_schema_text(),
            "policies/schema.json drifted from the Rust types; regenerate with BUNTIME_UPDATE_GOLDEN=1 cargo test --lib policy"
        );
    }
}
