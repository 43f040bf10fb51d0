//! Worker side: connect to the supervisor, write output, make requests.
//!
//! The worker trusts the supervisor, but still never indexes outside the
//! mapping (the same ring code runs on both sides).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::control::{self, ctl, ControlSocket};
use super::error::{IpcError, Result};
use super::protocol::{self, kind, Message, Reply, Request};
use super::ring::{Consumer, Producer, Pushed};
use super::segment::{Segment, DEFAULT_MAX_MESSAGE};
use super::wait::WaitConfig;

/// Env var naming the control socket (e.g. `/run/buntime/control.sock`).
pub const ENV_CONTROL: &str = "BUNTIME_CONTROL";
/// Env var naming the segment file (e.g. `/run/buntime/ipc`); only used if
/// the supervisor did not pass the segment fd in WELCOME.
pub const ENV_IPC: &str = "BUNTIME_IPC";

/// How long to wait for the fd announced by an ALLOW (it is sent before the
/// ALLOW, so it is normally already queued).
const FD_TIMEOUT: Duration = Duration::from_secs(5);
/// While blocked on the ring, look at the control socket this often to
/// notice a dead supervisor or a STOP.
const LIVENESS_SLICE: Duration = Duration::from_millis(500);
/// Bound on requests in flight (and so on replies kept for later).
const MAX_IN_FLIGHT: usize = 4096;

/// A reply plus the fd that came with it, if any.
#[derive(Debug)]
pub struct Response {
    pub reply: Reply,
    pub fd: Option<OwnedFd>,
}

/// The worker's connection.
pub struct Client {
    ctrl: ControlSocket,
    _segment: Segment,
    tx: Producer,
    rx: Consumer,
    next_id: u32,
    /// Ids in flight. A Vec: usually 0-2 entries, and hashing would cost
    /// more than the scan on the hot path.
    pending: Vec<u32>,
    replies: HashMap<u32, Reply>,
    fds: HashMap<u32, OwnedFd>,
    wait: WaitConfig,
    timeout: Option<Duration>,
    buf: Vec<u8>,
    version: u16,
    /// The supervisor's STOP reason, once it stopped the connection.
    stopped: Option<String>,
}

impl Client {
    /// Connect using `BUNTIME_CONTROL` (and `BUNTIME_IPC` as fallback).
    pub fn connect_env() -> Result<Self> {
        let ctl = std::env::var_os(ENV_CONTROL).ok_or(IpcError::MissingEnv(ENV_CONTROL))?;
        let seg = std::env::var_os(ENV_IPC).map(PathBuf::from);
        Self::connect(Path::new(&ctl), seg.as_deref())
    }

    pub fn connect(control_path: &Path, segment_path: Option<&Path>) -> Result<Self> {
        Self::handshake(ControlSocket::connect(control_path)?, segment_path)
    }

    /// HELLO -> WELCOME (with the segment fd) -> map -> READY.
    pub fn handshake(ctrl: ControlSocket, segment_path: Option<&Path>) -> Result<Self> {
        // A supervisor that rejects our credentials answers REJECT and hangs
        // up without reading HELLO: our send may then fail, but the REJECT
        // is still queued for us, and is the more useful error.
        let sent = ctrl.send(ctl::HELLO, 0, &control::hello_body(), None);
        let m = match ctrl.recv(Some(Duration::from_secs(10))) {
            Ok(Some(m)) => m,
            Ok(None) => return Err(sent.err().unwrap_or(IpcError::Timeout)),
            Err(e) => return Err(sent.err().unwrap_or(e)),
        };
        let (version, fd, flags) = match m.kind {
            ctl::WELCOME => (m.arg, m.fd, control::welcome_flags(&m.body)),
            ctl::REJECT => {
                return Err(IpcError::PeerRejected(
                    String::from_utf8_lossy(&m.body).into_owned(),
                ))
            }
            k => {
                return Err(IpcError::Handshake(format!(
                    "unexpected reply 0x{k:02x} to HELLO"
                )))
            }
        };
        let version = u16::try_from(version)
            .ok()
            .filter(|v| (control::MIN_PROTOCOL_VERSION..=control::PROTOCOL_VERSION).contains(v))
            .ok_or_else(|| IpcError::Handshake(format!("supervisor chose version {version}")))?;
        let segment = match (fd, segment_path) {
            (Some(fd), _) => Segment::open_fd(fd)?,
            (None, Some(p)) => Segment::open(p)?,
            (None, None) => return Err(IpcError::MissingEnv(ENV_IPC)),
        };
        let client = Self::from_parts(ctrl, segment, version, flags)?;
        client.ctrl.send(ctl::READY, 0, &[], None)?;
        tracing::debug!(target: "worker", version, "IPC connected");
        Ok(client)
    }

    /// Take over a connection whose handshake someone else made (HELLO,
    /// WELCOME, READY: the Python worker does it without this library):
    /// its control socket, the segment from WELCOME, the version and the
    /// supervisor's WELCOME flags. Nothing may have been written to the
    /// worker-to-supervisor ring yet.
    pub fn adopt(ctrl: ControlSocket, segment: OwnedFd, version: u16, flags: u32) -> Result<Self> {
        if !(control::MIN_PROTOCOL_VERSION..=control::PROTOCOL_VERSION).contains(&version) {
            return Err(IpcError::Handshake(format!(
                "version {version} is not spoken here"
            )));
        }
        Self::from_parts(ctrl, Segment::open_fd(segment)?, version, flags)
    }

    fn from_parts(ctrl: ControlSocket, segment: Segment, version: u16, flags: u32) -> Result<Self> {
        let (mut tx, mut rx) = segment.worker_ends(DEFAULT_MAX_MESSAGE)?;
        let fast = flags & control::FLAG_BARRIER_BEFORE_SLEEP != 0;
        tx.set_fast_publish(fast);
        rx.set_fast_publish(fast);
        Ok(Client {
            ctrl,
            _segment: segment,
            tx,
            rx,
            next_id: 1,
            pending: Vec::new(),
            replies: HashMap::new(),
            fds: HashMap::new(),
            wait: WaitConfig::default(),
            timeout: None,
            buf: Vec::new(),
            version,
            stopped: None,
        })
    }

    pub fn version(&self) -> u16 {
        self.version
    }

    /// Spin budget before sleeping.
    pub fn set_wait(&mut self, wait: WaitConfig) {
        self.wait = wait;
    }

    /// Bound on blocking calls (`None`: wait as long as the supervisor lives).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    /// Largest payload (header + body) the worker-to-supervisor ring takes.
    pub fn max_message(&self) -> usize {
        self.tx.max_message() as usize
    }

    fn deadline(&self) -> Option<Instant> {
        self.timeout.map(|t| Instant::now() + t)
    }

    /// How long the next sleep may last: until the deadline, but at most
    /// LIVENESS_SLICE so the control socket gets looked at.
    fn slice(deadline: Option<Instant>) -> Duration {
        deadline.map_or(LIVENESS_SLICE, |d| {
            d.saturating_duration_since(Instant::now())
                .min(LIVENESS_SLICE)
        })
    }

    /// Check the control socket without blocking: stash fds, notice STOP or
    /// a hang-up. Stops early once the fd for request `until` is stashed
    /// (what follows is read on a later call).
    fn pump_control(&mut self, wait: Option<Duration>, until: Option<u32>) -> Result<()> {
        if let Some(why) = &self.stopped {
            return Err(IpcError::Stopped(why.clone()));
        }
        let mut wait = wait;
        while let Some(m) = self.ctrl.recv(wait)? {
            wait = Some(Duration::ZERO);
            match (m.kind, m.fd) {
                (ctl::FD, Some(fd)) => {
                    if self.fds.len() >= 1024 {
                        return Err(IpcError::Protocol("too many unclaimed fds".into()));
                    }
                    self.fds.insert(m.arg, fd);
                    if until == Some(m.arg) {
                        return Ok(());
                    }
                }
                (ctl::DATA, None) => {}
                (ctl::STOP, _) => {
                    let why = String::from_utf8_lossy(&m.body).into_owned();
                    let why = if why.is_empty() {
                        format!("code {}", m.arg)
                    } else {
                        why
                    };
                    self.stopped = Some(why.clone());
                    return Err(IpcError::Stopped(why));
                }
                (k, _) => {
                    return Err(IpcError::Protocol(format!(
                        "unexpected control message 0x{k:02x}"
                    )))
                }
            }
        }
        Ok(())
    }

    fn push(&mut self, parts: &[&[u8]]) -> Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let deadline = self.deadline();
        loop {
            match self.tx.try_push(parts)? {
                Pushed::Done { doorbell } => {
                    if doorbell {
                        // EAGAIN just means a doorbell is already queued.
                        self.ctrl.try_send(ctl::DATA, 0, &[])?;
                    }
                    return Ok(());
                }
                Pushed::Full => {
                    let slice = Self::slice(deadline);
                    if !self.tx.wait_space(len as u32, &self.wait, Some(slice)) {
                        // STOP first: with short timeouts (the Python and Bun
                        // workers wait in 20 ms slices) a check only after
                        // the deadline would never come, and a refused
                        // request would wait forever.
                        self.pump_control(Some(Duration::ZERO), None)?;
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            return Err(IpcError::Timeout);
                        }
                    }
                }
            }
        }
    }

    /// Send an unsolicited message (STDOUT, STDERR, EXIT) as raw body bytes.
    pub fn send(&mut self, k: u8, body: &[u8]) -> Result<()> {
        if !matches!(k, kind::STDOUT | kind::STDERR | kind::EXIT) {
            return Err(IpcError::Protocol(format!(
                "0x{k:02x} is not an unsolicited message type"
            )));
        }
        self.push(&[&protocol::header(k, 0, 0), body])
    }

    /// Write output, split into messages that fit the ring.
    pub fn write_output(&mut self, k: u8, data: &[u8]) -> Result<()> {
        let chunk = self.max_message() - protocol::HEADER_LEN;
        for part in data.chunks(chunk) {
            self.send(k, part)?;
        }
        Ok(())
    }

    pub fn write_stdout(&mut self, data: &[u8]) -> Result<()> {
        self.write_output(kind::STDOUT, data)
    }

    pub fn write_stderr(&mut self, data: &[u8]) -> Result<()> {
        self.write_output(kind::STDERR, data)
    }

    pub fn exit(&mut self, code: i32) -> Result<()> {
        self.send(kind::EXIT, &code.to_le_bytes())
    }

    /// Send a request (raw body, see docs/ipc.md) without waiting; returns
    /// its id for `wait_reply`.
    pub fn send_request(&mut self, k: u8, body: &[u8]) -> Result<u32> {
        if matches!(
            k,
            kind::STDOUT | kind::STDERR | kind::EXIT | kind::ALLOW | kind::DENY
        ) {
            return Err(IpcError::Protocol(format!(
                "0x{k:02x} is not a request type"
            )));
        }
        let id = self.next_id;
        // Skip 0 (reserved for unsolicited messages) and ids still in flight.
        self.next_id = self.next_id.wrapping_add(1).max(1);
        if self.pending.contains(&id) {
            return Err(IpcError::Protocol("request id space exhausted".into()));
        }
        if self.pending.len() >= MAX_IN_FLIGHT {
            return Err(IpcError::Protocol(format!(
                "more than {MAX_IN_FLIGHT} requests in flight"
            )));
        }
        self.push(&[&protocol::header(k, 0, id), body])?;
        self.pending.push(id);
        Ok(id)
    }

    /// Wait for the reply to request `id` (replies to other ids that arrive
    /// meanwhile are kept for their own `wait_reply`).
    pub fn wait_reply(&mut self, id: u32) -> Result<Response> {
        if !self.pending.contains(&id) {
            return Err(IpcError::Protocol(format!("request {id} is not in flight")));
        }
        let deadline = self.deadline();
        loop {
            if !self.replies.is_empty() {
                if let Some(reply) = self.replies.remove(&id) {
                    return self.finish(id, reply);
                }
            }
            while self.rx.try_pop(&mut self.buf)? {
                match protocol::decode(&self.buf)? {
                    Message::Reply { id: rid, reply } if self.pending.contains(&rid) => {
                        if rid == id {
                            return self.finish(id, reply);
                        }
                        self.replies.insert(rid, reply);
                    }
                    other => {
                        return Err(IpcError::Protocol(format!(
                            "unexpected message from supervisor: {other:?}"
                        )))
                    }
                }
            }
            let slice = Self::slice(deadline);
            if !self.rx.wait_readable(&self.wait, Some(slice)) {
                // A STOP (the supervisor refused the request at the
                // protocol level) ends the wait, timeout or not.
                self.pump_control(Some(Duration::ZERO), None)?;
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(IpcError::Timeout);
                }
            }
        }
    }

    fn finish(&mut self, id: u32, reply: Reply) -> Result<Response> {
        self.pending.retain(|&p| p != id);
        let fd = match reply {
            Reply::Allow {
                fd_follows: true, ..
            } => Some(self.take_fd(id)?),
            _ => None,
        };
        Ok(Response { reply, fd })
    }

    fn take_fd(&mut self, id: u32) -> Result<OwnedFd> {
        let deadline = Instant::now() + FD_TIMEOUT;
        loop {
            if let Some(fd) = self.fds.remove(&id) {
                return Ok(fd);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(IpcError::Protocol(format!(
                    "ALLOW for {id} announced an fd that never came"
                )));
            }
            self.pump_control(Some(left), Some(id))?;
        }
    }

    /// Send a request and wait for its reply.
    pub fn request(&mut self, k: u8, body: &[u8]) -> Result<Response> {
        let id = self.send_request(k, body)?;
        self.wait_reply(id)
    }

    /// Typed form of `request`.
    pub fn request_typed(&mut self, req: &Request) -> Result<Response> {
        let mut body = Vec::new();
        req.encode_body(&mut body);
        self.request(req.kind(), &body)
    }

    /// Tell the supervisor we are done and close the socket.
    pub fn close(self) -> Result<()> {
        if self.stopped.is_none() {
            self.ctrl
                .send(ctl::STOP, control::stop::NORMAL, &[], None)?;
        }
        Ok(())
    }
}
