//! The one decision of the broker, the egress proxy, the audit and the
//! UI's "why?": a request against the policy gives a verdict and the rule
//! that made it ([`RuleRef`]), in one walk of the rules. Pure: the caller
//! resolves names, reads the host's addresses and asks the approver.

mod net;
mod rule;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;
use std::path::Path;

pub use rule::{BrokerOp, RuleRef};

use super::model::{normalize_path, BrokerRule, Policy};
use super::net::{HostAddrs, NetDenyReason};
use super::paths::{FsAccess, FsMatch};

/// What a filesystem request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FsOp {
    Read,
    Write,
    ListDir,
}

impl FsOp {
    pub fn access(self) -> FsAccess {
        match self {
            FsOp::Write => FsAccess::Write,
            FsOp::Read | FsOp::ListDir => FsAccess::Read,
        }
    }

    pub fn broker_op(self) -> BrokerOp {
        match self {
            FsOp::Read => BrokerOp::FsRead,
            FsOp::Write => BrokerOp::FsWrite,
            FsOp::ListDir => BrokerOp::ListDir,
        }
    }
}

/// What the sandbox asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// A path as the sandbox wrote it (must be absolute).
    Fs { op: FsOp, path: &'a Path },
    /// A connection from the host on the sandbox's behalf (broker or
    /// proxy): the rules apply as in `proxy` mode, whatever the sandbox's.
    Net { host: &'a str, port: u16 },
    /// The program found (absolute), and the sandbox's PATH for the
    /// `exec.allow` entries that are bare names.
    Exec {
        program: &'a Path,
        path_var: &'a str,
    },
}

/// The addresses a name resolved to, and the host's own addresses then.
#[derive(Clone, Copy, Debug)]
pub struct Resolved<'a> {
    pub addrs: &'a [IpAddr],
    pub own: &'a HostAddrs,
}

/// What to do with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// The broker section says to ask the approver.
    Ask,
    Deny(Denial),
    /// A network request decided by name only: it goes on to the name's
    /// lookup, then to the decision with the addresses ([`Resolved`]).
    Lookup,
}

/// Why a request is refused; its text is the refusal the sandbox gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    NotAbsolute,
    /// A `filesystem.deny` entry covers it.
    DeniedByPolicy,
    /// No rule grants it and the broker section does not either.
    NotGranted,
    Net(NetDenyReason),
    /// A host name that is an address in another form (`127.1`).
    NonStandardAddress(String),
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denial::NotAbsolute => f.write_str("path must be absolute"),
            Denial::DeniedByPolicy => f.write_str("denied by the policy"),
            Denial::NotGranted => f.write_str("not granted by the policy"),
            Denial::Net(r) => r.fmt(f),
            Denial::NonStandardAddress(host) => write!(
                f,
                "{host} is an address in a non-standard form: write it as a.b.c.d"
            ),
        }
    }
}

/// The verdict, the rule that made it, whether the broker section could
/// grant the request (no static rule grants it, and nothing forbids it),
/// and for a network request with addresses, which one it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub rule: RuleRef,
    /// The request is one the `broker` section decides (whatever that
    /// section says now): no static rule grants it and no deny entry
    /// refuses it. For a network request decided before its name lookup
    /// this is provisional: the resolved addresses may still be refused
    /// (special ranges, the host's own addresses).
    pub grantable_by_broker: bool,
    /// Index in [`Resolved::addrs`] of the address a refusal is about.
    pub addr: Option<usize>,
}

impl Decision {
    fn new(verdict: Verdict, rule: RuleRef) -> Decision {
        Decision {
            verdict,
            rule,
            grantable_by_broker: false,
            addr: None,
        }
    }

    fn deny(denial: Denial, rule: RuleRef) -> Decision {
        Decision::new(Verdict::Deny(denial), rule)
    }

    /// Not granted by a static rule: what the broker section says, else
    /// `otherwise`.
    fn by_broker(policy: &Policy, op: BrokerOp, otherwise: Decision) -> Decision {
        let rule = policy.broker.rule(op);
        let d = match rule {
            BrokerRule::Allow => Decision::new(Verdict::Allow, RuleRef::Broker { op, rule }),
            BrokerRule::Ask => Decision::new(Verdict::Ask, RuleRef::Broker { op, rule }),
            BrokerRule::Deny => otherwise,
        };
        Decision {
            grantable_by_broker: true,
            ..d
        }
    }
}

/// Decides `req` against `policy`. `resolved`: for a network request, the
/// addresses its name resolved to (`None`: decide by name, before any
/// lookup; a name the rules refuse is never looked up).
pub fn decide(policy: &Policy, req: &Request<'_>, resolved: Option<&Resolved<'_>>) -> Decision {
    match *req {
        Request::Fs { op, path } => decide_fs(policy, op, path),
        Request::Net { host, port } => net::decide(policy, host, port, resolved),
        Request::Exec { program, path_var } => decide_exec(policy, program, path_var),
    }
}

fn decide_fs(policy: &Policy, op: FsOp, path: &Path) -> Decision {
    if !path.is_absolute() {
        return Decision::deny(Denial::NotAbsolute, RuleRef::Default);
    }
    match policy.filesystem.find(path, op.access()) {
        FsMatch::Denied(d) => Decision::deny(Denial::DeniedByPolicy, RuleRef::FsDeny(d)),
        FsMatch::Granted(field, path) => {
            Decision::new(Verdict::Allow, RuleRef::FsGrant { field, path })
        }
        FsMatch::Nothing => Decision::by_broker(
            policy,
            op.broker_op(),
            Decision::deny(Denial::NotGranted, RuleRef::Default),
        ),
    }
}

fn decide_exec(policy: &Policy, program: &Path, path_var: &str) -> Decision {
    let p = normalize_path(program);
    match policy.filesystem.find(&p, FsAccess::Exec) {
        FsMatch::Denied(d) => Decision::deny(Denial::DeniedByPolicy, RuleRef::FsDeny(d)),
        FsMatch::Granted(..) => Decision::new(Verdict::Allow, RuleRef::ExecRules),
        FsMatch::Nothing if policy.exec_allows(&p, path_var) => {
            Decision::new(Verdict::Allow, RuleRef::ExecRules)
        }
        FsMatch::Nothing => Decision::by_broker(
            policy,
            BrokerOp::Exec,
            Decision::deny(Denial::NotGranted, RuleRef::Default),
        ),
    }
}
