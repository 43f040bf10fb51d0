//! `decide` against the rules it replaces: unit cases for each kind of
//! request, and property tests that compare it, on random policies and
//! requests, with the supervisor's decision as it was computed before
//! (`Filesystem::decide` and a second walk for the grant; `Network::decide`,
//! then `decide_resolved` on a clone with a `*` entry; `may_exec`), so the
//! audit's rule and the refusal's text stay what they were.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::*;
use crate::policy::model::{normalize_path, FsPath, NetMode, Policy, Program};
use crate::policy::net::{Dest, HostAddrs, NetDecision, NetRule};
use crate::policy::paths::{covers, FsDecision, FsField};

fn policy(json: &str) -> Policy {
    crate::policy::parse_policy(json, "p.json").expect("test policy")
}

fn fs(p: &Policy, op: FsOp, path: &str) -> Decision {
    decide(
        p,
        &Request::Fs {
            op,
            path: Path::new(path),
        },
        None,
    )
}

/// (rule as audited, refusal text), `None` text when allowed.
fn audited(d: &Decision) -> (String, Option<String>) {
    let why = match &d.verdict {
        Verdict::Deny(w) => Some(w.to_string()),
        _ => None,
    };
    (d.rule.to_string(), why)
}

#[test]
fn filesystem_grants_name_the_entry_and_deny_wins() {
    let p = policy(
        r#"{"version":1,"filesystem":{"read":["/usr"],"write":["/tmp/w"],
            "exec":["/opt/bin"],"deny":["/usr/secret","/etc/shadow*"]}}"#,
    );
    let d = fs(&p, FsOp::Read, "/usr/lib/x.so");
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(
        d.rule,
        RuleRef::FsGrant {
            field: FsField::Read,
            path: PathBuf::from("/usr")
        }
    );
    assert_eq!(d.rule.to_string(), "filesystem.read /usr");
    // Reading a writable or executable tree names that entry.
    assert_eq!(
        fs(&p, FsOp::ListDir, "/tmp/w/a").rule.to_string(),
        "filesystem.write /tmp/w"
    );
    assert_eq!(
        fs(&p, FsOp::Read, "/opt/bin/x").rule.to_string(),
        "filesystem.exec /opt/bin"
    );
    // Writing needs a write entry.
    assert_eq!(
        audited(&fs(&p, FsOp::Write, "/usr/x")),
        ("default".into(), Some("not granted by the policy".into()))
    );
    let d = fs(&p, FsOp::Read, "/usr/secret/k");
    assert_eq!(
        audited(&d),
        (
            "filesystem.deny /usr/secret".into(),
            Some("denied by the policy".into())
        )
    );
    assert!(!d.grantable_by_broker);
    assert_eq!(
        fs(&p, FsOp::Read, "/etc/shadow-").rule.to_string(),
        "filesystem.deny /etc/shadow*"
    );
    // Lexically normalised first: `..` does not escape a deny entry.
    assert_eq!(
        fs(&p, FsOp::Read, "/usr/lib/../secret/k").rule,
        RuleRef::FsDeny("/usr/secret".into())
    );
    assert_eq!(
        audited(&fs(&p, FsOp::Read, "usr/lib")),
        ("default".into(), Some("path must be absolute".into()))
    );
}

#[test]
fn the_broker_section_decides_what_no_rule_grants() {
    let p = policy(
        r#"{"version":1,"filesystem":{"deny":["/secret"]},
            "broker":{"fs_read":"ask","list_dir":"allow","exec":"allow"}}"#,
    );
    let d = fs(&p, FsOp::Read, "/data/x");
    assert_eq!(d.verdict, Verdict::Ask);
    assert!(d.grantable_by_broker);
    assert_eq!(d.rule.to_string(), "broker.fs_read=ask");
    let d = fs(&p, FsOp::ListDir, "/data");
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(d.rule.to_string(), "broker.list_dir=allow");
    let d = fs(&p, FsOp::Write, "/data/x");
    assert_eq!(audited(&d).1.as_deref(), Some("not granted by the policy"));
    assert!(d.grantable_by_broker);
    // Never what a deny entry covers.
    let d = fs(&p, FsOp::ListDir, "/secret/a");
    assert!(matches!(d.verdict, Verdict::Deny(Denial::DeniedByPolicy)));
    assert!(!d.grantable_by_broker);
    let exec = |prog: &str| {
        let r = Request::Exec {
            program: Path::new(prog),
            path_var: "/usr/bin",
        };
        decide(&p, &r, None)
    };
    assert_eq!(exec("/bin/ls").rule.to_string(), "broker.exec=allow");
    assert_eq!(
        exec("/secret/x").rule.to_string(),
        "filesystem.deny /secret"
    );
}

#[test]
fn exec_rules_grant_by_path_or_by_name_in_path() {
    let p = policy(
        r#"{"version":1,"filesystem":{"exec":["/opt/bin"],"deny":["/opt/bin/bad"]},
            "exec":{"allow":["python3","/usr/local/bin/tool"]}}"#,
    );
    let exec = |prog: &str, path_var: &str| {
        let r = Request::Exec {
            program: Path::new(prog),
            path_var,
        };
        audited(&decide(&p, &r, None))
    };
    let allowed = ("exec rules".to_string(), None);
    assert_eq!(exec("/opt/bin/x", ""), allowed);
    assert_eq!(exec("/usr/bin/python3", "/bin:/usr/bin"), allowed);
    assert_eq!(exec("/usr/local/bin/tool", ""), allowed);
    let refused = (
        "default".to_string(),
        Some("not granted by the policy".to_string()),
    );
    assert_eq!(exec("/tmp/python3", "/bin:/usr/bin"), refused);
    assert_eq!(
        exec("/opt/bin/bad", ""),
        (
            "filesystem.deny /opt/bin/bad".to_string(),
            Some("denied by the policy".to_string())
        )
    );
}

fn net(p: &Policy, host: &str, port: u16, res: Option<(&[IpAddr], &HostAddrs)>) -> Decision {
    let r = res.map(|(addrs, own)| Resolved { addrs, own });
    decide(p, &Request::Net { host, port }, r.as_ref())
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

#[test]
fn network_by_name_then_by_address() {
    let p = policy(
        r#"{"version":1,"network":{"mode":"none","allow":["pypi.org:443","10.1.0.0/16"],
            "deny":["evil.test","1.2.3.0/24"]}}"#,
    );
    let own = HostAddrs::new([ip("203.0.113.9")]);
    // Decided as for the proxy whatever the sandbox's mode.
    let d = net(&p, "pypi.org", 443, None);
    assert_eq!(d.verdict, Verdict::Lookup);
    let public = [ip("151.101.0.223")];
    let d = net(&p, "pypi.org", 443, Some((&public, &own)));
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(d.rule.to_string(), "network.allow pypi.org:443");
    // A special address refused, and which one.
    let two = [ip("151.101.0.223"), ip("10.0.0.7")];
    let d = net(&p, "pypi.org", 443, Some((&two, &own)));
    assert_eq!(d.rule, RuleRef::Network);
    assert_eq!(d.addr, Some(1));
    assert_eq!(
        audited(&d).1.as_deref(),
        Some("private address; only reachable when an allow entry names it")
    );
    let d = net(&p, "evil.test", 80, None);
    assert_eq!(
        audited(&d),
        (
            "network.deny evil.test".into(),
            Some("denied by network.deny entry \"evil.test\"".into())
        )
    );
    let d = net(&p, "pypi.org", 443, Some((&[ip("1.2.3.4")], &own)));
    assert_eq!(d.rule.to_string(), "network.deny 1.2.3.0/24");
    let d = net(&p, "pypi.org", 443, Some((&[ip("203.0.113.9")], &own)));
    assert!(matches!(
        d.verdict,
        Verdict::Deny(Denial::Net(NetDenyReason::HostAddress))
    ));
    assert_eq!(
        audited(&net(&p, "127.1", 80, None)),
        (
            "network".into(),
            Some("127.1 is an address in a non-standard form: write it as a.b.c.d".into())
        )
    );
    // Nothing to ask: refused by name, before any lookup.
    let d = net(&p, "example.com", 443, None);
    assert_eq!(
        audited(&d),
        (
            "network".into(),
            Some("no network.allow entry matches".into())
        )
    );
    assert!(d.grantable_by_broker);
}

#[test]
fn the_broker_may_grant_names_before_the_lookup_never_special_addresses() {
    let p = policy(r#"{"version":1,"broker":{"net_connect":"ask"}}"#);
    let own = HostAddrs::default();
    let d = net(&p, "example.com", 443, None);
    assert_eq!(d.verdict, Verdict::Ask);
    assert_eq!(d.rule.to_string(), "broker.net_connect=ask");
    let d = net(&p, "example.com", 443, Some((&[ip("93.184.216.34")], &own)));
    assert_eq!(d.verdict, Verdict::Ask);
    let d = net(
        &p,
        "example.com",
        443,
        Some((&[ip("169.254.169.254")], &own)),
    );
    assert_eq!(d.rule, RuleRef::Network);
    assert!(!d.grantable_by_broker);
    // An address is asked about once it is checked as one.
    let d = net(&p, "93.184.216.34", 443, None);
    assert_eq!(d.verdict, Verdict::Lookup);
    let d = net(
        &p,
        "93.184.216.34",
        443,
        Some((&[ip("93.184.216.34")], &own)),
    );
    assert_eq!(d.verdict, Verdict::Ask);
}

#[test]
fn rules_read_back_from_the_log_are_the_same_rules() {
    for text in [
        "default",
        "filesystem.deny /etc/shadow*",
        "filesystem.read /usr",
        "filesystem.write /tmp/a b",
        "filesystem.exec /opt/bin",
        "network.deny *:25",
        "network.deny [2001:db8::/32]:443",
        "network",
        "network.allow pypi.org:443",
        "network.allow ",
        "exec rules",
        "broker.fs_read=ask",
        "broker.net_connect=allow",
        "resources.output",
        "resources.timeout",
        "audit quota",
        "proxy",
        "limits",
    ] {
        let r: RuleRef = text.parse().unwrap_or_default();
        assert!(!matches!(r, RuleRef::Other(_)), "{text}: {r:?}");
        assert_eq!(r.to_string(), text);
        let json = serde_json::to_string(&r).expect("serialize");
        assert_eq!(json, serde_json::to_string(text).expect("serialize"));
        assert_eq!(serde_json::from_str::<RuleRef>(&json).ok(), Some(r));
    }
    for odd in ["network.deny not a rule", "filesystem.other /x", "x"] {
        let r: RuleRef = odd.parse().unwrap_or_default();
        assert_eq!(r, RuleRef::Other(odd.into()));
        assert_eq!(r.to_string(), odd);
    }
}

// ---- the decision as the supervisor computed it before `decide` ----

/// `static_grant` of the old `serve.rs`.
fn old_static_grant(p: &Policy, path: &Path, access: FsAccess) -> Option<String> {
    let f = &p.filesystem;
    let lists: &[(&str, &Vec<FsPath>)] = match access {
        FsAccess::Write => &[("write", &f.write)],
        _ => &[("read", &f.read), ("write", &f.write), ("exec", &f.exec)],
    };
    lists.iter().find_map(|(name, list)| {
        list.iter().find_map(|e| {
            let t = normalize_path(e.as_path());
            covers(&t, path).then(|| format!("filesystem.{name} {}", t.display()))
        })
    })
}

/// The old broker step with `ask` taken as granted.
fn old_broker(p: &Policy, op: BrokerOp) -> (String, Option<String>) {
    match p.broker.rule(op) {
        crate::policy::BrokerRule::Deny => {
            ("default".into(), Some("not granted by the policy".into()))
        }
        r => (format!("broker.{}={}", op.as_str(), r.as_str()), None),
    }
}

fn old_fs(p: &Policy, op: FsOp, raw: &str) -> (String, Option<String>) {
    let path = Path::new(raw);
    if !path.is_absolute() {
        return ("default".into(), Some("path must be absolute".into()));
    }
    let n = normalize_path(path);
    match p.filesystem.decide(&n, op.access()) {
        FsDecision::DeniedBy(d) => (
            format!("filesystem.deny {}", d.display()),
            Some("denied by the policy".into()),
        ),
        FsDecision::Allow => match old_static_grant(p, &n, op.access()) {
            Some(rule) => (rule, None),
            None => ("default".into(), Some("not granted by the policy".into())),
        },
        FsDecision::NotGranted => old_broker(p, op.broker_op()),
    }
}

fn old_exec(p: &Policy, prog: &Path, path_var: &str) -> (String, Option<String>) {
    if let FsDecision::DeniedBy(d) = p.filesystem.decide(prog, FsAccess::Exec) {
        return (
            format!("filesystem.deny {}", d.display()),
            Some("denied by the policy".into()),
        );
    }
    if p.may_exec(prog, path_var) {
        return ("exec rules".into(), None);
    }
    old_broker(p, BrokerOp::Exec)
}

/// The old `net_check` with `ask` taken as granted: (rule, refusal,
/// index of the address the refusal is about, when after the lookup).
fn old_net(
    p: &Policy,
    host: &str,
    port: u16,
    ips: &[IpAddr],
    own: &HostAddrs,
) -> (String, Option<String>, Option<usize>) {
    use crate::policy::BrokerRule;
    if crate::policy::numeric_name(host) {
        let why = format!("{host} is an address in a non-standard form: write it as a.b.c.d");
        return ("network".into(), Some(why), None);
    }
    let mut net = p.network.clone();
    net.mode = NetMode::Proxy;
    let hard = |r: NetDenyReason| {
        let rule = match &r {
            NetDenyReason::DeniedBy(x) => format!("network.deny {x}"),
            _ => "network".to_string(),
        };
        (rule, Some(r.to_string()))
    };
    let broker = p.broker.net_connect;
    let asked = format!("broker.net_connect={}", broker.as_str());
    let mut granted = None;
    if let NetDecision::Deny(r) = net.decide(host, port) {
        if r != NetDenyReason::NotAllowed || broker == BrokerRule::Deny {
            let (rule, why) = hard(r);
            return (rule, why, None);
        }
        if matches!(Dest::parse(host), Dest::Name(_)) {
            granted = Some(asked.clone());
        }
    }
    let refused = |net: &crate::policy::Network, r: NetDenyReason| {
        let at = ips
            .iter()
            .position(|a| net.decide_resolved(host, port, &[*a], own) != NetDecision::Allow)
            .unwrap_or(0);
        let (rule, why) = hard(r);
        (rule, why, Some(at))
    };
    match net.decide_resolved(host, port, ips, own) {
        NetDecision::Allow => {
            let dest = Dest::parse(host);
            let by = net
                .allow
                .iter()
                .find(|r| {
                    r.matches(&dest, port) || ips.iter().any(|ip| r.matches(&Dest::Ip(*ip), port))
                })
                .map(|r| r.to_string())
                .unwrap_or_default();
            (format!("network.allow {by}"), None, None)
        }
        NetDecision::Deny(NetDenyReason::NotAllowed) => {
            let mut open = net.clone();
            open.allow.push(NetRule::parse("*").expect("*"));
            match open.decide_resolved(host, port, ips, own) {
                NetDecision::Allow if broker == BrokerRule::Deny => {
                    refused(&net, NetDenyReason::NotAllowed)
                }
                NetDecision::Allow => (granted.unwrap_or(asked), None, None),
                NetDecision::Deny(r) => refused(&open, r),
            }
        }
        NetDecision::Deny(r) => refused(&net, r),
    }
}

/// `decide` as the supervisor now uses it, `ask` taken as granted.
fn new_net(
    p: &Policy,
    host: &str,
    port: u16,
    ips: &[IpAddr],
    own: &HostAddrs,
) -> (String, Option<String>, Option<usize>) {
    let by_name = net(p, host, port, None);
    let granted = match &by_name.verdict {
        Verdict::Deny(w) => return (by_name.rule.to_string(), Some(w.to_string()), None),
        Verdict::Lookup => None,
        _ => Some(by_name.rule.to_string()),
    };
    let d = net(p, host, port, Some((ips, own)));
    match (&d.verdict, granted) {
        (Verdict::Deny(w), _) => (d.rule.to_string(), Some(w.to_string()), d.addr.or(Some(0))),
        (_, Some(g)) if matches!(d.rule, RuleRef::Broker { .. }) => (g, None, None),
        (Verdict::Lookup, _) => ("lookup".into(), None, None),
        _ => (d.rule.to_string(), None, None),
    }
}

const DIRS: &[&str] = &[
    "/usr",
    "/usr/lib",
    "/etc",
    "/etc/shadow*",
    "/data",
    "/data/secret",
    "/tmp",
    "/opt/bin",
    "/",
];
const PATHS: &[&str] = &[
    "/usr/lib/x.so",
    "/usr",
    "/usrx",
    "/etc/shadow-",
    "/etc/passwd",
    "/data/secret/k",
    "/data/x",
    "/tmp/a",
    "/opt/bin/tool",
    "/usr/../etc/shadow",
    "rel/x",
    "/",
];
const NET_ENTRIES: &[&str] = &[
    "*",
    "pypi.org",
    "pypi.org:443",
    "*.example.com",
    "10.0.0.0/8",
    "127.0.0.1",
    "169.254.169.254:80",
    "203.0.113.9:8002",
    "1.2.3.0/24",
    "*:25",
    "evil.example.com",
    "[::1]:8080",
    "93.184.216.0/24",
    "0.0.0.0/0",
];
const HOSTS: &[&str] = &[
    "pypi.org",
    "a.example.com",
    "evil.example.com",
    "example.com",
    "localhost",
    "10.1.2.3",
    "127.0.0.1",
    "169.254.169.254",
    "93.184.216.34",
    "203.0.113.9",
    "::1",
    "127.1",
    "2130706433",
];
const ADDRS: &[&str] = &[
    "93.184.216.34",
    "151.101.0.223",
    "10.0.0.7",
    "127.0.0.1",
    "169.254.169.254",
    "203.0.113.9",
    "1.2.3.4",
    "::1",
    "::ffff:10.0.0.1",
    "2001:db8::9",
];
const PORTS: &[u16] = &[25, 80, 443, 8002, 8080];

fn pick(pool: &'static [&'static str]) -> impl Strategy<Value = Vec<&'static str>> {
    proptest::sample::subsequence(pool.to_vec(), 0..=pool.len().min(4))
}

fn broker_rule() -> impl Strategy<Value = crate::policy::BrokerRule> {
    use crate::policy::BrokerRule;
    prop_oneof![
        Just(BrokerRule::Deny),
        Just(BrokerRule::Ask),
        Just(BrokerRule::Allow)
    ]
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    let fs = (pick(DIRS), pick(DIRS), pick(DIRS), pick(DIRS));
    let net = (pick(NET_ENTRIES), pick(NET_ENTRIES));
    let brokers = proptest::collection::vec(broker_rule(), 5);
    let progs = pick(&["python3", "/usr/local/bin/tool", "tool"]);
    (fs, net, brokers, progs).prop_map(|((r, w, x, d), (allow, deny), b, progs)| {
        let paths = |l: Vec<&str>| {
            l.into_iter()
                .map(|s| FsPath::new(s).expect("path"))
                .collect()
        };
        let rules = |l: Vec<&str>| {
            l.into_iter()
                .map(|s| NetRule::parse(s).expect("rule"))
                .collect()
        };
        let mut p = Policy::default();
        // Grants are paths; a pattern is a deny entry's only.
        let grants = |l: Vec<&str>| paths(l.into_iter().filter(|s| !s.contains('*')).collect());
        p.filesystem.read = grants(r);
        p.filesystem.write = grants(w);
        p.filesystem.exec = grants(x);
        p.filesystem.deny = paths(d);
        p.network.allow = rules(allow);
        p.network.deny = rules(deny);
        (p.broker.fs_read, p.broker.fs_write, p.broker.list_dir) = (b[0], b[1], b[2]);
        (p.broker.net_connect, p.broker.exec) = (b[3], b[4]);
        p.exec.allow = progs
            .into_iter()
            .map(|s| Program::try_from(s.to_string()).expect("program"))
            .collect();
        p
    })
}

fn ask_as_allow(d: &Decision) -> (String, Option<String>) {
    audited(d)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn filesystem_decisions_are_unchanged(
        p in arb_policy(),
        path in proptest::sample::select(PATHS),
        op in prop_oneof![Just(FsOp::Read), Just(FsOp::Write), Just(FsOp::ListDir)],
    ) {
        prop_assert_eq!(ask_as_allow(&fs(&p, op, path)), old_fs(&p, op, path));
    }

    #[test]
    fn exec_decisions_are_unchanged(
        p in arb_policy(),
        prog in proptest::sample::select(&[
            "/usr/bin/python3", "/usr/local/bin/tool", "/opt/bin/tool", "/tmp/python3",
            "/usr/lib/x", "/etc/shadow",
        ][..]),
        path_var in proptest::sample::select(&["", "/usr/bin:/bin", "/opt/bin"][..]),
    ) {
        let r = Request::Exec { program: Path::new(prog), path_var };
        let got = audited(&decide(&p, &r, None));
        prop_assert_eq!(got, old_exec(&p, Path::new(prog), path_var));
    }

    #[test]
    fn network_decisions_are_unchanged(
        p in arb_policy(),
        mode in prop_oneof![Just(NetMode::None), Just(NetMode::Proxy), Just(NetMode::Host)],
        host in proptest::sample::select(HOSTS),
        port in proptest::sample::select(PORTS),
        addrs in proptest::sample::subsequence(ADDRS.to_vec(), 1..=3),
        own in pick(ADDRS),
    ) {
        let mut p = p;
        p.network.mode = mode;
        let ips: Vec<IpAddr> = addrs.iter().map(|a| ip(a)).collect();
        let own = HostAddrs::new(own.iter().map(|a| ip(a)));
        prop_assert_eq!(
            new_net(&p, host, port, &ips, &own),
            old_net(&p, host, port, &ips, &own)
        );
    }

    #[test]
    fn a_deny_entry_is_never_granted_nor_grantable(
        p in arb_policy(),
        path in proptest::sample::select(PATHS),
        op in prop_oneof![Just(FsOp::Read), Just(FsOp::Write), Just(FsOp::ListDir)],
    ) {
        let d = fs(&p, op, path);
        let denied = Path::new(path).is_absolute()
            && matches!(p.filesystem.find(Path::new(path), op.access()), FsMatch::Denied(_));
        if denied {
            prop_assert!(matches!(d.verdict, Verdict::Deny(Denial::DeniedByPolicy)));
            prop_assert!(!d.grantable_by_broker);
        }
        // The broker is consulted exactly when no rule decided.
        prop_assert_eq!(
            matches!(d.rule, RuleRef::Broker { .. }),
            d.grantable_by_broker && !matches!(d.verdict, Verdict::Deny(_))
        );
    }

    #[test]
    fn every_rule_decide_gives_reads_back_from_its_text(
        p in arb_policy(),
        host in proptest::sample::select(HOSTS),
        path in proptest::sample::select(PATHS),
        port in proptest::sample::select(PORTS),
        addrs in proptest::sample::subsequence(ADDRS.to_vec(), 1..=3),
    ) {
        let ips: Vec<IpAddr> = addrs.iter().map(|a| ip(a)).collect();
        let own = HostAddrs::default();
        for d in [
            fs(&p, FsOp::Read, path),
            fs(&p, FsOp::Write, path),
            net(&p, host, port, None),
            net(&p, host, port, Some((&ips, &own))),
        ] {
            let back: RuleRef = d.rule.to_string().parse().unwrap_or_default();
            prop_assert_eq!(back, d.rule);
        }
    }
}

#[test]
fn normalised_paths_read_back() {
    // `PathBuf` keeps what `normalize_path` made of an entry.
    let r = RuleRef::FsDeny(normalize_path(Path::new("/a/./b/../c")));
    assert_eq!(r.to_string(), "filesystem.deny /a/c");
    assert_eq!(r.to_string().parse::<RuleRef>().ok(), Some(r));
}
