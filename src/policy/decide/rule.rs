//! The rule behind a decision, as a value. Its text (`Display`) is what
//! the audit log has always said (`filesystem.read /usr`, `network.deny
//! *:25`, `broker.fs_read=ask`, ...); `FromStr` reads such a text back,
//! from this version's logs or older ones, in this one place.

use std::convert::Infallible;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::policy::model::{Broker, BrokerRule};
use crate::policy::net::NetRule;
use crate::policy::paths::FsField;

/// A kind of request the broker section has a rule for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BrokerOp {
    FsRead,
    FsWrite,
    ListDir,
    NetConnect,
    Exec,
}

impl BrokerOp {
    pub const ALL: [BrokerOp; 5] = [
        BrokerOp::FsRead,
        BrokerOp::FsWrite,
        BrokerOp::ListDir,
        BrokerOp::NetConnect,
        BrokerOp::Exec,
    ];

    /// Its field in the broker section (and its audit kind).
    pub fn as_str(self) -> &'static str {
        match self {
            BrokerOp::FsRead => "fs_read",
            BrokerOp::FsWrite => "fs_write",
            BrokerOp::ListDir => "list_dir",
            BrokerOp::NetConnect => "net_connect",
            BrokerOp::Exec => "exec",
        }
    }
}

impl Broker {
    /// The broker section's rule for `op`.
    pub fn rule(&self, op: BrokerOp) -> BrokerRule {
        match op {
            BrokerOp::FsRead => self.fs_read,
            BrokerOp::FsWrite => self.fs_write,
            BrokerOp::ListDir => self.list_dir,
            BrokerOp::NetConnect => self.net_connect,
            BrokerOp::Exec => self.exec,
        }
    }
}

/// The rule that decided something the supervisor audits.
#[derive(Clone, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(from = "String")]
pub enum RuleRef {
    /// Deny by default (and failures before any rule applied).
    #[default]
    Default,
    /// `filesystem.deny P` (normalised).
    FsDeny(PathBuf),
    /// `filesystem.read|write|exec P`: the entry (normalised) granting it.
    FsGrant { field: FsField, path: PathBuf },
    /// `network.deny R`.
    NetDeny(NetRule),
    /// `network`: the network section's own rules (special and host
    /// addresses, addresses in a non-standard form, no allow entry).
    Network,
    /// `network.allow R`: the entry granting it (none when only the
    /// address checks did, which no entry could name).
    NetAllow(Option<NetRule>),
    /// `exec rules`: `filesystem.exec` or `exec.allow`.
    ExecRules,
    /// `broker.KIND=allow|ask`.
    Broker { op: BrokerOp, rule: BrokerRule },
    /// `resources.output`.
    ResourcesOutput,
    /// `resources.timeout`.
    ResourcesTimeout,
    /// `audit quota`: records counted, not written.
    AuditQuota,
    /// `proxy`: the egress proxy's own refusals (a request it cannot
    /// read, connections still open at the end).
    Proxy,
    /// `limits`: the egress proxy's connection limit.
    ProxyLimits,
    /// `learn`: the learning proxy of `buntime run --learn`, which lets
    /// every host through (the learned run is not sandboxed by network
    /// rules) to learn their names.
    Learning,
    /// Any other text (lines of other versions).
    Other(String),
}

impl RuleRef {
    /// Did a static rule or the broker section grant it? A refusal under
    /// such a rule is a failure of the operation itself.
    pub fn grants(&self) -> bool {
        matches!(
            self,
            RuleRef::FsGrant { .. }
                | RuleRef::NetAllow(_)
                | RuleRef::ExecRules
                | RuleRef::Broker {
                    rule: BrokerRule::Allow,
                    ..
                }
        )
    }
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleRef::Default => f.write_str("default"),
            RuleRef::FsDeny(p) => write!(f, "filesystem.deny {}", p.display()),
            RuleRef::FsGrant { field, path } => {
                write!(f, "filesystem.{} {}", field.as_str(), path.display())
            }
            RuleRef::NetDeny(r) => write!(f, "network.deny {r}"),
            RuleRef::Network => f.write_str("network"),
            RuleRef::NetAllow(Some(r)) => write!(f, "network.allow {r}"),
            RuleRef::NetAllow(None) => f.write_str("network.allow "),
            RuleRef::ExecRules => f.write_str("exec rules"),
            RuleRef::Broker { op, rule } => write!(f, "broker.{}={}", op.as_str(), rule.as_str()),
            RuleRef::ResourcesOutput => f.write_str("resources.output"),
            RuleRef::ResourcesTimeout => f.write_str("resources.timeout"),
            RuleRef::AuditQuota => f.write_str("audit quota"),
            RuleRef::Proxy => f.write_str("proxy"),
            RuleRef::ProxyLimits => f.write_str("limits"),
            RuleRef::Learning => f.write_str("learn"),
            RuleRef::Other(s) => f.write_str(s),
        }
    }
}

/// A network entry read back, only when it prints as it was written (so
/// the text survives the round trip).
fn net_rule(s: &str) -> Option<NetRule> {
    NetRule::parse(s).ok().filter(|r| r.to_string() == s)
}

fn broker(s: &str) -> Option<RuleRef> {
    let (op, rule) = s.strip_prefix("broker.")?.split_once('=')?;
    let op = *BrokerOp::ALL.iter().find(|o| o.as_str() == op)?;
    let rule = [BrokerRule::Allow, BrokerRule::Ask, BrokerRule::Deny]
        .into_iter()
        .find(|r| r.as_str() == rule)?;
    Some(RuleRef::Broker { op, rule })
}

fn known(s: &str) -> Option<RuleRef> {
    let fields = [FsField::Read, FsField::Write, FsField::Exec];
    Some(match s {
        "default" => RuleRef::Default,
        "network" => RuleRef::Network,
        "network.allow " => RuleRef::NetAllow(None),
        "exec rules" => RuleRef::ExecRules,
        "resources.output" => RuleRef::ResourcesOutput,
        "resources.timeout" => RuleRef::ResourcesTimeout,
        "audit quota" => RuleRef::AuditQuota,
        "proxy" => RuleRef::Proxy,
        "limits" => RuleRef::ProxyLimits,
        "learn" => RuleRef::Learning,
        _ => {
            if let Some(p) = s.strip_prefix("filesystem.deny ") {
                RuleRef::FsDeny(PathBuf::from(p))
            } else if let Some(r) = s.strip_prefix("network.deny ") {
                RuleRef::NetDeny(net_rule(r)?)
            } else if let Some(r) = s.strip_prefix("network.allow ") {
                RuleRef::NetAllow(Some(net_rule(r)?))
            } else if let Some(rest) = s.strip_prefix("filesystem.") {
                let (name, p) = rest.split_once(' ')?;
                let field = *fields.iter().find(|f| f.as_str() == name)?;
                RuleRef::FsGrant {
                    field,
                    path: PathBuf::from(p),
                }
            } else {
                return broker(s);
            }
        }
    })
}

impl FromStr for RuleRef {
    type Err = Infallible;
    fn from_str(s: &str) -> Result<RuleRef, Infallible> {
        Ok(known(s).unwrap_or_else(|| RuleRef::Other(s.to_string())))
    }
}

impl From<String> for RuleRef {
    fn from(s: String) -> RuleRef {
        match known(&s) {
            Some(r) => r,
            None => RuleRef::Other(s),
        }
    }
}

// As its text, written straight into the output: a record is written after
// every broker answer, and `into = "String"` cloned the rule and made its
// text for each.
impl Serialize for RuleRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl From<RuleRef> for String {
    fn from(r: RuleRef) -> String {
        r.to_string()
    }
}
