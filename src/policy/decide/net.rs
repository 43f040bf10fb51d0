//! Network requests: by name first (before any lookup), then with the
//! addresses the name resolved to.

use super::{BrokerOp, Decision, Denial, Resolved, RuleRef, Verdict};
use crate::policy::model::{BrokerRule, NetMode, Policy};
use crate::policy::net::{numeric_name, Dest, NetDecision, NetDenyReason};

/// The rule behind a refusal of the network rules.
fn refused(r: NetDenyReason, addr: Option<usize>) -> Decision {
    let rule = match &r {
        NetDenyReason::DeniedBy(x) => RuleRef::NetDeny(x.clone()),
        _ => RuleRef::Network,
    };
    Decision {
        addr,
        ..Decision::deny(Denial::Net(r), rule)
    }
}

pub(super) fn decide(
    policy: &Policy,
    host: &str,
    port: u16,
    resolved: Option<&Resolved<'_>>,
) -> Decision {
    if numeric_name(host) {
        let d = Denial::NonStandardAddress(host.to_string());
        return Decision::deny(d, RuleRef::Network);
    }
    let net = &policy.network;
    // The supervisor connects from the host, so the rules apply as for
    // egress through the proxy whatever the sandbox's own mode: its
    // loopback is not the host's.
    let by_name = net.decide_in(NetMode::Proxy, host, port);
    match resolved {
        None => before_lookup(policy, host, port, by_name),
        Some(res) => with_addresses(policy, host, port, by_name, res),
    }
}

/// Refuses by name before resolving: a denied name is never looked up,
/// nor one nobody could grant (names are never allowed by address). A
/// name the rules do not grant goes to the broker before its lookup too:
/// the lookup is a DNS query leaving the host, which would carry what the
/// sandbox put in the name even if the approver said no.
fn before_lookup(policy: &Policy, host: &str, port: u16, by_name: NetDecision) -> Decision {
    let broker = policy.broker.net_connect;
    match by_name {
        NetDecision::Allow => {
            let entry = policy.network.allow_entry(host, port, &[]).cloned();
            Decision::new(Verdict::Lookup, RuleRef::NetAllow(entry))
        }
        NetDecision::Deny(NetDenyReason::NotAllowed) => {
            let lookup = Decision::new(Verdict::Lookup, RuleRef::Default);
            let d = match (broker, Dest::parse(host)) {
                (BrokerRule::Deny, _) => refused(NetDenyReason::NotAllowed, None),
                (_, Dest::Name(_)) => Decision::by_broker(policy, BrokerOp::NetConnect, lookup),
                // An address is asked about once it is checked as one.
                (_, Dest::Ip(_)) => lookup,
            };
            Decision {
                grantable_by_broker: true,
                ..d
            }
        }
        NetDecision::Deny(r) => refused(r, None),
    }
}

/// Every address is checked: deny entries apply to them, special ranges
/// must be named, the host's own addresses named one by one. The broker
/// may grant what the allow list does not, never a denied or special
/// address, nor one of the host's own. A refusal is about the first
/// address refused (the first one when the name itself is).
fn with_addresses(
    policy: &Policy,
    host: &str,
    port: u16,
    by_name: NetDecision,
    res: &Resolved<'_>,
) -> Decision {
    let net = &policy.network;
    match by_name {
        NetDecision::Allow => match net.check_addrs(port, res.addrs, res.own) {
            Ok(()) => {
                let entry = net.allow_entry(host, port, res.addrs).cloned();
                Decision::new(Verdict::Allow, RuleRef::NetAllow(entry))
            }
            Err((i, r)) => refused(r, Some(i)),
        },
        NetDecision::Deny(NetDenyReason::NotAllowed) => {
            match net.check_addrs(port, res.addrs, res.own) {
                Err((i, r)) => refused(r, Some(i)),
                Ok(()) => {
                    let missing = refused(NetDenyReason::NotAllowed, Some(0));
                    Decision {
                        addr: Some(0),
                        ..Decision::by_broker(policy, BrokerOp::NetConnect, missing)
                    }
                }
            }
        }
        NetDecision::Deny(r) => refused(r, Some(0)),
    }
}
