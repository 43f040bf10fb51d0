//! Connecting upstream: to the addresses the gate checked, and only those.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

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
        match TcpStream::connect_timeout(a, timeout) {
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
