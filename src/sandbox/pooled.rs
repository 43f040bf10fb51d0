//! A pooled run (`buntime pool fill`, docs/run.md "Pool"): `run_observed`
//! split before the start. At fill time the sandbox is created exactly as
//! a run's (for Python and Bun, also started: the worker does its imports
//! and handshake, then waits for one byte on an inherited socket, fd 3);
//! then one claim is waited for. The claim brings the client's stdio, which
//! becomes ours; the run then goes on as any run (start or the byte,
//! relay, wait, wind down) and its exit code goes back to the client.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::pool::listen::{Claim, Listener, Waited};
use super::pool::{self, peer::Expected};
use super::relay::{self, Shape};
use super::{create_run, finish_run, setup, Created, Kind, RunRequest, SandboxError};
use crate::runtime::{foreground, lifecycle};

/// The worker's variable naming its go socket (see the Python worker).
pub const GO_ENV: &str = "BUNTIME_GO_FD";
/// The go socket's number in the sandbox (the first preserved fd).
const GO_FD: RawFd = 3;
/// How long a warm worker has to get ready (imports, handshake).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What a pooled run is told by `pool fill`.
pub struct PoolOptions {
    pub key: String,
    /// The filler's stdout/stderr: the claimers' (it is in the key).
    pub shape: Shape,
    /// Unclaimed this long, the pooled run ends.
    pub idle: Duration,
    /// Where `ready` (or the error) is said to `pool fill`.
    pub report: std::fs::File,
}

/// A pooled run's differences at create.
pub(super) struct Setup {
    shape: Shape,
    /// Our end of the sandbox's stdin (its end is our fd 0 until the
    /// claim): fed from the client's stdin.
    stdin: OwnedFd,
    /// Python, Bun: our end of the worker's go socket (its end is fd 3).
    go: Option<UnixStream>,
}

impl Setup {
    fn new(kind: Kind, shape: Shape) -> Result<Setup, SandboxError> {
        let err = |e: std::io::Error| setup(format!("pooled run: {e}"));
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| err(e.into()))?;
        let write = high(write).map_err(err)?;
        // Without O_CLOEXEC on the new number: the sandbox inherits it.
        nix::unistd::dup2(read.as_raw_fd(), 0).map_err(|e| err(e.into()))?;
        drop(read);
        let go = if matches!(kind, Kind::Python | Kind::Bun) {
            let (ours, theirs) = UnixStream::pair().map_err(err)?;
            let ours = UnixStream::from(high(ours.into()).map_err(err)?);
            let theirs = high(theirs.into()).map_err(err)?;
            // SAFETY: F_GETFD only inspects the descriptor.
            if unsafe { libc::fcntl(GO_FD, libc::F_GETFD) } >= 0 {
                return Err(setup("pooled run: fd 3 is in use"));
            }
            nix::unistd::dup2(theirs.as_raw_fd(), GO_FD).map_err(|e| err(e.into()))?;
            Some(ours)
        } else {
            None
        };
        Ok(Setup {
            shape,
            stdin: write,
            go,
        })
    }

    /// The spec's differences: the go socket's variable (warm), and the
    /// timeout counted from the claim.
    pub(super) fn adjust(
        &self,
        spec: &mut libcontainer::oci_spec::runtime::Spec,
        sandbox: &mut crate::prepare::RunSandbox,
    ) {
        if self.go.is_some() {
            sandbox.worker_env.push(format!("{GO_ENV}={GO_FD}"));
        }
        let mut a = spec.annotations().clone().unwrap_or_default();
        a.insert(
            crate::supervisor::ANNOTATION_TIMEOUT_FROM.into(),
            "claim".into(),
        );
        spec.set_annotations(Some(a));
    }

    pub(super) fn plumb(&self) -> std::io::Result<relay::Plumbing> {
        relay::plumb_as(self.shape)
    }

    pub(super) fn preserve_fds(&self) -> i32 {
        i32::from(self.go.is_some())
    }
}

/// `fd` moved to a number of 10 or more (close-on-exec): the low ones
/// are the sandbox's to inherit.
fn high(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor we then own.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `n` is ours alone, just made.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(n) })
}

/// Runs a pooled run: ready, one claim (or none: drain, idle, a signal),
/// then the run. Errors before `ready` are said on `report` too.
pub fn serve_pooled(req: RunRequest, mut opts: PoolOptions) -> Result<(), SandboxError> {
    let made = life_lock(&req).and_then(|life| Ok((life, make_ready(&req, &opts)?)));
    // The life lock is dropped last: after the sandbox is deleted.
    let (_life, (c, setup, mut listener, init)) = match made {
        Ok(m) => m,
        Err(e) => {
            let _ = writeln!(opts.report, "error: {e}");
            return Err(e);
        }
    };
    let _ = writeln!(opts.report, "ready");
    drop(opts.report);
    tracing::debug!(target: "cli", "pool: ready, waiting for a claim");
    match listener.wait(opts.idle, &c.set, &init) {
        Waited::Claimed(claim) => {
            drop(listener);
            kill_when_client_goes(&claim, &init);
            run_claimed(c, &req, setup, claim);
        }
        Waited::Drained(conn) => {
            tracing::debug!(target: "cli", "pool: drained");
            end_unclaimed(c, listener);
            drop(conn);
        }
        other => {
            let why = match other {
                Waited::Idle => "idle".to_string(),
                Waited::Signalled(s) => format!("{s}"),
                Waited::SandboxExited => "sandbox exited".to_string(),
                Waited::Failed(e) => e.to_string(),
                _ => String::new(),
            };
            tracing::debug!(target: "cli", "pool: ending unclaimed ({why})");
            end_unclaimed(c, listener);
        }
    }
    Ok(())
}

type Ready = (Created, Setup, Listener, OwnedFd);

/// Held for the run's whole life, taken before its sandbox exists: while
/// it is, `pool fill`/`drain`'s sweep leaves the sandbox alone.
fn life_lock(req: &RunRequest) -> Result<super::orphans::RunLock, SandboxError> {
    let id = format!("run-{}", std::process::id());
    super::orphans::RunLock::hold(&req.state_root, &id).map_err(|e| setup_err("life lock", e))
}

/// Created (and, warm, started up to the go byte) and listening.
fn make_ready(req: &RunRequest, opts: &PoolOptions) -> Result<Ready, SandboxError> {
    // Before the run's private mount namespace: the one clients share.
    let peers = Expected::here().map_err(|e| setup_err("own namespaces", e))?;
    let mut setup = Setup::new(req.target.kind(), opts.shape)?;
    let c = create_run(req, Some(&setup))?;
    let init = crate::supervisor::pidfd_open(c.pid.as_raw())
        .map_err(|e| setup_err("pidfd of the sandbox", e))?;
    if let Some(go) = setup.go.as_mut() {
        // The worker's end is the sandbox's alone now: EOF if we die.
        let _ = nix::unistd::close(GO_FD);
        lifecycle::start(&c.cleanup.root, &c.cleanup.id)?;
        wait_ready(go)?;
    }
    let listener = Listener::bind(&req.state_root, &opts.key, peers)
        .map_err(|e| setup_err("pool socket", e))?;
    Ok((c, setup, listener, init))
}

fn setup_err(what: &str, e: std::io::Error) -> SandboxError {
    setup(format!("pooled run: {what}: {e}"))
}

/// The warm worker's `R`: its imports and handshake are done.
fn wait_ready(go: &mut UnixStream) -> Result<(), SandboxError> {
    go.set_read_timeout(Some(READY_TIMEOUT))
        .map_err(|e| setup_err("worker socket", e))?;
    let mut b = [0u8; 1];
    match go.read(&mut b) {
        Ok(1) if b[0] == b'R' => Ok(()),
        Ok(_) => Err(setup("pooled run: the worker ended before it was ready")),
        Err(e) => Err(setup_err("waiting for the worker", e)),
    }
}

/// Unclaimed: the sandbox deleted, the socket gone.
fn end_unclaimed(c: Created, listener: Listener) {
    drop(listener);
    foreground::unblock_signals(&c.set);
    drop(c);
}

/// The claim: the client's stdio becomes ours; the run goes on as a run
/// and its exit code goes back.
fn run_claimed(mut c: Created, req: &RunRequest, setup: Setup, mut claim: Claim) {
    for (fd, target) in std::mem::take(&mut claim.stdio).into_iter().zip(0..) {
        let _ = nix::unistd::dup2(fd.as_raw_fd(), target);
    }
    tracing::debug!(target: "cli", "pool: claimed");
    // Either failing, the sandbox is deleted unstarted and the client
    // told why (exit 1), as a fresh run's would be.
    let (relay, begun) = match begin_claimed(&mut c) {
        Ok(relay) => (relay, Ok(())),
        Err(e) => (None, Err(e)),
    };
    if begun.is_ok() {
        feed_stdin(setup.stdin);
    }
    let started = begun.and_then(|()| match setup.go {
        Some(mut go) => go
            .write_all(b"G")
            .map_err(|e| setup_err("release the worker", e)),
        None => lifecycle::start(&c.cleanup.root, &c.cleanup.id).map_err(SandboxError::from),
    });
    let waited =
        started.and_then(|()| foreground::wait_forward(c.pid, &c.set).map_err(SandboxError::from));
    let code = match finish_run(c, req, relay, waited) {
        Ok((code, _)) => code,
        Err(e) => {
            crate::logging::say(&format!("error: {e}"));
            1
        }
    };
    claim.send_code(code);
}

/// The client gone (killed, or its connection closed) while the run goes
/// on: SIGKILL the sandbox's init (by pidfd: never a recycled pid), so the
/// script does not run on for nobody; the run then winds down as after
/// any kill. A thread that lives as long as this process.
fn kill_when_client_goes(claim: &Claim, init: &OwnedFd) {
    let (Ok(conn), Ok(init)) = (claim.connection(), init.try_clone()) else {
        tracing::warn!(target: "cli", "pool: cannot watch the client");
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("client".into())
        .spawn(move || {
            let mut p = libc::pollfd {
                fd: conn.as_raw_fd(),
                // POLLHUP alone (always reported): the client's close.
                // Not POLLIN/POLLRDHUP: a late commit's shut reading
                // side raises both with the client still there.
                events: 0,
                revents: 0,
            };
            // SAFETY: one valid pollfd of a descriptor the thread owns.
            while unsafe { libc::poll(&mut p, 1, -1) } < 0 {
                if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                    return;
                }
            }
            // After the code was sent the init is gone: nothing to say.
            if pool::peer::signal(&init, libc::SIGKILL) {
                tracing::debug!(target: "cli", "pool: the client went away: sandbox killed");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(target: "cli", "pool: client watch thread: {e}");
    }
}

/// The claim marked (`resources.timeout` counts from now) and the output
/// relay started.
fn begin_claimed(c: &mut Created) -> Result<Option<relay::Relay>, SandboxError> {
    mark_claimed(&c.state).map_err(|e| setup_err("marking the claim for resources.timeout", e))?;
    let Some(p) = c.plumbing.take() else {
        return Ok(None);
    };
    p.fit_terminals();
    crate::supervisor::pidfd_open(c.pid.as_raw())
        .and_then(|init| p.follow_terminals(init))
        .map_err(|e| setup_err("following the terminal's size", e))?;
    let limit = c.output_limit.map_or(u64::MAX, |b| b.bytes());
    relay::Relay::start(p, limit, c.pid.as_raw())
        .map(Some)
        .map_err(|e| setup(format!("output relay: {e}")))
}

/// `resources.timeout` counts from now (the supervisor reads this). Made
/// whole under a temporary name, never through a link, then renamed: the
/// supervisor sees no file or a whole one.
fn mark_claimed(state: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = state.join(format!(".{}.tmp", crate::statedir::CLAIMED_FILE));
    let now = crate::statedir::monotonic_ns().to_string();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    f.write_all(now.as_bytes())?;
    drop(f);
    std::fs::rename(&tmp, state.join(crate::statedir::CLAIMED_FILE))
}

/// Copies our stdin (the client's) into the sandbox's, by a thread; its
/// end closes at the client's EOF.
fn feed_stdin(to: OwnedFd) {
    let spawned = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut out = std::fs::File::from(to);
            // SAFETY: fd 0 borrowed for the thread's life, never closed.
            let mut stdin = std::mem::ManuallyDrop::new(unsafe {
                <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(0)
            });
            let _ = std::io::copy(&mut *stdin, &mut out);
        });
    if let Err(e) = spawned {
        tracing::warn!(target: "cli", "pool: stdin thread: {e}");
    }
}
