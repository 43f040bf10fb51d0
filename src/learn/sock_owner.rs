//! Who owns the client end of a loopback TCP connection: the learning
//! proxy serves only sockets its sandbox's uid made (`learn::proxy`).
//!
//! One exact `NETLINK_SOCK_DIAG` lookup by the 4-tuple (no dump: the
//! kernel does one hash lookup and answers with the socket's uid, inode and
//! state; unprivileged). Only a live, full socket counts: ESTABLISHED with
//! a non-zero inode (a time-wait or request socket, or an orphan whose
//! owner has closed it, is no client). Where sock_diag cannot be used, the
//! `/proc/net/tcp{,6}` tables are read instead, with the same rule.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `include/net/tcp_states.h`.
const TCP_ESTABLISHED: u8 = 1;
const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `inet_diag_req_v2` after the 16-byte `nlmsghdr`.
const REQ_LEN: usize = 16 + 56;
/// `inet_diag_msg`: family, state, timer, retrans, the 48-byte sockid,
/// then expires, rqueue, wqueue, uid, inode.
const MSG_LEN: usize = 72;

/// What the kernel says of one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Found {
    state: u8,
    uid: u32,
    inode: u32,
}

/// The owner uid of the client socket of an accepted connection (`peer`
/// the client's address, `local` ours), if it is a live client. The
/// kernel records the uid when the socket is made (shown in this user
/// namespace's terms: the host's uid), so the client cannot choose it.
/// Same network namespace only: the learned run shares the host's.
pub fn socket_uid(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let found = match diag_lookup(peer, local) {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(target: "learn", "sock_diag: {e}; reading /proc/net/tcp");
            proc_lookup(peer, local)
        }
    }?;
    (found.state == TCP_ESTABLISHED && found.inode != 0).then_some(found.uid)
}

/// `Ok(None)`: the kernel has no such socket.
fn diag_lookup(peer: SocketAddr, local: SocketAddr) -> io::Result<Option<Found>> {
    // SAFETY: a plain socket(2); the fd is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just made and is not owned elsewhere.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let req = request(peer, local);
    // SAFETY: the buffer is valid for its length; to the kernel (pid 0).
    let sent = unsafe {
        let mut to: libc::sockaddr_nl = std::mem::zeroed();
        to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        libc::sendto(
            fd.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            std::ptr::addr_of!(to).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0u8; 512];
    // SAFETY: the buffer is valid for its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    parse_reply(&buf[..n as usize])
}

/// The exact lookup: the client socket's own view, its address as the
/// source and ours as the destination.
fn request(peer: SocketAddr, local: SocketAddr) -> [u8; REQ_LEN] {
    let mut b = [0u8; REQ_LEN];
    b[0..4].copy_from_slice(&(REQ_LEN as u32).to_ne_bytes());
    b[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    b[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    let (family, src, dst) = match (canonical(peer.ip()), canonical(local.ip())) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (libc::AF_INET, v4_words(s), v4_words(d)),
        (s, d) => (libc::AF_INET6, v6_bytes(s), v6_bytes(d)),
    };
    b[16] = family as u8;
    b[17] = libc::IPPROTO_TCP as u8;
    // idiag_ext 0, pad 0; every state (the reply's state is judged).
    b[20..24].copy_from_slice(&u32::MAX.to_ne_bytes());
    let id = 24;
    b[id..id + 2].copy_from_slice(&peer.port().to_be_bytes());
    b[id + 2..id + 4].copy_from_slice(&local.port().to_be_bytes());
    b[id + 4..id + 20].copy_from_slice(&src);
    b[id + 20..id + 36].copy_from_slice(&dst);
    // idiag_if 0; the cookie INET_DIAG_NOCOOKIE (all ones): not checked.
    b[id + 40..id + 48].fill(0xff);
    b
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// An IPv4 address in the first of the four words, network order.
fn v4_words(ip: Ipv4Addr) -> [u8; 16] {
    let mut w = [0u8; 16];
    w[..4].copy_from_slice(&ip.octets());
    w
}

fn v6_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V6(v6) => v6.octets(),
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
    }
}

/// One `inet_diag_msg`, or the kernel's error (`ENOENT`: no such socket).
fn parse_reply(b: &[u8]) -> io::Result<Option<Found>> {
    let short = || io::Error::new(io::ErrorKind::InvalidData, "a short sock_diag reply");
    let word = |at: usize| -> io::Result<u32> {
        let w = b.get(at..at + 4).ok_or_else(short)?;
        Ok(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]))
    };
    let kind = u16::from_ne_bytes([*b.get(4).ok_or_else(short)?, *b.get(5).ok_or_else(short)?]);
    if kind == libc::NLMSG_ERROR as u16 {
        let errno = -(word(16)? as i32);
        if errno == libc::ENOENT {
            return Ok(None);
        }
        return Err(io::Error::from_raw_os_error(errno));
    }
    if kind != SOCK_DIAG_BY_FAMILY || b.len() < 16 + MSG_LEN {
        return Err(short());
    }
    Ok(Some(Found {
        state: b[17],
        uid: word(16 + 64)?,
        inode: word(16 + 68)?,
    }))
}

fn proc_lookup(peer: SocketAddr, local: SocketAddr) -> Option<Found> {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|f| {
        let text = std::fs::read_to_string(f).ok()?;
        text.lines().skip(1).find_map(|l| proc_line(l, peer, local))
    })
}

fn proc_line(line: &str, peer: SocketAddr, local: SocketAddr) -> Option<Found> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let (l, r, state) = (f.get(1)?, f.get(2)?, f.get(3)?);
    if proc_addr(l)? != peer || proc_addr(r)? != local {
        return None;
    }
    Some(Found {
        state: u8::from_str_radix(state, 16).ok()?,
        uid: f.get(7)?.parse().ok()?,
        inode: f.get(9)?.parse().ok()?,
    })
}

/// An address of `/proc/net/tcp{,6}`: the address as 32-bit words in
/// hex, each in the machine's byte order, `:` the port in hex. An
/// IPv4-mapped IPv6 address is its IPv4 address (a dual-stack client).
fn proc_addr(s: &str) -> Option<SocketAddr> {
    let (a, p) = s.split_once(':')?;
    let port = u16::from_str_radix(p, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(a.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    let ip = match a.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            canonical(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[cfg(target_endian = "little")]
    #[test]
    fn proc_net_lines_give_state_uid_and_inode() {
        let a = proc_addr("0100007F:1F90").expect("v4");
        assert_eq!(a, "127.0.0.1:8080".parse().unwrap());
        let m = proc_addr("0000000000000000FFFF00000100007F:0050").expect("mapped");
        assert_eq!(m, "127.0.0.1:80".parse().unwrap());
        let v6 = proc_addr("00000000000000000000000001000000:0050").expect("v6");
        assert_eq!(v6, "[::1]:80".parse().unwrap());
        assert_eq!(proc_addr("zz:1"), None);
        assert_eq!(proc_addr("0100007F"), None);
        let (peer, local) = (
            "127.0.0.1:40000".parse().unwrap(),
            "127.0.0.1:8080".parse().unwrap(),
        );
        let line = |st: &str| {
            format!("  1: 0100007F:9C40 0100007F:1F90 {st} 00000000:00000000 00:00000000 00000000  2140001234        0 4242 1")
        };
        let want = Found {
            state: 1,
            uid: 2_140_001_234,
            inode: 4242,
        };
        assert_eq!(proc_line(&line("01"), peer, local), Some(want));
        assert_eq!(
            proc_line(&line("06"), peer, local).map(|f| f.state),
            Some(6)
        );
        assert_eq!(proc_line(&line("01"), local, peer), None);
    }

    #[test]
    fn a_live_client_is_found_and_a_closed_one_is_not() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let c = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (s, _) = l.accept().expect("accept");
        let (peer, local) = (s.peer_addr().unwrap(), s.local_addr().unwrap());
        let me = nix::unistd::geteuid().as_raw();
        let diag = diag_lookup(peer, local).expect("sock_diag").expect("found");
        assert_eq!((diag.state, diag.uid), (TCP_ESTABLISHED, me));
        assert_ne!(diag.inode, 0);
        assert_eq!(proc_lookup(peer, local), Some(diag));
        assert_eq!(socket_uid(peer, local), Some(me));
        let nobody = SocketAddr::new(peer.ip(), 1);
        assert_eq!(diag_lookup(nobody, local).expect("sock_diag"), None);
        // Closed by its owner: FIN_WAIT, an orphan, not a client.
        drop(c);
        assert_eq!(socket_uid(peer, local), None);
        drop(s);
    }
}
