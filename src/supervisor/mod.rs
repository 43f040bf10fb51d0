//! The per-container supervisor (see docs/supervisor.md).
//!
//! `buntime-runc create` starts one for every container, as a separate
//! process (`buntime-supervisor --root R supervise ID`, or the runtime's
//! hidden `supervise ID`; own session, stdio on /dev/null)
//! before libcontainer runs: libcontainer must not run in a process that
//! has threads, and the supervisor has one per worker connection. It
//! serves workers' requests on the control socket bind-mounted at
//! `/run/buntime/control.sock`, decides by the container's policy, audits
//! every decision, and exits (removing its socket and segment) once the
//! container's init has exited.

mod accept;
pub mod approver;
pub mod charge;
mod claim;
mod egress;
mod podnet;
mod process;
mod requests;
mod serve;
pub mod view;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::audit::{AuditLog, AuditRecord};
use crate::ipc::{ControlListener, Segment};
use crate::policy::Policy;

/// Inside the container: the directory, the segment and the socket.
pub use crate::statedir::{CONTAINER_CONTROL, CONTAINER_DIR, CONTAINER_IPC};
pub use process::{
    begin_finish, begin_stop, is_ours, spawn, status, stop, Finishing, PidNamespace, Spawned,
    Stopping, WIND_DOWN,
};
pub(crate) use process::{pidfd_open, pidfd_signal, signal_kill};
// The state directory's files are `crate::statedir`'s.
use crate::statedir::{
    StateDir, APPROVER_FILE, AUDIT_FILE, CONTROL_FILE, LEARN_RECORD, LEARN_SOCKET, OUTPUT_FILE,
    POLICY_FILE, RUN_DIR, SEGMENT_FILE,
};
/// Bundle annotation: how long an `ask` waits for the approver.
pub const ANNOTATION_ASK_TIMEOUT: &str = "buntime.dev/ask-timeout";
/// Bundle annotation `claim`: `resources.timeout` counts from the claim of
/// a pooled run (`CLAIMED_FILE`), not from create.
pub const ANNOTATION_TIMEOUT_FROM: &str = "buntime.dev/timeout-from";
/// Annotation in `state`: `running pid N` or `stopped`.
pub const ANNOTATION_SUPERVISOR: &str = "buntime.dev/supervisor";

const DEFAULT_ASK_TIMEOUT: Duration = Duration::from_secs(30);
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
    /// Wakes the connection threads when the init exits.
    pub nudges: accept::Nudges,
    /// A pooled run (`buntime.dev/timeout-from: claim`): its pid (our
    /// parent's). `resources.timeout` counts from its claim; before it,
    /// the sandbox lives only as long as the pooled run (`claim`).
    pub pooled_by: Option<i32>,
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
    match dir.read_json::<Mode>(crate::statedir::META_FILE) {
        Ok(m) => m.mode,
        // OCI: policy paths name nothing on the host (the narrower view).
        Err(e) => {
            tracing::warn!(target: "supervisor", "{e}: the container is taken as an OCI container");
            crate::spec::SpecMode::default()
        }
    }
}

/// The process-wide settings of the daemon, made before any thread.
fn detach() {
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
}

/// The run directory with the file segment and the control socket.
fn bind_control(state: &Path) -> Result<(Files, Segment, ControlListener), SupervisorError> {
    let run_dir = state.join(RUN_DIR);
    match fs::DirBuilder::new().mode(0o755).create(&run_dir) {
        Ok(()) => {}
        // Made by `create`, which mounts it before we are up.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(format!("create {}", run_dir.display()))(e)),
    }
    let files = Files {
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
    std::env::set_current_dir(state).map_err(io(format!("chdir {}", state.display())))?;
    let listener = ControlListener::bind(&Path::new(RUN_DIR).join(CONTROL_FILE))
        .map_err(|e| SupervisorError::Setup(format!("control socket: {e}")))?;
    // The container's processes may run as any uid; who may connect is
    // decided by the peer's mount namespace (see `serve`).
    fs::set_permissions(
        run_dir.join(CONTROL_FILE),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .map_err(io("chmod control socket"))?;
    Ok((files, file_segment, listener))
}

/// What `create` left in the state directory for the supervisor.
struct Config {
    spec: oci_spec::runtime::Spec,
    policy: Policy,
    ask_timeout: Duration,
    timeout_from_claim: bool,
    /// The container's `PATH`, for EXEC requests naming a bare program.
    path_var: String,
}

impl Config {
    fn load(state: &Path) -> Result<Config, SupervisorError> {
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
        let timeout_from_claim = spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_TIMEOUT_FROM))
            .is_some_and(|v| v == "claim");
        let path_var = spec
            .process()
            .as_ref()
            .and_then(|p| p.env().as_ref())
            .and_then(|env| env.iter().find_map(|e| e.strip_prefix("PATH=")))
            .unwrap_or("/usr/local/bin:/usr/bin:/bin")
            .to_string();
        Ok(Config {
            spec,
            policy,
            ask_timeout,
            timeout_from_claim,
            path_var,
        })
    }
}

/// Where decisions and output go: the approver's socket, the audit log,
/// the output log.
struct Sinks {
    approver: approver::Approver,
    audit: AuditLog,
    output: File,
}

impl Sinks {
    fn open(state: &Path, ask_timeout: Duration) -> Result<Sinks, SupervisorError> {
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
        Ok(Sinks {
            approver,
            audit,
            output,
        })
    }
}

/// A learning container (`buntime.dev/learn`, which `create` only keeps
/// when the node allows it): its seccomp listener is served from before
/// the container is built.
fn start_observer(
    spec: &oci_spec::runtime::Spec,
    state: &Path,
) -> Result<Option<crate::learn::container::Observer>, SupervisorError> {
    let learning = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(crate::learn::container::ANNOTATION_LEARN))
        .is_some_and(|v| v.trim() == "true");
    if !learning {
        return Ok(None);
    }
    crate::learn::container::Observer::start(Path::new(LEARN_SOCKET), state.join(LEARN_RECORD))
        .map(Some)
        .map_err(io("learn socket"))
}

/// Tells `create` we are ready, then waits for the init pid (and in
/// rootless proxy mode the proxy's listener) on stdin. None: `create`
/// failed (EOF), nothing to serve.
fn handover() -> Option<(i32, Option<std::net::TcpListener>)> {
    let _ = std::io::stdout().write_all(b"ready\n");
    let _ = std::io::stdout().flush();
    let (line, proxy_listener) = read_handover();
    redirect_null(0);
    match line.trim().parse() {
        Ok(p) if p > 0 => Some((p, proxy_listener)),
        _ => None,
    }
}

/// Before any thread: what we do for the sandbox is charged to its CPU
/// cgroup (see `charge`). Accounting, not access: a failure is logged.
fn charge_to_sandbox(id: &str, init_pid: i32) {
    match charge::join(init_pid) {
        Ok(dirs) => {
            tracing::debug!(target: "supervisor", container = %id, ?dirs, "joined the sandbox's cpu cgroups")
        }
        Err(e) => {
            tracing::warn!(target: "supervisor", container = %id, "not charged to the sandbox: {e}")
        }
    }
}

/// The sandbox's own view (its root; under `buntime run` also the host
/// paths its policy names) and, in `pod` mode, the pod's network.
fn open_view(
    dir: &StateDir,
    config: &Config,
    init_pid: i32,
    pidfd: &OwnedFd,
) -> Result<(view::View, Option<podnet::PodNet>), SupervisorError> {
    let policy = &config.policy;
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
        &config.spec,
        host_paths.then_some(&host_named[..]),
    )
    .map_err(io("open container root"))?;
    let pod = if policy.network.mode == crate::policy::NetMode::Pod {
        Some(podnet::PodNet::open(init_pid, &config.spec).map_err(io(
            "the pod's network (/proc/PID/ns/net, resolv.conf, hosts)",
        ))?)
    } else {
        None
    };
    Ok((view, pod))
}

/// Starts the egress proxy when the policy proxies, and tells `create`
/// (which waits for the line in proxy mode); stdout is /dev/null after.
fn start_egress(
    ctx: &Arc<Ctx>,
    proxy_listener: Option<std::net::TcpListener>,
) -> Result<Option<egress::Egress>, SupervisorError> {
    let serving = if ctx.policy.network.mode.is_proxied() {
        egress::start(ctx, ctx.init_pid, proxy_listener).map(Some)
    } else {
        Ok(None)
    };
    // Not println!: when `create` did not wait for this line it has closed
    // the pipe, and println! would panic on EPIPE.
    let line = match &serving {
        Ok(_) => "serving\n".to_string(),
        Err(e) => format!("{e}\n"),
    };
    let _ = std::io::stdout().write_all(line.as_bytes());
    let _ = std::io::stdout().flush();
    redirect_null(1);
    serving
}

/// The `supervise` subcommand, on the container's state directory.
/// Returns when the container's init is gone.
pub fn run(dir: &StateDir, id: &str) -> Result<(), SupervisorError> {
    // Who started us (`create`'s process), before it can be gone.
    let parent = nix::unistd::getppid().as_raw();
    detach();
    let state = dir.path().to_path_buf();
    // Declared first, so removed last: the run directory's files.
    let (_files, file_segment, listener) = bind_control(&state)?;
    let config = Config::load(&state)?;
    let sinks = Sinks::open(&state, config.ask_timeout)?;
    let observer = start_observer(&config.spec, &state)?;
    let Some((init_pid, proxy_listener)) = handover() else {
        return Ok(());
    };
    let pidfd = pidfd_open(init_pid).map_err(io("pidfd_open init"))?;
    charge_to_sandbox(id, init_pid);
    let (view, pod) = open_view(dir, &config, init_pid, &pidfd)?;
    let ctx = Arc::new(Ctx {
        id: id.to_string(),
        output_limit: config.policy.resources.output.map(|b| b.bytes()),
        policy: config.policy,
        view,
        path_var: config.path_var,
        audit: sinks.audit,
        output: Mutex::new((sinks.output, 0)),
        approver: sinks.approver,
        mnt_ns: std::sync::OnceLock::new(),
        init_pid,
        pod,
        nudges: accept::Nudges::default(),
        pooled_by: config.timeout_from_claim.then_some(parent),
    });
    let egress = start_egress(&ctx, proxy_listener)?;
    accept::serve_loop(&ctx, &listener, &pidfd, egress.as_ref());
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

/// Builds an audit record with the common fields filled in.
pub(crate) fn record(
    ctx: &Ctx,
    pid: i32,
    kind: crate::audit::Kind,
    subject: String,
) -> AuditRecord {
    AuditRecord::new(&ctx.id, pid, kind, subject)
}
