//! Connecting upstream: to the addresses the gate checked, and only those.

use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, SockaddrStorage};

/// Connects to the first address that answers (the proxy and the broker's
/// NET_CONNECT both connect only to the addresses they checked).
pub fn connect_any(
    addrs: &[SocketAddr],
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), ConnectFailed> {
    let mut last = ConnectFailed {
        error: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
        addr: None,
    };
    for a in addrs {
        match connect_one(a, timeout) {
            Ok(s) => return Ok((s, *a)),
            // A refusal says more than a timeout: it is what is reported
            // if any address refused.
            Err(e)
                if e.kind() == std::io::ErrorKind::TimedOut
                    && last.error.kind() != std::io::ErrorKind::NotFound =>
            {
                continue
            }
            Err(e) => {
                last = ConnectFailed {
                    error: e,
                    addr: Some(*a),
                }
            }
        }
    }
    Err(last)
}

/// Why no address took the connection, and the address that said so.
#[derive(Debug)]
pub struct ConnectFailed {
    pub error: std::io::Error,
    pub addr: Option<SocketAddr>,
}

/// One address, within `timeout`: a blocking `connect` bounded by the
/// socket's send timeout (which Linux applies to `connect`), where
/// `TcpStream::connect_timeout` makes it non-blocking and polls (two
/// `ioctl` calls and a `poll` more). The socket is left as that one
/// leaves it: blocking, no timeout set.
fn connect_one(addr: &SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    if timeout.is_zero() {
        // No send timeout means none at all: std's refusal instead.
        return TcpStream::connect_timeout(addr, timeout);
    }
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd: OwnedFd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    let s = TcpStream::from(fd);
    let to = SockaddrStorage::from(*addr);
    let until = Instant::now() + timeout;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        s.set_write_timeout(Some(left))?;
        match connect(s.as_raw_fd(), &to) {
            Ok(()) => break,
            // Interrupted, the connection goes on: asked again, `connect`
            // waits for it (or says it is made).
            Err(Errno::EINTR) => continue,
            Err(Errno::EISCONN) => break,
            // The send timeout ran out with the handshake not done.
            Err(Errno::EINPROGRESS | Errno::EALREADY) => return Err(timed_out()),
            Err(e) => return Err(e.into()),
        }
    }
    s.set_write_timeout(None)?;
    Ok(s)
}

/// What `TcpStream::connect_timeout` says when the time runs out.
fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "connection timed out")
}
