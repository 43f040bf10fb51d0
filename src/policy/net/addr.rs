//! Address classes: the special ranges that stay denied unless an entry
//! names them, and the host's own addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use std::sync::OnceLock;

use super::canonical_ip;
use super::local::{probe, Probe};

/// Kinds of address that are never reachable unless a rule names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrClass {
    Public,
    Unspecified,
    Loopback,
    Private,
    LinkLocal,
    /// Cloud instance metadata services.
    Metadata,
    Multicast,
    Reserved,
}

impl AddrClass {
    pub fn describe(self) -> &'static str {
        match self {
            AddrClass::Public => "public",
            AddrClass::Unspecified => "unspecified",
            AddrClass::Loopback => "loopback",
            AddrClass::Private => "private",
            AddrClass::LinkLocal => "link-local",
            AddrClass::Metadata => "cloud metadata",
            AddrClass::Multicast => "multicast",
            AddrClass::Reserved => "reserved",
        }
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], len: u8) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, len: u8) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    };
    (u128::from(ip) & mask) == (u128::from(net) & mask)
}

/// Classify an address (after [`canonical_ip`]).
pub fn classify(ip: IpAddr) -> AddrClass {
    match canonical_ip(ip) {
        IpAddr::V4(a) => {
            let o = a.octets();
            // AWS/GCP/Azure IMDS, Alibaba, and Azure's WireServer (a host
            // endpoint in public space that hands out VM certificates).
            if a == Ipv4Addr::new(169, 254, 169, 254)
                || a == Ipv4Addr::new(100, 100, 100, 200)
                || a == Ipv4Addr::new(168, 63, 129, 16)
            {
                AddrClass::Metadata
            } else if o[0] == 0 {
                AddrClass::Unspecified
            } else if o[0] == 127 {
                AddrClass::Loopback
            } else if in_v4(a, [10, 0, 0, 0], 8)
                || in_v4(a, [172, 16, 0, 0], 12)
                || in_v4(a, [192, 168, 0, 0], 16)
                || in_v4(a, [100, 64, 0, 0], 10)
            {
                AddrClass::Private
            } else if in_v4(a, [169, 254, 0, 0], 16) {
                AddrClass::LinkLocal
            } else if in_v4(a, [224, 0, 0, 0], 4) {
                AddrClass::Multicast
            } else if in_v4(a, [240, 0, 0, 0], 4)
                || in_v4(a, [192, 0, 0, 0], 24)
                || in_v4(a, [198, 18, 0, 0], 15)
            {
                AddrClass::Reserved
            } else {
                AddrClass::Public
            }
        }
        IpAddr::V6(a) => {
            if a == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                AddrClass::Metadata
            } else if a.is_unspecified() {
                AddrClass::Unspecified
            } else if a.is_loopback() {
                AddrClass::Loopback
            } else if in_v6(a, Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7) {
                AddrClass::Private
            } else if in_v6(a, Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10) {
                AddrClass::LinkLocal
            } else if in_v6(a, Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8) {
                AddrClass::Multicast
            } else if in_v6(a, Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10)
                || in_v6(a, Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64)
            {
                // Deprecated site-local and the discard prefix.
                AddrClass::Reserved
            } else {
                AddrClass::Public
            }
        }
    }
}

/// The host's own addresses: those of its interfaces (every family),
/// plus every loopback and unspecified address (`0.0.0.0`, `::`), which
/// reach the host whatever its interfaces. A connection from the
/// supervisor to one of them lands on the host itself, on services bound
/// to `0.0.0.0` or to that interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostAddrs(Known);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Known {
    /// A list read or given once (canonical, sorted).
    Listed(Vec<IpAddr>),
    /// The caller's network namespace, asked per address when a decision
    /// needs it ([`HostAddrs::live`]); the interface list, read at most
    /// once, where the kernel's answer is unsure (`Err`: unreadable).
    Live(OnceLock<Result<Vec<IpAddr>, String>>),
}

impl Default for Known {
    fn default() -> Self {
        Known::Listed(Vec::new())
    }
}

impl HostAddrs {
    /// A set of interface addresses (canonicalised).
    pub fn new(addrs: impl IntoIterator<Item = IpAddr>) -> HostAddrs {
        HostAddrs(Known::Listed(sorted(addrs)))
    }

    /// The addresses of the interfaces of the caller's network namespace,
    /// read now (`getifaddrs`: one netlink dump).
    pub fn read() -> std::io::Result<HostAddrs> {
        interfaces().map(|v| HostAddrs(Known::Listed(v)))
    }

    /// The caller's network namespace's own addresses as they are when
    /// [`HostAddrs::contains`] asks, one address at a time (`local.rs`: a
    /// `bind()` the kernel refuses for an address that is not local),
    /// with the interface list read only where that answer is unsure.
    ///
    /// Asked at every decision rather than cached and refreshed on netlink
    /// `RTMGRP_IPV4_IFADDR`/`RTMGRP_IPV6_IFADDR` notifications: a cache is
    /// updated after the fact, by another thread, so an address added just
    /// before a check would be missing from it and the check would fail
    /// open. Use one value per decision, on the thread that connects.
    pub fn live() -> HostAddrs {
        HostAddrs(Known::Live(OnceLock::new()))
    }

    /// Does `ip` reach this host? For [`HostAddrs::live`], an interface
    /// list that cannot be read answers yes (fail closed).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let asked = ip;
        let ip = canonical_ip(ip);
        if matches!(classify(ip), AddrClass::Loopback | AddrClass::Unspecified) {
            return true;
        }
        match &self.0 {
            Known::Listed(v) => v.binary_search(&ip).is_ok(),
            Known::Live(list) => match probe_as_sent(asked, ip) {
                Probe::NotLocal => false,
                Probe::Local => true,
                Probe::Unsure => match list.get_or_init(|| interfaces().map_err(|e| e.to_string()))
                {
                    Ok(v) => v.binary_search(&ip).is_ok(),
                    Err(e) => {
                        tracing::warn!(target: "policy", "cannot list the host's own addresses, {ip} taken for one: {e}");
                        true
                    }
                },
            },
        }
    }

    #[cfg(test)]
    pub fn addrs(&self) -> &[IpAddr] {
        match &self.0 {
            Known::Listed(v) => v,
            Known::Live(_) => &[],
        }
    }
}

fn sorted(addrs: impl IntoIterator<Item = IpAddr>) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = addrs.into_iter().map(canonical_ip).collect();
    v.sort();
    v.dedup();
    v
}

/// The interfaces' addresses, every family (`getifaddrs`).
fn interfaces() -> std::io::Result<Vec<IpAddr>> {
    let list = nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)?;
    Ok(sorted(list.filter_map(|i| {
        let a = i.address?;
        if let Some(v4) = a.as_sockaddr_in() {
            Some(IpAddr::V4(v4.ip()))
        } else {
            a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
        }
    })))
}

/// Probes `ip` (canonical) only when a connection to `asked` goes out as
/// IPv4: a NAT64 address (`64:ff9b::/96`) canonicalises to IPv4 but is
/// connected to over IPv6, where the host may have it on an interface.
fn probe_as_sent(asked: IpAddr, ip: IpAddr) -> Probe {
    match asked {
        IpAddr::V4(_) => probe(ip),
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => probe(ip),
        IpAddr::V6(_) => Probe::Unsure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_sent_as_ipv4_are_probed() {
        // A NAT64 address canonicalises to IPv4 but goes out over IPv6,
        // where the host may hold it: the interface list decides.
        let nat64: IpAddr = "64:ff9b::c000:2c8".parse().unwrap();
        assert_eq!(probe_as_sent(nat64, canonical_ip(nat64)), Probe::Unsure);
        let mapped: IpAddr = "::ffff:192.0.2.200".parse().unwrap();
        let v4: IpAddr = "192.0.2.200".parse().unwrap();
        assert_eq!(probe_as_sent(mapped, canonical_ip(mapped)), probe(v4));
        assert_eq!(probe_as_sent(v4, v4), probe(v4));
    }
}
