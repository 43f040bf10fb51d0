//! Kernel isolation a policy adds to the bundle's: capabilities, a
//! read-only root, no_new_privs, namespaces, seccomp, a private /tmp,
//! masked kernel paths.

use std::borrow::Cow;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

/// Kernel isolation a policy adds to what the bundle asks for. Every field
/// left out (false, empty) means "as the bundle says".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Isolation {
    /// Capabilities the process may keep: every set of the bundle is
    /// intersected with `keep` (when given) and loses `drop`.
    #[serde(default, skip_serializing_if = "CapabilityRules::is_default")]
    pub capabilities: CapabilityRules,
    /// Mount the root filesystem read-only (false: as the bundle says).
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only_root: bool,
    /// Set no_new_privs (false: as the bundle says).
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_new_privileges: bool,
    /// Namespaces the container must have of its own, besides the
    /// bundle's: `pid`, `ipc`, `uts`, `mount`, `cgroup`. (The network
    /// namespace follows `network.mode`; user namespaces the bundle.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<NamespaceKind>,
    /// `buntime`: buntime's profile for the network mode, stacked on the
    /// bundle's own; `bundle` (default): the bundle's profile only.
    #[serde(default, skip_serializing_if = "SeccompChoice::is_default")]
    pub seccomp: SeccompChoice,
    /// A fresh tmpfs on /tmp instead of the bundle's /tmp.
    #[serde(default, skip_serializing_if = "is_false")]
    pub private_tmp: bool,
    /// Mask runc's default /proc and /sys paths (hidden or read-only), on
    /// top of the bundle's own.
    #[serde(default, skip_serializing_if = "is_false")]
    pub mask_kernel_paths: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Isolation {
    pub fn is_default(&self) -> bool {
        *self == Isolation::default()
    }

    /// What both ask for: the stricter of each field (keep: intersection
    /// when both are given; drop, namespaces: union; flags: either;
    /// seccomp: `buntime` wins).
    pub fn meet(&self, other: &Isolation) -> Isolation {
        let mut namespaces = self.namespaces.clone();
        for n in &other.namespaces {
            if !namespaces.contains(n) {
                namespaces.push(*n);
            }
        }
        Isolation {
            capabilities: self.capabilities.meet(&other.capabilities),
            read_only_root: self.read_only_root || other.read_only_root,
            no_new_privileges: self.no_new_privileges || other.no_new_privileges,
            namespaces,
            seccomp: self.seccomp.max(other.seccomp),
            private_tmp: self.private_tmp || other.private_tmp,
            mask_kernel_paths: self.mask_kernel_paths || other.mask_kernel_paths,
        }
    }
}

/// Capability rules. Absent `keep`: every capability the bundle gives may
/// stay; `[]`: none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CapabilityRules {
    /// The only capabilities that may stay (in every set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<Vec<CapName>>,
    /// Capabilities removed from every set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<CapName>,
}

impl CapabilityRules {
    pub fn is_default(&self) -> bool {
        *self == CapabilityRules::default()
    }

    /// Whether the rules remove anything at all.
    pub fn restricts(&self) -> bool {
        !self.is_default()
    }

    /// Whether `cap` may stay.
    pub fn allows(&self, cap: &CapName) -> bool {
        self.keep.as_ref().is_none_or(|k| k.contains(cap)) && !self.drop.contains(cap)
    }

    /// The stricter of both.
    pub fn meet(&self, other: &CapabilityRules) -> CapabilityRules {
        let keep = match (&self.keep, &other.keep) {
            (Some(a), Some(b)) => Some(a.iter().filter(|c| b.contains(c)).cloned().collect()),
            (a, b) => a.clone().or_else(|| b.clone()),
        };
        let mut drop = self.drop.clone();
        for c in &other.drop {
            if !drop.contains(c) {
                drop.push(c.clone());
            }
        }
        CapabilityRules { keep, drop }
    }
}

/// A Linux capability name, stored without the `CAP_` prefix in upper case
/// (`SYS_ADMIN`); written `SYS_ADMIN`, `CAP_SYS_ADMIN`, any case.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CapName(String);

impl CapName {
    /// The kernel's name (`CAP_SYS_ADMIN`).
    pub fn kernel_name(&self) -> String {
        format!("CAP_{}", self.0)
    }
}

impl TryFrom<String> for CapName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let upper = s.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
        let known = format!("CAP_{bare}").parse::<caps::Capability>().is_ok();
        if known {
            Ok(CapName(bare.to_string()))
        } else {
            Err(format!(
                "expected a Linux capability name such as \"NET_BIND_SERVICE\" or \"CAP_CHOWN\", got {s:?}"
            ))
        }
    }
}

validated_string!(CapName, {
    "description": "A Linux capability, e.g. \"NET_BIND_SERVICE\" or \"CAP_SYS_ADMIN\" (any case).",
    "type": "string",
    "pattern": "^([Cc][Aa][Pp]_)?[A-Za-z_]+$"
});

/// A namespace a policy can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum NamespaceKind {
    Pid,
    Ipc,
    Uts,
    Mount,
    Cgroup,
}

impl JsonSchema for NamespaceKind {
    fn schema_name() -> Cow<'static, str> {
        "NamespaceKind".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A namespace of the container's own (network: see network.mode; user: the bundle's).",
            "type": "string",
            "enum": ["pid", "ipc", "uts", "mount", "cgroup"]
        })
    }
}

impl NamespaceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NamespaceKind::Pid => "pid",
            NamespaceKind::Ipc => "ipc",
            NamespaceKind::Uts => "uts",
            NamespaceKind::Mount => "mount",
            NamespaceKind::Cgroup => "cgroup",
        }
    }
}

impl TryFrom<String> for NamespaceKind {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Ok(match s.as_str() {
            "pid" => NamespaceKind::Pid,
            "ipc" => NamespaceKind::Ipc,
            "uts" => NamespaceKind::Uts,
            "mount" => NamespaceKind::Mount,
            "cgroup" => NamespaceKind::Cgroup,
            "network" | "net" => {
                return Err(
                    "the network namespace is chosen by network.mode, not isolation.namespaces"
                        .into(),
                )
            }
            "user" => {
                return Err(
                    "a user namespace comes with the bundle's uid/gid mappings; a policy cannot add one"
                        .into(),
                )
            }
            other => {
                return Err(format!(
                    "expected one of pid, ipc, uts, mount, cgroup, got {other:?}"
                ))
            }
        })
    }
}

impl From<NamespaceKind> for String {
    fn from(n: NamespaceKind) -> String {
        n.as_str().to_string()
    }
}

/// Which seccomp profile applies.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SeccompChoice {
    /// The bundle's own profile only (none if it has none).
    #[default]
    Bundle,
    /// buntime's profile for the network mode, stacked on the bundle's.
    Buntime,
}

impl SeccompChoice {
    pub fn is_default(&self) -> bool {
        *self == SeccompChoice::Bundle
    }
}
