//! The egress proxy of network mode `proxy` (see docs/proxy.md).
//!
//! The supervisor binds it inside the container's network namespace on
//! 127.0.0.1:[`PROXY_PORT`] (Landlock lets the sandbox connect to that port
//! only), then serves it from the host namespace: every CONNECT or
//! absolute-URI request is checked by a [`Gate`] (the policy's network
//! rules, shared with the broker's NET_CONNECT), connected to the very
//! addresses that were checked, and relayed.

mod accept;
mod connect;
mod exchange;
pub mod http;
mod pool;
pub mod relay;
mod tally;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

pub use accept::serve;
pub use connect::{connect_any, ConnectFailed};
use http::{answer, parse_head, read_head, HeadRead};
pub use tally::Tally;
use tally::Unrecorded;

use crate::audit::{Kind, Verdict};
use crate::policy::RuleRef;

/// The proxy's port in every container's loopback (the namespace is the
/// container's own, so the port is always free).
pub const PROXY_PORT: u16 = 3128;

/// Limits of one container's proxy.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once; more get `503`.
    pub max_connections: usize,
    /// Per upstream address tried.
    pub connect_timeout: Duration,
    /// A relayed connection with no byte either way for this long ends.
    pub idle_timeout: Duration,
    /// The client must send its whole request head within this.
    pub head_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            head_timeout: Duration::from_secs(10),
        }
    }
}

/// A destination the gate let through: the addresses it checked.
#[derive(Clone, Debug)]
pub struct Granted {
    pub addrs: Vec<SocketAddr>,
    pub rule: RuleRef,
}

/// A refusal and the rule behind it.
#[derive(Clone, Debug)]
pub struct Refused {
    pub rule: RuleRef,
    pub reason: String,
    /// The resolved address refused, when the name resolved (audit only:
    /// the sandbox is not told what names resolve to).
    pub addr: Option<SocketAddr>,
}

/// One connection attempt, for the audit log.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// `host:port` as requested, or empty when the request was unreadable.
    pub target: String,
    /// The upstream address connected to; for a refusal after resolution,
    /// the address the rules refused; for a failed connect, the address
    /// whose error is reported.
    pub addr: Option<SocketAddr>,
    /// `allow`, `deny`, `close`, or `error` (allowed, but upstream failed).
    pub decision: Verdict,
    pub rule: RuleRef,
    pub reason: String,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Time spent deciding (resolution and any `ask` included).
    pub decide: Duration,
    pub duration: Duration,
}

impl Attempt {
    /// The audit line of this attempt, for container `container` (pid 0:
    /// the proxy's peer is a TCP connection, whose process is not known).
    pub fn audit_record(&self, container: &str) -> crate::audit::AuditRecord {
        let mut r = crate::audit::AuditRecord::new(container, 0, Kind::Proxy, self.target.clone());
        r.decision = self.decision;
        r.rule = self.rule.clone();
        r.reason = self.reason.clone();
        r.latency_us = self.decide.as_micros() as u64;
        r.bytes = self.bytes_up + self.bytes_down;
        r.addr = self.addr.map(|x| x.to_string());
        r.bytes_up = Some(self.bytes_up);
        r.bytes_down = Some(self.bytes_down);
        r.duration_ms = Some(self.duration.as_millis() as u64);
        r
    }
}

/// Decides destinations and records attempts: the supervisor's side.
pub trait Gate: Send + Sync + 'static {
    /// Whether this client is served at all (`Err`: why not; answered
    /// `403` at once and audited in aggregate, a line a second at most).
    /// Called in the accept loop, so it must be quick. Every client is
    /// served, unless the gate says otherwise (the learning proxy serves
    /// only its sandbox).
    fn admit(&self, _client: &TcpStream) -> Result<(), String> {
        Ok(())
    }
    fn check(&self, host: &str, port: u16) -> Result<Granted, Refused>;
    fn record(&self, attempt: &Attempt);
    /// Connects to the granted addresses (`pod` mode: from the pod's
    /// network namespace).
    fn connect(
        &self,
        addrs: &[SocketAddr],
        timeout: Duration,
    ) -> Result<(TcpStream, SocketAddr), ConnectFailed> {
        connect_any(addrs, timeout)
    }
}

/// Binds 127.0.0.1:`port` inside the network namespace of `pid`. Only the
/// calling thread enters the namespace, and it returns before anything
/// else runs: threads started later must stay in the host's namespace.
pub fn bind_in_netns(pid: i32, port: u16) -> std::io::Result<TcpListener> {
    bind_in_netns_path(Path::new(&format!("/proc/{pid}/ns/net")), port)
}

/// Binds 127.0.0.1:`port` (0: a free port, as the pod's containers share
/// one loopback) inside the network namespace at `path`, as
/// [`bind_in_netns`] does.
pub fn bind_in_netns_path(path: &Path, port: u16) -> std::io::Result<TcpListener> {
    let own = File::open("/proc/thread-self/ns/net")?;
    let target = File::open(path)?;
    setns(target.as_fd(), CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
    let bound = TcpListener::bind((Ipv4Addr::LOCALHOST, port));
    if let Err(e) = setns(own.as_fd(), CloneFlags::CLONE_NEWNET) {
        // Staying in the sandbox's namespace would make every later
        // upstream connection from there: stop rather than go on.
        tracing::error!(target: "supervisor", "cannot return to the host network namespace: {e}");
        std::process::abort();
    }
    bound
}

/// Reads from the client until a deadline for the whole head, not for
/// each read: a byte every few seconds must not hold the connection.
struct HeadReader<'a> {
    s: &'a TcpStream,
    until: Instant,
    /// The first read tries without waiting: a client's head has usually
    /// arrived by the time its connection is accepted, and then the read
    /// needs no timeout set (a socket option fewer).
    waited: bool,
}

impl Read for HeadReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        if !std::mem::replace(&mut self.waited, true) {
            use nix::sys::socket::{recv, MsgFlags};
            use std::os::fd::AsRawFd;
            match recv(self.s.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
                Err(nix::errno::Errno::EAGAIN) => {}
                got => return got.map_err(std::io::Error::from),
            }
        }
        self.s.set_read_timeout(Some(left))?;
        (&mut &*self.s).read(buf)
    }
}

/// Answers an error and closes gently: the client's unread bytes, if
/// closed over, would make the kernel send a reset that can destroy the
/// answer before the client reads it. What the client sends for a short
/// while (at most 64 KiB) is read and dropped.
fn refuse(client: &TcpStream, status: u16, deny_reason: Option<&str>, body: &str) {
    answer(&mut &*client, status, deny_reason, body);
    let _ = client.shutdown(std::net::Shutdown::Write);
    let until = Instant::now() + Duration::from_millis(500);
    // Waits from the first read: the drain is the client's to end.
    let mut r = HeadReader {
        s: client,
        until,
        waited: true,
    };
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < 64 << 10 {
        match r.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// One connection's audit line: written once, and before the client is
/// answered: once a client has seen its answer, the line exists (the
/// sandbox may end at once, and its supervisor with it).
struct Recorder<'a> {
    gate: &'a dyn Gate,
    start: Instant,
    /// Dropped once written: the supervisor need not wait any more.
    unrecorded: std::cell::Cell<Option<Unrecorded>>,
}

impl Recorder<'_> {
    fn finish(&self, mut a: Attempt) {
        a.duration = self.start.elapsed();
        self.gate.record(&a);
        drop(self.unrecorded.take());
    }

    fn refused(&self, client: &TcpStream, a: Attempt, status: u16, deny: Option<&str>) {
        let body = match deny {
            Some(_) => format!("buntime: {} denied: {}", a.target, a.reason),
            None => format!("buntime proxy: {}", a.reason),
        };
        self.finish(a);
        refuse(client, status, deny, &body);
    }
}

/// A request read, its target parsed, and the bytes read after its head
/// (with the framer that checks them, for a forwarded request).
struct Asked {
    target: http::Target,
    rest: Vec<u8>,
    framer: Option<http::BodyFramer>,
}

/// One client connection: read the head, decide, connect, relay.
fn handle(client: TcpStream, gate: &dyn Gate, limits: &Limits, unrecorded: Unrecorded) {
    let rec = Recorder {
        gate,
        start: Instant::now(),
        unrecorded: std::cell::Cell::new(Some(unrecorded)),
    };
    let _ = client.set_write_timeout(Some(limits.head_timeout));
    let mut attempt = Attempt {
        target: String::new(),
        addr: None,
        decision: Verdict::Deny,
        rule: RuleRef::Proxy,
        reason: String::new(),
        bytes_up: 0,
        bytes_down: 0,
        decide: Duration::ZERO,
        duration: Duration::ZERO,
    };
    let Some(asked) = read_request(&client, &rec, limits, &mut attempt) else {
        return;
    };
    let decided = gate.check(&asked.target.host, asked.target.port);
    attempt.decide = rec.start.elapsed();
    let granted = match decided {
        Ok(g) => g,
        Err(r) => {
            attempt.rule = r.rule;
            attempt.reason = r.reason.clone();
            attempt.addr = r.addr;
            return rec.refused(&client, attempt, 403, Some(&r.reason));
        }
    };
    attempt.rule = granted.rule;
    let upstream = match gate.connect(&granted.addrs, limits.connect_timeout) {
        Ok((s, addr)) => {
            attempt.addr = Some(addr);
            // Until the relay sets its own: an upstream that reads nothing
            // must not hold the first write (the forwarded head) forever.
            let _ = s.set_write_timeout(Some(limits.head_timeout));
            s
        }
        Err(failed) => {
            // The audit names the address the reported error came from.
            attempt.addr = failed.addr;
            let e = failed.error;
            // A timeout here means every address timed out (connect_any).
            let reason = format!("cannot connect to {}: {e}", attempt.target);
            let (a, status) = upstream_failed(attempt, &e, reason);
            return rec.refused(&client, a, status, None);
        }
    };
    relay_allowed(client, upstream, &rec, limits, attempt, asked)
}

/// Reads the request's head, parses its target and frames what came
/// with it. `None`: the client was answered already (or asked nothing).
fn read_request(
    client: &TcpStream,
    rec: &Recorder<'_>,
    limits: &Limits,
    attempt: &mut Attempt,
) -> Option<Asked> {
    let read = read_head(&mut HeadReader {
        s: client,
        until: rec.start + limits.head_timeout,
        waited: false,
    });
    let fail = |attempt: &mut Attempt, status: u16, reason: String| {
        attempt.reason = reason;
        rec.refused(client, attempt.clone(), status, None);
        None
    };
    let (head, rest) = match read {
        HeadRead::Head { head, rest } => (head, rest),
        // Nothing was asked: no attempt to record.
        HeadRead::Closed => return None,
        HeadRead::TimedOut => {
            return fail(attempt, 408, "request head not received in time".into())
        }
        HeadRead::TooLarge => return fail(attempt, 431, "request head too large".into()),
    };
    let target = match parse_head(&head) {
        Ok(t) => t,
        Err(e) => return fail(attempt, e.status, e.reason),
    };
    attempt.target = format!("{}:{}", bracket(&target.host), target.port);
    // A forwarded request goes upstream alone: the bytes read with its
    // head must be its body or a part of it, nothing after it.
    let mut framer = None;
    if target.forward_head.is_some() {
        let mut f = http::BodyFramer::new(target.body);
        let framed = match f.feed(&rest) {
            Ok(n) if n < rest.len() => Err(format!(
                "{} bytes after the request's body (one request per connection)",
                rest.len() - n
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(e.reason),
        };
        if let Err(reason) = framed {
            return fail(attempt, 400, reason);
        }
        framer = Some(f);
    }
    Some(Asked {
        target,
        rest,
        framer,
    })
}

/// The allowed connection: the tunnel's answer or the forwarded head,
/// then the relay until either side is done.
fn relay_allowed(
    client: TcpStream,
    upstream: TcpStream,
    rec: &Recorder<'_>,
    limits: &Limits,
    mut attempt: Attempt,
    asked: Asked,
) {
    let Asked {
        target,
        rest,
        framer,
    } = asked;
    let mut upstream_w = &upstream;
    let first = match &target.forward_head {
        None => (&client)
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .and_then(|_| upstream_w.write_all(&rest)),
        Some(h) => upstream_w
            .write_all(h)
            .and_then(|_| upstream_w.write_all(&rest)),
    };
    attempt.decision = Verdict::Allow;
    match first {
        Ok(()) => {
            let moved = relay::relay(client, upstream, limits.idle_timeout, framer);
            let head_len = target.forward_head.as_ref().map_or(0, Vec::len);
            attempt.bytes_up = moved.up + (rest.len() + head_len) as u64;
            attempt.bytes_down = moved.down;
            if let Some(v) = moved.violation {
                attempt.reason = v.to_string();
            }
            rec.finish(attempt)
        }
        Err(e) => {
            let reason = format!("{} did not take the request: {e}", attempt.target);
            let (a, status) = upstream_failed(attempt, &e, reason);
            // A tunnel has had its 200 already; a forwarded request has
            // had no answer yet.
            if target.forward_head.is_some() {
                rec.refused(&client, a, status, None)
            } else {
                rec.finish(a)
            }
        }
    }
}

/// An allowed upstream that failed: an `error` attempt, and the status a
/// client still owed an answer gets (`504` if it timed out, else `502`).
fn upstream_failed(mut attempt: Attempt, e: &std::io::Error, reason: String) -> (Attempt, u16) {
    attempt.decision = Verdict::Error;
    attempt.reason = reason;
    (attempt, if timed_out(e) { 504 } else { 502 })
}

/// A read or write that ran into its socket timeout (`SO_RCVTIMEO` and
/// `SO_SNDTIMEO` give `EAGAIN`).
pub(crate) fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}
