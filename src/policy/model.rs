//! The policy data model: plain serde types, versioned, unknown fields
//! rejected. Values that have a grammar (paths, host rules, sizes, durations,
//! variable names) are newtypes validated while deserializing, so a bad value
//! is reported with its JSON path and line:column like a syntax error.

use std::borrow::Cow;
use std::fmt;
use std::num::NonZeroU32;
use std::path::{Component, Path, PathBuf};

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use super::net::NetRule;

/// The shared half of a string newtype validated by its `TryFrom<String>`:
/// a constructor, the string view, conversion back, display and its JSON
/// Schema (`$schema`).
macro_rules! validated_string {
    ($t:ident, $schema:tt) => {
        impl $t {
            pub fn new(s: impl Into<String>) -> Result<Self, String> {
                Self::try_from(s.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl JsonSchema for $t {
            fn schema_name() -> Cow<'static, str> {
                stringify!($t).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

mod env;
mod isolation;
mod units;
pub use env::*;
pub use isolation::*;
pub use units::*;

/// The only policy format version this build understands.
pub const POLICY_VERSION: u32 = 1;

/// A buntime policy: what a sandbox may do. Deny by default; an explicit
/// deny wins over an allow.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "buntime policy")]
pub struct Policy {
    /// Format version; must be 1.
    pub version: PolicyVersion,
    /// One line saying what the policy is for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Paths that may be read, written or executed, and denied paths.
    #[serde(default, skip_serializing_if = "Filesystem::is_empty")]
    pub filesystem: Filesystem,
    /// Network isolation mode and host allow/deny rules.
    #[serde(default)]
    pub network: Network,
    /// Programs that may be executed.
    #[serde(default, skip_serializing_if = "Exec::is_empty")]
    pub exec: Exec,
    /// Which host environment variables pass in, and fixed ones to set.
    #[serde(default, skip_serializing_if = "Env::is_empty")]
    pub env: Env,
    /// Memory, process, CPU, time and output limits.
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    /// What the per-container supervisor may grant at run time beyond the
    /// static rules.
    #[serde(default, skip_serializing_if = "Broker::is_default")]
    pub broker: Broker,
    /// Whether kernel (Landlock) enforcement is required, best effort or
    /// off.
    #[serde(default, skip_serializing_if = "LandlockRequirement::is_default")]
    pub landlock: LandlockRequirement,
    /// Kernel isolation the policy adds to the bundle's own (capabilities,
    /// read-only root, no-new-privileges, namespaces, seccomp, private
    /// /tmp, masked kernel paths). What it leaves unsaid follows the
    /// bundle.
    #[serde(default, skip_serializing_if = "Isolation::is_default")]
    pub isolation: Isolation,
}

/// The policy format version (always 1 for now).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct PolicyVersion(u32);

impl Default for PolicyVersion {
    fn default() -> Self {
        PolicyVersion(POLICY_VERSION)
    }
}

impl PolicyVersion {
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u64> for PolicyVersion {
    type Error = String;
    fn try_from(v: u64) -> Result<Self, String> {
        if v == u64::from(POLICY_VERSION) {
            Ok(PolicyVersion(POLICY_VERSION))
        } else {
            Err(format!(
                "unsupported policy version {v}, expected {POLICY_VERSION}"
            ))
        }
    }
}

impl From<PolicyVersion> for u64 {
    fn from(v: PolicyVersion) -> u64 {
        u64::from(v.0)
    }
}

impl JsonSchema for PolicyVersion {
    fn schema_name() -> Cow<'static, str> {
        "PolicyVersion".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Policy format version.",
            "type": "integer",
            "const": POLICY_VERSION
        })
    }
}

/// Filesystem rights. Every entry grants the file or the whole subtree.
/// `write` implies `read`; `exec` implies `read`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Filesystem {
    /// Paths that may be read (files, or whole directory trees).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read: Vec<FsPath>,
    /// Paths that may be written (and read).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub write: Vec<FsPath>,
    /// Paths whose files may be executed (and read).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exec: Vec<FsPath>,
    /// Paths that may not be accessed at all, even inside an allowed tree.
    /// An entry whose last component ends in `*` (`/etc/shadow*`) denies
    /// every name in that directory that starts with what precedes the
    /// `*` (`/etc/shadow`, `/etc/shadow-`, `/etc/shadow.bak`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<FsPath>,
}

impl Filesystem {
    pub fn is_empty(&self) -> bool {
        self.read.is_empty()
            && self.write.is_empty()
            && self.exec.is_empty()
            && self.deny.is_empty()
    }
}

/// A filesystem path as written in a policy. Relative paths are resolved
/// against the directory the policy is used from (see
/// [`Policy::resolve_relative`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FsPath(String);

impl FsPath {
    pub fn as_path(&self) -> &Path {
        Path::new(&self.0)
    }
    pub fn is_absolute(&self) -> bool {
        self.0.starts_with('/')
    }
}

impl TryFrom<String> for FsPath {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty() {
            return Err("expected a non-empty path".into());
        }
        if s.contains('\0') {
            return Err("expected a path without NUL bytes".into());
        }
        if s.starts_with('~') {
            // Expanding ~ would make the policy mean different things for
            // different users; ask for the explicit path instead.
            return Err(format!(
                "expected an absolute or relative path, got {s:?} (\"~\" is not expanded)"
            ));
        }
        Ok(FsPath(s))
    }
}

validated_string!(FsPath, {
    "description": "A file or directory path; a directory grants its whole subtree. Relative paths resolve against the directory the policy is used from.",
    "type": "string",
    "minLength": 1,
    "pattern": "^[^~]"
});

/// Network isolation mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// A private network namespace with only loopback.
    #[default]
    None,
    /// Egress only through buntime's allow-list proxy.
    Proxy,
    /// The network namespace the bundle gives (a Kubernetes pod's, shared
    /// by its containers), egress still only through the allow-list proxy,
    /// which listens and connects inside that namespace; direct TCP only
    /// to the proxy and the ports of address entries (Landlock).
    Pod,
    /// The network namespace the bundle gives (an engine's container or
    /// pod network), kept as it is; no proxy.
    Bundle,
    /// No network isolation at all.
    Host,
}

impl NetMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetMode::None => "none",
            NetMode::Proxy => "proxy",
            NetMode::Pod => "pod",
            NetMode::Bundle => "bundle",
            NetMode::Host => "host",
        }
    }

    /// Whether inet sockets reach past the sandbox without the proxy
    /// (`bundle` and `host`): no per-destination decision applies.
    pub fn is_open(self) -> bool {
        matches!(self, NetMode::Bundle | NetMode::Host)
    }

    /// Whether egress goes through the allow-list proxy (`proxy`, `pod`).
    pub fn is_proxied(self) -> bool {
        matches!(self, NetMode::Proxy | NetMode::Pod)
    }
}

/// Network rules.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// `none` (loopback only), `proxy` (egress through the allow-list
    /// proxy), `pod` (the bundle's network namespace, egress through the
    /// proxy), `bundle` (the bundle's own network namespace) or `host` (no
    /// isolation).
    #[serde(default)]
    pub mode: NetMode,
    /// Destinations that may be reached (in `proxy` and `pod` modes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<NetRule>,
    /// Destinations that may never be reached; wins over `allow`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<NetRule>,
}

/// Programs that may be executed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Exec {
    /// Absolute paths, or names looked up in PATH.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<Program>,
}

impl Exec {
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty()
    }
}

/// A program: an absolute path, or a bare name looked up in PATH.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Program(String);

impl Program {
    /// A bare name (looked up in PATH) rather than an absolute path.
    pub fn is_name(&self) -> bool {
        !self.0.starts_with('/')
    }
}

impl TryFrom<String> for Program {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty() || s.contains('\0') {
            return Err("expected a program path or name".into());
        }
        if !s.starts_with('/') && s.contains('/') {
            return Err(format!(
                "expected an absolute path or a program name without '/', got {s:?}"
            ));
        }
        Ok(Program(s))
    }
}

validated_string!(Program, {
    "description": "An absolute program path, or a program name looked up in PATH.",
    "type": "string",
    "pattern": "^(/.*|[^/]+)$"
});

/// Resource limits. Absent means "no limit from the policy".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Memory limit, e.g. "512M" (binary units) or a number of bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// Maximum number of processes and threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<NonZeroU32>,
    /// CPU cores, fractional allowed (e.g. 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpus>,
    /// Wall-clock timeout, e.g. "30s", "5m" or a number of seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<TimeSpan>,
    /// Maximum bytes of stdout+stderr kept, e.g. "10M".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<ByteSize>,
    /// Maximum open file descriptors (RLIMIT_NOFILE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_files: Option<NonZeroU32>,
    /// Largest core dump (RLIMIT_CORE); `0`: none. Absent: the bundle's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core: Option<CoreSize>,
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }
}

/// What the supervisor does when the sandbox asks for more at run time.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum BrokerRule {
    /// Refuse without asking.
    #[default]
    Deny,
    /// Ask the person running the sandbox.
    Ask,
    /// Grant without asking.
    Allow,
}

impl BrokerRule {
    pub fn as_str(self) -> &'static str {
        match self {
            BrokerRule::Deny => "deny",
            BrokerRule::Ask => "ask",
            BrokerRule::Allow => "allow",
        }
    }
}

/// Run-time grants beyond the static rules, per kind of request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Broker {
    /// Reading a file outside the static rules.
    #[serde(default)]
    pub fs_read: BrokerRule,
    /// Writing a file outside the static rules.
    #[serde(default)]
    pub fs_write: BrokerRule,
    /// Listing a directory outside the static rules.
    #[serde(default)]
    pub list_dir: BrokerRule,
    /// Connecting to a destination outside the static rules.
    #[serde(default)]
    pub net_connect: BrokerRule,
    /// Executing a program outside the static rules.
    #[serde(default)]
    pub exec: BrokerRule,
}

impl Broker {
    pub fn is_default(&self) -> bool {
        *self == Broker::default()
    }
}

/// Whether the kernel must enforce the filesystem and network rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LandlockRequirement {
    /// Use Landlock when the kernel has it; record when it does not.
    #[default]
    BestEffort,
    /// Refuse to create the container when Landlock is unavailable.
    Required,
    /// No Landlock at all: the filesystem and network rules rely on
    /// mounts, masks, namespaces and seccomp alone.
    Off,
}

impl LandlockRequirement {
    pub fn is_default(&self) -> bool {
        *self == LandlockRequirement::BestEffort
    }

    /// Stricter first: `required` > `best-effort` > `off`.
    pub fn rank(self) -> u8 {
        match self {
            LandlockRequirement::Off => 0,
            LandlockRequirement::BestEffort => 1,
            LandlockRequirement::Required => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LandlockRequirement::Off => "off",
            LandlockRequirement::BestEffort => "best-effort",
            LandlockRequirement::Required => "required",
        }
    }
}

/// Lexically normalise an absolute path: drop `.`, apply `..`, collapse
/// slashes. Symlinks are not followed: policies talk about the paths the
/// sandbox sees, and Landlock follows links itself when rules are applied.
pub fn normalize_path(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir | Component::Prefix(_) | Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(s) => out.push(s),
        }
    }
    out
}

impl Policy {
    /// Resolve relative paths against `base` and normalise every path, so
    /// the rest of the library only sees absolute, clean paths.
    pub fn resolve_relative(&mut self, base: &Path) {
        let fix = |v: &mut Vec<FsPath>| {
            for p in v.iter_mut() {
                let joined = if p.is_absolute() {
                    PathBuf::from(p.as_str())
                } else {
                    base.join(p.as_str())
                };
                let norm = normalize_path(&joined);
                p.0 = norm.to_string_lossy().into_owned();
            }
        };
        fix(&mut self.filesystem.read);
        fix(&mut self.filesystem.write);
        fix(&mut self.filesystem.exec);
        fix(&mut self.filesystem.deny);
    }

    /// True when every path in the filesystem area is absolute.
    pub fn paths_are_absolute(&self) -> bool {
        let fs = &self.filesystem;
        fs.read
            .iter()
            .chain(&fs.write)
            .chain(&fs.exec)
            .chain(&fs.deny)
            .all(FsPath::is_absolute)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(ByteSize::parse("512M").unwrap().bytes(), 512 << 20);
        assert_eq!(ByteSize::parse("2g").unwrap().bytes(), 2 << 30);
        assert_eq!(ByteSize::parse("64KiB").unwrap().bytes(), 64 << 10);
        assert_eq!(ByteSize::parse("100").unwrap().bytes(), 100);
        assert!(ByteSize::parse("0").is_err());
        assert!(ByteSize::parse("12X").is_err());
        assert!(ByteSize::parse("M").is_err());
        assert_eq!(ByteSize(512 << 20).to_string(), "512M");
        assert_eq!(ByteSize(1536).to_string(), "1536");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(TimeSpan::parse("30s").unwrap().millis(), 30_000);
        assert_eq!(TimeSpan::parse("5m").unwrap().millis(), 300_000);
        assert_eq!(TimeSpan::parse("250ms").unwrap().millis(), 250);
        assert_eq!(TimeSpan::parse("2").unwrap().millis(), 2000);
        assert!(TimeSpan::parse("0s").is_err());
        assert!(TimeSpan::parse("1d").is_err());
        assert_eq!(TimeSpan(90_000).to_string(), "90s");
        assert_eq!(TimeSpan(7_200_000).to_string(), "2h");
    }

    #[test]
    fn env_patterns() {
        let p = EnvPattern::new("LC_*").unwrap();
        assert!(p.matches("LC_ALL"));
        assert!(!p.matches("LANG"));
        assert!(EnvPattern::new("*").unwrap().matches("ANYTHING"));
        assert!(EnvPattern::new("PATH").unwrap().matches("PATH"));
        assert!(!EnvPattern::new("PATH").unwrap().matches("PATHX"));
        assert!(EnvPattern::new("A*B").is_err());
        assert!(EnvPattern::new("1ABC").is_err());
        assert!(EnvName::new("X-Y").is_err());
    }

    #[test]
    fn programs() {
        assert!(Program::new("python3").unwrap().is_name());
        assert!(!Program::new("/usr/bin/env").unwrap().is_name());
        assert!(Program::new("bin/sh").is_err());
    }

    #[test]
    fn relative_paths_resolve_against_base() {
        let mut p = Policy::default();
        p.filesystem.read.push(FsPath::new("data/../src").unwrap());
        p.filesystem.write.push(FsPath::new("/tmp/./x/").unwrap());
        p.resolve_relative(Path::new("/home/me/proj"));
        assert_eq!(p.filesystem.read[0].as_str(), "/home/me/proj/src");
        assert_eq!(p.filesystem.write[0].as_str(), "/tmp/x");
        assert!(p.paths_are_absolute());
    }

    #[test]
    fn normalize_never_escapes_root() {
        assert_eq!(
            normalize_path(Path::new("/../../etc")),
            PathBuf::from("/etc")
        );
    }
}
