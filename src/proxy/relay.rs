//! Relaying bytes both ways between the sandbox's connection and the
//! upstream one: a tunnel starts on the connection's thread with both
//! directions polled while its exchange is small (super::exchange), then
//! a copy loop whose buffer grows with the transfer, one thread per
//! direction so neither waits for the other (upstream to client on one
//! from the proxy's pool of parked threads), an idle timeout shared by
//! both directions, and half-close passed on.
//!
//! Why not `splice`: a pipe holds at most 1 MiB without CAP_SYS_RESOURCE,
//! and on a host whose idle CPUs halt, every round through it costs
//! wake-ups; this loop moved the 1 GiB download of the proxy benchmark
//! at 0.65 - 0.68 of direct, splice at 0.45 - 0.50 (same boot).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::exchange::{self, Way};
use super::http::BodyFramer;
use super::timed_out;

/// Bytes moved each way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Relayed {
    /// From the sandbox to upstream.
    pub up: u64,
    /// From upstream to the sandbox.
    pub down: u64,
    /// What the sandbox sent that was not its one framed request.
    pub violation: Option<Violation>,
}

/// How a forwarded request's sender broke its framing during the relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// Bytes after the request's body (a pipelined request): never sent
    /// upstream, read and dropped; the answer to the first still comes.
    AfterBody { bytes: u64 },
    /// A chunked body that broke its framing: both ends were reset.
    Malformed(String),
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Violation::AfterBody { bytes } => write!(
                f,
                "{bytes} bytes after the request's body were not forwarded (one request per connection)"
            ),
            Violation::Malformed(r) => write!(f, "{r}; connection reset"),
        }
    }
}

/// A connection's buffer starts small (most exchanges are small) and grows
/// fourfold each time a read fills half of it, up to `MAX_BUFFER`.
const FIRST_BUFFER: usize = 64 << 10;
const MAX_BUFFER: usize = 4 << 20;
/// What buffers may grow by in all, across this supervisor's connections:
/// a sandbox opening hundreds of bulk downloads must not make its
/// supervisor (outside the sandbox's memory limit) hold gigabytes.
const GROWTH_BUDGET: usize = 64 << 20;
static GROWN: AtomicUsize = AtomicUsize::new(0);
const SEND_BUFFER: usize = 4 << 20;

/// Activity clock shared by the two directions.
pub(super) struct Idle {
    start: Instant,
    last_ms: AtomicU64,
    limit: Duration,
    /// A direction failed or went idle: the connection is being reset.
    aborted: AtomicBool,
}

impl Idle {
    pub(super) fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn expired(&self) -> bool {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last) >= self.limit
    }

    /// Blocking reads (and the first phase's polls) wake up at least this
    /// often to check the clock.
    pub(super) fn tick(&self) -> Duration {
        self.limit
            .min(Duration::from_secs(5))
            .max(Duration::from_millis(10))
    }

    /// A direction failed or went idle: the connection is being reset.
    pub(super) fn aborted(&self) -> bool {
        self.aborted.load(Ordering::Relaxed)
    }
}

/// Relays until both directions are done (EOF, error, or idle timeout),
/// sending upstream only the rest of one request's body as `framer`
/// follows it (for a forwarded request; `None`: a tunnel).
pub fn relay(
    client: TcpStream,
    upstream: TcpStream,
    idle: Duration,
    framer: Option<BodyFramer>,
) -> Relayed {
    let idle = Idle {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
        limit: idle,
        aborted: AtomicBool::new(false),
    };
    // The first phase never blocks: no delay is all it needs. Timeouts and
    // send buffers wait for the threads (most connections end before).
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let mut ways = [Way::default(), Way::default()];
    // A forwarded request's body is framed by the threads' loop alone.
    if framer.is_none() {
        exchange::small(&client, &upstream, &idle, &mut ways);
    }
    let [up, down] = ways;
    if !(up.done && down.done) {
        // Once, for both: either thread reads and writes them alike.
        prepare(&client, &upstream, &idle);
        prepare(&upstream, &client, &idle);
    }
    threads(client, upstream, idle, framer, up, down)
}

/// Relays what is left after the first phase: a direction still open on
/// this thread, and when both are, upstream to client on a pooled thread.
fn threads(
    client: TcpStream,
    upstream: TcpStream,
    idle: Idle,
    framer: Option<BodyFramer>,
    up: Way,
    down: Way,
) -> Relayed {
    match (up.done, down.done) {
        (true, true) => {
            return Relayed {
                up: up.moved,
                down: down.moved,
                violation: None,
            }
        }
        (true, false) => {
            let (more, _) = pump(&upstream, &client, &idle, None, down.pending);
            return Relayed {
                up: up.moved,
                down: down.moved + more,
                violation: None,
            };
        }
        (false, true) => {
            let (more, violation) = pump(&client, &upstream, &idle, framer, up.pending);
            return Relayed {
                up: up.moved + more,
                down: down.moved,
                violation,
            };
        }
        (false, false) => {}
    }
    // The other direction, upstream to client, runs on a pooled thread
    // (super::pool), which shares the sockets rather than taking a second
    // descriptor of each (two per connection, not four, against the
    // supervisor's fd limit). This thread takes the client's side: the
    // client's next bytes find it already reading, rather than waiting for
    // a parked thread to wake.
    let (client, upstream, idle) = (Arc::new(client), Arc::new(upstream), Arc::new(idle));
    let (tx, rx) = mpsc::sync_channel(1);
    let job = {
        let (c, u, i) = (
            Arc::clone(&client),
            Arc::clone(&upstream),
            Arc::clone(&idle),
        );
        let first = down.pending;
        move || {
            let (more, _) = pump(&u, &c, &i, None, first);
            // The sockets close when `relay` returns, as if this thread
            // had only borrowed them.
            drop((c, u, i));
            let _ = tx.send(more);
        }
    };
    if super::pool::THREADS.run(Box::new(job)).is_err() {
        // No thread for the other direction: reset the connection, as
        // any other failure does, rather than relay one way only.
        abort(&client, &idle);
        abort(&upstream, &idle);
        return Relayed {
            up: up.moved,
            down: down.moved,
            violation: None,
        };
    }
    let (more, violation) = pump(&client, &upstream, &idle, framer, up.pending);
    // A job that panicked dropped its sender: nothing more moved, as far
    // as is known.
    let more_down = rx.recv().unwrap_or(0);
    Relayed {
        up: up.moved + more,
        down: down.moved + more_down,
        violation,
    }
}

/// The socket options of one direction for its thread: its source's read
/// timeout, its destination's write timeout and send buffer (no delay is
/// set already, by `relay`).
fn prepare(src: &TcpStream, dst: &TcpStream, idle: &Idle) {
    let _ = src.set_read_timeout(Some(idle.tick()));
    let _ = dst.set_write_timeout(Some(idle.limit.max(Duration::from_millis(10))));
    // A full-size send buffer from the copy loop's first write, rather
    // than one that autotuning grows during the transfer: the relay then
    // blocks on a full socket far less often (about +15 % of throughput
    // in the proxy benchmark). The kernel caps it at net.core.wmem_max; autotuning
    // could have grown it about as far.
    let _ = nix::sys::socket::setsockopt(dst, nix::sys::socket::sockopt::SndBuf, &SEND_BUFFER);
}

/// How one direction ended.
enum End {
    Eof,
    /// Bytes came after the framed request (this many in the read).
    AfterBody(u64),
    /// The request's framing broke.
    Malformed(String),
    /// Reading the source failed (its peer reset the connection).
    SrcFailed,
    /// Writing the destination failed or timed out.
    DstFailed,
    Idle,
}

/// Moves `src` → `dst` until EOF, `first` (read already) before the
/// rest; returns the bytes moved.
///
/// A failure is passed on as a reset, not as a clean end: a response cut
/// short by an upstream reset must not look complete to the client.
fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    idle: &Idle,
    framer: Option<BodyFramer>,
    first: Vec<u8>,
) -> (u64, Option<Violation>) {
    let (end, n) = copy_loop(src, dst, idle, framer, first);
    match end {
        // Nothing more goes upstream; the answer to the request still
        // comes down. What the client sends meanwhile is read and
        // dropped (closing over it would reset the answer away).
        End::AfterBody(first) => {
            let (r, more) = drain(src, idle);
            if r.is_err() {
                abort(src, idle);
            }
            let bytes = first + more;
            return (n, Some(Violation::AfterBody { bytes }));
        }
        End::Malformed(reason) => {
            abort(src, idle);
            abort(dst, idle);
            return (n, Some(Violation::Malformed(reason)));
        }
        End::Eof => source_ended(false, dst, idle),
        End::SrcFailed => source_ended(true, dst, idle),
        // What src still sends has nowhere to go: read and drop it until
        // src ends. Closing src with bytes unread would reset it and
        // throw away what the other direction still has queued for it
        // (an answer dst's peer sent before it went); if that direction
        // fails too, it resets src itself.
        End::DstFailed => {
            if drain(src, idle).0.is_err() {
                abort(src, idle);
            }
        }
        End::Idle => {
            abort(src, idle);
            abort(dst, idle);
        }
    }
    (n, None)
}

/// Reads and drops until EOF; `Err` on an error or the idle timeout. Also
/// the bytes dropped.
fn drain(mut s: &TcpStream, idle: &Idle) -> (Result<(), ()>, u64) {
    let mut sink = [0u8; 16 << 10];
    let mut dropped = 0u64;
    loop {
        match s.read(&mut sink) {
            Ok(0) => return (Ok(()), dropped),
            Ok(n) => {
                dropped += n as u64;
                idle.touch()
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if timed_out(&e) && !idle.expired() => {}
            Err(_) => return (Err(()), dropped),
        }
    }
}

/// A direction's source ended: its EOF passed on as a half-close (the
/// other direction goes on; not after an abort, where this EOF is only the
/// other side's wake-up), or its failure as a reset of `dst`.
pub(super) fn source_ended(failed: bool, dst: &TcpStream, idle: &Idle) {
    if failed {
        abort(dst, idle);
    } else if !idle.aborted() {
        let _ = dst.shutdown(Shutdown::Write);
    }
}

/// Makes closing `s` send a reset, and wakes whoever reads it.
pub(super) fn abort(s: &TcpStream, idle: &Idle) {
    idle.aborted.store(true, Ordering::Relaxed);
    reset_on_close(s);
    let _ = s.shutdown(Shutdown::Read);
}

/// Closing `s` sends a reset instead of a FIN (linger 0).
fn reset_on_close(s: &TcpStream) {
    let now = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let _ = nix::sys::socket::setsockopt(s, nix::sys::socket::sockopt::Linger, &now);
}

/// A relay buffer; its growth is charged to `GROWN` until dropped.
struct Buffer {
    buf: Vec<u8>,
    charged: usize,
}

impl Buffer {
    fn new() -> Buffer {
        Buffer {
            buf: vec![0; FIRST_BUFFER],
            charged: 0,
        }
    }

    /// Four times bigger, if the budget allows (else it stays as it is).
    fn grow(&mut self) {
        let next = (self.buf.len() * 4).min(MAX_BUFFER);
        let extra = next.saturating_sub(self.buf.len());
        if extra == 0 {
            return;
        }
        if GROWN.fetch_add(extra, Ordering::Relaxed) + extra > GROWTH_BUDGET {
            GROWN.fetch_sub(extra, Ordering::Relaxed);
            return;
        }
        self.charged += extra;
        self.buf = vec![0; next];
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        GROWN.fetch_sub(self.charged, Ordering::Relaxed);
    }
}

/// How the direction ended, and the bytes it moved.
fn copy_loop(
    mut src: &TcpStream,
    mut dst: &TcpStream,
    idle: &Idle,
    mut framer: Option<BodyFramer>,
    first: Vec<u8>,
) -> (End, u64) {
    let mut total = first.len() as u64;
    if !first.is_empty() {
        if dst.write_all(&first).is_err() {
            return (End::DstFailed, 0);
        }
        idle.touch();
    }
    // Up to 64 KiB a direction, not counted in the growth budget: freed
    // now, not when the connection ends.
    drop(first);
    let mut b = Buffer::new();
    loop {
        let n = match src.read(&mut b.buf) {
            Ok(0) => return (End::Eof, total),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if timed_out(&e) => {
                if idle.expired() {
                    return (End::Idle, total);
                }
                continue;
            }
            Err(_) => return (End::SrcFailed, total),
        };
        idle.touch();
        // A forwarded request: only its body goes upstream.
        let body = match framer.as_mut().map(|f| f.feed(&b.buf[..n])) {
            None => n,
            Some(Ok(k)) => k,
            Some(Err(e)) => return (End::Malformed(e.reason), total),
        };
        if body > 0 && dst.write_all(&b.buf[..body]).is_err() {
            return (End::DstFailed, total);
        }
        total += body as u64;
        if body < n {
            return (End::AfterBody((n - body) as u64), total);
        }
        idle.touch();
        // A read that filled half the buffer or more: a bulk transfer,
        // which bigger reads and writes move with fewer wake-ups.
        if n >= b.buf.len() / 2 {
            b.grow();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::os::fd::AsRawFd;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    #[test]
    fn buffers_grow_fourfold_up_to_the_maximum() {
        let mut b = Buffer::new();
        let mut sizes = vec![b.buf.len()];
        for _ in 0..4 {
            b.grow();
            sizes.push(b.buf.len());
        }
        assert_eq!(
            sizes,
            [64 << 10, 256 << 10, 1 << 20, 4 << 20, 4 << 20],
            "budget left: {}",
            GROWTH_BUDGET.saturating_sub(GROWN.load(Ordering::Relaxed))
        );
    }

    #[test]
    fn relays_both_ways_with_half_close() {
        // client_end <-> [client | relay | upstream] <-> server_end
        let (mut client_end, client) = pair();
        let (upstream, mut server_end) = pair();
        let t = std::thread::spawn(move || relay(client, upstream, Duration::from_secs(5), None));
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
                down: 22,
                violation: None
            }
        );
    }

    #[test]
    fn small_writes_to_a_client_that_does_not_read_arrive_whole_and_in_order() {
        // Many small writes: the first phase relays them until the client's
        // buffers are full, the threads the rest (what was read but not yet
        // written included).
        let (mut client_end, client) = pair();
        let (upstream, mut server_end) = pair();
        let t = std::thread::spawn(move || relay(client, upstream, Duration::from_secs(5), None));
        let sent: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
        let s2 = sent.clone();
        let writer = std::thread::spawn(move || {
            for chunk in s2.chunks(1000) {
                server_end.write_all(chunk).unwrap();
            }
            server_end.shutdown(Shutdown::Write).unwrap();
            server_end
        });
        std::thread::sleep(Duration::from_millis(200));
        let mut got = Vec::new();
        client_end.read_to_end(&mut got).unwrap();
        assert!(
            got == sent,
            "{} bytes of {} arrived, or out of order",
            got.len(),
            sent.len()
        );
        client_end.shutdown(Shutdown::Write).unwrap();
        drop(writer.join().unwrap());
        let r = t.join().unwrap();
        assert_eq!((r.up, r.down), (0, 2_000_000));
    }

    #[test]
    fn idle_connections_end_with_a_reset() {
        let (mut client_end, client) = pair();
        let (upstream, mut server_end) = pair();
        let r = relay(client, upstream, Duration::from_millis(200), None);
        assert_eq!(r, Relayed::default());
        let mut b = [0u8; 1];
        for end in [&mut client_end, &mut server_end] {
            let e = end.read(&mut b).expect_err("a reset, not EOF");
            assert_eq!(e.kind(), ErrorKind::ConnectionReset);
        }
    }

    fn reset(s: TcpStream) {
        reset_on_close(&s);
    }

    #[test]
    fn an_upstream_reset_reaches_the_client_as_a_reset_after_its_bytes() {
        let (mut client_end, client) = pair();
        let (upstream, mut server_end) = pair();
        let t = std::thread::spawn(move || relay(client, upstream, Duration::from_secs(5), None));
        server_end.write_all(b"partial answer").unwrap();
        let mut got = [0u8; 14];
        client_end.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"partial answer");
        reset(server_end);
        let mut b = [0u8; 1];
        let e = client_end.read(&mut b).expect_err("a reset, not EOF");
        assert_eq!(e.kind(), ErrorKind::ConnectionReset);
        assert_eq!(t.join().unwrap().down, 14);
    }

    #[test]
    fn an_upstream_gone_after_its_answer_does_not_cost_the_client_the_answer() {
        let (mut client_end, client) = pair();
        let (upstream, mut server_end) = pair();
        let t = std::thread::spawn(move || relay(client, upstream, Duration::from_secs(5), None));
        // More than the client's receive buffer holds before it reads:
        // the rest waits in the relay's send queue.
        let answer = vec![b'a'; 4 << 20];
        server_end.write_all(&answer).unwrap();
        server_end.shutdown(Shutdown::Write).unwrap();
        // Once upstream's bytes and FIN are all acknowledged, it resets:
        // the relay's next write up fails.
        let acked = || {
            let mut q: libc::c_int = 0;
            // SAFETY: TIOCOUTQ writes one c_int.
            unsafe { libc::ioctl(server_end.as_raw_fd(), libc::TIOCOUTQ, &mut q) };
            q == 0
        };
        let mut waited = 0;
        while !acked() {
            std::thread::sleep(Duration::from_millis(10));
            waited += 1;
            assert!(waited < 1000, "upstream's bytes never acknowledged");
        }
        reset(server_end);
        client_end.write_all(b"more from the client").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        client_end.write_all(b"and more").unwrap();
        let mut got = Vec::new();
        client_end
            .read_to_end(&mut got)
            .expect("the whole answer, then EOF");
        assert_eq!(got.len(), answer.len());
        client_end.shutdown(Shutdown::Write).unwrap();
        assert_eq!(t.join().unwrap().down, 4 << 20);
    }

    #[test]
    fn a_client_reset_reaches_upstream_as_a_reset() {
        let (client_end, client) = pair();
        let (upstream, mut server_end) = pair();
        let t = std::thread::spawn(move || relay(client, upstream, Duration::from_secs(5), None));
        reset(client_end);
        let mut b = [0u8; 1];
        let e = server_end.read(&mut b).expect_err("a reset, not EOF");
        assert_eq!(e.kind(), ErrorKind::ConnectionReset);
        t.join().unwrap();
    }
}
