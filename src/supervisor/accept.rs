//! The supervisor's main loop: accept worker connections (each on a
//! thread of its own, started ahead as a spare), enforce
//! `resources.timeout`, and end once the container's init has exited.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::process::{SUPERVISOR_WIND_DOWN, WORKERS_WIND_DOWN};
use super::{claim, egress, record, serve, Ctx};
use crate::ipc::{ControlListener, ControlSocket};

/// Connections served at once; more are refused.
const MAX_WORKERS: usize = 64;

/// `resources.timeout`: SIGKILL the init (through its pidfd, so never a
/// recycled pid) once the wall-clock limit has passed, counted from when
/// the supervisor starts serving (right after create), or, for a pooled
/// run, from its claim.
fn enforce_timeout(ctx: &Ctx, pidfd: &OwnedFd, deadline: &mut Option<Instant>) {
    let Some(d) = *deadline else { return };
    if Instant::now() < d {
        return;
    }
    *deadline = None;
    kill_init(ctx, pidfd, "wall-clock limit reached");
}

/// SIGKILL to the init, audited as the time limit's, with `reason`.
fn kill_init(ctx: &Ctx, pidfd: &OwnedFd, reason: &str) {
    let killed = super::signal_kill(pidfd);
    let mut rec = record(ctx, 0, crate::audit::Kind::Timeout, "container init".into());
    rec.decision = if killed {
        crate::audit::Verdict::Kill
    } else {
        crate::audit::Verdict::Error
    };
    rec.rule = crate::policy::RuleRef::ResourcesTimeout;
    rec.reason = reason.into();
    ctx.audit.record(&rec);
}

/// How often an unclaimed pooled run's supervisor looks for the claim
/// (and whether its pooled run still lives).
const CLAIM_POLL: Duration = Duration::from_millis(100);

/// An unclaimed pooled sandbox whose pooled run is gone: nobody will
/// claim it, so it is killed (its init exits, and we wind down).
fn kill_orphan(ctx: &Ctx, pidfd: &OwnedFd) {
    kill_init(ctx, pidfd, "pooled run gone before its claim");
}

/// Before the claim: the deadline once claimed, or the kill once orphaned.
/// Returns whether it is still unclaimed.
fn check_claim(
    ctx: &Ctx,
    pidfd: &OwnedFd,
    unclaimed: &claim::Unclaimed,
    limit: Option<Duration>,
    deadline: &mut Option<Instant>,
) -> bool {
    match unclaimed.check() {
        claim::Claim::Waiting => true,
        claim::Claim::Claimed(at) => {
            *deadline = limit.map(|t| at + t);
            false
        }
        claim::Claim::Orphaned => {
            tracing::info!(target: "supervisor", container = %ctx.id, "pooled run gone before its claim: killing the sandbox");
            kill_orphan(ctx, pidfd);
            false
        }
    }
}

/// The live connections' nudges (`SupervisorChannel::nudge`): at init's
/// exit each connection thread is woken from its ring sleep, so a worker
/// killed before its STOP costs no 200 ms wait (`wind_down`).
#[derive(Default)]
pub(crate) struct Nudges {
    next: std::sync::atomic::AtomicU64,
    live: std::sync::Mutex<std::collections::HashMap<u64, crate::ipc::Nudge>>,
}

/// Takes its nudge out of the registry when the connection ends.
pub(crate) struct NudgeSlot<'a>(&'a Nudges, u64);

impl Nudges {
    pub(crate) fn add(&self, n: crate::ipc::Nudge) -> NudgeSlot<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.insert(id, n);
        NudgeSlot(self, id)
    }

    fn wake_all(&self) {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.values().for_each(crate::ipc::Nudge::wake);
    }
}

impl Drop for NudgeSlot<'_> {
    fn drop(&mut self) {
        let mut live = self.0.live.lock().unwrap_or_else(|p| p.into_inner());
        live.remove(&self.1);
    }
}

/// A connection thread started before its connection comes, its segment
/// made: a worker's handshake then waits for neither (thread start-up,
/// memfd, mapping: a quarter of a millisecond of every `buntime run`).
struct Spare(std::sync::mpsc::Sender<ControlSocket>);

impl Spare {
    fn start(ctx: &Arc<Ctx>, workers: &Arc<AtomicUsize>) -> Option<Spare> {
        let (tx, rx) = std::sync::mpsc::channel::<ControlSocket>();
        let ctx = Arc::clone(ctx);
        let workers = Arc::clone(workers);
        std::thread::Builder::new()
            .name("worker".into())
            .spawn(move || {
                let segment = serve::new_segment();
                // No connection before the supervisor ends: nothing to do.
                let Ok(sock) = rx.recv() else { return };
                // The slot was taken for us when the socket was handed over;
                // given back even if the connection's thread panics.
                let _slot = Slot(workers);
                serve::connection(&ctx, sock, segment);
            })
            .ok()
            .map(|_| Spare(tx))
    }
}

/// What one wait of the loop saw.
enum Woken {
    /// Nothing (timeout, a signal): look at the deadline again.
    Nothing,
    InitExited,
    Connection,
    /// poll failed: the loop ends.
    Failed,
}

/// Waits for the init's exit or a connection, at most a second (or until
/// the deadline).
fn wait(pidfd: &OwnedFd, listener: &ControlListener, deadline: Option<Instant>) -> Woken {
    let mut fds = [
        libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: std::os::fd::AsFd::as_fd(listener).as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let wait_ms = deadline.map_or(1000, |d| {
        d.saturating_duration_since(Instant::now())
            .as_millis()
            .clamp(1, 1000) as i32
    });
    // SAFETY: two valid pollfds.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, wait_ms) };
    if r < 0 {
        if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            return Woken::Nothing;
        }
        return Woken::Failed;
    }
    if fds[0].revents != 0 {
        Woken::InitExited
    } else if fds[1].revents != 0 {
        Woken::Connection
    } else {
        Woken::Nothing
    }
}

/// The init has exited: let connections read what workers sent last
/// (EXIT, output), briefly, so a worker that outlives init does not keep
/// us; and let proxy connections write their audit lines.
fn wind_down(ctx: &Ctx, workers: &AtomicUsize, egress: Option<&egress::Egress>) {
    tracing::info!(target: "supervisor", container = %ctx.id, "container init exited");
    let exited = Instant::now();
    ctx.nudges.wake_all();
    while workers.load(Ordering::SeqCst) > 0 && exited.elapsed() < WORKERS_WIND_DOWN {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Proxy connections end once the container's sockets are gone (a
    // relay draining an upstream that does not close is left).
    if let Some(e) = egress {
        e.wind_down(exited + SUPERVISOR_WIND_DOWN);
    }
}

/// Takes one connection and hands it to the spare (or a thread made now);
/// starts the next spare.
fn accept_one(
    ctx: &Arc<Ctx>,
    listener: &ControlListener,
    workers: &Arc<AtomicUsize>,
    spare: &mut Option<Spare>,
) {
    let Ok(sock) = listener.accept(Some(Duration::ZERO)) else {
        return;
    };
    if workers.load(Ordering::SeqCst) >= MAX_WORKERS {
        serve::reject(ctx, &sock, "too many connections", Duration::ZERO);
        return;
    }
    workers.fetch_add(1, Ordering::SeqCst);
    // The spare, or (if its thread could not start) one made now.
    let handed = spare
        .take()
        .or_else(|| Spare::start(ctx, workers))
        .is_some_and(|Spare(tx)| tx.send(sock).is_ok());
    if !handed {
        workers.fetch_sub(1, Ordering::SeqCst);
    }
    // The next connection's, while this one is served.
    if workers.load(Ordering::SeqCst) < MAX_WORKERS {
        *spare = Spare::start(ctx, workers);
    }
}

/// Serves until the container's init has exited.
pub(super) fn serve_loop(
    ctx: &Arc<Ctx>,
    listener: &ControlListener,
    pidfd: &OwnedFd,
    egress: Option<&egress::Egress>,
) {
    let workers = Arc::new(AtomicUsize::new(0));
    let mut spare = Spare::start(ctx, &workers);
    let limit = ctx.policy.resources.timeout.map(|t| t.as_duration());
    let mut unclaimed = ctx.pooled_by.map(claim::Unclaimed::watch);
    let mut deadline = limit
        .filter(|_| unclaimed.is_none())
        .map(|t| Instant::now() + t);
    loop {
        if let Some(u) = &unclaimed {
            if !check_claim(ctx, pidfd, u, limit, &mut deadline) {
                unclaimed = None;
            }
        }
        enforce_timeout(ctx, pidfd, &mut deadline);
        // Unclaimed: look for the claim (or the pooled run's end) again soon.
        let wake = deadline.or_else(|| unclaimed.as_ref().map(|_| Instant::now() + CLAIM_POLL));
        match wait(pidfd, listener, wake) {
            Woken::Nothing => {}
            Woken::Failed => return,
            Woken::InitExited => return wind_down(ctx, &workers, egress),
            Woken::Connection => accept_one(ctx, listener, &workers, &mut spare),
        }
    }
}

/// One taken connection slot, given back on drop.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
