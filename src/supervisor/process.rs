//! The supervisor process as `create`, `delete` and `state` see it:
//! starting it, handing it the init pid, asking whether it still runs,
//! stopping it. Through pidfds, so a recycled pid is never signalled.

use std::fs::{self, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

use super::{io, SupervisorError};
use crate::statedir::LOG_FILE;

/// How long `create` waits for the supervisor to say it is ready.
const READY_TIMEOUT_MS: i32 = 10_000;

/// A supervisor `create` has started, waiting to be told the init pid.
pub struct Spawned {
    pub pid: i32,
    child: Child,
    /// A socket, not a pipe: the proxy listener may travel with the pid.
    stdin: Option<UnixStream>,
    stdout: Option<ChildStdout>,
    state_dir: PathBuf,
    /// `wait_ready` has seen the line (a learning container's `create`
    /// waits before the build, then again after: once is enough).
    ready: bool,
}

impl Spawned {
    /// Waits (bounded) until the supervisor has made its socket and
    /// segment. `spawn` does not wait, so that the supervisor starts while
    /// the container is being built.
    pub fn wait_ready(&mut self) -> Result<(), SupervisorError> {
        if self.ready {
            return Ok(());
        }
        let ready = self
            .stdout
            .as_ref()
            .map(|out| read_line_timeout(out, READY_TIMEOUT_MS))
            .unwrap_or_default();
        if ready.trim() != "ready" {
            let log = fs::read_to_string(self.state_dir.join(LOG_FILE)).unwrap_or_default();
            return Err(SupervisorError::Setup(format!(
                "supervisor did not start: {}",
                log.lines().last().unwrap_or("no output")
            )));
        }
        self.ready = true;
        Ok(())
    }

    /// Hands the container's init pid over; the supervisor starts serving.
    /// With `wait`, returns only once it serves (its proxy listens), so the
    /// container cannot start before its way out exists.
    pub fn start_serving(
        mut self,
        init_pid: i32,
        wait: bool,
        proxy_listener: Option<std::net::TcpListener>,
    ) -> Result<(), SupervisorError> {
        let stdin = self
            .stdin
            .take()
            .ok_or_else(|| SupervisorError::Setup("stdin already closed".into()))?;
        let line = format!("{init_pid}\n");
        let fds: Vec<i32> = proxy_listener.iter().map(|l| l.as_raw_fd()).collect();
        let cmsgs: Vec<ControlMessage> = if fds.is_empty() {
            Vec::new()
        } else {
            vec![ControlMessage::ScmRights(&fds)]
        };
        sendmsg::<()>(
            stdin.as_raw_fd(),
            &[std::io::IoSlice::new(line.as_bytes())],
            &cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(|e| SupervisorError::Io {
            what: "send init pid to supervisor".into(),
            source: e.into(),
        })?;
        if wait {
            let line = self
                .stdout
                .as_ref()
                .map(|out| read_line_timeout(out, READY_TIMEOUT_MS))
                .unwrap_or_default();
            match line.trim() {
                "serving" => {}
                "" => {
                    return Err(SupervisorError::Setup(
                        "supervisor did not start serving".into(),
                    ))
                }
                err => return Err(SupervisorError::Setup(err.to_string())),
            }
        }
        // Dropping `child` neither waits nor kills: the supervisor outlives us.
        Ok(())
    }

    /// Create failed: stop the supervisor (it removes its files on EOF).
    pub fn abort(mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One line from the supervisor's stdout, read byte by byte (nothing is
/// buffered past it), within `ms`; empty on timeout or EOF.
fn read_line_timeout(out: &ChildStdout, ms: i32) -> String {
    let deadline = std::time::Instant::now() + Duration::from_millis(ms as u64);
    let mut line = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut pfd = libc::pollfd {
            fd: out.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
        if n <= 0 {
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return String::new();
        }
        let mut b = 0u8;
        // SAFETY: reads one byte into `b` from a descriptor we own.
        let r = unsafe { libc::read(out.as_raw_fd(), (&mut b as *mut u8).cast(), 1) };
        match r {
            1 if b == b'\n' => return String::from_utf8_lossy(&line).into_owned(),
            1 if line.len() < 4096 => line.push(b),
            1 => {}
            _ => return String::new(),
        }
    }
}

/// Can the container's processes see the supervisor's (and so open its
/// `/proc/PID/exe`)?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PidNamespace {
    /// A new pid namespace: no process of the container can name the
    /// supervisor, which runs in the host's.
    Own,
    /// The host's or a joined one: the supervisor may be visible.
    Shared,
}

/// The supervisor's command: `buntime-supervisor` from beside the runtime's
/// real binary (also when the runtime runs from its sealed copy), else,
/// from an older install without it, the runtime's own hidden
/// `supervise` command.
///
/// The small binary is not sealed, and need not be when the container has
/// its own pid namespace: the supervisor never enters the container, so a
/// container process can reach its `/proc/PID/exe` (CVE-2019-5736) only by
/// seeing its pid. When the container shares a pid namespace the runtime
/// itself runs sealed (`exeseal::decide`), and so does its supervisor, as
/// before: the runtime's own (sealed) copy runs it.
fn supervisor_command(pid_ns: PidNamespace) -> std::io::Result<Command> {
    if pid_ns == PidNamespace::Own {
        let small = crate::exeseal::exe_path()?.with_file_name(SUPERVISOR_BIN);
        if small.is_file() {
            return Ok(Command::new(small));
        }
        tracing::debug!(target: "supervisor", "no {}: the runtime's `supervise`", small.display());
    }
    crate::exeseal::self_command()
}

/// The supervisor's own binary, installed beside `buntime-runc` and
/// `buntime`.
pub const SUPERVISOR_BIN: &str = "buntime-supervisor";

/// Starts `[buntime-supervisor|buntime-runc] --root ROOT supervise ID`
/// detached; `wait_ready` then waits until it has made the socket and
/// segment in `state_dir/run/` (which the caller has made: it is
/// bind-mounted into the container before the supervisor may be up).
pub fn spawn(
    root: &Path,
    id: &str,
    state_dir: &Path,
    pid_ns: PidNamespace,
) -> Result<Spawned, SupervisorError> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(state_dir.join(LOG_FILE))
        .map_err(io("open supervisor log"))?;
    let (ours, theirs) = UnixStream::pair().map_err(io("socketpair for supervisor"))?;
    let mut cmd = supervisor_command(pid_ns).map_err(io("find own executable"))?;
    cmd.arg("--root")
        .arg(root)
        .arg("supervise")
        .arg(id)
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::piped())
        .stderr(log);
    // No pre_exec (which would force fork+exec): std then spawns with
    // posix_spawn, a millisecond less of `create`. The supervisor calls
    // setsid itself, first thing (a Ctrl-C in the microseconds before
    // reaches `buntime run` as well, which then stops anyway).
    let mut child = cmd.spawn().map_err(io("start supervisor"))?;
    let pid = child.id() as i32;
    let stdin = Some(ours);
    let stdout = child.stdout.take();
    Ok(Spawned {
        pid,
        child,
        stdin,
        stdout,
        state_dir: state_dir.to_path_buf(),
        ready: false,
    })
}

/// `running pid N` or `stopped`, for the `state` annotation.
pub fn status(pid: Option<i32>, id: &str) -> String {
    match pid {
        Some(p) if is_ours(p, id) => format!("running pid {p}"),
        _ => "stopped".into(),
    }
}

/// Is `pid` still our supervisor of `id` (not a recycled pid)?
pub fn is_ours(pid: i32, id: &str) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    args.windows(2)
        .any(|w| w[0] == b"supervise" && w[1] == id.as_bytes())
}

/// Stops the supervisor of `id` if it still runs (used by `delete`), and
/// returns once it is gone (at most a second). Through a pidfd taken
/// before the identity check, so a recycled pid is never signalled.
pub fn stop(pid: Option<i32>, id: &str) {
    if let Some(s) = begin_stop(pid, id) {
        s.wait();
    }
}

/// A supervisor that was sent SIGKILL and may still be exiting.
pub struct Stopping(OwnedFd);

impl Stopping {
    /// Returns once the process is gone (at most a second).
    pub fn wait(self) {
        exited_within(&self.0, Duration::from_secs(1));
    }
}

/// Has the process behind `pidfd` exited within `limit`?
fn exited_within(pidfd: &OwnedFd, limit: Duration) -> bool {
    let until = std::time::Instant::now() + limit;
    loop {
        let mut pfd = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let left = until.saturating_duration_since(std::time::Instant::now());
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd; a pidfd polls readable once the
        // process exits.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        // A signal cuts the poll short, not the wait.
        if r < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        return r > 0;
    }
}

/// Once its container's init has exited, a supervisor lets broker
/// connections end for this long at most, and its connections of both
/// kinds write their last audit lines for `SUPERVISOR_WIND_DOWN` in all.
pub(super) const WORKERS_WIND_DOWN: Duration = Duration::from_millis(500);
pub(super) const SUPERVISOR_WIND_DOWN: Duration = Duration::from_millis(1500);

/// How long `delete` and `buntime run` wait for a supervisor to exit on
/// its own, with a margin over its wind-down.
pub const WIND_DOWN: Duration = Duration::from_secs(2);

/// The supervisor of a container whose init has exited, followed until it
/// exits on its own (`Finishing::wait`), so that its last audit lines are
/// written before anyone reads the log or removes the state.
pub struct Finishing(OwnedFd);

impl Finishing {
    /// Waits up to `WIND_DOWN` for the supervisor to exit, then stops it.
    pub fn wait(self) {
        if !exited_within(&self.0, WIND_DOWN) {
            let _ = signal_kill(&self.0);
            exited_within(&self.0, Duration::from_secs(1));
        }
    }
}

/// `begin_stop` without the signal: for a container that has stopped.
pub fn begin_finish(pid: Option<i32>, id: &str) -> Option<Finishing> {
    let p = pid.filter(|&p| p > 0)?;
    let fd = pidfd_open(p).ok()?;
    is_ours(p, id).then_some(Finishing(fd))
}

/// The first half of `stop`: the signal, so that the supervisor's exit
/// overlaps with other teardown; `wait` on the result for the rest.
pub fn begin_stop(pid: Option<i32>, id: &str) -> Option<Stopping> {
    let p = pid.filter(|&p| p > 0)?;
    let fd = match pidfd_open(p) {
        Ok(fd) => fd,
        // No pidfd (out of descriptors, say): a plain kill, still checked.
        Err(_) => {
            if is_ours(p, id) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::SIGKILL,
                );
            }
            return None;
        }
    };
    if !is_ours(p, id) {
        return None;
    }
    let _ = signal_kill(&fd);
    Some(Stopping(fd))
}

/// SIGKILL through a pidfd (never a recycled pid); whether it was sent.
pub(crate) fn signal_kill(pidfd: &OwnedFd) -> bool {
    pidfd_signal(pidfd, libc::SIGKILL)
}

/// `sig` through a pidfd (never a recycled pid; 0 asks whether the
/// process is still there); whether it was sent.
pub(crate) fn pidfd_signal(pidfd: &OwnedFd, sig: i32) -> bool {
    // SAFETY: pidfd_send_signal on our pidfd, no siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    r == 0
}

pub(crate) fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall; a non-negative result is a new descriptor.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: see above.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}
