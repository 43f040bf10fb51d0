//! Network rules: the entry grammar (host names, `*.domain`, `host:port`,
//! IP literals, CIDR ranges), matching, and the special address ranges that
//! stay denied unless an entry names them.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use super::model::{NetMode, Network};

mod addr;
mod local;
pub use addr::{classify, AddrClass, HostAddrs};

/// What the host part of a rule matches.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `*`: any host name and any public address.
    Any,
    /// An exact host name (lower case, no trailing dot).
    Exact(String),
    /// `*.example.com`: strict subdomains of the stored suffix
    /// (`example.com`), not the apex.
    Subdomains(String),
    /// One address (IPv4-mapped IPv6 is stored as IPv4).
    Ip(IpAddr),
    /// An address range (normalised to its network address).
    Cidr(IpNet),
}

/// One `network.allow` / `network.deny` entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NetRule {
    pub host: HostPattern,
    /// `None` matches every port.
    pub port: Option<u16>,
}

const RULE_EXPECTED: &str =
    "expected a host name, \"*.domain\", \"host:port\", an IPv4/IPv6 address or a CIDR range";

/// Map IPv4-mapped (`::ffff:a.b.c.d`) and NAT64 (`64:ff9b::a.b.c.d`)
/// addresses to the IPv4 address they reach, so a range written in one
/// family cannot be sidestepped through the other.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                let o = v6.octets();
                return IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            IpAddr::V6(v6)
        }
        v4 => v4,
    }
}

fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => {
            if let IpAddr::V4(a) = canonical_ip(IpAddr::V6(v6.network())) {
                if let Ok(n) = ipnet::Ipv4Net::new(a, v6.prefix_len() - 96) {
                    return IpNet::V4(n.trunc());
                }
            }
            net.trunc()
        }
        _ => net.trunc(),
    }
}

fn valid_hostname(h: &str) -> bool {
    if h.is_empty() || h.len() > 253 {
        return false;
    }
    h.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

fn normalize_host(h: &str) -> String {
    h.trim_end_matches('.').to_ascii_lowercase()
}

fn parse_host(h: &str) -> Result<HostPattern, String> {
    if h == "*" {
        return Ok(HostPattern::Any);
    }
    if h.contains('/') {
        let net: IpNet = h
            .parse()
            .map_err(|_| format!("{RULE_EXPECTED}; {h:?} is not a valid CIDR range"))?;
        return Ok(HostPattern::Cidr(canonical_net(net)));
    }
    if let Ok(ip) = h.parse::<IpAddr>() {
        return Ok(HostPattern::Ip(canonical_ip(ip)));
    }
    if let Some(suffix) = h.strip_prefix("*.") {
        let s = normalize_host(suffix);
        if valid_hostname(&s) {
            return Ok(HostPattern::Subdomains(s));
        }
        return Err(format!("{RULE_EXPECTED}; {h:?} is not a valid wildcard"));
    }
    let n = normalize_host(h);
    if valid_hostname(&n) {
        Ok(HostPattern::Exact(n))
    } else {
        Err(format!("{RULE_EXPECTED}, got {h:?}"))
    }
}

fn parse_port(p: &str, whole: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "expected a port between 1 and 65535 in {whole:?}, got {p:?}"
        )),
    }
}

impl NetRule {
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err(RULE_EXPECTED.to_string());
        }
        if let Some(rest) = t.strip_prefix('[') {
            // [v6] or [v6]:port or [v6/len]:port
            let (inner, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{RULE_EXPECTED}; missing ']' in {s:?}"))?;
            let host = parse_host(inner)?;
            if !matches!(host, HostPattern::Ip(_) | HostPattern::Cidr(_)) {
                return Err(format!(
                    "{RULE_EXPECTED}; only IPv6 addresses go in brackets, got {s:?}"
                ));
            }
            let port = match after {
                "" => None,
                a => match a.strip_prefix(':') {
                    Some(p) => Some(parse_port(p, s)?),
                    None => return Err(format!("{RULE_EXPECTED}, got {s:?}")),
                },
            };
            return Ok(NetRule { host, port });
        }
        match t.matches(':').count() {
            0 => Ok(NetRule {
                host: parse_host(t)?,
                port: None,
            }),
            1 => {
                let (h, p) = t.split_once(':').unwrap_or((t, ""));
                Ok(NetRule {
                    host: parse_host(h)?,
                    port: Some(parse_port(p, s)?),
                })
            }
            // Several colons: a bare IPv6 address or range, never a port.
            _ => Ok(NetRule {
                host: parse_host(t)?,
                port: None,
            }),
        }
    }

    fn port_ok(&self, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
    }

    /// Does this rule match the host name `host` (already lower case)?
    fn host_matches_name(&self, host: &str) -> bool {
        match &self.host {
            HostPattern::Any => true,
            HostPattern::Exact(h) => h == host,
            HostPattern::Subdomains(sfx) => {
                host.len() > sfx.len() + 1
                    && host.ends_with(sfx.as_str())
                    && host.as_bytes()[host.len() - sfx.len() - 1] == b'.'
            }
            HostPattern::Ip(_) | HostPattern::Cidr(_) => false,
        }
    }

    /// Does this rule's address part cover `ip` (literal or range)?
    pub fn names_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        match &self.host {
            HostPattern::Ip(a) => *a == ip,
            HostPattern::Cidr(n) => n.contains(&ip),
            _ => false,
        }
    }

    /// In `pod` mode, the port an address or range entry with a port opens
    /// to direct TCP connects (Landlock filters by port only). Names and
    /// entries without a port never do: a name's address is known only
    /// to the proxy, and a whole port range would open everything.
    pub fn direct_port(&self) -> Option<u16> {
        match self.host {
            HostPattern::Ip(_) | HostPattern::Cidr(_) => self.port,
            _ => None,
        }
    }

    /// Is this rule the single address `ip` itself (an address, or a
    /// `/32` / `/128` range)? Ranges, names and `*` are not.
    pub fn is_exactly(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        match &self.host {
            HostPattern::Ip(a) => *a == ip,
            HostPattern::Cidr(n) => n.prefix_len() == n.max_prefix_len() && n.addr() == ip,
            _ => false,
        }
    }

    /// Does the rule match destination `dest` on `port`? `*` matches any
    /// address too; whether a special range is reachable is decided by the
    /// caller.
    pub fn matches(&self, dest: &Dest, port: u16) -> bool {
        if !self.port_ok(port) {
            return false;
        }
        match dest {
            Dest::Name(h) => self.host_matches_name(h),
            Dest::Ip(ip) => matches!(self.host, HostPattern::Any) || self.names_ip(*ip),
        }
    }
}

impl TryFrom<String> for NetRule {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        NetRule::parse(&s)
    }
}

impl From<NetRule> for String {
    fn from(r: NetRule) -> String {
        r.to_string()
    }
}

impl fmt::Display for NetRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v6 = matches!(
            self.host,
            HostPattern::Ip(IpAddr::V6(_)) | HostPattern::Cidr(IpNet::V6(_))
        );
        let host = match &self.host {
            HostPattern::Any => "*".to_string(),
            HostPattern::Exact(h) => h.clone(),
            HostPattern::Subdomains(s) => format!("*.{s}"),
            HostPattern::Ip(ip) => ip.to_string(),
            HostPattern::Cidr(n) => n.to_string(),
        };
        match (self.port, v6) {
            (None, _) => f.write_str(&host),
            (Some(p), true) => write!(f, "[{host}]:{p}"),
            (Some(p), false) => write!(f, "{host}:{p}"),
        }
    }
}

impl JsonSchema for NetRule {
    fn schema_name() -> Cow<'static, str> {
        "NetRule".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A destination: an exact host name, \"*.example.com\" (subdomains only, not the apex), \"*\" (any host), an IPv4/IPv6 address or CIDR range; optionally with \":port\" (\"[v6]:port\" for IPv6).",
            "type": "string",
            "minLength": 1,
            "examples": ["pypi.org", "*.pythonhosted.org:443", "10.0.0.0/8", "[2001:db8::1]:8080"]
        })
    }
}

/// A destination the sandbox asks to reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dest {
    /// A host name, lower case, without trailing dot.
    Name(String),
    /// An address (canonicalised, see [`canonical_ip`]).
    Ip(IpAddr),
}

impl Dest {
    pub fn parse(s: &str) -> Dest {
        let t = s.trim().trim_start_matches('[').trim_end_matches(']');
        match t.parse::<IpAddr>() {
            Ok(ip) => Dest::Ip(canonical_ip(ip)),
            Err(_) => Dest::Name(normalize_host(t)),
        }
    }
}

/// A name that is really an address in a form other than dotted quad
/// (`2130706433`, `127.1`, `0x7f.1`, `0251.0376.0251.0376`): glibc's
/// resolver turns these into addresses without any lookup, so a rule
/// check that took them for names would be checking the wrong thing. A
/// real host name never ends in an all-numeric label (RFC 3696 2).
pub fn numeric_name(host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() {
        return false;
    }
    let last = host
        .trim_end_matches('.')
        .rsplit('.')
        .next()
        .unwrap_or_default();
    let hex = last
        .strip_prefix("0x")
        .or_else(|| last.strip_prefix("0X"))
        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    hex || (!last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()))
}

/// The outcome of a network check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetDecision {
    Allow,
    Deny(NetDenyReason),
}

/// Why a destination was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetDenyReason {
    /// Mode `none`: only the sandbox's own loopback.
    NoNetwork,
    /// A `network.deny` entry matched.
    DeniedBy(NetRule),
    /// The address is loopback/private/link-local/metadata/... and no
    /// entry names it.
    SpecialRange(AddrClass),
    /// The address is one of the host's own ([`HostAddrs`]) and no allow
    /// entry is that very address.
    HostAddress,
    /// No `network.allow` entry matched.
    NotAllowed,
}

impl fmt::Display for NetDenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetDenyReason::NoNetwork => f.write_str("network mode is none"),
            NetDenyReason::DeniedBy(r) => {
                write!(f, "denied by network.deny entry {:?}", r.to_string())
            }
            NetDenyReason::SpecialRange(c) => write!(
                f,
                "{} address; only reachable when an allow entry names it",
                c.describe()
            ),
            NetDenyReason::HostAddress => f.write_str(
                "address of this host; only reachable when a network.allow entry is that address itself",
            ),
            NetDenyReason::NotAllowed => f.write_str("no network.allow entry matches"),
        }
    }
}

fn is_localhost_name(h: &str) -> bool {
    h == "localhost" || h.ends_with(".localhost")
}

impl Network {
    /// `pod` mode: the ports direct TCP connects may reach besides the
    /// proxy's (see [`NetRule::direct_port`]), sorted, once each; a deny
    /// entry does not take one away (it names addresses Landlock cannot
    /// tell apart).
    pub fn direct_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.allow.iter().filter_map(NetRule::direct_port).collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    fn denied_by(&self, dest: &Dest, port: u16) -> Option<NetDecision> {
        self.deny
            .iter()
            .find(|r| r.matches(dest, port))
            .map(|r| NetDecision::Deny(NetDenyReason::DeniedBy(r.clone())))
    }

    fn ip_allowed(&self, ip: IpAddr, port: u16) -> NetDecision {
        let class = classify(ip);
        if class != AddrClass::Public {
            // A special range must be named by an address/CIDR entry; a
            // host-name or `*` entry is not enough (DNS rebinding).
            return if self.allow.iter().any(|r| r.port_ok(port) && r.names_ip(ip)) {
                NetDecision::Allow
            } else {
                NetDecision::Deny(NetDenyReason::SpecialRange(class))
            };
        }
        if self.allow.iter().any(|r| r.matches(&Dest::Ip(ip), port)) {
            NetDecision::Allow
        } else {
            NetDecision::Deny(NetDenyReason::NotAllowed)
        }
    }

    /// May the sandbox connect to `host` (name or address literal) on
    /// `port`? Names are checked as written; use [`Network::decide_resolved`]
    /// once the name is resolved.
    pub fn decide(&self, host: &str, port: u16) -> NetDecision {
        self.decide_in(self.mode, host, port)
    }

    /// [`Network::decide`] as if the mode were `mode` (the supervisor
    /// connects from the host: for it, every mode is `proxy`).
    pub fn decide_in(&self, mode: NetMode, host: &str, port: u16) -> NetDecision {
        let dest = Dest::parse(host);
        let loopback = match &dest {
            Dest::Ip(ip) => classify(*ip) == AddrClass::Loopback,
            Dest::Name(h) => is_localhost_name(h),
        };
        match mode {
            NetMode::None => {
                if loopback {
                    NetDecision::Allow
                } else {
                    NetDecision::Deny(NetDenyReason::NoNetwork)
                }
            }
            NetMode::Bundle | NetMode::Host => {
                self.denied_by(&dest, port).unwrap_or(NetDecision::Allow)
            }
            NetMode::Proxy | NetMode::Pod => {
                if let Some(d) = self.denied_by(&dest, port) {
                    return d;
                }
                match dest {
                    Dest::Ip(ip) => self.ip_allowed(ip, port),
                    Dest::Name(ref h) if is_localhost_name(h) => {
                        self.ip_allowed(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
                    }
                    Dest::Name(_) => {
                        if self.allow.iter().any(|r| r.matches(&dest, port)) {
                            NetDecision::Allow
                        } else {
                            NetDecision::Deny(NetDenyReason::NotAllowed)
                        }
                    }
                }
            }
        }
    }

    /// Like [`Network::decide`], then checks every address `host` resolved
    /// to: deny entries apply to them, special ranges must be named, and
    /// the host's own addresses (`own`) must be named one by one: a range
    /// written for other machines (`10.0.0.0/8`), a name or `*` does not
    /// open the host itself.
    pub fn decide_resolved(
        &self,
        host: &str,
        port: u16,
        addrs: &[IpAddr],
        own: &HostAddrs,
    ) -> NetDecision {
        let first = self.decide(host, port);
        if first != NetDecision::Allow || !self.mode.is_proxied() {
            return first;
        }
        match self.check_addrs(port, addrs, own) {
            Ok(()) => NetDecision::Allow,
            Err((_, r)) => NetDecision::Deny(r),
        }
    }

    /// The checks of every resolved address (see
    /// [`Network::decide_resolved`]): the first refused, by its index.
    pub fn check_addrs(
        &self,
        port: u16,
        addrs: &[IpAddr],
        own: &HostAddrs,
    ) -> Result<(), (usize, NetDenyReason)> {
        for (i, ip) in addrs.iter().enumerate() {
            if let Some(NetDecision::Deny(r)) = self.denied_by(&Dest::Ip(canonical_ip(*ip)), port) {
                return Err((i, r));
            }
            let class = classify(*ip);
            if class != AddrClass::Public
                && !self
                    .allow
                    .iter()
                    .any(|r| r.port_ok(port) && r.names_ip(*ip))
            {
                return Err((i, NetDenyReason::SpecialRange(class)));
            }
            if own.contains(*ip)
                && !self
                    .allow
                    .iter()
                    .any(|r| r.port_ok(port) && r.is_exactly(*ip))
            {
                return Err((i, NetDenyReason::HostAddress));
            }
        }
        Ok(())
    }

    /// The first allow entry matching `host` or one of its addresses.
    pub fn allow_entry(&self, host: &str, port: u16, addrs: &[IpAddr]) -> Option<&NetRule> {
        let dest = Dest::parse(host);
        self.allow.iter().find(|r| {
            r.matches(&dest, port) || addrs.iter().any(|ip| r.matches(&Dest::Ip(*ip), port))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> NetRule {
        NetRule::parse(s).unwrap()
    }

    fn proxy(allow: &[&str], deny: &[&str]) -> Network {
        Network {
            mode: NetMode::Proxy,
            allow: allow.iter().map(|s| rule(s)).collect(),
            deny: deny.iter().map(|s| rule(s)).collect(),
        }
    }

    #[test]
    fn addresses_spelled_as_names_are_recognised() {
        for h in [
            "2130706433",
            "127.1",
            "0x7f.1",
            "0251.0376.0251.0376",
            "10.0.0.1.",
            "0X7F000001",
        ] {
            assert!(numeric_name(h), "{h}");
        }
        for h in [
            "127.0.0.1",
            "::1",
            "example.com",
            "123.example",
            "a-1.b2",
            "web.test",
            "x0x1",
        ] {
            assert!(!numeric_name(h), "{h}");
        }
    }

    #[test]
    fn grammar() {
        assert_eq!(
            rule("PyPI.org.").host,
            HostPattern::Exact("pypi.org".into())
        );
        assert_eq!(rule("pypi.org:443").port, Some(443));
        assert_eq!(
            rule("*.example.com").host,
            HostPattern::Subdomains("example.com".into())
        );
        assert_eq!(rule("[::1]:8080").port, Some(8080));
        assert_eq!(
            rule("[::1]:8080").host,
            HostPattern::Ip("::1".parse().unwrap())
        );
        assert_eq!(rule("fd00::/8").port, None);
        assert_eq!(rule("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(
            rule("::ffff:10.0.0.1").host,
            HostPattern::Ip("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            rule("[2001:db8::/32]:443").to_string(),
            "[2001:db8::/32]:443"
        );
        for bad in [
            "",
            "exa mple.com",
            "host:0",
            "host:70000",
            "host:abc",
            "*.",
            "a.*.com",
            "10.0.0.0/33",
            "[example.com]:80",
            "-bad.com",
            "[::1",
        ] {
            assert!(NetRule::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let e = NetRule::parse("host:99999").unwrap_err();
        assert!(e.contains("expected a port between 1 and 65535"), "{e}");
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "pypi.org",
            "*.example.com:443",
            "10.0.0.0/8",
            "[::1]:22",
            "1.2.3.4:80",
            "*",
        ] {
            assert_eq!(rule(s).to_string(), s);
            assert_eq!(rule(&rule(s).to_string()), rule(s));
        }
    }

    #[test]
    fn wildcard_matches_subdomains_not_apex() {
        let n = proxy(&["*.example.com"], &[]);
        assert_eq!(n.decide("a.example.com", 443), NetDecision::Allow);
        assert_eq!(n.decide("a.b.example.com", 80), NetDecision::Allow);
        assert_eq!(
            n.decide("example.com", 443),
            NetDecision::Deny(NetDenyReason::NotAllowed)
        );
        assert_eq!(
            n.decide("badexample.com", 443),
            NetDecision::Deny(NetDenyReason::NotAllowed)
        );
    }

    #[test]
    fn ports_restrict() {
        let n = proxy(&["pypi.org:443"], &[]);
        assert_eq!(n.decide("pypi.org", 443), NetDecision::Allow);
        assert_eq!(
            n.decide("pypi.org", 80),
            NetDecision::Deny(NetDenyReason::NotAllowed)
        );
        assert_eq!(n.decide("PYPI.ORG.", 443), NetDecision::Allow);
    }

    #[test]
    fn deny_wins_over_allow() {
        let n = proxy(&["*.example.com", "*"], &["evil.example.com", "*:25"]);
        assert_eq!(n.decide("good.example.com", 443), NetDecision::Allow);
        assert!(matches!(
            n.decide("evil.example.com", 443),
            NetDecision::Deny(NetDenyReason::DeniedBy(_))
        ));
        assert!(matches!(
            n.decide("good.example.com", 25),
            NetDecision::Deny(NetDenyReason::DeniedBy(_))
        ));
    }

    #[test]
    fn cidr_v4_and_v6() {
        let n = proxy(&["8.8.0.0/16", "2001:db8::/32"], &[]);
        assert_eq!(n.decide("8.8.4.4", 53), NetDecision::Allow);
        assert_eq!(
            n.decide("8.9.0.1", 53),
            NetDecision::Deny(NetDenyReason::NotAllowed)
        );
        // Public v6 outside the documentation prefix is refused; inside it is allowed.
        assert_eq!(n.decide("2001:db8::5", 443), NetDecision::Allow);
        assert_eq!(n.decide("[2001:db8:1::5]", 443), NetDecision::Allow);
        assert_eq!(
            n.decide("2001:4860::1", 443),
            NetDecision::Deny(NetDenyReason::NotAllowed)
        );
        // A v4 range also covers the IPv4-mapped form.
        assert_eq!(n.decide("::ffff:8.8.8.8", 53), NetDecision::Allow);
    }

    #[test]
    fn special_ranges_denied_unless_named() {
        let n = proxy(&["*"], &[]);
        for (ip, class) in [
            ("127.0.0.1", AddrClass::Loopback),
            ("::1", AddrClass::Loopback),
            ("10.1.2.3", AddrClass::Private),
            ("172.16.5.4", AddrClass::Private),
            ("192.168.1.1", AddrClass::Private),
            ("100.64.0.1", AddrClass::Private),
            ("fd12:3456::1", AddrClass::Private),
            ("169.254.1.1", AddrClass::LinkLocal),
            ("fe80::1", AddrClass::LinkLocal),
            ("169.254.169.254", AddrClass::Metadata),
            ("168.63.129.16", AddrClass::Metadata),
            ("fd00:ec2::254", AddrClass::Metadata),
            ("::ffff:169.254.169.254", AddrClass::Metadata),
            ("::ffff:127.0.0.1", AddrClass::Loopback),
            ("64:ff9b::a9fe:a9fe", AddrClass::Metadata),
            ("0.0.0.0", AddrClass::Unspecified),
            ("::", AddrClass::Unspecified),
            ("224.0.0.1", AddrClass::Multicast),
        ] {
            assert_eq!(classify(ip.parse().unwrap()), class, "{ip}");
            assert_eq!(
                n.decide(ip, 80),
                NetDecision::Deny(NetDenyReason::SpecialRange(class)),
                "{ip}"
            );
        }
        assert_eq!(n.decide("1.1.1.1", 443), NetDecision::Allow);
        assert_eq!(
            n.decide("localhost", 80),
            NetDecision::Deny(NetDenyReason::SpecialRange(AddrClass::Loopback))
        );
        let named = proxy(&["10.0.0.0/8", "169.254.169.254:80", "::1"], &[]);
        assert_eq!(named.decide("10.9.9.9", 5432), NetDecision::Allow);
        assert_eq!(named.decide("169.254.169.254", 80), NetDecision::Allow);
        assert_eq!(
            named.decide("169.254.169.254", 443),
            NetDecision::Deny(NetDenyReason::SpecialRange(AddrClass::Metadata))
        );
        assert_eq!(named.decide("::1", 8080), NetDecision::Allow);
    }

    #[test]
    fn resolved_addresses_are_checked() {
        let n = proxy(&["pypi.org"], &["1.2.3.0/24"]);
        let public: IpAddr = "151.101.0.223".parse().unwrap();
        let private: IpAddr = "10.0.0.7".parse().unwrap();
        let none = HostAddrs::default();
        assert_eq!(
            n.decide_resolved("pypi.org", 443, &[public], &none),
            NetDecision::Allow
        );
        assert_eq!(
            n.decide_resolved("pypi.org", 443, &[public, private], &none),
            NetDecision::Deny(NetDenyReason::SpecialRange(AddrClass::Private))
        );
        assert!(matches!(
            n.decide_resolved("pypi.org", 443, &["1.2.3.4".parse().unwrap()], &none),
            NetDecision::Deny(NetDenyReason::DeniedBy(_))
        ));
    }

    #[test]
    fn the_hosts_own_addresses_need_an_entry_naming_them() {
        let eth0: IpAddr = "203.0.113.9".parse().unwrap();
        let inner: IpAddr = "10.213.0.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::9".parse().unwrap();
        let own = HostAddrs::new([eth0, inner, v6, "127.0.0.1".parse().unwrap()]);
        let host = NetDecision::Deny(NetDenyReason::HostAddress);
        // A name, `*`, or a range covering the address does not open it.
        let wide = proxy(
            &["*", "public.test", "10.213.0.0/16", "0.0.0.0/0", "::/0"],
            &[],
        );
        for ip in [eth0, inner, v6] {
            assert_eq!(
                wide.decide_resolved("public.test", 80, &[ip], &own),
                host,
                "{ip}"
            );
            assert_eq!(
                wide.decide_resolved(&ip.to_string(), 80, &[ip], &own),
                host,
                "{ip}"
            );
        }
        // Also through the IPv4-mapped form, and for addresses that always
        // reach the host (any loopback, 0.0.0.0, ::).
        let mapped: IpAddr = "::ffff:203.0.113.9".parse().unwrap();
        assert_eq!(
            wide.decide_resolved("public.test", 80, &[mapped], &own),
            host
        );
        for ip in ["0.0.0.0", "::", "127.0.0.2"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(own.contains(ip), "{ip}");
            assert_eq!(
                wide.decide_resolved("public.test", 80, &[ip], &own),
                host,
                "{ip}"
            );
        }
        // Another public address is still reachable.
        let other: IpAddr = "203.0.113.10".parse().unwrap();
        assert_eq!(
            wide.decide_resolved("public.test", 80, &[other], &own),
            NetDecision::Allow
        );
        // Loopback not named at all keeps its own reason.
        let star = proxy(&["*"], &[]);
        assert_eq!(
            star.decide_resolved("public.test", 80, &["127.0.0.1".parse().unwrap()], &own),
            NetDecision::Deny(NetDenyReason::SpecialRange(AddrClass::Loopback))
        );
        // An entry that is the address itself opens it, on its port only.
        let named = proxy(
            &[
                "public.test",
                "203.0.113.9:8002",
                "10.213.0.1/32",
                "[2001:db8::9]:443",
            ],
            &[],
        );
        assert_eq!(
            named.decide_resolved("public.test", 8002, &[eth0], &own),
            NetDecision::Allow
        );
        assert_eq!(
            named.decide_resolved("public.test", 8003, &[eth0], &own),
            host
        );
        assert_eq!(
            named.decide_resolved("10.213.0.1", 22, &[inner], &own),
            NetDecision::Allow
        );
        assert_eq!(
            named.decide_resolved("2001:db8::9", 443, &[v6], &own),
            NetDecision::Allow
        );
        // Deny entries still come first.
        let denied = proxy(&["203.0.113.9"], &["203.0.113.0/24"]);
        assert!(matches!(
            denied.decide_resolved("203.0.113.9", 80, &[eth0], &own),
            NetDecision::Deny(NetDenyReason::DeniedBy(_))
        ));
        let text = NetDenyReason::HostAddress.to_string();
        assert!(
            text.contains("network.allow") && text.contains("address of this host"),
            "{text}"
        );
    }

    #[test]
    fn host_addresses_are_read_from_the_interfaces() {
        let own = HostAddrs::read().unwrap();
        // lo is up in every namespace this runs in.
        assert!(
            own.addrs().contains(&"127.0.0.1".parse().unwrap()),
            "{own:?}"
        );
        for a in own.addrs() {
            assert!(own.contains(*a));
        }
        assert!(!own.contains("192.0.2.200".parse().unwrap()));
    }

    #[test]
    fn modes() {
        let none = Network::default();
        assert_eq!(none.decide("127.0.0.1", 8000), NetDecision::Allow);
        assert_eq!(
            none.decide("pypi.org", 443),
            NetDecision::Deny(NetDenyReason::NoNetwork)
        );
        let host = Network {
            mode: NetMode::Host,
            allow: vec![],
            deny: vec![rule("169.254.169.254")],
        };
        assert_eq!(host.decide("10.0.0.1", 22), NetDecision::Allow);
        assert!(matches!(
            host.decide("169.254.169.254", 80),
            NetDecision::Deny(NetDenyReason::DeniedBy(_))
        ));
    }
}
