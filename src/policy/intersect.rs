//! Intersection of two policies: what both allow. Used to bound an
//! annotation policy by the node's ceiling policy. Deny lists are united,
//! limits take the smaller value, modes the more restrictive one. Both
//! policies should have absolute paths (`Policy::resolve_relative`).

use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;

use super::model::{normalize_path, BrokerRule, EnvPattern, FsPath, NetMode, Policy, Program};
use super::net::{classify, AddrClass, HostAddrs, HostPattern, NetRule};

/// How much network a mode opens, least first (a meet takes the lower).
pub fn mode_rank(m: NetMode) -> u8 {
    match m {
        NetMode::None => 0,
        NetMode::Proxy => 1,
        // The pod's namespace (its loopback, its IP) with egress decided.
        NetMode::Pod => 2,
        NetMode::Bundle => 3,
        NetMode::Host => 4,
    }
}

fn push_unique<T: PartialEq>(v: &mut Vec<T>, item: T) {
    if !v.contains(&item) {
        v.push(item);
    }
}

/// Subtree sets: the deeper path of each nested pair.
fn meet_paths(a: &[&FsPath], b: &[&FsPath]) -> Vec<FsPath> {
    let mut out = Vec::new();
    for x in a {
        for y in b {
            let (px, py) = (normalize_path(x.as_path()), normalize_path(y.as_path()));
            if px.starts_with(&py) {
                push_unique(&mut out, (*x).clone());
            } else if py.starts_with(&px) {
                push_unique(&mut out, (*y).clone());
            }
        }
    }
    out
}

fn meet_env(a: &EnvPattern, b: &EnvPattern) -> Option<EnvPattern> {
    match (a.prefix(), b.prefix()) {
        (Some(pa), Some(pb)) => {
            if pa.starts_with(pb) {
                Some(a.clone())
            } else if pb.starts_with(pa) {
                Some(b.clone())
            } else {
                None
            }
        }
        (Some(_), None) => a.matches(b.as_str()).then(|| b.clone()),
        (None, Some(_)) => b.matches(a.as_str()).then(|| a.clone()),
        (None, None) => (a == b).then(|| a.clone()),
    }
}

const SPECIAL_BLOCKS: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
    "100::/64",
];

/// A range `*` may stand for: entirely public addresses.
fn all_public(net: &IpNet) -> bool {
    classify(net.network()) == AddrClass::Public
        && SPECIAL_BLOCKS
            .iter()
            .filter_map(|s| s.parse::<IpNet>().ok())
            .all(|s| !net.contains(&s.network()))
}

fn is_subdomain(host: &str, suffix: &str) -> bool {
    host.len() > suffix.len() + 1
        && host.ends_with(suffix)
        && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
}

fn meet_host(a: &HostPattern, b: &HostPattern) -> Option<HostPattern> {
    use HostPattern::*;
    match (a, b) {
        (Any, x) | (x, Any) => match x {
            // `*` never covers special ranges, so neither does the meet.
            Ip(ip) => (classify(*ip) == AddrClass::Public).then(|| x.clone()),
            Cidr(n) => all_public(n).then(|| x.clone()),
            _ => Some(x.clone()),
        },
        (Exact(h1), Exact(h2)) => (h1 == h2).then(|| a.clone()),
        (Exact(h), Subdomains(s)) | (Subdomains(s), Exact(h)) => {
            is_subdomain(h, s).then(|| Exact(h.clone()))
        }
        (Subdomains(s1), Subdomains(s2)) => {
            if s1 == s2 || is_subdomain(s1, s2) {
                Some(a.clone())
            } else if is_subdomain(s2, s1) {
                Some(b.clone())
            } else {
                None
            }
        }
        (Ip(x), Ip(y)) => (x == y).then(|| a.clone()),
        (Ip(ip), Cidr(n)) | (Cidr(n), Ip(ip)) => n.contains(ip).then_some(Ip(*ip)),
        (Cidr(n1), Cidr(n2)) => {
            if n2.contains(n1) {
                Some(a.clone())
            } else if n1.contains(n2) {
                Some(b.clone())
            } else {
                None
            }
        }
        _ => None,
    }
}

/// The destinations both rules match, when that is a single rule.
pub fn meet_rule(a: &NetRule, b: &NetRule) -> Option<NetRule> {
    let port = match (a.port, b.port) {
        (None, p) | (p, None) => p,
        (Some(x), Some(y)) if x == y => Some(x),
        _ => return None,
    };
    let host = meet_host(&a.host, &b.host)?;
    Some(NetRule { host, port })
}

fn program_allowed_by(p: &Program, other: &Policy) -> bool {
    if other.exec.allow.contains(p) {
        return true;
    }
    !p.is_name()
        && other
            .filesystem
            .exec
            .iter()
            .any(|e| normalize_path(Path::new(p.as_str())).starts_with(normalize_path(e.as_path())))
}

fn readable(f: &super::model::Filesystem) -> Vec<&FsPath> {
    f.read.iter().chain(&f.write).chain(&f.exec).collect()
}

fn min_opt<T: PartialOrd + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y < x { y } else { x }),
        (x, y) => x.or(y),
    }
}

/// What both `policy` and `ceiling` allow.
pub fn intersect(policy: &Policy, ceiling: &Policy) -> Policy {
    let mut out = Policy {
        version: policy.version,
        description: if policy.description.is_empty() {
            "limited by the node's ceiling policy".into()
        } else {
            format!(
                "{} (limited by the node's ceiling policy)",
                policy.description
            )
        },
        ..Policy::default()
    };

    meet_filesystem(&mut out, policy, ceiling);
    meet_programs(&mut out, policy, ceiling);
    meet_network(&mut out, policy, ceiling);
    meet_env_pass(&mut out, policy, ceiling);
    meet_limits(&mut out, policy, ceiling);
    meet_kernel(&mut out, policy, ceiling);
    out
}

/// The filesystem lists of the intersection.
fn meet_filesystem(out: &mut Policy, policy: &Policy, ceiling: &Policy) {
    // Filesystem: write and exec imply read, so compare all readable paths.
    let (a, c) = (&policy.filesystem, &ceiling.filesystem);
    let write = meet_paths(
        &a.write.iter().collect::<Vec<_>>(),
        &c.write.iter().collect::<Vec<_>>(),
    );
    let exec = meet_paths(
        &a.exec.iter().collect::<Vec<_>>(),
        &c.exec.iter().collect::<Vec<_>>(),
    );
    let mut read = meet_paths(&readable(a), &readable(c));
    read.retain(|p| !write.contains(p) && !exec.contains(p));
    out.filesystem.read = read;
    out.filesystem.write = write;
    out.filesystem.exec = exec;
    for d in a.deny.iter().chain(&c.deny) {
        push_unique(&mut out.filesystem.deny, d.clone());
    }
}

/// `exec.allow`: a program either side allows that the other lets run.
fn meet_programs(out: &mut Policy, policy: &Policy, ceiling: &Policy) {
    // Programs.
    for p in &policy.exec.allow {
        if program_allowed_by(p, ceiling) {
            push_unique(&mut out.exec.allow, p.clone());
        }
    }
    for p in &ceiling.exec.allow {
        if program_allowed_by(p, policy) {
            push_unique(&mut out.exec.allow, p.clone());
        }
    }
}

/// The network mode and rules of the intersection.
fn meet_network(out: &mut Policy, policy: &Policy, ceiling: &Policy) {
    // Network.
    out.network.mode = if mode_rank(policy.network.mode) <= mode_rank(ceiling.network.mode) {
        policy.network.mode
    } else {
        ceiling.network.mode
    };
    for x in &policy.network.allow {
        for y in &ceiling.network.allow {
            if let Some(r) = meet_rule(x, y) {
                push_unique(&mut out.network.allow, r);
            }
        }
    }
    for d in policy.network.deny.iter().chain(&ceiling.network.deny) {
        push_unique(&mut out.network.deny, d.clone());
    }
}

/// The environment of the intersection.
fn meet_env_pass(out: &mut Policy, policy: &Policy, ceiling: &Policy) {
    // Environment: fixed values are not rights; the ceiling's win.
    for x in &policy.env.pass {
        for y in &ceiling.env.pass {
            if let Some(m) = meet_env(x, y) {
                push_unique(&mut out.env.pass, m);
            }
        }
    }
    out.env.set = policy.env.set.clone();
    for (k, v) in &ceiling.env.set {
        out.env.set.insert(k.clone(), v.clone());
    }
}

/// Resources and broker defaults: the stricter of each.
fn meet_limits(out: &mut Policy, policy: &Policy, ceiling: &Policy) {
    // Limits.
    let (ra, rc) = (&policy.resources, &ceiling.resources);
    out.resources.memory = min_opt(ra.memory, rc.memory);
    out.resources.pids = min_opt(ra.pids, rc.pids);
    out.resources.cpu = min_opt(ra.cpu, rc.cpu);
    out.resources.timeout = min_opt(ra.timeout, rc.timeout);
    out.resources.output = min_opt(ra.output, rc.output);
    out.resources.open_files = min_opt(ra.open_files, rc.open_files);

    // Broker: deny < ask < allow.
    let (ba, bc) = (&policy.broker, &ceiling.broker);
    out.broker.fs_read = ba.fs_read.min(bc.fs_read);
    out.broker.fs_write = ba.fs_write.min(bc.fs_write);
    out.broker.list_dir = ba.list_dir.min(bc.list_dir);
    out.broker.net_connect = ba.net_connect.min(bc.net_connect);
    out.broker.exec = ba.exec.min(bc.exec);
}

/// The kernel settings of `out` become the stricter of `policy`'s and
/// `reference`'s: `isolation` field by field ([`super::model::Isolation::meet`]),
/// `resources.core` the smaller, `landlock` required > best-effort > off.
/// An annotation policy meets the node's reference with this even when
/// no ceiling is configured (`PolicySources::resolve`).
pub fn meet_kernel(out: &mut Policy, policy: &Policy, reference: &Policy) {
    out.isolation = policy.isolation.meet(&reference.isolation);
    out.resources.core = min_opt(policy.resources.core, reference.resources.core);
    out.landlock = if policy.landlock.rank() >= reference.landlock.rank() {
        policy.landlock
    } else {
        reference.landlock
    };
}

/// Is `ip` reachable under both policies' rules? (Helper for tests and
/// the proxy.)
pub fn both_allow_ip(a: &Policy, b: &Policy, ip: IpAddr, port: u16) -> bool {
    let s = ip.to_string();
    a.network.decide(&s, port) == super::net::NetDecision::Allow
        && b.network.decide(&s, port) == super::net::NetDecision::Allow
}

/// A right an annotation policy asks for that the node's reference policy
/// (its ceiling, else its default policy) does not grant. The proxy and the
/// broker act from the host's network namespace, so these reach the node
/// itself, whatever the bundle's own namespaces say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BeyondNode {
    /// `network.mode: host`: no network isolation.
    HostNetwork,
    /// `network.mode: bundle`: the bundle's own network, no proxy.
    BundleNetwork,
    /// `network.mode: pod`: the pod's network (its loopback, its IP, the
    /// cluster) with egress through the proxy.
    PodNetwork,
    /// `network.allow[index]` names loopback, private, link-local,
    /// metadata or other special addresses.
    SpecialDestination {
        index: usize,
        rule: NetRule,
        class: AddrClass,
    },
    /// `network.allow[index]` names one of the node's own addresses.
    HostAddress { index: usize, rule: NetRule },
    /// `broker.<field>` grants more than the node's (deny < ask < allow).
    Broker {
        field: &'static str,
        asked: BrokerRule,
        node: BrokerRule,
    },
}

impl fmt::Display for BeyondNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BeyondNode::HostNetwork => {
                f.write_str("network.mode \"host\" (no network isolation) is asked for")
            }
            BeyondNode::BundleNetwork => f.write_str(
                "network.mode \"bundle\" (the bundle's own network, no proxy) is asked for",
            ),
            BeyondNode::PodNetwork => f.write_str(
                "network.mode \"pod\" (the pod's network: its loopback, its address and the cluster) is asked for",
            ),
            BeyondNode::SpecialDestination { index, rule, class } => {
                let what = match &rule.host {
                    HostPattern::Cidr(n) if n.prefix_len() < n.max_prefix_len() => "covers",
                    _ => "names",
                };
                write!(
                    f,
                    "network.allow[{index}] {:?} {what} a {} address",
                    rule.to_string(),
                    class.describe()
                )
            }
            BeyondNode::HostAddress { index, rule } => write!(
                f,
                "network.allow[{index}] {:?} names an address of this host",
                rule.to_string()
            ),
            BeyondNode::Broker { field, asked, node } => write!(
                f,
                "broker.{field} is {:?} (the node's is {:?})",
                asked.as_str(),
                node.as_str()
            ),
        }
    }
}

/// Does `node` grant everything `r` does (ports included)? `*` never
/// covers special addresses ([`meet_rule`]).
fn node_covers(node: &Policy, r: &NetRule) -> bool {
    node.network
        .allow
        .iter()
        .any(|n| meet_rule(r, n).as_ref() == Some(r))
}

/// The class of the first special block `net` overlaps, if any.
fn special_class(net: &IpNet) -> Option<AddrClass> {
    if all_public(net) {
        return None;
    }
    let c = classify(net.network());
    if c != AddrClass::Public {
        return Some(c);
    }
    SPECIAL_BLOCKS
        .iter()
        .filter_map(|s| s.parse::<IpNet>().ok())
        .find(|s| net.contains(&s.network()) || s.contains(&net.network()))
        .map(|s| classify(s.network()))
        .or(Some(AddrClass::Reserved))
}

/// The first right `policy` (an annotation policy, already intersected
/// with any ceiling) asks for beyond `node` that reaches the node itself:
/// host networking, special or own (`own`) addresses in `network.allow`,
/// and broker rules above the node's. Names in `network.allow` are not
/// checked here: what they resolve to is checked at every connection.
pub fn beyond_node(policy: &Policy, node: &Policy, own: &HostAddrs) -> Option<BeyondNode> {
    if policy.network.mode == NetMode::Host && node.network.mode != NetMode::Host {
        return Some(BeyondNode::HostNetwork);
    }
    // The bundle's network namespace is whatever the bundle (that is, the
    // annotation's author) joined: only a node that gives it may.
    if policy.network.mode == NetMode::Bundle && !node.network.mode.is_open() {
        return Some(BeyondNode::BundleNetwork);
    }
    // The pod's namespace reaches in-cluster addresses no proxy decides on
    // (direct connects to declared ports at any address, the siblings'
    // loopback): only where the node's own mode is at least as open.
    if policy.network.mode == NetMode::Pod && mode_rank(node.network.mode) < mode_rank(NetMode::Pod)
    {
        return Some(BeyondNode::PodNetwork);
    }
    // In `pod` mode the supervisor connects from the pod's namespace (its
    // `127.0.0.1` is the pod's loopback), otherwise from the node's (its
    // `127.0.0.1` is the node's): special and own addresses a `pod`-mode
    // node grants never cover an annotation policy in another mode.
    let other_side;
    let node = if node.network.mode != NetMode::Pod || policy.network.mode == NetMode::Pod {
        node
    } else {
        other_side = Policy {
            network: super::model::Network {
                allow: Vec::new(),
                ..node.network.clone()
            },
            ..node.clone()
        };
        &other_side
    };
    for (index, r) in policy.network.allow.iter().enumerate() {
        if let Some(beyond) = rule_beyond_node(index, r, node, own) {
            return Some(beyond);
        }
    }
    broker_beyond_node(policy, node)
}

/// Whether `network.allow[index]` reaches a special destination or one of
/// the node's own addresses that `node` does not grant.
fn rule_beyond_node(
    index: usize,
    r: &NetRule,
    node: &Policy,
    own: &HostAddrs,
) -> Option<BeyondNode> {
    // A single-address range is that address (`NetRule::is_exactly`).
    let single = match &r.host {
        HostPattern::Ip(ip) => Some(*ip),
        HostPattern::Cidr(n) if n.prefix_len() == n.max_prefix_len() => Some(n.addr()),
        _ => None,
    };
    let class = match (&r.host, single) {
        (_, Some(ip)) => Some(classify(ip)).filter(|c| *c != AddrClass::Public),
        (HostPattern::Cidr(n), None) => special_class(n),
        _ => None,
    };
    if let Some(class) = class {
        if !node_covers(node, r) {
            return Some(BeyondNode::SpecialDestination {
                index,
                rule: r.clone(),
                class,
            });
        }
    }
    // The node's own addresses are reached only through an entry that
    // is that address (`Network::decide_resolved`): the node must have
    // written that very entry.
    if let Some(ip) = single.filter(|ip| own.contains(*ip)) {
        let named = node
            .network
            .allow
            .iter()
            .any(|n| n.is_exactly(ip) && n.port.is_none_or(|p| Some(p) == r.port));
        if !named {
            return Some(BeyondNode::HostAddress {
                index,
                rule: r.clone(),
            });
        }
    }
    None
}

/// Whether the broker defaults ask for more than `node` gives.
fn broker_beyond_node(policy: &Policy, node: &Policy) -> Option<BeyondNode> {
    let (a, n) = (&policy.broker, &node.broker);
    for (field, asked, node) in [
        ("fs_read", a.fs_read, n.fs_read),
        ("fs_write", a.fs_write, n.fs_write),
        ("list_dir", a.list_dir, n.list_dir),
        ("net_connect", a.net_connect, n.net_connect),
        ("exec", a.exec, n.exec),
    ] {
        // `ask` puts the sandbox's question to the node's approver: the
        // node must ask (or allow) itself.
        if asked > node {
            return Some(BeyondNode::Broker { field, asked, node });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{
        parse_policy, BrokerRule, FsAccess, FsDecision, LandlockRequirement, NetDecision,
        SeccompChoice,
    };

    fn p(s: &str) -> Policy {
        parse_policy(s, "t").unwrap()
    }

    #[test]
    fn paths_keep_the_narrower_grant() {
        let a = p(
            r#"{"version":1,"filesystem":{"read":["/usr","/home/me"],"write":["/tmp","/data"],"deny":["/usr/secret"]}}"#,
        );
        let c = p(
            r#"{"version":1,"filesystem":{"read":["/usr/lib","/data"],"write":["/tmp/x"],"deny":["/data/keys"]}}"#,
        );
        let i = intersect(&a, &c);
        let fs = &i.filesystem;
        assert_eq!(
            fs.decide(Path::new("/usr/lib/libc.so"), FsAccess::Read),
            FsDecision::Allow
        );
        assert_eq!(
            fs.decide(Path::new("/usr/bin/sh"), FsAccess::Read),
            FsDecision::NotGranted
        );
        assert_eq!(
            fs.decide(Path::new("/home/me/x"), FsAccess::Read),
            FsDecision::NotGranted
        );
        // Write in the policy but only read in the ceiling: read only.
        assert_eq!(
            fs.decide(Path::new("/data/f"), FsAccess::Read),
            FsDecision::Allow
        );
        assert_eq!(
            fs.decide(Path::new("/data/f"), FsAccess::Write),
            FsDecision::NotGranted
        );
        assert_eq!(
            fs.decide(Path::new("/tmp/x/y"), FsAccess::Write),
            FsDecision::Allow
        );
        assert_eq!(
            fs.decide(Path::new("/tmp/z"), FsAccess::Write),
            FsDecision::NotGranted
        );
        // Denies from both sides.
        assert!(matches!(
            fs.decide(Path::new("/usr/secret"), FsAccess::Read),
            FsDecision::DeniedBy(_)
        ));
        assert!(matches!(
            fs.decide(Path::new("/data/keys/k"), FsAccess::Read),
            FsDecision::DeniedBy(_)
        ));
    }

    #[test]
    fn network_meets() {
        let a = p(
            r#"{"version":1,"network":{"mode":"host","allow":["*.example.com:443","10.1.0.0/16"]}}"#,
        );
        let c = p(
            r#"{"version":1,"network":{"mode":"proxy","allow":["pypi.org","*.a.example.com","10.0.0.0/8"],"deny":["bad.a.example.com"]}}"#,
        );
        let i = intersect(&a, &c);
        assert_eq!(i.network.mode, NetMode::Proxy);
        let n = &i.network;
        assert_eq!(n.decide("x.a.example.com", 443), NetDecision::Allow);
        assert!(matches!(
            n.decide("x.a.example.com", 80),
            NetDecision::Deny(_)
        ));
        assert!(matches!(
            n.decide("x.b.example.com", 443),
            NetDecision::Deny(_)
        ));
        assert!(matches!(n.decide("pypi.org", 443), NetDecision::Deny(_)));
        assert!(matches!(
            n.decide("bad.a.example.com", 443),
            NetDecision::Deny(_)
        ));
        assert_eq!(n.decide("10.1.2.3", 5432), NetDecision::Allow);
        assert!(matches!(n.decide("10.2.0.1", 5432), NetDecision::Deny(_)));
        // `*` on one side does not open a private range named on the other.
        let star = p(r#"{"version":1,"network":{"mode":"proxy","allow":["*"]}}"#);
        let private =
            p(r#"{"version":1,"network":{"mode":"proxy","allow":["10.0.0.0/8","0.0.0.0/0"]}}"#);
        let i = intersect(&star, &private);
        assert!(matches!(
            i.network.decide("10.0.0.1", 80),
            NetDecision::Deny(_)
        ));
        assert_eq!(
            intersect(&star, &c).network.decide("pypi.org", 8080),
            NetDecision::Allow
        );
        assert!(!both_allow_ip(
            &star,
            &private,
            "10.0.0.1".parse().unwrap(),
            80
        ));
    }

    #[test]
    fn limits_env_broker_landlock() {
        let a = p(
            r#"{"version":1,"resources":{"memory":"1G","cpu":2},"env":{"pass":["LC_*","PATH","HOME"],"set":{"A":"1","B":"1"}},
                  "broker":{"fs_read":"allow","net_connect":"ask"}}"#,
        );
        let c = p(
            r#"{"version":1,"resources":{"memory":"256M","pids":10},"env":{"pass":["LC_ALL","PATH","H*"],"set":{"B":"2"}},
                  "broker":{"fs_read":"ask","net_connect":"allow"},"landlock":"required"}"#,
        );
        let i = intersect(&a, &c);
        assert_eq!(i.resources.memory.map(|m| m.bytes()), Some(256 << 20));
        assert_eq!(i.resources.cpu.map(|c| c.get()), Some(2.0));
        assert_eq!(i.resources.pids.map(|n| n.get()), Some(10));
        let pass: Vec<_> = i.env.pass.iter().map(|p| p.as_str()).collect();
        assert_eq!(pass, ["LC_ALL", "PATH", "HOME"]);
        assert_eq!(i.env.set.values().cloned().collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(i.broker.fs_read, BrokerRule::Ask);
        assert_eq!(i.broker.net_connect, BrokerRule::Ask);
        assert_eq!(i.landlock, LandlockRequirement::Required);
    }

    #[test]
    fn programs_need_both() {
        let a = p(r#"{"version":1,"exec":{"allow":["python3","/usr/bin/git","/opt/x"]}}"#);
        let c =
            p(r#"{"version":1,"exec":{"allow":["python3"]},"filesystem":{"exec":["/usr/bin"]}}"#);
        let i = intersect(&a, &c);
        let progs: Vec<_> = i.exec.allow.iter().map(|p| p.as_str()).collect();
        assert_eq!(progs, ["python3", "/usr/bin/git"]);
    }

    #[test]
    fn intersection_with_itself_keeps_meaning() {
        for (name, src) in crate::policy::BUILTIN_POLICIES {
            let mut pol = p(src);
            pol.resolve_relative(Path::new("/w"));
            let i = intersect(&pol, &pol);
            assert_eq!(i.network, pol.network, "{name}");
            assert_eq!(i.resources, pol.resources, "{name}");
            for path in [
                "/usr/bin/python3",
                "/tmp/x",
                "/etc/shadow",
                "/w/src/a.py",
                "/root",
            ] {
                for acc in [FsAccess::Read, FsAccess::Write, FsAccess::Exec] {
                    assert_eq!(
                        i.filesystem.decide(Path::new(path), acc) == FsDecision::Allow,
                        pol.filesystem.decide(Path::new(path), acc) == FsDecision::Allow,
                        "{name} {path} {acc:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn annotation_rights_that_reach_the_node_need_the_node() {
        let own = HostAddrs::new(["203.0.113.5".parse::<IpAddr>().unwrap()]);
        let node = p(r#"{"version":1}"#);
        let ann = |net: &str| {
            p(&format!(
                r#"{{"version":1,"network":{{"mode":"proxy","allow":[{net}]}}}}"#
            ))
        };
        let msg = |pol: &Policy, node: &Policy| beyond_node(pol, node, &own).map(|b| b.to_string());
        for (allow, want) in [
            (
                r#""127.0.0.1:18080""#,
                r#"network.allow[0] "127.0.0.1:18080" names a loopback address"#,
            ),
            (
                r#""a.test","169.254.169.254:80""#,
                r#"network.allow[1] "169.254.169.254:80" names a cloud metadata address"#,
            ),
            (
                r#""169.254.0.0/16""#,
                r#"network.allow[0] "169.254.0.0/16" covers a link-local address"#,
            ),
            (
                r#""10.0.0.0/8:443""#,
                r#"network.allow[0] "10.0.0.0/8:443" covers a private address"#,
            ),
            // A public-looking range that holds a private block.
            (
                r#""8.0.0.0/5""#,
                r#"network.allow[0] "8.0.0.0/5" covers a private address"#,
            ),
            (
                r#""[::1]:80""#,
                r#"network.allow[0] "[::1]:80" names a loopback address"#,
            ),
            (
                r#""192.168.1.1/32""#,
                r#"network.allow[0] "192.168.1.1/32" names a private address"#,
            ),
            (
                r#""203.0.113.5:22""#,
                r#"network.allow[0] "203.0.113.5:22" names an address of this host"#,
            ),
        ] {
            assert_eq!(msg(&ann(allow), &node).as_deref(), Some(want), "{allow}");
        }
        // Names, `*` and public addresses are checked at each connection.
        for allow in [
            r#""*""#,
            r#""a.test:443""#,
            r#""*.a.test""#,
            r#""1.1.1.1:53""#,
            r#""localhost""#,
        ] {
            assert_eq!(msg(&ann(allow), &node), None, "{allow}");
        }
        // The node grants: the same entry, a wider one, or any port.
        let wide = p(
            r#"{"version":1,"network":{"mode":"proxy","allow":["127.0.0.0/8","10.0.0.0/8:443","169.254.169.254","203.0.113.5"]}}"#,
        );
        for allow in [
            r#""10.1.0.0/16:443""#,
            r#""169.254.169.254:80""#,
            r#""203.0.113.5:22""#,
        ] {
            assert_eq!(msg(&ann(allow), &wide), None, "{allow}");
        }
        // ... but not another port, nor (for the host's own addresses,
        // loopback included) a range: the node must name the address.
        assert!(msg(&ann(r#""10.1.0.0/16:80""#), &wide).is_some());
        assert_eq!(
            msg(&ann(r#""127.0.0.1:18080""#), &wide).as_deref(),
            Some(r#"network.allow[0] "127.0.0.1:18080" names an address of this host"#)
        );
        let exact = p(r#"{"version":1,"network":{"allow":["127.0.0.1:18080"]}}"#);
        assert_eq!(msg(&ann(r#""127.0.0.1:18080""#), &exact), None);
        assert!(
            msg(&ann(r#""127.0.0.1""#), &exact).is_some(),
            "any port is more than one"
        );
    }

    #[test]
    fn annotation_host_network_and_broker_need_the_node() {
        let own = HostAddrs::default();
        let none = p(r#"{"version":1}"#);
        let host = p(r#"{"version":1,"network":{"mode":"host"}}"#);
        let b = beyond_node(&host, &none, &own);
        assert_eq!(b, Some(BeyondNode::HostNetwork));
        assert_eq!(beyond_node(&host, &host, &own), None);
        let asks = p(r#"{"version":1,"broker":{"fs_read":"ask","net_connect":"ask"}}"#);
        let allows = p(r#"{"version":1,"broker":{"net_connect":"allow"}}"#);
        assert_eq!(
            beyond_node(&allows, &none, &own)
                .map(|b| b.to_string())
                .as_deref(),
            Some(r#"broker.net_connect is "allow" (the node's is "deny")"#)
        );
        assert_eq!(
            beyond_node(&asks, &none, &own),
            Some(BeyondNode::Broker {
                field: "fs_read",
                asked: BrokerRule::Ask,
                node: BrokerRule::Deny
            })
        );
        // `ask` needs the node to ask (or allow); `allow` needs `allow`.
        assert_eq!(beyond_node(&asks, &asks, &own), None);
        assert!(beyond_node(&allows, &asks, &own).is_some());
        assert_eq!(
            beyond_node(&asks, &allows, &own)
                .map(|b| b.to_string())
                .as_deref(),
            Some(r#"broker.fs_read is "ask" (the node's is "deny")"#)
        );
        // Taking rights away is always fine.
        assert_eq!(beyond_node(&none, &host, &own), None);
    }

    #[test]
    fn a_pod_nodes_loopback_is_the_pods_and_never_the_nodes() {
        let own = HostAddrs::default();
        let node =
            p(r#"{"version":1,"network":{"mode":"pod","allow":["127.0.0.1","10.0.0.0/8"]}}"#);
        let in_pod = p(
            r#"{"version":1,"network":{"mode":"pod","allow":["127.0.0.1:8080","10.1.2.3:5432"]}}"#,
        );
        assert_eq!(beyond_node(&in_pod, &node, &own), None);
        // The same entries in `proxy` mode would be the node's loopback and
        // reached from the node: the pod node's entries do not cover them.
        let on_node = p(r#"{"version":1,"network":{"mode":"proxy","allow":["127.0.0.1:8080"]}}"#);
        assert_eq!(
            beyond_node(&on_node, &node, &own)
                .map(|b| b.to_string())
                .as_deref(),
            Some(r#"network.allow[0] "127.0.0.1:8080" names a loopback address"#)
        );
        // A node-side grant covers the pod's side.
        let host_node =
            p(r#"{"version":1,"network":{"mode":"host","allow":["0.0.0.0/0","127.0.0.1"]}}"#);
        assert_eq!(beyond_node(&in_pod, &host_node, &own), None);
    }

    #[test]
    fn kernel_settings_meet_to_the_stricter() {
        let a = p(r#"{"version":1,"landlock":"off","resources":{"core":"1M"},
            "isolation":{"capabilities":{"keep":["CHOWN","SETUID","KILL"],"drop":["NET_RAW"]},
            "namespaces":["pid"],"read_only_root":true}}"#);
        let c = p(r#"{"version":1,"resources":{"core":0},
            "isolation":{"capabilities":{"keep":["CHOWN","KILL"],"drop":["SYS_ADMIN"]},
            "namespaces":["ipc","pid"],"seccomp":"buntime","no_new_privileges":true,
            "private_tmp":true,"mask_kernel_paths":true}}"#);
        for i in [intersect(&a, &c), intersect(&c, &a)] {
            let iso = &i.isolation;
            let keep: Vec<&str> = iso
                .capabilities
                .keep
                .iter()
                .flatten()
                .map(|c| c.as_str())
                .collect();
            assert_eq!(keep.len(), 2);
            assert!(
                keep.contains(&"CHOWN") && keep.contains(&"KILL"),
                "{keep:?}"
            );
            let mut drop: Vec<&str> = iso.capabilities.drop.iter().map(|c| c.as_str()).collect();
            drop.sort();
            assert_eq!(drop, ["NET_RAW", "SYS_ADMIN"]);
            assert_eq!(iso.namespaces.len(), 2);
            assert!(iso.read_only_root && iso.no_new_privileges);
            assert!(iso.private_tmp && iso.mask_kernel_paths);
            assert_eq!(iso.seccomp, SeccompChoice::Buntime);
            assert_eq!(i.resources.core.map(|c| c.bytes()), Some(0));
            assert_eq!(i.landlock, LandlockRequirement::BestEffort);
        }
        // Only one side keeps a list: that list; neither: the bundle's sets.
        let open = p(r#"{"version":1,"landlock":"off"}"#);
        let i = intersect(&open, &a);
        assert_eq!(
            i.isolation.capabilities.keep.as_ref().map(Vec::len),
            Some(3)
        );
        assert_eq!(i.landlock, LandlockRequirement::Off);
        assert_eq!(i.resources.core.map(|c| c.bytes()), Some(1 << 20));
        let i = intersect(&open, &open);
        assert!(i.isolation.is_default());
        assert!(i.resources.core.is_none());
        let req = p(r#"{"version":1,"landlock":"required"}"#);
        assert_eq!(
            intersect(&open, &req).landlock,
            LandlockRequirement::Required
        );
    }

    #[test]
    fn bundle_network_needs_an_open_node() {
        let own = HostAddrs::default();
        let ann = p(r#"{"version":1,"network":{"mode":"bundle"}}"#);
        let none = p(r#"{"version":1}"#);
        assert_eq!(
            beyond_node(&ann, &none, &own),
            Some(BeyondNode::BundleNetwork)
        );
        let node = p(r#"{"version":1,"network":{"mode":"bundle"}}"#);
        assert_eq!(beyond_node(&ann, &node, &own), None);
        let host = p(r#"{"version":1,"network":{"mode":"host"}}"#);
        assert_eq!(beyond_node(&ann, &host, &own), None);
        assert_eq!(
            beyond_node(&host, &node, &own),
            Some(BeyondNode::HostNetwork)
        );
        // `pod` (the pod's network, the cluster) only where the node's
        // own mode is at least as open.
        let pod = p(r#"{"version":1,"network":{"mode":"pod","allow":["1.1.1.1:443"]}}"#);
        let proxy = p(r#"{"version":1,"network":{"mode":"proxy","allow":["*"]}}"#);
        for node in [&none, &proxy] {
            assert_eq!(beyond_node(&pod, node, &own), Some(BeyondNode::PodNetwork));
        }
        assert_eq!(beyond_node(&pod, &pod, &own), None);
        assert_eq!(beyond_node(&pod, &node, &own), None);
        // A ceiling in `bundle` mode narrows `host` to `bundle`.
        assert_eq!(intersect(&host, &node).network.mode, NetMode::Bundle);
        assert_eq!(intersect(&node, &none).network.mode, NetMode::None);
    }
}
