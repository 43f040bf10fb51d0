//! Supervisor side of one worker's channel. Never trusts the segment: see
//! ring.rs for the ring checks; here every decode or protocol error closes
//! the channel with an audit log line (target `supervisor`).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::control::{self, ctl, stop, ControlListener, ControlSocket, PeerCred, PeerPolicy};
use super::error::{IpcError, Result};
use super::protocol::{self, kind, Message, Reply, FLAG_FD_FOLLOWS};
use super::ring::{Consumer, Nudge, Producer, Pushed};
use super::segment::{Segment, DEFAULT_MAX_MESSAGE};
use super::wait::WaitConfig;

/// Supervisor-side knobs.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Who may connect (SO_PEERCRED).
    pub peer: PeerPolicy,
    pub wait: WaitConfig,
    /// Bound on accept + handshake.
    pub handshake_timeout: Duration,
    /// How long `send_reply` waits for the worker to make room before it
    /// gives up with `IpcError::Full`.
    pub send_timeout: Duration,
    pub max_message: u32,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            peer: PeerPolicy::same_uid(),
            wait: WaitConfig::default(),
            handshake_timeout: Duration::from_secs(5),
            send_timeout: Duration::from_secs(1),
            max_message: DEFAULT_MAX_MESSAGE,
        }
    }
}

/// Something that arrived on the control socket.
#[derive(Debug, PartialEq, Eq)]
pub enum ControlEvent {
    /// The worker rang the doorbell: the ring has data.
    Doorbell,
    /// The worker is shutting down (or the socket closed: code `NORMAL`,
    /// empty reason).
    Stop { code: u32, reason: String },
    /// The worker's exit status, sent on the control socket (`ctl::EXIT`).
    Exit(i32),
}

/// A message from `try_recv_borrowed`.
#[derive(Debug, PartialEq, Eq)]
pub enum Received<'a> {
    /// STDOUT (0x00) or STDERR (0x06) bytes.
    Output {
        kind: u8,
        data: &'a [u8],
    },
    Message(Message),
}

/// One worker's connection, owned by the supervisor's event loop.
pub struct SupervisorChannel {
    segment: Segment,
    tx: Producer,
    rx: Consumer,
    ctrl: ControlSocket,
    peer: PeerCred,
    version: u16,
    /// The worker's HELLO capability flags.
    peer_flags: u32,
    cfg: SupervisorConfig,
    buf: Vec<u8>,
    closed: bool,
    /// The worker said STOP or hung up: nothing more is sent to it, but
    /// what it left in the ring can still be read.
    peer_stopped: bool,
    /// Set by a `Nudge` (see `nudge`): ends `recv_timeout`'s sleep.
    nudged: Arc<AtomicBool>,
}

fn recv_kind(sock: &ControlSocket, want: u8, deadline: Instant) -> Result<control::ControlMsg> {
    let left = deadline.saturating_duration_since(Instant::now());
    match sock.recv(Some(left))? {
        None => Err(IpcError::Timeout),
        Some(m) if m.kind == want && m.fd.is_none() => Ok(m),
        Some(m) => Err(IpcError::Handshake(format!(
            "expected control message 0x{want:02x}, got 0x{:02x}",
            m.kind
        ))),
    }
}

impl SupervisorChannel {
    /// Accept the next worker on `listener` and run the handshake.
    pub fn accept(
        listener: &ControlListener,
        segment: Segment,
        cfg: SupervisorConfig,
    ) -> Result<Self> {
        let sock = listener.accept(Some(cfg.handshake_timeout))?;
        Self::handshake(sock, segment, cfg)
    }

    /// Run the handshake on an already-connected socket:
    /// peer check, HELLO -> WELCOME(segment fd) -> READY.
    pub fn handshake(sock: ControlSocket, segment: Segment, cfg: SupervisorConfig) -> Result<Self> {
        let deadline = Instant::now() + cfg.handshake_timeout;
        let peer = sock.peer_cred()?;
        if let Err(why) = cfg.peer.check(&peer) {
            tracing::warn!(target: "supervisor", audit = true, peer_pid = peer.pid, peer_uid = peer.uid,
                peer_gid = peer.gid, reason = %why, "IPC peer rejected");
            sock.reject(&why, control::LINGER);
            return Err(IpcError::PeerRejected(why));
        }
        // Anything but HELLO (garbage, a bad version) gets REJECT with the
        // reason, as a message the client can read.
        let hello = match recv_kind(&sock, ctl::HELLO, deadline) {
            Ok(m) => m,
            Err(e @ (IpcError::Handshake(_) | IpcError::Protocol(_))) => {
                sock.reject(&e.to_string(), control::LINGER);
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let (version, peer_flags) = match control::negotiate(&hello.body) {
            Ok(v) => v,
            Err(why) => {
                sock.reject(&why, control::LINGER);
                return Err(IpcError::Handshake(why));
            }
        };
        let flags = control::local_flags().to_le_bytes();
        sock.send(ctl::WELCOME, u32::from(version), &flags, Some(segment.fd()))?;
        recv_kind(&sock, ctl::READY, deadline)?;
        let (mut tx, mut rx) = segment.supervisor_ends(cfg.max_message)?;
        // If the worker lies about barriering before it sleeps, only its own
        // wake-ups get late.
        let fast = peer_flags & control::FLAG_BARRIER_BEFORE_SLEEP != 0;
        tx.set_fast_publish(fast);
        rx.set_fast_publish(fast);
        tracing::debug!(target: "supervisor", peer_pid = peer.pid, version, "IPC channel up");
        Ok(SupervisorChannel {
            segment,
            tx,
            rx,
            ctrl: sock,
            peer,
            version,
            peer_flags,
            cfg,
            buf: Vec::new(),
            closed: false,
            peer_stopped: false,
            nudged: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn peer(&self) -> PeerCred {
        self.peer
    }

    pub fn version(&self) -> u16 {
        self.version
    }

    /// The worker asked to be waited for with doorbells, not futex wakes
    /// (`FLAG_DOORBELL_WAKE`): see `wait_doorbell`.
    pub fn peer_wants_doorbell(&self) -> bool {
        self.peer_flags & control::FLAG_DOORBELL_WAKE != 0
    }

    /// Wait up to `timeout` for the worker to write, for a worker that
    /// rings the control socket instead of waking a futex: announce a
    /// doorbell and poll the control socket. No spin: every control message
    /// such a worker sends would otherwise buy it 50 µs of our CPU. True if
    /// the ring may have data or a control message is waiting (then
    /// `try_recv` and `poll_control`).
    pub fn wait_doorbell(&mut self, timeout: Duration) -> Result<bool> {
        if self.arm_doorbell()? {
            return Ok(true);
        }
        let mut pfd = libc::pollfd {
            fd: self.ctrl.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        Ok(n > 0)
    }

    pub fn segment(&self) -> &Segment {
        &self.segment
    }

    /// The control socket, to register with an event loop (readable on
    /// doorbell, STOP or hang-up; then call `poll_control`).
    pub fn control_fd(&self) -> BorrowedFd<'_> {
        self.ctrl.as_fd()
    }

    /// True once the channel failed, was stopped by us, or the worker
    /// stopped (its last messages may still be in the ring: `try_recv`).
    pub fn is_closed(&self) -> bool {
        self.closed || self.peer_stopped
    }

    /// Close the channel because of `err`; log it for audit if the peer is
    /// to blame. Returns `err` for the caller to propagate.
    fn fail(&mut self, err: IpcError) -> IpcError {
        if !self.closed {
            if err.is_peer_fault() {
                tracing::warn!(target: "supervisor", audit = true, peer_pid = self.peer.pid,
                    peer_uid = self.peer.uid, error = %err, "closing IPC channel: peer misbehaved");
            }
            let code = match err {
                IpcError::Corrupt { .. } => stop::CORRUPTION,
                _ => stop::PROTOCOL_ERROR,
            };
            let msg = err.to_string();
            let reason = &msg.as_bytes()[..msg.len().min(256)];
            let _ = self.ctrl.try_send(ctl::STOP, code, reason);
            // Half-close: the worker reads STOP, then EOF (see Drop).
            self.ctrl.shutdown_write();
            self.closed = true;
        }
        err
    }

    fn usable(&self) -> Result<()> {
        if self.closed || self.peer_stopped {
            Err(IpcError::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Reading stays possible after the worker's STOP, so that what it
    /// wrote just before is not lost; only a failure ends it.
    fn readable(&self) -> Result<()> {
        if self.closed {
            Err(IpcError::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Next message from the worker, if one is there. Never blocks. Works
    /// after the worker's STOP too (drain what it wrote before).
    pub fn try_recv(&mut self) -> Result<Option<Message>> {
        self.readable()?;
        match self.rx.try_pop(&mut self.buf) {
            Ok(false) => Ok(None),
            Ok(true) => match protocol::decode(&self.buf) {
                Ok(Message::Reply { .. }) => {
                    Err(self.fail(IpcError::Protocol("worker sent a reply message".into())))
                }
                Ok(m) => Ok(Some(m)),
                Err(e) => Err(self.fail(e.into())),
            },
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Like `try_recv`, but STDOUT/STDERR data is lent from the channel's
    /// private buffer instead of copied again (the payload was already
    /// copied out of the shared mapping, so the worker cannot change it).
    pub fn try_recv_borrowed(&mut self) -> Result<Option<Received<'_>>> {
        self.readable()?;
        match self.rx.try_pop(&mut self.buf) {
            Ok(false) => return Ok(None),
            Ok(true) => {}
            Err(e) => return Err(self.fail(e)),
        }
        if let Some(&k @ (kind::STDOUT | kind::STDERR)) = self.buf.first() {
            if let Err(e) = protocol::check_header(&self.buf) {
                return Err(self.fail(e.into()));
            }
            return Ok(Some(Received::Output {
                kind: k,
                data: &self.buf[protocol::HEADER_LEN..],
            }));
        }
        match protocol::decode(&self.buf) {
            Ok(Message::Reply { .. }) => {
                Err(self.fail(IpcError::Protocol("worker sent a reply message".into())))
            }
            Ok(m) => Ok(Some(Received::Message(m))),
            Err(e) => Err(self.fail(e.into())),
        }
    }

    /// Like `try_recv`, but spin then sleep (futex) up to `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Message>> {
        if let Some(m) = self.try_recv()? {
            return Ok(Some(m));
        }
        // Ready means head moved (the next try_recv yields a message or an
        // error) or a nudge came.
        let ready = self
            .rx
            .wait_readable_or(&self.cfg.wait, Some(timeout), &self.nudged);
        // A nudge is taken once; the ring may be empty then (Ok(None)).
        self.nudged.store(false, Ordering::SeqCst);
        if ready {
            self.try_recv()
        } else {
            Ok(None)
        }
    }

    /// A handle another thread can use to end this channel's current (or
    /// next) `recv_timeout` sleep early, e.g. when the container's init
    /// exited and the worker may be gone without a STOP: the caller then
    /// looks at the control socket (`poll_control`) sooner.
    pub fn nudge(&self) -> Nudge {
        self.rx.nudge(Arc::clone(&self.nudged))
    }

    /// Spin, then sleep until the worker may have written something, at most
    /// `timeout`. True if there is something to read (or the ring is
    /// corrupt: `try_recv` will say).
    pub fn wait_readable(&mut self, timeout: Duration) -> bool {
        !self.closed && self.rx.wait_readable(&self.cfg.wait, Some(timeout))
    }

    /// For event loops: ask the worker to ring the control socket when it
    /// next writes, instead of a futex wake. Returns true if data is already
    /// waiting (read it now rather than sleeping).
    pub fn arm_doorbell(&mut self) -> Result<bool> {
        self.usable()?;
        Ok(self.rx.arm_doorbell())
    }

    /// Drain one control message without blocking.
    pub fn poll_control(&mut self) -> Result<Option<ControlEvent>> {
        self.readable()?;
        match self.ctrl.recv(Some(Duration::ZERO)) {
            Ok(None) => Ok(None),
            Ok(Some(m)) if m.fd.is_some() => {
                Err(self.fail(IpcError::Protocol("worker sent a file descriptor".into())))
            }
            Ok(Some(m)) => match m.kind {
                ctl::DATA | ctl::READY => Ok(Some(ControlEvent::Doorbell)),
                ctl::EXIT => Ok(Some(ControlEvent::Exit(m.arg as i32))),
                ctl::STOP => {
                    self.peer_stopped = true;
                    Ok(Some(ControlEvent::Stop {
                        code: m.arg,
                        reason: String::from_utf8_lossy(&m.body).into_owned(),
                    }))
                }
                k => Err(self.fail(IpcError::Protocol(format!(
                    "unexpected control message 0x{k:02x}"
                )))),
            },
            Err(IpcError::Closed) => {
                self.peer_stopped = true;
                Ok(Some(ControlEvent::Stop {
                    code: stop::NORMAL,
                    reason: String::new(),
                }))
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn push(&mut self, parts: &[&[u8]]) -> Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        // Only read the clock once the ring is found full.
        let mut deadline: Option<Instant> = None;
        loop {
            match self.tx.try_push(parts) {
                Ok(Pushed::Done { doorbell }) => {
                    if doorbell {
                        let _ = self.ctrl.try_send(ctl::DATA, 1, &[]);
                    }
                    return Ok(());
                }
                Ok(Pushed::Full) => {
                    let send_timeout = self.cfg.send_timeout;
                    let d = *deadline.get_or_insert_with(|| Instant::now() + send_timeout);
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() || !self.tx.wait_space(len as u32, &self.cfg.wait, Some(left))
                    {
                        return Err(self.fail(IpcError::Full));
                    }
                }
                // Our own oversized reply: not the peer's fault, keep going.
                Err(e @ IpcError::TooLarge { .. }) => return Err(e),
                Err(e) => return Err(self.fail(e)),
            }
        }
    }

    /// Answer request `id`.
    pub fn send_reply(&mut self, id: u32, reply: &Reply) -> Result<()> {
        self.usable()?;
        match reply {
            Reply::Allow { data, fd_follows } => {
                let flags = if *fd_follows { FLAG_FD_FOLLOWS } else { 0 };
                self.push(&[&protocol::header(kind::ALLOW, flags, id), data])
            }
            Reply::Deny { reason } => {
                // Cut at a char boundary so the reason stays valid UTF-8.
                let mut end = reason.len().min(protocol::MAX_REASON);
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                self.push(&[
                    &protocol::header(kind::DENY, 0, id),
                    &reason.as_bytes()[..end],
                ])
            }
        }
    }

    pub fn allow(&mut self, id: u32, data: &[u8]) -> Result<()> {
        self.usable()?;
        self.push(&[&protocol::header(kind::ALLOW, 0, id), data])
    }

    pub fn deny(&mut self, id: u32, reason: &str) -> Result<()> {
        self.send_reply(
            id,
            &Reply::Deny {
                reason: reason.to_owned(),
            },
        )
    }

    /// Grant request `id` with an open file or connected socket: the fd goes
    /// over the control socket first, then ALLOW with FLAG_FD_FOLLOWS.
    pub fn allow_with_fd(&mut self, id: u32, fd: BorrowedFd<'_>, data: &[u8]) -> Result<()> {
        self.usable()?;
        let timeout = self.cfg.send_timeout;
        if let Err(e) = self.ctrl.send_within(ctl::FD, id, &[], Some(fd), timeout) {
            return Err(self.fail(e));
        }
        self.push(&[&protocol::header(kind::ALLOW, FLAG_FD_FOLLOWS, id), data])
    }

    /// Orderly shutdown: tell the worker to stop and close the socket.
    pub fn stop(&mut self, reason: &str) {
        if !self.closed {
            let r = &reason.as_bytes()[..reason.len().min(256)];
            let _ = self.ctrl.try_send(ctl::STOP, stop::NORMAL, r);
            self.ctrl.shutdown_write();
            self.closed = true;
        }
    }
}

impl Drop for SupervisorChannel {
    /// The worker's unread messages are drained before the socket closes,
    /// so that a STOP reaches it as a message, not as ECONNRESET.
    fn drop(&mut self) {
        self.ctrl.linger(control::LINGER);
    }
}
