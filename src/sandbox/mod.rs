//! `buntime run`: one script or command in a fresh sandbox, in the
//! foreground (see docs/run.md).
//!
//! The bundle is made from a template (`bundle-templates/`) on an empty
//! root: the policy's host paths are bound read-only at the same place, the
//! worker files at `/opt/buntime`. The container is created through the
//! same path as `buntime-runc create` (policy in Run mode), with a
//! supervisor of its own; the terminal is passed straight through; signals
//! are forwarded; everything is removed at the end.

mod debug_ui;
pub mod delegate;
pub mod kind;
mod learning;
mod limits;
mod orphans;
mod plan;
pub mod pool;
mod pooled;
pub mod prompt;
pub mod relay;
pub mod report;
mod scratch;
mod workers;

use std::fs;
use std::path::{Path, PathBuf};

use nix::unistd::Pid;

use crate::policy::Policy;
use crate::runtime::create::{create, CreateOptions};
use crate::runtime::state::Root;
use crate::runtime::{foreground, lifecycle, RuntimeError};
pub use kind::{Kind, Target};
pub use orphans::sweep_orphans;
use plan::{bundle_spec, plan};
pub use pooled::{serve_pooled, PoolOptions};

/// Where `buntime run` keeps its containers' state (not buntime-runc's).
pub use crate::statedir::RUN_STATE_ROOT as DEFAULT_STATE_ROOT;

/// The state root for the caller: [`DEFAULT_STATE_ROOT`] for root, else a
/// private directory in `$XDG_RUNTIME_DIR` (or `/tmp/buntime-run-UID`).
pub fn default_state_root() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from(DEFAULT_STATE_ROOT);
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if Path::new(&d).is_dir() => Path::new(&d).join("buntime-run"),
        _ => PathBuf::from(format!("/tmp/buntime-run-{}", nix::unistd::getuid())),
    }
}
/// The container path of the worker files.
pub const WORKER_DIR: &str = "/opt/buntime";

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// One `buntime run`.
#[derive(Clone, Debug)]
pub struct RunRequest {
    /// Paths may be relative (to the current directory).
    pub policy: Policy,
    /// Where the policy came from, for `state` and the audit.
    pub origin: String,
    pub target: Target,
    /// Host path of the interpreter (Python), or container/host path of Bun.
    pub interpreter: Option<PathBuf>,
    pub state_root: PathBuf,
    /// How long a broker `ask` waits for an answer.
    pub ask_timeout: Option<String>,
    /// Put `ask` questions to the terminal.
    pub prompt: bool,
    /// Serve the debug UI for this run (it then answers `ask`s).
    pub debug_ui: Option<std::net::SocketAddr>,
    /// Learn mode, with the base policy learning starts from: observe the
    /// file, exec and connect calls (`crate::learn::observe`); see
    /// [`run_observed`]. The learning proxy lets an internal address
    /// through only when the base allows it.
    pub learn: Option<Policy>,
}

fn setup(msg: impl Into<String>) -> SandboxError {
    SandboxError::Setup(msg.into())
}

pub use crate::deputy::ids::{sandbox_host_ids, RUN_ID_BASE};

/// Deletes the sandbox when dropped while armed: an early return after the
/// create, or a panic (a bug), still takes it away.
struct Cleanup {
    root: Root,
    id: String,
    armed: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = lifecycle::delete(&self.root, &self.id, true) {
                tracing::warn!(target: "cli", "delete sandbox {}: {e}", self.id);
            }
        }
    }
}

/// A created sandbox, not started yet, with what the run goes on with.
/// Fields drop in order: the sandbox is deleted before its bundle goes.
struct Created {
    cleanup: Cleanup,
    _bundle: scratch::BundleDir,
    learner: Option<learning::Learning>,
    pid: Pid,
    cgroup: String,
    /// The forwarded signals, blocked (`foreground::block_signals`).
    set: nix::sys::signal::SigSet,
    state: PathBuf,
    /// Our ends of the sandbox's output, until the relay takes them.
    plumbing: Option<relay::Plumbing>,
    output_limit: Option<crate::policy::ByteSize>,
    memory: Option<String>,
}

/// Runs the request; returns the exit code to exit with.
pub fn run(req: RunRequest) -> Result<i32, SandboxError> {
    run_observed(req).map(|(code, _)| code)
}

/// Runs the request; returns the exit code and, in learn mode, what the
/// run was seen to use.
pub fn run_observed(
    req: RunRequest,
) -> Result<(i32, Option<crate::learn::Observed>), SandboxError> {
    debug_ui::check(&req)?;
    let mut c = create_run(&req, None)?;
    // After the mask: the relay thread must not take the signals we wait for.
    let relay = start_relay(c.plumbing.take(), c.output_limit, c.pid, &c.set)?;
    if let Some(l) = c.learner.as_mut() {
        l.serve(&c.state, &c.cleanup.id)
            .inspect_err(|_| foreground::unblock_signals(&c.set))?;
    }
    // Threads only now: libcontainer has forked what it had to.
    let _ui = start_ui(&req, &c.cleanup.id, &c.set)?;
    start_prompt(&req, &c.state);
    let waited = lifecycle::start(&c.cleanup.root, &c.cleanup.id)
        .map_err(SandboxError::from)
        .and_then(|()| foreground::wait_forward(c.pid, &c.set).map_err(SandboxError::from));
    finish_run(c, &req, relay, waited)
}

/// Plans, makes the bundle and creates the sandbox (not started); the
/// forwarded signals are blocked on return. `pooled`: a pooled run's
/// differences (`pooled::Setup`).
fn create_run(req: &RunRequest, pooled: Option<&pooled::Setup>) -> Result<Created, SandboxError> {
    // Before any thread: the staging binds of root's sandbox
    // (`runtime::stage`) stay in this process's namespace.
    if nix::unistd::geteuid().is_root() {
        crate::runtime::stage::private_mount_namespace()?;
    }
    // Before the bundle is even made (see cgroup_warmup); reaped after create.
    let warmup = crate::runtime::cgroup_warmup::Warmup::start();
    let mut plan = plan(req)?;
    let id = format!("run-{}", std::process::id());
    let mut spec = bundle_spec(&plan, &id, req.ask_timeout.as_deref())?;
    let (root, bundle) = state_and_bundle(req, &id)?;
    let learner = learning::start(req, &bundle.path, &mut spec, &mut plan.sandbox)?;
    if let Some(p) = pooled {
        p.adjust(&mut spec, &mut plan.sandbox);
    }
    spec.save(bundle.path.join("config.json"))
        .map_err(|e| setup(format!("write bundle: {e}")))?;
    let memory = plan.sandbox.policy.resources.memory.map(|m| m.to_string());
    let req_limits = plan.sandbox.policy.resources.clone();
    // resources.output: the sandbox's stdout/stderr are relayed and counted
    // (a pooled run's always are: its stdio is not the caller's yet).
    let output_limit = req_limits.output;
    let plumbing = match (pooled, output_limit) {
        (Some(p), _) => Some(p.plumb().map_err(|e| setup(format!("output pipes: {e}")))?),
        (None, Some(_)) => Some(relay::plumb().map_err(|e| setup(format!("output pipes: {e}")))?),
        (None, None) => None,
    };
    foreground::become_subreaper()?;
    let preserve_fds = pooled.map_or(0, pooled::Setup::preserve_fds);
    let sandbox = plan.sandbox;
    let container = create_sandbox(
        &root,
        &id,
        &bundle.path,
        sandbox,
        plumbing.as_ref(),
        preserve_fds,
    )?;
    drop(warmup);
    let cleanup = Cleanup {
        root,
        id,
        armed: true,
    };
    let pid = container
        .pid()
        .map(|p| Pid::from_raw(p.as_raw()))
        .ok_or_else(|| setup("created sandbox has no pid"))?;
    let cgroup = cgroup_path(&cleanup.id);
    if !nix::unistd::geteuid().is_root() {
        limits::apply_v1(&cgroup, &req_limits)?;
    }
    let set = foreground::block_signals()?;
    let state = cleanup.root.extra_dir(&cleanup.id);
    Ok(Created {
        cleanup,
        _bundle: bundle,
        learner,
        pid,
        cgroup,
        set,
        state,
        plumbing,
        output_limit,
        memory,
    })
}

/// After the sandbox's init was waited for (or failed to start): wind
/// down, delete, say why it was killed; the code to exit with.
fn finish_run(
    mut c: Created,
    req: &RunRequest,
    relay: Option<relay::Relay>,
    waited: Result<i32, SandboxError>,
) -> Result<(i32, Option<crate::learn::Observed>), SandboxError> {
    tracing::debug!(target: "cli", "run: sandbox exited");
    c.learner.iter().for_each(learning::Learning::wind_down);
    let (relayed, records, ooms) =
        wind_down(&mut c.cleanup, relay, waited.is_ok(), &c.state, &c.cgroup);
    foreground::unblock_signals(&c.set);
    let limits = Limits {
        memory: c.memory.take(),
        output: c.output_limit,
    };
    let code = exit_code(waited?, req, &relayed, &records, ooms, limits);
    if let Some(line) = report::denied_summary(&records) {
        crate::logging::say(&line);
    }
    Ok((code, c.learner.take().map(|l| l.finish(&records))))
}

/// The state root (made private to the caller) and the run's bundle
/// directory in it.
fn state_and_bundle(
    req: &RunRequest,
    id: &str,
) -> Result<(Root, scratch::BundleDir), SandboxError> {
    {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&req.state_root)
            .map_err(|e| setup(format!("create {}: {e}", req.state_root.display())))?;
    }
    let root = Root::open(&req.state_root, false)?;
    let bundle = scratch::BundleDir::create(&req.state_root, id)?;
    tracing::debug!(target: "cli", "run: bundle in {}", bundle.path.display());
    if nix::unistd::geteuid().is_root() {
        // Root inside makes its mount points there: the empty root is the
        // sandbox's own, as a rootless user's is theirs.
        let (uid, gid) = sandbox_host_ids();
        let rootfs = bundle.path.join("rootfs");
        nix::unistd::chown(
            &rootfs,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .map_err(|e| setup(format!("chown {}: {e}", rootfs.display())))?;
    }
    Ok((root, bundle))
}

/// Creates the sandbox through the runtime, its output to `plumbing`.
fn create_sandbox(
    root: &Root,
    id: &str,
    bundle: &Path,
    sandbox: crate::prepare::RunSandbox,
    plumbing: Option<&relay::Plumbing>,
    preserve_fds: i32,
) -> Result<libcontainer::container::Container, SandboxError> {
    let opts = CreateOptions {
        id: id.to_string(),
        bundle: bundle.to_path_buf(),
        detach: false,
        preserve_fds,
        sandbox: Some(sandbox),
        stdout: plumbing.map(|p| p.stdout.clone()),
        stderr: plumbing.map(|p| p.stderr.clone()),
        ..CreateOptions::default()
    };
    let container = create(root, &opts)?;
    // Our copies of the sandbox's ends: its exit must bring EOF.
    drop(opts);
    Ok(container)
}

/// The output relay, when `resources.output` limits the output.
fn start_relay(
    plumbing: Option<relay::Plumbing>,
    output_limit: Option<crate::policy::ByteSize>,
    pid: Pid,
    set: &nix::sys::signal::SigSet,
) -> Result<Option<relay::Relay>, SandboxError> {
    Ok(match (plumbing, output_limit) {
        (Some(p), Some(limit)) => match relay::Relay::start(p, limit.bytes(), pid.as_raw()) {
            Ok(r) => Some(r),
            Err(e) => {
                foreground::unblock_signals(set);
                return Err(setup(format!("output relay: {e}")));
            }
        },
        _ => None,
    })
}

/// `--debug-ui`: the UI for this run, serving in the background.
fn start_ui(
    req: &RunRequest,
    id: &str,
    set: &nix::sys::signal::SigSet,
) -> Result<Option<debug_ui::Handle>, SandboxError> {
    debug_ui::start(req, id).inspect_err(|_| foreground::unblock_signals(set))
}

/// `--prompt`: `ask` questions put to the terminal, by a thread of its
/// own. The UI is the approver when there is one (the newest approver
/// wins).
fn start_prompt(req: &RunRequest, state: &Path) {
    if req.prompt && req.debug_ui.is_none() {
        let sock = state.join(crate::statedir::APPROVER_FILE);
        let _ = std::thread::Builder::new()
            .name("prompt".into())
            .spawn(move || prompt::serve(&sock));
    }
}

/// After the sandbox exited: the relay drained, the supervisor's last
/// audit lines waited for, the audit read, the sandbox deleted.
fn wind_down(
    cleanup: &mut Cleanup,
    relay: Option<relay::Relay>,
    waited: bool,
    state: &Path,
    cgroup: &str,
) -> (relay::Relayed, Vec<crate::audit::AuditRecord>, u64) {
    let (root, id) = (&cleanup.root, cleanup.id.as_str());
    let relayed = relay
        .map(|r| r.finish(crate::supervisor::WIND_DOWN))
        .unwrap_or_default();
    // The supervisor's last audit lines (a proxy connection that ended
    // with the sandbox) are written before it exits: read after that.
    if waited {
        let pid = root.read_meta(id).supervisor_pid;
        if let Some(s) = crate::supervisor::begin_finish(pid, id) {
            s.wait();
        }
    }
    if relayed.limit_hit {
        audit_output_kill(state, id, relayed.bytes);
    }
    let records = crate::audit::read_all(state);
    let ooms = report::oom_kills(cgroup);
    cleanup.armed = false;
    if let Err(e) = lifecycle::delete(root, id, true) {
        tracing::warn!(target: "cli", "delete sandbox {id}: {e}");
    }
    tracing::debug!(target: "cli", "run: sandbox deleted");
    (relayed, records, ooms)
}

/// The limits a run's end is explained by.
struct Limits {
    memory: Option<String>,
    output: Option<crate::policy::ByteSize>,
}

/// The code to exit with, saying why the sandbox was killed when a limit
/// killed it.
fn exit_code(
    mut code: i32,
    req: &RunRequest,
    relayed: &relay::Relayed,
    records: &[crate::audit::AuditRecord],
    ooms: u64,
    limits: Limits,
) -> i32 {
    let Limits {
        memory,
        output: output_limit,
    } = limits;
    if relayed.limit_hit {
        crate::logging::say(&format!(
            "buntime: killed: the output limit{} was reached",
            output_limit.map(|b| format!(" ({b})")).unwrap_or_default()
        ));
        code = relay::OUTPUT_LIMIT_EXIT;
    } else if report::timed_out(records) {
        let limit = req
            .policy
            .resources
            .timeout
            .map(|t| format!(" ({t})"))
            .unwrap_or_default();
        crate::logging::say(&format!(
            "buntime: killed: the time limit{limit} was reached"
        ));
        code = 124;
    } else if code == 137 && ooms > 0 {
        crate::logging::say(&format!(
            "buntime: killed: the memory limit{} was reached",
            memory.map(|m| format!(" ({m})")).unwrap_or_default()
        ));
    }
    code
}

/// The audit record of a run killed for `resources.output` (written by
/// `buntime run` itself, after the supervisor has exited).
fn audit_output_kill(state: &Path, id: &str, bytes: u64) {
    match crate::audit::AuditLog::open(&state.join(crate::statedir::AUDIT_FILE)) {
        Ok(log) => {
            let mut r =
                crate::audit::AuditRecord::new(id, 0, crate::audit::Kind::Stdout, "stdout+stderr");
            r.decision = crate::audit::Verdict::Kill;
            r.rule = crate::policy::RuleRef::ResourcesOutput;
            r.reason = "output limit reached: the sandbox was killed".into();
            r.bytes = bytes;
            log.record(&r);
        }
        Err(e) => tracing::warn!(target: "cli", "audit the output limit: {e}"),
    }
}

/// The cgroup subtree delegated to `uid` (relative to each hierarchy).
pub fn user_cgroup(uid: u32) -> String {
    format!("/buntime/user-{uid}")
}

/// The sandbox's cgroup: where buntime-runc puts containers, or, rootless,
/// below the subtree an admin delegated (cgroup v1 has no unprivileged
/// delegation of its own; `buntime setup-user`).
fn cgroup_path(id: &str) -> String {
    if nix::unistd::geteuid().is_root() {
        format!("/buntime/{id}")
    } else {
        format!("{}/{id}", user_cgroup(nix::unistd::getuid().as_raw()))
    }
}
