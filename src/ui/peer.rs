//! Which local user is on the other end of a loopback connection.
//!
//! On loopback the UI needs no token, so without this any user of the
//! machine could read every sandbox's logs and answer the `ask`s of root's
//! sandboxes. The kernel's TCP table (/proc/net/tcp, tcp6) names the owner
//! of the client's socket: the entry whose local address is the request's
//! peer and whose remote address is our listener.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The uid owning the client socket `peer` connected to `listener`; None
/// if no such connection is in the tables (closed meanwhile, or not local).
pub fn owner(listener: SocketAddr, peer: SocketAddr) -> Option<u32> {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|t| {
        let table = std::fs::read_to_string(t).ok()?;
        find(&table, listener, peer)
    })
}

/// The uid column of the row `peer -> listener` in one table's text, if
/// that socket still belongs to a process (non-zero inode). A client that
/// sent its request and closed leaves an orphan or a TIME_WAIT row, which
/// the kernel shows as uid 0 (inode 0): never taken for root's.
fn find(table: &str, listener: SocketAddr, peer: SocketAddr) -> Option<u32> {
    table.lines().skip(1).find_map(|row| {
        let cols: Vec<&str> = row.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
        let (local, remote, uid, inode) = (cols.get(1)?, cols.get(2)?, cols.get(7)?, cols.get(9)?);
        let attached = inode.parse::<u64>().is_ok_and(|i| i != 0);
        (attached && same(parse(local)?, peer) && same(parse(remote)?, listener))
            .then(|| uid.parse().ok())
            .flatten()
    })
}

/// Equal, counting an IPv4-mapped IPv6 address as its IPv4 one.
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    a.port() == b.port() && canon(a.ip()) == canon(b.ip())
}

/// `0100007F:1F90` (IPv4) or 32 hex digits `:PORT` (IPv6): the address as
/// the kernel prints it, 32-bit words in the machine's byte order.
fn parse(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let h = addr.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(h, 16).ok()?.to_ne_bytes())
    };
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn finds_the_client_row_in_a_table() {
        // Little-endian rendering of 127.0.0.1; ports 8080 (listener) and
        // 40000 (client, uid 1000); the server's own row must not match.
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
            0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1\n\
            1: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2\n\
            2: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 3\n\
            3: 0100007F:9C41 0100007F:1F90 06 00000000:00000000 03:00001770 00000000     0        0 0\n";
        if cfg!(target_endian = "little") {
            let l: SocketAddr = "127.0.0.1:8080".parse().unwrap();
            let p: SocketAddr = "127.0.0.1:40000".parse().unwrap();
            assert_eq!(find(t, l, p), Some(1000));
            assert_eq!(find(t, p, l), Some(0));
            assert_eq!(find(t, l, "127.0.0.1:40002".parse().unwrap()), None);
            // A closed client's TIME_WAIT row (uid 0, inode 0) is not root.
            assert_eq!(find(t, l, "127.0.0.1:40001".parse().unwrap()), None);
        }
        assert_eq!(
            find(
                "header\ngarbage row\n",
                "1.2.3.4:5".parse().unwrap(),
                "1.2.3.4:6".parse().unwrap()
            ),
            None
        );
    }

    #[test]
    fn parses_both_families() {
        assert_eq!(
            parse("00000000000000000000000001000000:0050"),
            Some(if cfg!(target_endian = "little") {
                "[::1]:80".parse().unwrap()
            } else {
                "[0:0:0:0:0:0:100:0]:80".parse().unwrap()
            })
        );
        assert_eq!(parse("0100007F"), None);
        assert_eq!(parse("zz00007F:0050"), None);
        assert_eq!(parse("0100:0050"), None);
    }

    /// A real connection: its owner is us.
    #[test]
    fn a_live_connection_belongs_to_this_user() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_s, peer) = l.accept().unwrap();
        assert_eq!(peer, c.local_addr().unwrap());
        let me = unsafe { libc::geteuid() };
        assert_eq!(owner(l.local_addr().unwrap(), peer), Some(me));
    }
}
