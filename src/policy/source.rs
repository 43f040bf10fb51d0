//! Where a container's policy comes from in OCI mode: resolved from the
//! bundle's annotations and the node configuration. Translating it is
//! `crate::prepare`'s.
//!
//! Order: `buntime.dev/policy` (inline JSON) or `buntime.dev/policy-name`
//! (a file in the policy directories); with neither, the node default
//! (`/etc/buntime/default.json`) or the built-in engine default
//! (`policies/engine.json`). Annotation
//! policies can be forbidden, and are intersected with the node's ceiling
//! policy when one is configured (`/etc/buntime/config.json`); their kernel
//! isolation (`isolation`, `resources.core`, `landlock`) is met with the
//! ceiling's, else the node default's: the stricter wins.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::intersect::{beyond_node, intersect, meet_kernel};
use super::load::{load_policy_file, parse_json, parse_policy, LoadError, PolicyError};
use super::model::{Policy, PolicyVersion};
use super::net::HostAddrs;
use super::{builtin_default, builtin_policy};

/// Inline policy JSON.
pub const ANNOTATION_POLICY: &str = "buntime.dev/policy";
/// Name of a policy file in the policy directories.
pub const ANNOTATION_POLICY_NAME: &str = "buntime.dev/policy-name";
/// Set by the runtime in `state`: SHA-256 of the applied policy.
pub const ANNOTATION_POLICY_SHA256: &str = "buntime.dev/policy-sha256";
/// The node configuration file.
pub const NODE_CONFIG_PATH: &str = "/etc/buntime/config.json";
/// The default policy directory.
pub const DEFAULT_POLICY_DIR: &str = "/etc/buntime/policies";
/// The node's default policy.
pub const NODE_DEFAULT_POLICY: &str = "/etc/buntime/default.json";
/// Where the node's configuration lives instead of `/etc/buntime`.
pub const ENV_ETC: &str = "BUNTIME_ETC";

/// Whether bundles may choose their policy through annotations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AnnotationPolicies {
    /// Both `buntime.dev/policy` and `buntime.dev/policy-name` are honoured.
    #[default]
    Allow,
    /// Only `buntime.dev/policy-name` (policies the admin installed).
    NamedOnly,
    /// Neither; a bundle carrying one is refused.
    Forbid,
}

/// Whether a bundle's `buntime.dev/learn: "true"` is honoured
/// (docs/learn.md). Learning only observes, under the container's own
/// policy: it grants nothing, so `allow` is the default; `deny` refuses
/// such bundles (observing costs every file, exec and connect call a
/// round trip to the supervisor).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LearnSetting {
    #[default]
    Allow,
    Deny,
}

/// `/etc/buntime/config.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Format version; 1.
    #[serde(default)]
    pub version: PolicyVersion,
    /// `allow` (default), `named-only` or `forbid`.
    #[serde(default)]
    pub annotation_policies: AnnotationPolicies,
    /// A policy every annotation policy is intersected with: a file path,
    /// or a name looked up like `buntime.dev/policy-name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceiling: Option<String>,
    /// The directory of named policies (default `/etc/buntime/policies`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_dir: Option<PathBuf>,
    /// The policy used when a bundle names none (default
    /// `/etc/buntime/default.json`, else the built-in default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_policy: Option<PathBuf>,
    /// `allow` (default): `buntime.dev/learn: "true"` observes the
    /// container under its policy; `deny`: such a bundle is refused.
    #[serde(default)]
    pub learn: LearnSetting,
}

/// The node's policy configuration: config file plus directories.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicySources {
    pub config: NodeConfig,
    /// Where `config` came from (for messages).
    pub config_file: PathBuf,
    /// Searched in order for named policies.
    pub policy_dirs: Vec<PathBuf>,
    pub default_policy_file: PathBuf,
}

/// How the policy was chosen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum PolicyOrigin {
    /// `buntime.dev/policy`.
    Inline,
    /// `buntime.dev/policy-name`, found in `file` (or built in).
    Named { name: String, file: Option<PathBuf> },
    /// The node default file.
    NodeDefault { file: PathBuf },
    /// The built-in node default (`policies/engine.json`).
    BuiltinDefault,
    /// `buntime run`: flags, `--policy FILE`, or the default.
    CommandLine(String),
}

impl PolicyOrigin {
    /// A short name for messages (`exec "/app/run.sh" refused by policy
    /// "NAME" …`): the annotation's policy name, the node default's file,
    /// `engine` for the built-in node default, `inline` for an inline
    /// annotation, or what `buntime run` was given.
    pub fn name(&self) -> String {
        match self {
            PolicyOrigin::Inline => "inline".into(),
            PolicyOrigin::Named { name, .. } => name.clone(),
            PolicyOrigin::NodeDefault { file } => file.display().to_string(),
            PolicyOrigin::BuiltinDefault => "engine".into(),
            PolicyOrigin::CommandLine(what) => what.clone(),
        }
    }
}

impl fmt::Display for PolicyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyOrigin::Inline => write!(f, "annotation {ANNOTATION_POLICY}"),
            PolicyOrigin::Named {
                name,
                file: Some(p),
            } => {
                write!(
                    f,
                    "annotation {ANNOTATION_POLICY_NAME}={name} ({})",
                    p.display()
                )
            }
            PolicyOrigin::Named { name, file: None } => {
                write!(f, "annotation {ANNOTATION_POLICY_NAME}={name} (built in)")
            }
            PolicyOrigin::NodeDefault { file } => write!(f, "node default {}", file.display()),
            PolicyOrigin::BuiltinDefault => f.write_str("built-in default"),
            PolicyOrigin::CommandLine(what) => write!(f, "buntime run: {what}"),
        }
    }
}

/// A container's policy, ready to translate.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedPolicy {
    /// Absolute paths; the ceiling already applied.
    pub policy: Policy,
    pub origin: PolicyOrigin,
    /// The policy arrived through an annotation: the effective spec must
    /// only narrow the bundle (`prepare::check_only_narrows`).
    pub from_annotation: bool,
    /// The ceiling applied, if any.
    pub ceiling: Option<String>,
}

impl ResolvedPolicy {
    /// Canonical JSON of the applied policy (store as `policy.json`).
    pub fn canonical_json(&self) -> String {
        self.policy.canonical_json()
    }
    /// SHA-256 of [`ResolvedPolicy::canonical_json`] (`buntime.dev/policy-sha256`).
    pub fn sha256(&self) -> String {
        self.policy.sha256_hex()
    }
}

/// Why a container's policy could not be resolved or applied. `create`
/// must fail with this message and create nothing.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{0}")]
    Policy(#[from] PolicyError),
    #[error("{0}")]
    Load(#[from] LoadError),
    #[error("both {ANNOTATION_POLICY} and {ANNOTATION_POLICY_NAME} are set; set only one")]
    BothAnnotations,
    #[error(
        "annotation {annotation} refused: {config} sets \"annotation_policies\": \"{setting}\""
    )]
    Forbidden {
        annotation: &'static str,
        config: String,
        setting: &'static str,
    },
    #[error("{ANNOTATION_POLICY_NAME}={0:?}: expected a plain file name (letters, digits, '.', '-', '_'), not a path")]
    BadName(String),
    #[error("{ANNOTATION_POLICY_NAME}={name:?}: no such policy in {searched}")]
    NotFound { name: String, searched: String },
    #[error("node config {file}: {message}")]
    Config { file: String, message: String },
    #[error("ceiling policy {name:?}: {source}")]
    Ceiling {
        name: String,
        #[source]
        source: Box<SourceError>,
    },
    /// An annotation policy asks for a right that reaches the node itself
    /// and the node's reference policy does not grant it.
    #[error("annotation policy: {what}, which the node's {reference} does not allow ({file})")]
    BeyondNode {
        what: super::intersect::BeyondNode,
        /// `default policy`, `built-in default policy` or `ceiling policy NAME`.
        reference: String,
        /// Where the reference policy is set.
        file: String,
    },
    #[error("cannot read this host's addresses: {0}")]
    HostAddrs(String),
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && !n.starts_with('.')
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

impl PolicySources {
    /// The sources rooted at `etc` (normally `/etc/buntime`), with an
    /// optional checkout `policies/` directory searched after the node's.
    pub fn from_dir(etc: &Path, checkout: Option<PathBuf>) -> Result<Self, SourceError> {
        let config_file = etc.join("config.json");
        let config = match std::fs::read_to_string(&config_file) {
            Ok(src) => parse_json::<NodeConfig>(&src, &config_file.display().to_string())?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => NodeConfig::default(),
            Err(e) => {
                return Err(SourceError::Config {
                    file: config_file.display().to_string(),
                    message: format!("cannot read: {e}"),
                })
            }
        };
        let mut policy_dirs = vec![config
            .policy_dir
            .clone()
            .unwrap_or_else(|| etc.join("policies"))];
        policy_dirs.extend(checkout);
        let default_policy_file = config
            .default_policy
            .clone()
            .unwrap_or_else(|| etc.join("default.json"));
        Ok(PolicySources {
            config,
            config_file,
            policy_dirs,
            default_policy_file,
        })
    }

    /// The node's real sources: `/etc/buntime` (or `$BUNTIME_ETC`, an
    /// absolute path), then `checkout`, the checkout's `policies/` when run
    /// from a source tree (`prepare::checkout_policies_dir`).
    ///
    /// `BUNTIME_ETC` is read from the runtime's own environment, which the
    /// engine (root on the node) sets, never from the bundle: it lets tests
    /// and non-standard installs keep their node configuration elsewhere.
    pub fn system(checkout: Option<PathBuf>) -> Result<Self, SourceError> {
        let etc = match std::env::var_os(ENV_ETC) {
            Some(d) if Path::new(&d).is_absolute() => PathBuf::from(d),
            Some(d) => {
                return Err(SourceError::Config {
                    file: ENV_ETC.into(),
                    message: format!("{d:?} is not an absolute path"),
                })
            }
            None => PathBuf::from("/etc/buntime"),
        };
        Self::from_dir(&etc, checkout)
    }

    /// The node default: the default policy file, else the built-in one.
    fn node_default(&self) -> Result<(Policy, PolicyOrigin), SourceError> {
        let f = &self.default_policy_file;
        Ok(if f.is_file() {
            let policy = load_policy_file(f)?;
            if policy.isolation.is_default() {
                // Likely written before `isolation` existed, when these
                // rights were taken whatever the policy said.
                tracing::warn!(target: "cli",
                    "node default policy {}: no isolation section, so containers that name no \
                     policy keep their bundle's capabilities, privileges, root and seccomp \
                     profile; add one (see /etc/buntime/policies/engine.json)",
                    f.display());
            }
            (policy, PolicyOrigin::NodeDefault { file: f.clone() })
        } else {
            (builtin_default(), PolicyOrigin::BuiltinDefault)
        })
    }

    /// Refuses an annotation policy (after any ceiling) that reaches the
    /// node itself beyond what the node's ceiling, or when none is
    /// configured its default policy, grants ([`beyond_node`]).
    fn check_within_node(
        &self,
        policy: &Policy,
        ceiling: Option<&Policy>,
        own: &HostAddrs,
    ) -> Result<(), SourceError> {
        let (reference, name, file) = match ceiling {
            Some(c) => (
                c.clone(),
                format!(
                    "ceiling policy {:?}",
                    self.config.ceiling.as_deref().unwrap_or_default()
                ),
                self.config_file.display().to_string(),
            ),
            None => match self.node_default()? {
                (p, PolicyOrigin::NodeDefault { file }) => {
                    (p, "default policy".into(), file.display().to_string())
                }
                (p, _) => (
                    p,
                    "default policy".into(),
                    format!(
                        "built in: {} does not exist",
                        self.default_policy_file.display()
                    ),
                ),
            },
        };
        match beyond_node(policy, &reference, own) {
            None => Ok(()),
            Some(what) => Err(SourceError::BeyondNode {
                what,
                reference: name,
                file,
            }),
        }
    }

    /// Find a named policy: the policy directories in order (`NAME` or
    /// `NAME.json`), then the shipped policies.
    pub fn find_named(&self, name: &str) -> Result<(Policy, Option<PathBuf>), SourceError> {
        if !valid_name(name) {
            return Err(SourceError::BadName(name.to_string()));
        }
        for dir in &self.policy_dirs {
            for cand in [dir.join(name), dir.join(format!("{name}.json"))] {
                if cand.is_file() {
                    return Ok((load_policy_file(&cand)?, Some(cand)));
                }
            }
        }
        if let Some(p) = builtin_policy(name) {
            return Ok((p?, None));
        }
        Err(SourceError::NotFound {
            name: name.to_string(),
            searched: self
                .policy_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    fn ceiling(&self) -> Result<Option<Policy>, SourceError> {
        let Some(name) = &self.config.ceiling else {
            return Ok(None);
        };
        let wrap = |e: SourceError| SourceError::Ceiling {
            name: name.clone(),
            source: Box::new(e),
        };
        let p = if name.starts_with('/') {
            load_policy_file(Path::new(name)).map_err(|e| wrap(e.into()))?
        } else {
            self.find_named(name).map_err(wrap)?.0
        };
        Ok(Some(p))
    }

    fn forbidden(&self, annotation: &'static str) -> SourceError {
        SourceError::Forbidden {
            annotation,
            config: self.config_file.display().to_string(),
            setting: match self.config.annotation_policies {
                AnnotationPolicies::Allow => "allow",
                AnnotationPolicies::NamedOnly => "named-only",
                AnnotationPolicies::Forbid => "forbid",
            },
        }
    }

    /// Resolve the policy for a container with these annotations. Relative
    /// policy paths resolve against `cwd` (the container process's cwd).
    /// An annotation policy is checked against this host's addresses,
    /// read now.
    pub fn resolve(
        &self,
        annotations: Option<&HashMap<String, String>>,
        cwd: &Path,
    ) -> Result<ResolvedPolicy, SourceError> {
        let has_annotation = annotations.is_some_and(|a| {
            a.contains_key(ANNOTATION_POLICY) || a.contains_key(ANNOTATION_POLICY_NAME)
        });
        let own = if has_annotation {
            // Fail closed: without the host's addresses nothing is checked.
            HostAddrs::read().map_err(|e| SourceError::HostAddrs(e.to_string()))?
        } else {
            HostAddrs::default()
        };
        self.resolve_with(annotations, cwd, &own)
    }

    /// [`PolicySources::resolve`] with the host's addresses given.
    pub fn resolve_with(
        &self,
        annotations: Option<&HashMap<String, String>>,
        cwd: &Path,
        own: &HostAddrs,
    ) -> Result<ResolvedPolicy, SourceError> {
        let get = |k: &str| annotations.and_then(|a| a.get(k));
        let inline = get(ANNOTATION_POLICY);
        let named = get(ANNOTATION_POLICY_NAME);
        let mode = self.config.annotation_policies;
        let (mut policy, origin, from_annotation) = match (inline, named) {
            (Some(_), Some(_)) => return Err(SourceError::BothAnnotations),
            (Some(src), None) => {
                if mode != AnnotationPolicies::Allow {
                    return Err(self.forbidden(ANNOTATION_POLICY));
                }
                let p = parse_policy(src, &format!("annotation {ANNOTATION_POLICY}"))?;
                (p, PolicyOrigin::Inline, true)
            }
            (None, Some(name)) => {
                if mode == AnnotationPolicies::Forbid {
                    return Err(self.forbidden(ANNOTATION_POLICY_NAME));
                }
                let (p, file) = self.find_named(name)?;
                (
                    p,
                    PolicyOrigin::Named {
                        name: name.clone(),
                        file,
                    },
                    true,
                )
            }
            (None, None) => {
                let (p, origin) = self.node_default()?;
                (p, origin, false)
            }
        };
        policy.resolve_relative(cwd);
        let mut ceiling_name = None;
        if from_annotation {
            let ceiling = self.ceiling()?;
            if let Some(mut c) = ceiling.clone() {
                c.resolve_relative(cwd);
                policy = intersect(&policy, &c);
                ceiling_name = self.config.ceiling.clone();
            }
            // The kernel isolation an unannotated container gets (the node
            // default's) stays whatever the annotation, or a ceiling that
            // says nothing of it, leaves unsaid.
            let (reference, _) = self.node_default()?;
            let asked = policy.clone();
            meet_kernel(&mut policy, &asked, &reference);
            self.check_within_node(&policy, ceiling.as_ref(), own)?;
        }
        Ok(ResolvedPolicy {
            policy,
            origin,
            from_annotation,
            ceiling: ceiling_name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::NetMode;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("buntime-src-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("policies")).unwrap();
        d
    }

    fn ann(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn default_when_no_annotation() {
        let d = tmpdir("default");
        let s = PolicySources::from_dir(&d, None).unwrap();
        let r = s.resolve(None, Path::new("/")).unwrap();
        assert_eq!(r.origin, PolicyOrigin::BuiltinDefault);
        assert!(!r.from_annotation);
        std::fs::write(
            d.join("default.json"),
            r#"{"version":1,"description":"node"}"#,
        )
        .unwrap();
        let r = s.resolve(None, Path::new("/")).unwrap();
        assert!(matches!(r.origin, PolicyOrigin::NodeDefault { .. }));
        assert_eq!(r.policy.description, "node");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn inline_and_named_annotations() {
        let d = tmpdir("named");
        std::fs::write(
            d.join("policies/team.json"),
            r#"{"version":1,"filesystem":{"write":["out"]}}"#,
        )
        .unwrap();
        let s = PolicySources::from_dir(&d, None).unwrap();
        let r = s
            .resolve(
                Some(&ann(&[(ANNOTATION_POLICY_NAME, "team")])),
                Path::new("/work"),
            )
            .unwrap();
        assert!(r.from_annotation);
        assert_eq!(r.policy.filesystem.write[0].as_str(), "/work/out");
        let r = s
            .resolve(
                Some(&ann(&[(ANNOTATION_POLICY_NAME, "strict")])),
                Path::new("/"),
            )
            .unwrap();
        assert_eq!(
            r.origin,
            PolicyOrigin::Named {
                name: "strict".into(),
                file: None
            }
        );
        let r = s
            .resolve(
                Some(&ann(&[(
                    ANNOTATION_POLICY,
                    r#"{"version":1,"network":{"mode":"proxy","allow":["a.com"]}}"#,
                )])),
                Path::new("/"),
            )
            .unwrap();
        assert_eq!(r.policy.network.mode, NetMode::Proxy);
        assert_eq!(r.sha256().len(), 64);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn errors_are_clear() {
        let d = tmpdir("errors");
        let s = PolicySources::from_dir(&d, None).unwrap();
        let e = s
            .resolve(
                Some(&ann(&[(
                    ANNOTATION_POLICY,
                    r#"{"version":1,"network":{"mode":"open"}}"#,
                )])),
                Path::new("/"),
            )
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("annotation buntime.dev/policy:1:"), "{e}");
        assert!(e.contains("/network/mode"), "{e}");
        let e = s
            .resolve(
                Some(&ann(&[(ANNOTATION_POLICY_NAME, "../etc/passwd")])),
                Path::new("/"),
            )
            .unwrap_err();
        assert!(matches!(e, SourceError::BadName(_)), "{e}");
        let e = s
            .resolve(
                Some(&ann(&[(ANNOTATION_POLICY_NAME, "nope")])),
                Path::new("/"),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such policy in"), "{e}");
        let e = s
            .resolve(
                Some(&ann(&[
                    (ANNOTATION_POLICY_NAME, "strict"),
                    (ANNOTATION_POLICY, "{}"),
                ])),
                Path::new("/"),
            )
            .unwrap_err();
        assert!(matches!(e, SourceError::BothAnnotations));
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A ceiling that says nothing of isolation does not replace the node
    /// default's: an annotated container never gets less kernel isolation
    /// than an unannotated one.
    #[test]
    fn a_ceiling_without_isolation_keeps_the_defaults() {
        let d = tmpdir("ceiling-iso");
        std::fs::write(
            d.join("lab.json"),
            r#"{"version":1,"filesystem":{"read":["/"],"write":["/"],"exec":["/"]},
                "network":{"mode":"proxy","allow":["*"]}}"#,
        )
        .unwrap();
        std::fs::write(
            d.join("config.json"),
            format!(
                "{{\"ceiling\":{:?}}}",
                d.join("lab.json").display().to_string()
            ),
        )
        .unwrap();
        let s = PolicySources::from_dir(&d, None).unwrap();
        let r = s
            .resolve_with(
                Some(&ann(&[(ANNOTATION_POLICY, r#"{"version":1}"#)])),
                Path::new("/"),
                &HostAddrs::default(),
            )
            .unwrap();
        let engine = crate::policy::builtin_default();
        assert_eq!(r.policy.isolation, engine.isolation);
        assert!(r.policy.isolation.no_new_privileges);
        assert!(!r.policy.isolation.capabilities.drop.is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn config_forbids_and_ceilings() {
        let d = tmpdir("config");
        std::fs::write(d.join("config.json"), r#"{"annotation_policies":"forbid"}"#).unwrap();
        let s = PolicySources::from_dir(&d, None).unwrap();
        let e = s
            .resolve(
                Some(&ann(&[(ANNOTATION_POLICY, r#"{"version":1}"#)])),
                Path::new("/"),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("refused") && e.contains("\"forbid\""), "{e}");
        // Without annotations the default still applies.
        assert!(s.resolve(None, Path::new("/")).is_ok());

        std::fs::write(d.join("config.json"), r#"{"ceiling":"strict"}"#).unwrap();
        let s = PolicySources::from_dir(&d, None).unwrap();
        let r = s
            .resolve(
                Some(&ann(&[(
                    ANNOTATION_POLICY,
                    r#"{"version":1,"network":{"mode":"host"},"resources":{"memory":"8G"}}"#,
                )])),
                Path::new("/"),
            )
            .unwrap();
        assert_eq!(r.policy.network.mode, NetMode::None);
        assert_eq!(
            r.policy.resources.memory.map(|m| m.bytes()),
            Some(256 << 20)
        );
        assert_eq!(r.ceiling.as_deref(), Some("strict"));

        std::fs::write(
            d.join("config.json"),
            r#"{"ceiling":"strict","colour":"red"}"#,
        )
        .unwrap();
        let e = PolicySources::from_dir(&d, None).unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains("/colour"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn annotation_policies_cannot_reach_the_node_beyond_its_policy() {
        let d = tmpdir("beyond");
        let s = PolicySources::from_dir(&d, None).unwrap();
        let own = HostAddrs::default();
        let inline = |net: &str| {
            ann(&[(
                ANNOTATION_POLICY,
                &format!(r#"{{"version":1,"network":{{"mode":"proxy","allow":{net}}}}}"#),
            )])
        };
        let resolve = |s: &PolicySources, a: &HashMap<String, String>| {
            s.resolve_with(Some(a), Path::new("/"), &own)
        };
        // No node configuration: the built-in default is the ceiling.
        let e = resolve(&s, &inline(r#"["127.0.0.1:18080"]"#)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "annotation policy: network.allow[0] \"127.0.0.1:18080\" names a loopback address, \
                 which the node's default policy does not allow (built in: {} does not exist)",
                d.join("default.json").display()
            )
        );
        // The node default names it: allowed; the metadata address still not.
        std::fs::write(
            d.join("default.json"),
            r#"{"version":1,"network":{"mode":"proxy","allow":["127.0.0.1:18080"]},"broker":{"net_connect":"ask"}}"#,
        )
        .unwrap();
        let s = PolicySources::from_dir(&d, None).unwrap();
        assert!(resolve(&s, &inline(r#"["127.0.0.1:18080"]"#)).is_ok());
        let e = resolve(&s, &inline(r#"["169.254.169.254:80"]"#))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("network.allow[0] \"169.254.169.254:80\" names a cloud metadata address")
                && e.contains(&format!("({})", d.join("default.json").display())),
            "{e}"
        );
        let broker = ann(&[(
            ANNOTATION_POLICY,
            r#"{"version":1,"broker":{"net_connect":"allow"}}"#,
        )]);
        let e = resolve(&s, &broker).unwrap_err().to_string();
        assert!(e.contains("broker.net_connect is \"allow\""), "{e}");
        // Named policies are annotations too.
        let e = resolve(&s, &ann(&[(ANNOTATION_POLICY_NAME, "python-dev")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("broker.fs_read is \"ask\""), "{e}");
        // A configured ceiling is the reference instead, and narrows first.
        std::fs::write(
            d.join("policies/lab.json"),
            r#"{"version":1,"network":{"mode":"host","allow":["10.0.0.0/8"]},"broker":{"net_connect":"allow"}}"#,
        )
        .unwrap();
        std::fs::write(d.join("config.json"), r#"{"ceiling":"lab"}"#).unwrap();
        let s = PolicySources::from_dir(&d, None).unwrap();
        assert!(resolve(&s, &broker).is_ok());
        let r = resolve(&s, &inline(r#"["10.1.2.3:80","192.168.1.1"]"#)).unwrap();
        assert_eq!(
            r.policy.network.allow.len(),
            1,
            "the ceiling dropped 192.168.1.1"
        );
        let host = ann(&[(
            ANNOTATION_POLICY,
            r#"{"version":1,"network":{"mode":"host"}}"#,
        )]);
        assert!(resolve(&s, &host).is_ok());
        // A host address is reached only through the very entry.
        let own = HostAddrs::new(["10.1.2.3".parse::<std::net::IpAddr>().unwrap()]);
        let e = s
            .resolve_with(Some(&inline(r#"["10.1.2.3:80"]"#)), Path::new("/"), &own)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("names an address of this host, which the node's ceiling policy \"lab\""),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
