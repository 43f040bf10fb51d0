//! Whether an address reaches this host, asked of the kernel for that one
//! address at decision time: `bind()` of a throwaway socket to it. The
//! kernel refuses with `EADDRNOTAVAIL` when the address is not in the
//! caller's network namespace's main `local` table (every interface
//! address, up or down, and `local` routes), which is what a connection
//! to it would find. Addresses of interfaces enslaved to a VRF (whose
//! local routes move to the VRF's table) and `local` routes in other
//! policy-routing tables are not seen (docs/security.md, out of scope). A bind costs three syscalls; the
//! interface dump it replaces (`getifaddrs`: a link and an address dump)
//! was most of the proxy's per-connection decision.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, SockaddrIn};

/// What one bind said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Probe {
    /// The kernel has no such local address: it does not reach the host.
    NotLocal,
    /// The bind succeeded and non-local binds are off: a local address.
    Local,
    /// Anything else (IPv6, an error, `ip_nonlocal_bind` on, which makes
    /// every bind succeed): the caller asks the interface list instead.
    Unsure,
}

/// Asks the kernel about `ip` (already canonical). IPv6 is not probed:
/// its bind refuses tentative addresses (duplicate detection still
/// running) that the interface list has, and link-local ones without a
/// scope.
pub(super) fn probe(ip: IpAddr) -> Probe {
    match ip {
        IpAddr::V4(v4) => probe_v4(v4),
        IpAddr::V6(_) => Probe::Unsure,
    }
}

fn probe_v4(ip: Ipv4Addr) -> Probe {
    let Ok(fd) = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    ) else {
        return Probe::Unsure;
    };
    // The address is checked before any port: with this, no port is
    // taken (and none can run out).
    let one: libc::c_int = 1;
    // SAFETY: a valid socket, and an int option of the size given.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            std::ptr::addr_of!(one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    let addr = SockaddrIn::from(std::net::SocketAddrV4::new(ip, 0));
    match bind(fd.as_raw_fd(), &addr) {
        Err(nix::errno::Errno::EADDRNOTAVAIL) => Probe::NotLocal,
        Ok(()) if nonlocal_bind_off() => Probe::Local,
        _ => Probe::Unsure,
    }
}

/// `net.ipv4.ip_nonlocal_bind` is 0 (read only after a bind succeeded,
/// i.e. when the address is local or the sysctl is on).
fn nonlocal_bind_off() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_nonlocal_bind").is_ok_and(|s| s.trim() == "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_and_foreign_addresses() {
        // 127.0.0.1 is on lo in every namespace this runs in; 192.0.2.0/24
        // is documentation space, on no host.
        let foreign = probe("192.0.2.200".parse().unwrap());
        if nonlocal_bind_off() {
            assert_eq!(foreign, Probe::NotLocal);
        } else {
            assert_eq!(foreign, Probe::Unsure);
        }
        let lo = probe("127.0.0.1".parse().unwrap());
        assert!(matches!(lo, Probe::Local | Probe::Unsure), "{lo:?}");
        assert_eq!(probe("2001:db8::1".parse().unwrap()), Probe::Unsure);
    }
}
