//! The per-container supervisor (see docs/supervisor.md).
//!
//! `buntime-runc create` starts one for every container, as a separate
//! process (`buntime-runc supervise ID`, own session, stdio on /dev/null)
//! before libcontainer runs: libcontainer must not run in a process that
//! has threads, and the supervisor has one per worker connection. It
//! serves workers' requests on the control socket bind-mounted at
//! `/run/buntime/control.sock`, decides by the container's policy, audits
//! every decision, and exits (removing its socket and segment) once the
//! container's init has exited.

pub mod approver;
pub mod charge;
mod egress;
mod podnet;
mod requests;
mod serve;
pub mod view;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Stdio};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::audit::{AuditLog, AuditRecord};
use crate::ipc::{ControlListener, ControlSocket, Segment};
use crate::policy::Policy;

/// Inside the container: the directory, the segment and the socket.
pub use crate::statedir::{CONTAINER_CONTROL, CONTAINER_DIR, CONTAINER_IPC};
// The state directory's files are `crate::statedir`'s.
use crate::statedir::{
    StateDir, APPROVER_FILE, AUDIT_FILE, CONTROL_FILE, LEARN_RECORD, LEARN_SOCKET, LOG_FILE,
    OUTPUT_FILE, POLICY_FILE, RUN_DIR, SEGMENT_FILE,
};
/// Bundle annotation: how long an `ask` waits for the approver.
pub const ANNOTATION_ASK_TIMEOUT: &str = "buntime.dev/ask-timeout";
/// Annotation in `state`: `running pid N` or `stopped`.
pub const ANNOTATION_SUPERVISOR: &str = "buntime.dev/supervisor";

const DEFAULT_ASK_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_WORKERS: usize = 64;
/// How long `create` waits for the supervisor to say it is ready.
const READY_TIMEOUT_MS: i32 = 10_000;
/// Ring sizes of a worker's segment.
const S2W_CAPACITY: u32 = 256 << 10;
const W2S_CAPACITY: u32 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("supervisor: {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("supervisor: {0}")]
    Setup(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SupervisorError {
    let what = what.into();
    move |source| SupervisorError::Io { what, source }
}

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

/// Starts `buntime-runc --root ROOT supervise ID` detached; `wait_ready`
/// then waits until it has made the socket and segment in
/// `state_dir/run/` (which the caller has made: it is bind-mounted into
/// the container before the supervisor may be up).
pub fn spawn(root: &Path, id: &str, state_dir: &Path) -> Result<Spawned, SupervisorError> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(state_dir.join(LOG_FILE))
        .map_err(io("open supervisor log"))?;
    let (ours, theirs) = UnixStream::pair().map_err(io("socketpair for supervisor"))?;
    // From the sealed copy when this process runs from one.
    let mut cmd = crate::exeseal::self_command().map_err(io("find own executable"))?;
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
const WORKERS_WIND_DOWN: Duration = Duration::from_millis(500);
const SUPERVISOR_WIND_DOWN: Duration = Duration::from_millis(1500);

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
            signal_kill(&self.0);
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
    signal_kill(&fd);
    Some(Stopping(fd))
}

pub(crate) fn signal_kill(pidfd: &OwnedFd) {
    // SAFETY: pidfd_send_signal on our pidfd, no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
}

/// Everything a worker connection needs, shared by the connection threads.
pub(crate) struct Ctx {
    pub id: String,
    pub policy: Policy,
    /// The sandbox's view: its root, and under `buntime run` the host's
    /// tree for paths outside its mounts.
    pub view: view::View,
    pub path_var: String,
    pub audit: AuditLog,
    pub output: Mutex<(File, u64)>,
    pub output_limit: Option<u64>,
    pub approver: approver::Approver,
    /// The container's mount namespace (inode), read from the init on the
    /// first connection: before its exec a rootless init is not readable.
    pub mnt_ns: std::sync::OnceLock<u64>,
    pub init_pid: i32,
    /// `pod` mode: lookups and connections made in the pod's namespace.
    pub pod: Option<podnet::PodNet>,
}

/// Closes every descriptor from 3 up: whatever the caller of `create` passed
/// (containerd's pipes, preserved fds) must not be held by a daemon.
fn close_inherited() {
    // SAFETY: close_range on our own descriptor table; nothing above 2 is
    // in use yet.
    unsafe {
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
    }
}

pub(crate) fn mnt_ns(pid: i32) -> std::io::Result<u64> {
    fs::metadata(format!("/proc/{pid}/ns/mnt")).map(|m| m.ino())
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

fn redirect_null(fd: i32) {
    if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
        // SAFETY: dup2 onto a standard descriptor we own.
        unsafe { libc::dup2(null.as_raw_fd(), fd) };
    }
}

/// The files the supervisor made; removed when it exits.
struct Files {
    run_dir: PathBuf,
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = fs::remove_file(self.run_dir.join(SEGMENT_FILE));
        let _ = fs::remove_file(self.run_dir.join(CONTROL_FILE));
    }
}

/// The soft fd limit up to the hard one (no privilege needed): the proxy's
/// connections (two descriptors each, 256 at once), the broker's opens
/// and the workers' sockets must not run into a soft 1024.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// The run/OCI mode `create` recorded in the container's metadata (the
/// one field of it the supervisor needs); OCI when there is none.
fn spec_mode(dir: &StateDir) -> crate::spec::SpecMode {
    #[derive(serde::Deserialize)]
    struct Mode {
        #[serde(default)]
        mode: crate::spec::SpecMode,
    }
    dir.read_json::<Mode>(crate::statedir::META_FILE)
        .map(|m| m.mode)
        .unwrap_or_default()
}

/// The `supervise` subcommand, on the container's state directory.
/// Returns when the container's init is gone.
pub fn run(dir: &StateDir, id: &str) -> Result<(), SupervisorError> {
    // A session of its own: off the caller's terminal and process group
    // (shims and `buntime run` signal theirs).
    let _ = nix::unistd::setsid();
    close_inherited();
    raise_fd_limit();
    // Names are looked up as given, never with resolv.conf's search
    // domains appended: the rules checked `vault`, so the lookup must not
    // turn it into `vault.corp.internal` (squid's `dns_defnames off`).
    // glibc reads this before resolv.conf; no thread exists yet.
    std::env::set_var("LOCALDOMAIN", "");
    // Registering for membarrier costs milliseconds once threads exist
    // (an RCU grace period) and microseconds before: do it now.
    let _ = crate::ipc::wait::membarrier_ok();
    let state = dir.path().to_path_buf();
    let run_dir = state.join(RUN_DIR);
    match fs::DirBuilder::new().mode(0o755).create(&run_dir) {
        Ok(()) => {}
        // Made by `create`, which mounts it before we are up.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(format!("create {}", run_dir.display()))(e)),
    }
    let _files = Files {
        run_dir: run_dir.clone(),
    };
    // The file segment exists for BUNTIME_IPC; every worker gets a fresh
    // segment of its own through WELCOME, so one worker cannot scribble
    // over another's rings.
    let file_segment = Segment::create(&run_dir.join(SEGMENT_FILE), 4096, 4096)
        .map_err(|e| SupervisorError::Setup(format!("segment: {e}")))?;
    // A socket address holds at most 107 bytes, and engines use 64-character
    // ids under deep roots; so the sockets are bound by names relative to the
    // state directory, which the supervisor makes its working directory.
    std::env::set_current_dir(&state).map_err(io(format!("chdir {}", state.display())))?;
    let listener = ControlListener::bind(&Path::new(RUN_DIR).join(CONTROL_FILE))
        .map_err(|e| SupervisorError::Setup(format!("control socket: {e}")))?;
    // The container's processes may run as any uid; who may connect is
    // decided by the peer's mount namespace (see `serve`).
    fs::set_permissions(
        run_dir.join(CONTROL_FILE),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .map_err(io("chmod control socket"))?;

    let spec_path = state.join(crate::statedir::SPEC_FILE);
    let spec_text = fs::read(&spec_path).map_err(io("read effective spec"))?;
    let spec: oci_spec::runtime::Spec = serde_json::from_slice(&spec_text)
        .map_err(|e| SupervisorError::Setup(format!("effective spec: {e}")))?;
    let policy_text = fs::read_to_string(state.join(POLICY_FILE)).map_err(io("read policy"))?;
    let policy = crate::policy::parse_policy(&policy_text, "policy.json")
        .map_err(|e| SupervisorError::Setup(format!("policy: {e}")))?;
    let ask_timeout = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_ASK_TIMEOUT))
        .and_then(|t| crate::policy::TimeSpan::parse(t).ok())
        .map(|t| t.as_duration().min(Duration::from_secs(600)))
        .unwrap_or(DEFAULT_ASK_TIMEOUT);
    let path_var = spec
        .process()
        .as_ref()
        .and_then(|p| p.env().as_ref())
        .and_then(|env| env.iter().find_map(|e| e.strip_prefix("PATH=")))
        .unwrap_or("/usr/local/bin:/usr/bin:/bin")
        .to_string();
    let approver = approver::Approver::bind(Path::new(APPROVER_FILE), ask_timeout)
        .map_err(io("approver socket"))?;
    let audit = AuditLog::open(&state.join(AUDIT_FILE))
        .map_err(|e| SupervisorError::Setup(e.to_string()))?;
    let output = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(state.join(OUTPUT_FILE))
        .map_err(io("open output log"))?;

    // A learning container (`buntime.dev/learn`, which `create` only
    // keeps when the node allows it): its seccomp listener is served from
    // before the container is built.
    let learning = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(crate::learn::container::ANNOTATION_LEARN))
        .is_some_and(|v| v.trim() == "true");
    let observer = if learning {
        let o = crate::learn::container::Observer::start(
            Path::new(LEARN_SOCKET),
            state.join(LEARN_RECORD),
        )
        .map_err(io("learn socket"))?;
        Some(o)
    } else {
        None
    };
    // Tell `create` we are ready, then wait for the init pid on stdin.
    let _ = std::io::stdout().write_all(b"ready\n");
    let _ = std::io::stdout().flush();
    let (line, proxy_listener) = read_handover();
    redirect_null(0);
    let init_pid: i32 = match line.trim().parse() {
        Ok(p) if p > 0 => p,
        // EOF: create failed; clean up and go.
        _ => return Ok(()),
    };
    let pidfd = pidfd_open(init_pid).map_err(io("pidfd_open init"))?;
    // Before any thread: what we do for the sandbox is charged to its CPU
    // cgroup (see `charge`). Accounting, not access: a failure is logged.
    match charge::join(init_pid) {
        Ok(dirs) => {
            tracing::debug!(target: "supervisor", container = %id, ?dirs, "joined the sandbox's cpu cgroups")
        }
        Err(e) => {
            tracing::warn!(target: "supervisor", container = %id, "not charged to the sandbox: {e}")
        }
    }
    // `buntime run`'s policies name host paths (bound at the same place);
    // still, every path is resolved in the sandbox's own view first. The
    // mode is in the metadata `create` wrote before it handed us the pid.
    let host_paths = spec_mode(dir) == crate::spec::SpecMode::Run;
    let host_named: Vec<PathBuf> = policy
        .filesystem
        .read
        .iter()
        .chain(&policy.filesystem.write)
        .chain(&policy.filesystem.exec)
        .map(|p| crate::policy::normalize_path(p.as_path()))
        .collect();
    let view = view::View::open(
        init_pid,
        pidfd.try_clone().map_err(io("dup init pidfd"))?,
        &spec,
        host_paths.then_some(&host_named[..]),
    )
    .map_err(io("open container root"))?;
    let pod = if policy.network.mode == crate::policy::NetMode::Pod {
        Some(podnet::PodNet::open(init_pid, &spec).map_err(io(
            "the pod's network (/proc/PID/ns/net, resolv.conf, hosts)",
        ))?)
    } else {
        None
    };
    let ctx = Arc::new(Ctx {
        id: id.to_string(),
        output_limit: policy.resources.output.map(|b| b.bytes()),
        policy,
        view,
        path_var,
        audit,
        output: Mutex::new((output, 0)),
        approver,
        mnt_ns: std::sync::OnceLock::new(),
        init_pid,
        pod,
    });
    let serving = if ctx.policy.network.mode.is_proxied() {
        egress::start(&ctx, init_pid, proxy_listener).map(Some)
    } else {
        Ok(None)
    };
    // `create` waits for this line in proxy mode; stdout is /dev/null after.
    // Not println!: when `create` did not wait for this line it has closed
    // the pipe, and println! would panic on EPIPE.
    let line = match &serving {
        Ok(_) => "serving\n".to_string(),
        Err(e) => format!("{e}\n"),
    };
    let _ = std::io::stdout().write_all(line.as_bytes());
    let _ = std::io::stdout().flush();
    redirect_null(1);
    let egress = serving?;
    serve_loop(&ctx, &listener, &pidfd, egress.as_ref());
    if let Some(o) = observer {
        o.finish();
    }
    // What the audit quota kept out, counted (connections still open may
    // add to it; the process is about to exit).
    ctx.audit.finish(&ctx.id);
    // Worker threads may still hold `ctx`; the process exits right after,
    // so remove the approver socket here rather than rely on Drop.
    let _ = fs::remove_file(state.join(APPROVER_FILE));
    drop(file_segment);
    Ok(())
}

/// What `create` sends on stdin (a socket): the init pid on one line and,
/// for a rootless container, the proxy listener its network hook bound.
/// EOF or garbage gives an empty line.
fn read_handover() -> (String, Option<std::net::TcpListener>) {
    let mut line = Vec::new();
    let mut listener = None;
    while !line.ends_with(b"\n") && line.len() < 64 {
        let mut buf = [0u8; 64];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = match recvmsg::<()>(0, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(m) => m,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        };
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(fds) = c {
                    for raw in fds {
                        // SAFETY: the kernel installed the descriptor for us.
                        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                        if listener.is_none() {
                            listener = Some(std::net::TcpListener::from(fd));
                        }
                    }
                }
            }
        }
        let n = msg.bytes;
        if n == 0 {
            break;
        }
        line.extend_from_slice(&buf[..n]);
    }
    (String::from_utf8_lossy(&line).into_owned(), listener)
}

/// `resources.timeout`: SIGKILL the init (through its pidfd, so never a
/// recycled pid) once the wall-clock limit has passed, counted from when
/// the supervisor starts serving (right after create).
fn enforce_timeout(ctx: &Ctx, pidfd: &OwnedFd, deadline: &mut Option<std::time::Instant>) {
    let Some(d) = *deadline else { return };
    if std::time::Instant::now() < d {
        return;
    }
    *deadline = None;
    // SAFETY: pidfd_send_signal on our pidfd, no siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    let mut rec = record(ctx, 0, crate::audit::Kind::Timeout, "container init".into());
    rec.decision = if r == 0 {
        crate::audit::Verdict::Kill
    } else {
        crate::audit::Verdict::Error
    };
    rec.rule = crate::policy::RuleRef::ResourcesTimeout;
    rec.reason = "wall-clock limit reached".into();
    ctx.audit.record(&rec);
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

fn serve_loop(
    ctx: &Arc<Ctx>,
    listener: &ControlListener,
    pidfd: &OwnedFd,
    egress: Option<&egress::Egress>,
) {
    let workers = Arc::new(AtomicUsize::new(0));
    let mut spare = Spare::start(ctx, &workers);
    let mut deadline = ctx
        .policy
        .resources
        .timeout
        .map(|t| std::time::Instant::now() + t.as_duration());
    loop {
        enforce_timeout(ctx, pidfd, &mut deadline);
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
        // SAFETY: two valid pollfds.
        let wait_ms = deadline.map_or(1000, |d| {
            d.saturating_duration_since(std::time::Instant::now())
                .as_millis()
                .clamp(1, 1000) as i32
        });
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, wait_ms) };
        if r < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if fds[0].revents != 0 {
            tracing::info!(target: "supervisor", container = %ctx.id, "container init exited");
            // Let connections read what workers sent last (EXIT, output),
            // briefly: a worker that outlives init must not keep us.
            let exited = std::time::Instant::now();
            while workers.load(Ordering::SeqCst) > 0 && exited.elapsed() < WORKERS_WIND_DOWN {
                std::thread::sleep(Duration::from_millis(10));
            }
            // Proxy connections end once the container's sockets are gone:
            // let them write their audit lines (a relay draining an
            // upstream that does not close is left).
            if let Some(e) = egress {
                e.wind_down(exited + SUPERVISOR_WIND_DOWN);
            }
            return;
        }
        if fds[1].revents == 0 {
            continue;
        }
        let Ok(sock) = listener.accept(Some(Duration::ZERO)) else {
            continue;
        };
        if workers.load(Ordering::SeqCst) >= MAX_WORKERS {
            serve::reject(ctx, &sock, "too many connections", Duration::ZERO);
            continue;
        }
        workers.fetch_add(1, Ordering::SeqCst);
        // The spare, or (if its thread could not start) one made now.
        let handed = spare
            .take()
            .or_else(|| Spare::start(ctx, &workers))
            .is_some_and(|Spare(tx)| tx.send(sock).is_ok());
        if !handed {
            workers.fetch_sub(1, Ordering::SeqCst);
        }
        // The next connection's, while this one is served.
        if workers.load(Ordering::SeqCst) < MAX_WORKERS {
            spare = Spare::start(ctx, &workers);
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

/// Builds an audit record with the common fields filled in.
pub(crate) fn record(
    ctx: &Ctx,
    pid: i32,
    kind: crate::audit::Kind,
    subject: String,
) -> AuditRecord {
    AuditRecord::new(&ctx.id, pid, kind, subject)
}
