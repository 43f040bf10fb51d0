//! Parsing policies with errors a person can act on: every error names the
//! file, the JSON pointer of the field, line:column when known, and what
//! was expected.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::locate::locate_pointer;
use super::model::{LandlockRequirement, NetMode, Policy};

/// One problem found in a policy (or a warning about it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    /// The file (or a label like `annotation buntime.dev/policy`).
    pub file: String,
    /// JSON pointer of the offending field, `""` for the document.
    pub pointer: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, ":{l}:{c}")?;
        }
        let ptr = if self.pointer.is_empty() {
            "/"
        } else {
            &self.pointer
        };
        write!(f, ": {ptr}: {}", self.message)
    }
}

impl std::error::Error for PolicyError {}

/// Errors from reading and parsing a policy.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{file}: cannot read policy: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(#[from] PolicyError),
}

impl LoadError {
    /// The underlying policy error, if it is one (not an I/O error).
    pub fn policy_error(&self) -> Option<&PolicyError> {
        match self {
            LoadError::Invalid(e) => Some(e),
            LoadError::Io { .. } => None,
        }
    }
}

fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => {
                out.push('/');
                out.push_str(&index.to_string());
            }
            Segment::Map { key } | Segment::Enum { variant: key } => {
                out.push('/');
                // RFC 6901 escaping.
                out.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            // A key that could not be read (syntax errors): report the
            // enclosing value.
            Segment::Unknown => break,
        }
    }
    out
}

/// Make serde's wording friendlier while keeping its "expected ..." part.
fn tidy_message(e: &serde_json::Error) -> String {
    let mut m = e.to_string();
    // serde_json appends " at line L column C"; we print those separately.
    if let Some(idx) = m.rfind(" at line ") {
        m.truncate(idx);
    }
    if m.starts_with("unknown field") {
        m = m.replacen("expected one of", "expected one of the known fields", 1);
    }
    m
}

/// Parse any JSON document with policy-style errors. Used for policies and
/// for the node config file.
pub fn parse_json<T: DeserializeOwned>(src: &str, file: &str) -> Result<T, PolicyError> {
    let mut de = serde_json::Deserializer::from_str(src);
    let res: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    let value = match res {
        Ok(v) => v,
        Err(err) => {
            let pointer = pointer_of(err.path());
            let inner = err.inner();
            let (line, column) = if inner.line() > 0 {
                (Some(inner.line()), Some(inner.column()))
            } else {
                (None, None)
            };
            return Err(PolicyError {
                file: file.to_string(),
                pointer,
                line,
                column,
                message: tidy_message(inner),
            });
        }
    };
    // Trailing garbage after the document.
    if let Err(e) = de.end() {
        return Err(PolicyError {
            file: file.to_string(),
            pointer: String::new(),
            line: Some(e.line()),
            column: Some(e.column()),
            message: format!("{}; expected the end of the document", tidy_message(&e)),
        });
    }
    Ok(value)
}

/// Parse a policy from text. `file` only labels errors. Relative paths are
/// kept as written; see [`Policy::resolve_relative`].
pub fn parse_policy(src: &str, file: &str) -> Result<Policy, PolicyError> {
    let policy: Policy = parse_json(src, file)?;
    if let Some((pointer, message)) = policy.filesystem.pattern_problem() {
        let (line, column) = locate_pointer(src, &pointer).unzip();
        return Err(PolicyError {
            file: file.to_string(),
            pointer,
            line,
            column,
            message,
        });
    }
    Ok(policy)
}

/// Read and parse a policy file.
pub fn load_policy_file(path: &Path) -> Result<Policy, LoadError> {
    let file = path.display().to_string();
    let src = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        file: file.clone(),
        source,
    })?;
    Ok(parse_policy(&src, &file)?)
}

/// How serious a finding of [`check_policy`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// A finding of [`check_policy`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub error: PolicyError,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.severity {
            Severity::Error => write!(f, "error: {}", self.error),
            Severity::Warning => write!(f, "warning: {}", self.error),
        }
    }
}

/// Validate a policy's text fully: parse errors, then the checks that look
/// at several fields at once. Returns the parsed policy (when it parsed)
/// and every finding.
pub fn check_policy(src: &str, file: &str) -> (Option<Policy>, Vec<Finding>) {
    let policy = match parse_policy(src, file) {
        Ok(p) => p,
        Err(e) => {
            return (
                None,
                vec![Finding {
                    severity: Severity::Error,
                    error: e,
                }],
            )
        }
    };
    let mut out = Vec::new();
    let mut push = |severity, pointer: String, message: String| {
        let (line, column) = match locate_pointer(src, &pointer) {
            Some((l, c)) => (Some(l), Some(c)),
            None => (None, None),
        };
        out.push(Finding {
            severity,
            error: PolicyError {
                file: file.to_string(),
                pointer,
                line,
                column,
                message,
            },
        });
    };
    let mut raw = network_findings(&policy.network);
    raw.extend(policy_findings(&policy));
    for (severity, pointer, message) in raw {
        push(severity, pointer, message);
    }
    (Some(policy), out)
}

/// A finding before it is located: severity, JSON pointer, message.
type RawFinding = (Severity, String, String);

/// What the network section's mode and rules are likely to mean by
/// mistake.
fn network_findings(net: &super::model::Network) -> Vec<RawFinding> {
    let mut out = Vec::new();
    match net.mode {
        NetMode::Host => out.push((
            Severity::Warning,
            "/network/mode".into(),
            "mode \"host\" gives the sandbox the host's network with no isolation; network.allow and the proxy are bypassed".into(),
        )),
        NetMode::None if !net.allow.is_empty() => out.push((
            Severity::Warning,
            "/network/allow".into(),
            "entries are ignored in mode \"none\"; expected mode \"proxy\" to reach them".into(),
        )),
        NetMode::Pod => {
            for (i, r) in net.allow.iter().enumerate() {
                if let Some(port) = r.direct_port() {
                    out.push((
                        Severity::Warning,
                        format!("/network/allow/{i}"),
                        format!("in mode \"pod\" this address entry opens TCP port {port} to direct connects at every address (Landlock filters by port, not address); the address is enforced only through the proxy"),
                    ));
                }
            }
        }
        NetMode::Proxy if net.allow.is_empty() => out.push((
            Severity::Warning,
            "/network/allow".into(),
            "mode \"proxy\" with no allow entries reaches nothing; expected at least one entry".into(),
        )),
        _ => {}
    }
    out
}

/// Landlock off, environment, filesystem: grants wider than they look,
/// and a deny of `/`.
fn policy_findings(policy: &Policy) -> Vec<RawFinding> {
    let mut out = Vec::new();
    if policy.landlock == LandlockRequirement::Off && !grants_everything_under_root(policy) {
        out.push((
            Severity::Warning,
            "/landlock".into(),
            "\"off\" leaves the filesystem rules to mounts and masks alone: paths outside them \
             stay readable, writable or executable as the bundle's root allows; expected \
             filesystem read, write and exec of \"/\", or landlock \"best-effort\""
                .into(),
        ));
    }
    for (i, p) in policy.env.pass.iter().enumerate() {
        if p.as_str() == "*" {
            out.push((
                Severity::Warning,
                format!("/env/pass/{i}"),
                "\"*\" passes every host variable in, secrets included".into(),
            ));
        }
    }
    for (i, p) in policy.filesystem.write.iter().enumerate() {
        if p.as_str() == "/" {
            out.push((
                Severity::Warning,
                format!("/filesystem/write/{i}"),
                "\"/\" makes the whole filesystem writable".into(),
            ));
        }
    }
    for e in policy.filesystem.exposed_secrets() {
        out.push((
            Severity::Warning,
            format!("/filesystem/{}/{}", e.list, e.index),
            format!(
                "{:?} gives the sandbox {}, a credential file no deny entry removes; expected \"{}\" in filesystem.deny",
                e.rule.display().to_string(),
                e.secret,
                e.deny
            ),
        ));
    }
    for (i, p) in policy.filesystem.deny.iter().enumerate() {
        if p.as_str() == "/" {
            out.push((
                Severity::Error,
                format!("/filesystem/deny/{i}"),
                "denying \"/\" denies everything; expected a path below /".into(),
            ));
        }
    }
    out
}

/// The filesystem rules grant read, write and exec of `/` (what no
/// Landlock means anyway).
fn grants_everything_under_root(policy: &Policy) -> bool {
    let fs = &policy.filesystem;
    let root = |v: &[super::model::FsPath]| v.iter().any(|p| p.as_str() == "/");
    root(&fs.write) && root(&fs.exec)
}

/// Resolve a possibly relative file path for display and reading.
pub fn absolute_from(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> PolicyError {
        parse_policy(src, "p.json").unwrap_err()
    }

    #[test]
    fn minimal_policy_parses_with_defaults() {
        let p = parse_policy(r#"{"version": 1}"#, "p.json").unwrap();
        assert_eq!(p.network.mode, NetMode::None);
        assert!(p.filesystem.read.is_empty());
    }

    #[test]
    fn bad_network_entry_names_pointer_line_and_expectation() {
        let src = "{\n  \"version\": 1,\n  \"network\": {\n    \"mode\": \"proxy\",\n    \"allow\": [\"pypi.org\", \"ok.com\", \"bad host\"]\n  }\n}\n";
        let e = err(src);
        assert_eq!(e.pointer, "/network/allow/2");
        assert_eq!(e.line, Some(5));
        assert!(e.column.is_some());
        assert!(e.message.contains("expected a host name"), "{}", e.message);
        let shown = e.to_string();
        assert!(shown.starts_with("p.json:5:"), "{shown}");
        assert!(shown.contains("/network/allow/2"), "{shown}");
    }

    #[test]
    fn unknown_field_is_rejected_with_known_fields_listed() {
        let e = err("{\"version\": 1, \"filesystem\": {\"reed\": []}}");
        assert_eq!(e.pointer, "/filesystem/reed");
        assert!(e.message.contains("unknown field `reed`"), "{}", e.message);
        assert!(e.message.contains("expected one of"), "{}", e.message);
        let e = err("{\"version\": 1, \"colour\": 1}");
        assert_eq!(e.pointer, "/colour");
    }

    #[test]
    fn version_is_checked() {
        let e = err("{\"version\": 2}");
        assert_eq!(e.pointer, "/version");
        assert!(e.message.contains("expected 1"), "{}", e.message);
        let e = err("{}");
        assert!(
            e.message.contains("missing field `version`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn wrong_types_and_values() {
        let e = err("{\"version\": 1, \"network\": {\"mode\": \"open\"}}");
        assert_eq!(e.pointer, "/network/mode");
        assert!(
            e.message
                .contains("expected one of `none`, `proxy`, `pod`, `bundle`, `host`"),
            "{}",
            e.message
        );
        let e = err("{\"version\": 1, \"resources\": {\"memory\": \"lots\"}}");
        assert_eq!(e.pointer, "/resources/memory");
        assert!(e.message.contains("expected a size"), "{}", e.message);
        let e = err("{\"version\": 1, \"resources\": {\"cpu\": 0}}");
        assert_eq!(e.pointer, "/resources/cpu");
        assert!(
            e.message.contains("expected a number of CPU cores"),
            "{}",
            e.message
        );
        let e = err("{\"version\": 1, \"resources\": {\"timeout\": \"soon\"}}");
        assert!(e.message.contains("expected a duration"), "{}", e.message);
        let e = err("{\"version\": 1, \"env\": {\"pass\": [\"OK\", \"NOT-OK\"]}}");
        assert_eq!(e.pointer, "/env/pass/1");
        let e = err("{\"version\": 1, \"env\": {\"set\": {\"A B\": \"x\"}}}");
        assert!(e.pointer.starts_with("/env/set"), "{}", e.pointer);
        let e = err("{\"version\": 1, \"filesystem\": {\"read\": \"/usr\"}}");
        assert_eq!(e.pointer, "/filesystem/read");
        assert!(e.message.contains("expected a sequence"), "{}", e.message);
        let e = err("{\"version\": 1, \"exec\": {\"allow\": [\"bin/sh\"]}}");
        assert_eq!(e.pointer, "/exec/allow/0");
        let e = err("{\"version\": 1, \"broker\": {\"exec\": \"maybe\"}}");
        assert_eq!(e.pointer, "/broker/exec");
        assert!(
            e.message.contains("`deny`, `ask`, `allow`"),
            "{}",
            e.message
        );
        let e = err("{\"version\": 1, \"landlock\": \"sometimes\"}");
        assert_eq!(e.pointer, "/landlock");
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = err("{\n  \"version\": 1,\n}");
        assert_eq!(e.line, Some(3));
        let e = err("{\"version\": 1} trailing");
        assert!(
            e.message.contains("expected the end of the document"),
            "{}",
            e.message
        );
        let e = err("");
        assert!(e.message.contains("EOF"), "{}", e.message);
    }

    #[test]
    fn check_reports_warnings_with_positions() {
        let src = "{\n  \"version\": 1,\n  \"network\": {\"mode\": \"host\"}\n}";
        let (p, f) = check_policy(src, "h.json");
        assert!(p.is_some());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Warning);
        assert_eq!(f[0].error.pointer, "/network/mode");
        assert_eq!(f[0].error.line, Some(3));
        let (_, f) = check_policy(
            "{\"version\":1,\"filesystem\":{\"deny\":[\"/\"]}}",
            "d.json",
        );
        assert_eq!(f[0].severity, Severity::Error);
        assert_eq!(f[0].error.pointer, "/filesystem/deny/0");
    }

    #[test]
    fn isolation_fields_parse_and_validate() {
        let p = parse_policy(
            r#"{"version":1,"isolation":{"capabilities":{"keep":["cap_chown","NET_BIND_SERVICE"],"drop":["Sys_Admin"]},
                "read_only_root":true,"no_new_privileges":true,"namespaces":["pid","cgroup"],
                "seccomp":"buntime","private_tmp":true,"mask_kernel_paths":true},
                "resources":{"core":0},"landlock":"off","network":{"mode":"bundle"}}"#,
            "p.json",
        )
        .unwrap();
        let caps = &p.isolation.capabilities;
        let keep: Vec<&str> = caps.keep.iter().flatten().map(|c| c.as_str()).collect();
        assert_eq!(keep, ["CHOWN", "NET_BIND_SERVICE"], "stored canonical");
        assert_eq!(caps.drop[0].as_str(), "SYS_ADMIN");
        assert_eq!(p.resources.core.map(|c| c.bytes()), Some(0));
        assert_eq!(p.landlock, LandlockRequirement::Off);
        assert_eq!(p.network.mode, NetMode::Bundle);
        // `keep: []` is not "absent".
        let none = parse_policy(
            r#"{"version":1,"isolation":{"capabilities":{"keep":[]}}}"#,
            "p.json",
        )
        .unwrap();
        assert_eq!(none.isolation.capabilities.keep, Some(vec![]));
        assert!(parse_policy(r#"{"version":1}"#, "p.json")
            .unwrap()
            .isolation
            .is_default());
        // Canonical JSON round-trips.
        let again = parse_policy(&p.canonical_json(), "again").unwrap();
        assert_eq!(p, again);
        assert!(p
            .canonical_json()
            .contains(r#""keep":["CHOWN","NET_BIND_SERVICE"]"#));

        let e = err(r#"{"version":1,"isolation":{"capabilities":{"keep":["SYS_WIZARD"]}}}"#);
        assert_eq!(e.pointer, "/isolation/capabilities/keep/0");
        assert!(e.message.contains("Linux capability"), "{e}");
        let e = err(r#"{"version":1,"isolation":{"namespaces":["network"]}}"#);
        assert_eq!(e.pointer, "/isolation/namespaces/0");
        assert!(e.message.contains("network.mode"), "{e}");
        let e = err(r#"{"version":1,"isolation":{"namespaces":["user"]}}"#);
        assert!(e.message.contains("user namespace"), "{e}");
        let e = err(r#"{"version":1,"isolation":{"seccomp":"strict"}}"#);
        assert_eq!(e.pointer, "/isolation/seccomp");
        let e = err(r#"{"version":1,"isolation":{"readonly_root":true}}"#);
        assert!(e.message.contains("read_only_root"), "{e}");
        let e = err(r#"{"version":1,"resources":{"core":-1}}"#);
        assert_eq!(e.pointer, "/resources/core");
        let p = parse_policy(r#"{"version":1,"resources":{"core":"1M"}}"#, "p").unwrap();
        assert_eq!(p.resources.core.map(|c| c.bytes()), Some(1 << 20));
    }

    #[test]
    fn landlock_off_warns_unless_everything_is_granted() {
        let (_, f) = check_policy(
            r#"{"version":1,"filesystem":{"read":["/"]},"landlock":"off"}"#,
            "o.json",
        );
        assert!(
            f.iter().any(|f| f.error.pointer == "/landlock"
                && f.severity == Severity::Warning
                && f.error.message.contains("mounts and masks")),
            "{f:?}"
        );
        let (_, f) = check_policy(
            r#"{"version":1,"filesystem":{"write":["/"],"exec":["/"]},"landlock":"off"}"#,
            "o.json",
        );
        assert!(!f.iter().any(|f| f.error.pointer == "/landlock"), "{f:?}");
    }
}
