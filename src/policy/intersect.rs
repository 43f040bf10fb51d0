//! Intersection of two policies: what both allow. Used to bound an
//! annotation policy by the node's ceiling policy. Deny lists are united,
//! limits take the smaller value, modes the more restrictive one. Both
//! policies should have absolute paths (`Policy::resolve_relative`).

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;

use super::model::{
    normalize_path, EnvPattern, FsPath, LandlockRequirement, NetMode, Policy, Program,
};
use super::net::{classify, AddrClass, HostPattern, NetRule};

fn mode_rank(m: NetMode) -> u8 {
    match m {
        NetMode::None => 0,
        NetMode::Proxy => 1,
        NetMode::Host => 2,
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

    out.landlock = if policy.landlock == LandlockRequirement::Required
        || ceiling.landlock == LandlockRequirement::Required
    {
        LandlockRequirement::Required
    } else {
        LandlockRequirement::BestEffort
    };
    out
}

/// Is `ip` reachable under both policies' rules? (Helper for tests and
/// the proxy.)
pub fn both_allow_ip(a: &Policy, b: &Policy, ip: IpAddr, port: u16) -> bool {
    let s = ip.to_string();
    a.network.decide(&s, port) == super::net::NetDecision::Allow
        && b.network.decide(&s, port) == super::net::NetDecision::Allow
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{parse_policy, BrokerRule, FsAccess, FsDecision, NetDecision};

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
}
