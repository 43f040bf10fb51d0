//! Relaying bytes both ways between the sandbox's connection and the
//! upstream one: `splice` through a pipe (the data never enters user
//! space), one thread per direction so neither waits for the other, an
//! idle timeout shared by both directions, and half-close passed on.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes moved each way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Relayed {
    /// From the sandbox to upstream.
    pub up: u64,
    /// From upstream to the sandbox.
    pub down: u64,
}

const CHUNK: usize = 1 << 20;
const SEND_BUFFER: usize = 4 << 20;
const RELAY_STACK: usize = 256 << 10;

/// Activity clock shared by the two directions.
struct Idle {
    start: Instant,
    last_ms: AtomicU64,
    limit: Duration,
}

impl Idle {
    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn expired(&self) -> bool {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last) >= self.limit
    }
}

/// Relays until both directions are done (EOF, error, or idle timeout).
pub fn relay(client: TcpStream, upstream: TcpStream, idle: Duration) -> Relayed {
    let idle = Arc::new(Idle {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
        limit: idle,
    });
    // Blocking reads wake up at least this often to check the clock.
    let tick = Some(
        idle.limit
            .min(Duration::from_secs(5))
            .max(Duration::from_millis(10)),
    );
    for s in [&client, &upstream] {
        let _ = s.set_read_timeout(tick);
        let _ = s.set_write_timeout(Some(idle.limit.max(Duration::from_millis(10))));
        let _ = s.set_nodelay(true);
        // A full-size send buffer from the start, rather than one that
        // autotuning grows during the transfer: the relay then blocks on
        // a full socket far less often (about +15 % of throughput in the
        // proxy benchmark). The kernel caps it at net.core.wmem_max;
        // autotuning could have grown it about as far.
        let _ = nix::sys::socket::setsockopt(s, nix::sys::socket::sockopt::SndBuf, &SEND_BUFFER);
    }
    let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
        return Relayed::default();
    };
    let idle2 = Arc::clone(&idle);
    let up = std::thread::Builder::new()
        .name("relay-up".into())
        .stack_size(RELAY_STACK)
        .spawn(move || pump(&c2, &u2, &idle2));
    let down = pump(&upstream, &client, &idle);
    let up = match up {
        Ok(h) => h.join().unwrap_or(0),
        Err(_) => {
            // No thread for the other direction: nothing was sent up.
            0
        }
    };
    Relayed { up, down }
}

/// Moves `src` → `dst` until EOF; returns the bytes moved.
fn pump(src: &TcpStream, dst: &TcpStream, idle: &Idle) -> u64 {
    let result = match Pipe::new() {
        Some(pipe) => splice_loop(src, dst, &pipe, idle),
        None => copy_loop(src, dst, idle),
    };
    match result {
        Ok(n) => {
            // Pass the half-close on; the other direction goes on.
            let _ = dst.shutdown(Shutdown::Write);
            n
        }
        Err(n) => {
            // Error or idle: end both directions.
            let _ = src.shutdown(Shutdown::Both);
            let _ = dst.shutdown(Shutdown::Both);
            n
        }
    }
}

struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
}

impl Pipe {
    fn new() -> Option<Pipe> {
        let mut fds = [0i32; 2];
        // SAFETY: pipe2 fills two descriptors we then own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return None;
        }
        // SAFETY: both are fresh descriptors owned by nobody else.
        let pipe = unsafe {
            Pipe {
                r: OwnedFd::from_raw_fd(fds[0]),
                w: OwnedFd::from_raw_fd(fds[1]),
            }
        };
        // A bigger pipe means fewer round trips; the default (64 KiB) still
        // works if the system refuses.
        // SAFETY: fcntl on our own pipe.
        unsafe { libc::fcntl(pipe.w.as_raw_fd(), libc::F_SETPIPE_SZ, CHUNK as libc::c_int) };
        Some(pipe)
    }
}

fn splice(from: i32, to: i32, len: usize, more: bool) -> std::io::Result<usize> {
    let flags = if more {
        libc::SPLICE_F_MOVE | libc::SPLICE_F_MORE
    } else {
        libc::SPLICE_F_MOVE
    };
    // SAFETY: splice between descriptors we hold, no offsets.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            flags,
        )
    };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn timed_out(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// `Ok(total)` at EOF, `Err(total)` on error or idle timeout.
fn splice_loop(src: &TcpStream, dst: &TcpStream, pipe: &Pipe, idle: &Idle) -> Result<u64, u64> {
    let mut total = 0u64;
    loop {
        let n = match splice(src.as_raw_fd(), pipe.w.as_raw_fd(), CHUNK, false) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if timed_out(&e) => {
                if idle.expired() {
                    return Err(total);
                }
                continue;
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && total == 0 => {
                // No splice for this pair: copy instead.
                return copy_loop(src, dst, idle);
            }
            Err(_) => return Err(total),
        };
        idle.touch();
        let mut left = n;
        while left > 0 {
            // A full read means more is coming: let TCP fill its segments.
            match splice(pipe.r.as_raw_fd(), dst.as_raw_fd(), left, n == CHUNK) {
                Ok(0) => return Err(total),
                Ok(m) => {
                    left -= m;
                    total += m as u64;
                    idle.touch();
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // The peer stopped reading for the whole write timeout.
                Err(_) => return Err(total),
            }
        }
    }
}

fn copy_loop(mut src: &TcpStream, mut dst: &TcpStream, idle: &Idle) -> Result<u64, u64> {
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if timed_out(&e) => {
                if idle.expired() {
                    return Err(total);
                }
                continue;
            }
            Err(_) => return Err(total),
        };
        idle.touch();
        if dst.write_all(&buf[..n]).is_err() {
            return Err(total);
        }
        total += n as u64;
        idle.touch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    #[test]
    fn relays_both_ways_with_half_close() {
        // client_end <-> [client | relay | upstream] <-> server_end
        let (mut client_end, client) = pair();
        let (upstream, mut server_end) = pair();
        let t = std::thread::spawn(move || relay(client, upstream, Duration::from_secs(5)));
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let p2 = payload.clone();
        let writer = std::thread::spawn(move || {
            client_end.write_all(&p2).unwrap();
            client_end.shutdown(Shutdown::Write).unwrap();
            let mut back = Vec::new();
            client_end.read_to_end(&mut back).unwrap();
            back
        });
        let mut got = Vec::new();
        server_end.read_to_end(&mut got).unwrap();
        assert_eq!(got, payload);
        server_end.write_all(b"reply after half-close").unwrap();
        drop(server_end);
        assert_eq!(writer.join().unwrap(), b"reply after half-close");
        let r = t.join().unwrap();
        assert_eq!(
            r,
            Relayed {
                up: 3_000_000,
                down: 22
            }
        );
    }

    #[test]
    fn idle_connections_end() {
        let (_client_end, client) = pair();
        let (upstream, _server_end) = pair();
        let r = relay(client, upstream, Duration::from_millis(200));
        assert_eq!(r, Relayed::default());
    }
}
