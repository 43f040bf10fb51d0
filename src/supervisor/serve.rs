//! One worker connection: handshake, then requests until the worker stops,
//! breaks the protocol, or the supervisor exits. Every decision is audited.

use std::io::Write;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use super::requests::{carry_out, Allowed};
use super::{record, Ctx, S2W_CAPACITY, W2S_CAPACITY};
use crate::audit::{Kind, Verdict};
use crate::ipc::{
    ControlEvent, ControlSocket, Message, PeerCred, PeerPolicy, Request, Segment,
    SupervisorChannel, SupervisorConfig,
};
use crate::policy::RuleRef;
use crate::proxy::Refused;

/// Refuses a connection with REJECT and audits it.
/// `linger`: how long to read what the client still sends, so that the
/// REJECT is not lost to a reset. Zero on the accept loop, which a
/// sandbox must not be able to hold up with connections it keeps open.
pub(super) fn reject(ctx: &Ctx, sock: &ControlSocket, why: &str, linger: Duration) {
    let pid = sock.peer_cred().map(|c| c.pid).unwrap_or(0);
    sock.reject(why, linger);
    let mut r = record(ctx, pid, Kind::Connect, "control socket".into());
    r.decision = Verdict::Deny;
    r.reason = why.into();
    ctx.audit.record(&r);
}

fn same_container(ctx: &Ctx, peer: &PeerCred) -> bool {
    let Some(ours) = ctx.mnt_ns.get().copied().or_else(|| {
        super::mnt_ns(ctx.init_pid)
            .ok()
            .map(|ns| *ctx.mnt_ns.get_or_init(|| ns))
    }) else {
        return false;
    };
    super::mnt_ns(peer.pid).is_ok_and(|ns| ns == ours)
}

/// The segment a connection hands its worker; made before the connection
/// comes (see `Spare`), so a worker's handshake does not wait for it.
pub(super) fn new_segment() -> crate::ipc::error::Result<Segment> {
    Segment::create_anonymous(S2W_CAPACITY, W2S_CAPACITY)
}

/// Serves one worker's connection until it stops or breaks.
pub(super) fn connection(
    ctx: &Ctx,
    sock: ControlSocket,
    segment: crate::ipc::error::Result<Segment>,
) {
    let peer = match sock.peer_cred() {
        Ok(p) => p,
        Err(_) => return,
    };
    // SO_PEERCRED is the connecting process as the kernel saw it; only
    // processes in the container's mount namespace are its workers.
    if !same_container(ctx, &peer) {
        reject(
            ctx,
            &sock,
            "not a process of this container",
            crate::ipc::control::LINGER,
        );
        return;
    }
    // The sandbox's root, while this thread is still the supervisor:
    // /proc/<init>/root is the init's, which may be another uid than the
    // worker (a failure here is retried, as the supervisor, on first use).
    let _ = ctx.view.root();
    // This thread holds the worker's rights from here to the connection's
    // end; what needs the supervisor's runs in `as_supervisor` sections.
    let creds = crate::deputy::creds::SandboxCreds::of_peer(sock.as_fd(), peer.uid, peer.gid);
    let _serving = match creds.and_then(crate::deputy::creds::serve_as) {
        Ok(s) => s,
        Err(e) => {
            reject(
                ctx,
                &sock,
                &format!("peer credentials: {e}"),
                crate::ipc::control::LINGER,
            );
            return;
        }
    };
    // Made ahead of time; a failure then may have passed: try once more.
    let segment = match segment.or_else(|_| new_segment()) {
        Ok(s) => s,
        Err(e) => {
            reject(
                ctx,
                &sock,
                &format!("no segment: {e}"),
                crate::ipc::control::LINGER,
            );
            return;
        }
    };
    let cfg = SupervisorConfig {
        peer: PeerPolicy::default(),
        ..Default::default()
    };
    let mut chan = match SupervisorChannel::handshake(sock, segment, cfg) {
        Ok(c) => c,
        Err(e) => {
            let mut r = record(ctx, peer.pid, Kind::Connect, "handshake".into());
            r.decision = Verdict::Close;
            r.reason = e.to_string();
            ctx.audit.record(&r);
            return;
        }
    };
    // A worker that cannot wake a futex (the pure-Python start of the
    // Python worker) rings the control socket instead: wait on that.
    let doorbell = chan.peer_wants_doorbell();
    // A doorbell channel sleeps in poll on the control socket, which a
    // dead worker's hang-up wakes already: only ring sleepers need a nudge.
    let _nudge = (!doorbell).then(|| ctx.nudges.add(chan.nudge()));
    // A hot worker and this thread on one vCPU pay two context switches a
    // round trip; this thread moves when it finds them so.
    crate::ipc::wait::move_off_a_shared_cpu();
    let mut tally = Tally::new();
    serve_channel(ctx, &mut chan, &peer, doorbell, &mut tally);
    tally.flush(ctx, &peer);
    ctx.audit.flush();
}

/// The request loop of one connection (`connection` tallies its output).
fn serve_channel(
    ctx: &Ctx,
    chan: &mut SupervisorChannel,
    peer: &PeerCred,
    doorbell: bool,
    tally: &mut Tally,
) {
    let mut exit_seen = false;
    // Wake-ups that found nothing to read: a worker toggling its ring's head
    // could otherwise keep this loop (outside its cgroup) busy.
    let mut idle_wakes = 0u32;
    // Audit lines may be held back (`AuditLog::record_later`): messages
    // served since the last flush.
    let mut held = 0u32;
    loop {
        // After EXIT the worker's next word is STOP, on the control socket:
        // a futex sleep on the ring would not see it (up to 200 ms more per
        // run). Waiting on the socket (doorbell armed) sees both.
        let next = if doorbell || exit_seen {
            match chan.try_recv() {
                Ok(None) => {
                    flush_held(ctx, &mut held);
                    match chan.wait_doorbell(Duration::from_millis(200)) {
                        Ok(_) => chan.try_recv(),
                        Err(e) => Err(e),
                    }
                }
                other => other,
            }
        } else {
            // Audit lines held back are written once the worker pauses
            // (the ring stays empty for a spin), not between two requests;
            // and after a few messages however busy the ring is: output
            // frames write no line, and must not keep denials unwritten.
            if held >= FLUSH_AFTER_MESSAGES || (held > 0 && !chan.wait_readable(Duration::ZERO)) {
                flush_held(ctx, &mut held);
            }
            chan.recv_timeout(Duration::from_millis(200))
        };
        match next {
            Ok(Some(m)) => {
                idle_wakes = 0;
                held += 1;
                dispatch(ctx, chan, peer, &mut exit_seen, tally, m);
            }
            // The ring is empty: read the control messages queued meanwhile,
            // until a doorbell says the ring has something again.
            Ok(None) => {
                idle_wakes += 1;
                if idle_wakes > IDLE_WAKES_BEFORE_BACKOFF {
                    std::thread::sleep(IDLE_BACKOFF);
                }
                for _ in 0..64 {
                    match chan.poll_control() {
                        Ok(Some(ControlEvent::Stop { .. })) => {
                            return drain(ctx, chan, peer, &mut exit_seen, tally)
                        }
                        Ok(Some(ControlEvent::Exit(code))) => {
                            exited(ctx, peer, &mut exit_seen, code)
                        }
                        Ok(Some(ControlEvent::Doorbell)) | Ok(None) => break,
                        Err(e) => return protocol_error(ctx, peer, &e),
                    }
                }
            }
            Err(e) => return protocol_error(ctx, peer, &e),
        }
        if chan.is_closed() {
            return drain(ctx, chan, peer, &mut exit_seen, tally);
        }
    }
}

/// Messages served before the lines held back are written, busy or not.
const FLUSH_AFTER_MESSAGES: u32 = 16;

/// Writes the audit lines held back, before the thread sleeps.
fn flush_held(ctx: &Ctx, held: &mut u32) {
    if std::mem::take(held) > 0 {
        ctx.audit.flush();
    }
}

/// Empty wake-ups in a row tolerated before each one costs a pause.
const IDLE_WAKES_BEFORE_BACKOFF: u32 = 16;
const IDLE_BACKOFF: Duration = Duration::from_millis(1);

fn dispatch(
    ctx: &Ctx,
    chan: &mut SupervisorChannel,
    peer: &PeerCred,
    seen: &mut bool,
    tally: &mut Tally,
    m: Message,
) {
    match m {
        Message::Exit(code) => exited(ctx, peer, seen, code),
        Message::Stdout(b) | Message::Stderr(b) => output(ctx, peer, tally, &b),
        m => handle(ctx, chan, peer, m),
    }
}

/// The worker stopped: what it wrote to the ring before its STOP (the end
/// of its output, its exit status) is still there. Bounded by what the ring
/// can hold, since another process in the container may keep writing.
fn drain(
    ctx: &Ctx,
    chan: &mut SupervisorChannel,
    peer: &PeerCred,
    seen: &mut bool,
    tally: &mut Tally,
) {
    // Each frame takes at least its length word and header.
    let max = W2S_CAPACITY as usize / (4 + crate::ipc::protocol::HEADER_LEN) + 1;
    for _ in 0..max {
        match chan.try_recv() {
            // Nobody is left to answer: a request is not carried out (a
            // write would still happen, an `ask` would still prompt).
            Ok(Some(Message::Request { request, .. })) => {
                let (kind, subject) = describe(&request);
                let mut r = record(ctx, peer.pid, kind, subject);
                r.decision = Verdict::Close;
                r.reason = "the worker stopped before its request was read".into();
                ctx.audit.record(&r);
            }
            Ok(Some(m)) => dispatch(ctx, chan, peer, seen, tally, m),
            Ok(None) => return,
            Err(crate::ipc::IpcError::Poisoned) => return,
            Err(e) => return protocol_error(ctx, peer, &e),
        }
    }
}

fn protocol_error(ctx: &Ctx, peer: &PeerCred, e: &crate::ipc::IpcError) {
    let mut r = record(ctx, peer.pid, Kind::Protocol, e.to_string());
    r.decision = Verdict::Close;
    r.reason = if e.is_peer_fault() {
        "worker broke the protocol".into()
    } else {
        "connection error".into()
    };
    ctx.audit.record(&r);
}

/// The worker's exit status (from its ring or its control socket), audited
/// once per connection: more would only let a worker flood the log.
fn exited(ctx: &Ctx, peer: &PeerCred, seen: &mut bool, code: i32) {
    if std::mem::replace(seen, true) {
        return;
    }
    let mut r = record(ctx, peer.pid, Kind::Exit, code.to_string());
    r.decision = Verdict::Allow;
    ctx.audit.record(&r);
}

fn handle(ctx: &Ctx, chan: &mut SupervisorChannel, peer: &PeerCred, m: Message) {
    match m {
        // Tallied by `dispatch`; audited by the loop (`exited`).
        Message::Stdout(_) | Message::Stderr(_) | Message::Exit(_) => {}
        Message::Request { id, request } => {
            let start = Instant::now();
            let outcome = carry_out(ctx, peer, &request);
            // The answer first: the audit line (its time stamp, the
            // subject's text, the JSON) is written while the worker goes on.
            let sent = answer(chan, id, &outcome);
            let (kind, subject) = describe(&request);
            let mut r = record(ctx, peer.pid, kind, subject);
            match outcome {
                Ok(Allowed { rule, bytes, .. }) => {
                    r.decision = Verdict::Allow;
                    r.rule = rule;
                    r.bytes = bytes;
                }
                // A worker's line names no address (the proxy's do).
                Err(Refused { rule, reason, .. }) => {
                    r.decision = Verdict::Deny;
                    r.rule = rule;
                    r.reason = reason;
                }
            }
            r.latency_us = start.elapsed().as_micros() as u64;
            // Written a few lines at a time while requests come back to
            // back; flushed before this thread sleeps (`serve_channel`).
            ctx.audit.record_later(&r);
            if let Err(e) = sent {
                protocol_error(ctx, peer, &e);
            }
        }
        Message::Reply { .. } => {} // refused by the channel already
    }
}

/// Sends the worker its ALLOW (with the fd, if any) or DENY.
fn answer(
    chan: &mut SupervisorChannel,
    id: u32,
    outcome: &Result<Allowed, Refused>,
) -> crate::ipc::error::Result<()> {
    match outcome {
        Ok(Allowed {
            data, fd: Some(fd), ..
        }) => chan.allow_with_fd(id, fd.as_fd(), data),
        Ok(Allowed { data, fd: None, .. }) => chan.allow(id, data),
        Err(Refused { reason, .. }) => chan.deny(id, reason),
    }
}

fn describe(req: &Request) -> (Kind, String) {
    let lossy = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
    match req {
        Request::FsRead { path } => (Kind::FsRead, lossy(path)),
        Request::FsWrite { path, .. } => (Kind::FsWrite, lossy(path)),
        Request::ListDir { path } => (Kind::ListDir, lossy(path)),
        Request::NetConnect { host, port } => (Kind::NetConnect, format!("{host}:{port}")),
        Request::Exec { argv } => (
            Kind::Exec,
            argv.iter().map(|a| lossy(a)).collect::<Vec<_>>().join(" "),
        ),
    }
}

/// STDOUT/STDERR frames of one connection, counted rather than audited
/// one by one (a sandbox decides how many frames it sends): one line per
/// `TALLY_EVERY` while output flows, and one at the end.
pub(super) struct Tally {
    frames: u64,
    kept: u64,
    dropped: u64,
    since: Instant,
}

const TALLY_EVERY: Duration = Duration::from_secs(60);

impl Tally {
    fn new() -> Tally {
        Tally {
            frames: 0,
            kept: 0,
            dropped: 0,
            since: Instant::now(),
        }
    }

    /// Audits what was counted since the last line (if anything).
    fn flush(&mut self, ctx: &Ctx, peer: &PeerCred) {
        if self.frames > 0 {
            let mut r = record(ctx, peer.pid, Kind::Stdout, "stdout+stderr".into());
            r.decision = Verdict::Allow;
            r.bytes = self.kept;
            r.count = Some(self.frames);
            if self.dropped > 0 {
                r.rule = RuleRef::ResourcesOutput;
                r.reason = format!("{} bytes over the output limit dropped", self.dropped);
            }
            ctx.audit.record(&r);
        }
        *self = Tally::new();
    }
}

fn output(ctx: &Ctx, peer: &PeerCred, tally: &mut Tally, data: &[u8]) {
    let (take, first_drop) = {
        let mut guard = match ctx.output.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let (file, written) = &mut *guard;
        let room = ctx
            .output_limit
            .map_or(data.len() as u64, |l| l.saturating_sub(*written));
        let take = (data.len() as u64).min(room) as usize;
        if take > 0 && file.write_all(&data[..take]).is_ok() {
            *written += take as u64;
        }
        // Past the limit, `written` is one more than it: the drop is noted.
        let first = match ctx.output_limit {
            Some(l) if take < data.len() && *written <= l => {
                *written = l + 1;
                true
            }
            _ => false,
        };
        (take, first)
    };
    tally.frames += 1;
    tally.kept += take as u64;
    tally.dropped += (data.len() - take) as u64;
    // The limit reached is a decision, audited once per container.
    if first_drop {
        let mut r = record(ctx, peer.pid, Kind::Stdout, "stdout+stderr".into());
        r.decision = Verdict::Deny;
        r.rule = RuleRef::ResourcesOutput;
        r.reason = "output limit reached; later output is dropped".into();
        ctx.audit.record(&r);
    }
    if tally.since.elapsed() >= TALLY_EVERY {
        tally.flush(ctx, peer);
    }
}
