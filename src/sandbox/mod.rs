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
mod limits;
pub mod prompt;
pub mod relay;
pub mod report;
mod scratch;
mod workers;

use std::fs;
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::{Mount, MountBuilder, Spec};
use nix::unistd::Pid;

use crate::policy::{FsAccess, FsDecision, FsPath, Policy};
use crate::prepare::RunSandbox;
use crate::runtime::create::{create, CreateOptions};
use crate::runtime::state::Root;
use crate::runtime::{foreground, lifecycle, RuntimeError};
pub use kind::{Kind, Target};

/// Where `buntime run` keeps its containers' state (not buntime-runc's).
pub const DEFAULT_STATE_ROOT: &str = "/run/buntime-run";

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
    /// Learn mode: observe the file, exec and connect calls
    /// (`crate::learn::observe`); see [`run_observed`].
    pub learn: bool,
}

fn setup(msg: impl Into<String>) -> SandboxError {
    SandboxError::Setup(msg.into())
}

fn fs_path(p: &Path) -> Result<FsPath, SandboxError> {
    FsPath::new(p.to_string_lossy()).map_err(|e| setup(format!("{}: {e}", p.display())))
}

/// What the template and the policy need to know about the target.
struct Plan {
    kind: Kind,
    argv: Vec<String>,
    cwd: PathBuf,
    sandbox: RunSandbox,
}

fn plan(req: &RunRequest) -> Result<Plan, SandboxError> {
    let here = std::env::current_dir().map_err(|e| setup(format!("current directory: {e}")))?;
    let mut policy = req.policy.clone();
    policy.resolve_relative(&here);
    let kind = req.target.kind();
    let path_var = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    let mut sandbox = RunSandbox {
        origin: req.origin.clone(),
        host_env: std::env::vars().collect(),
        rootless: !nix::unistd::geteuid().is_root(),
        ..RunSandbox::default()
    };
    let (cwd, head, rest) = match &req.target {
        Target::Script { path, args } => {
            let script = fs::canonicalize(here.join(path))
                .map_err(|e| setup(format!("{}: {e}", path.display())))?;
            if !script.is_file() {
                return Err(setup(format!("{}: not a regular file", path.display())));
            }
            let dir = script.parent().unwrap_or(Path::new("/")).to_path_buf();
            // The script's directory, read-only, is its working directory.
            if let FsDecision::DeniedBy(d) = policy.filesystem.decide(&script, FsAccess::Read) {
                return Err(setup(format!(
                    "{}: the policy denies reading it ({})",
                    script.display(),
                    d.display()
                )));
            }
            let dir_rule = fs_path(&dir)?;
            if !policy.filesystem.read.contains(&dir_rule) {
                policy.filesystem.read.push(dir_rule);
            }
            if kind == Kind::Command {
                sandbox.landlock_exec.push(script.clone());
            }
            (dir, script.to_string_lossy().into_owned(), args.clone())
        }
        Target::Command { argv } => {
            let (first, rest) = argv
                .split_first()
                .ok_or_else(|| setup("nothing to run: expected FILE or -- COMMAND"))?;
            // The current directory, when the policy shows it (under the
            // private /tmp it would be a different directory).
            let cwd = if policy.filesystem.decide(&here, FsAccess::Read) == FsDecision::Allow
                && !here.starts_with("/tmp")
            {
                here.clone()
            } else {
                PathBuf::from("/tmp")
            };
            (cwd, which(first, &path_var)?, rest.to_vec())
        }
    };
    let interpreter = match kind {
        Kind::Python => {
            let p = req
                .interpreter
                .clone()
                .unwrap_or_else(|| PathBuf::from(kind::DEFAULT_PYTHON));
            if !p.is_absolute() || !p.exists() {
                return Err(setup(format!(
                    "--interpreter: {} does not exist (an absolute host path is needed)",
                    p.display()
                )));
            }
            if !policy.may_exec(&p, &path_var) {
                return Err(setup(format!(
                    "the policy does not let the sandbox run {}: add its directory to filesystem.exec (--allow-run={})",
                    p.display(),
                    p.display()
                )));
            }
            Some(p)
        }
        Kind::Bun => Some(
            req.interpreter
                .clone()
                .unwrap_or_else(|| PathBuf::from(kind::BUN_IN_SANDBOX)),
        ),
        Kind::Command => None,
    };
    let mut argv = Vec::new();
    let template: serde_json::Value = serde_json::from_str(kind.template())
        .map_err(|e| setup(format!("bundle template {}: {e}", kind.name())))?;
    for a in template["process"]["args"].as_array().into_iter().flatten() {
        match a.as_str().unwrap_or_default() {
            "{{interpreter}}" => {
                argv.extend(interpreter.iter().map(|p| p.to_string_lossy().into_owned()))
            }
            "{{script}}" => argv.push(head.clone()),
            "{{args}}" => {
                if kind == Kind::Command {
                    argv.push(head.clone());
                }
                argv.extend(rest.iter().cloned());
            }
            other => argv.push(other.to_string()),
        }
    }
    if kind != Kind::Command {
        let home = workers::home()?;
        if kind == Kind::Bun && interpreter.as_deref() == Some(Path::new(kind::BUN_IN_SANDBOX)) {
            if !home.join("bin/bun").is_file() {
                return Err(setup(
                    "Bun is not installed: run `bash hack/install-bun.sh` (or `make run`), or pass --interpreter",
                ));
            }
            sandbox
                .landlock_exec
                .push(PathBuf::from(WORKER_DIR).join("bin"));
        }
        if !home.join("lib/libbuntime_ipc.so").is_file() {
            tracing::warn!(target: "cli", "libbuntime_ipc.so is missing from {}: the worker runs without its supervisor (build with `cargo build --workspace`)", home.display());
        }
        sandbox
            .late_mounts
            .push(bind_ro(&home, Path::new(WORKER_DIR))?);
        sandbox.landlock_read.push(PathBuf::from(WORKER_DIR));
        make_mount_point(&policy)?;
    }
    sandbox.worker_env = template["process"]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    sandbox.policy = policy;
    Ok(Plan {
        kind,
        argv,
        cwd,
        sandbox,
    })
}

/// A command name looked up in PATH, as a shell would (the sandbox's root
/// is empty until it starts, so the runtime cannot look it up there).
fn which(cmd: &str, path_var: &str) -> Result<String, SandboxError> {
    use std::os::unix::fs::PermissionsExt;
    if cmd.contains('/') {
        return Ok(cmd.to_string());
    }
    path_var
        .split(':')
        .filter(|d| d.starts_with('/'))
        .map(|d| Path::new(d).join(cmd))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .map(|p| p.to_string_lossy().into_owned())
        .ok_or_else(|| setup(format!("{cmd}: command not found in PATH")))
}

fn bind_ro(src: &Path, dst: &Path) -> Result<Mount, SandboxError> {
    MountBuilder::default()
        .destination(dst)
        .typ("bind")
        .source(src)
        .options(
            ["rbind", "ro", "nosuid", "nodev"]
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .build()
        .map_err(|e| setup(format!("mount {}: {e}", dst.display())))
}

/// When the policy binds a parent of `/opt/buntime` (`/opt`, `/`) from the
/// host, the mount point must exist there: an empty directory is made.
fn make_mount_point(policy: &Policy) -> Result<(), SandboxError> {
    let fs = &policy.filesystem;
    let target = Path::new(WORKER_DIR);
    let covered = fs
        .read
        .iter()
        .chain(&fs.write)
        .chain(&fs.exec)
        .any(|p| target.starts_with(p.as_path()));
    if covered && !target.is_dir() && !nix::unistd::geteuid().is_root() {
        return Err(setup(format!(
            "the policy binds the host's /opt and {WORKER_DIR} (the worker's mount point) is missing there; as root, run `mkdir {WORKER_DIR}` once (or `make install`)"
        )));
    }
    if covered && !target.is_dir() {
        fs::create_dir_all(target).map_err(|e| {
            setup(format!(
                "the policy binds the host's {} and {WORKER_DIR} (the worker's mount point) is missing there: {e}",
                target.parent().unwrap_or(target).display()
            ))
        })?;
    }
    Ok(())
}

/// The bundle's config.json: the template with the target filled in.
fn bundle_spec(plan: &Plan, id: &str, ask_timeout: Option<&str>) -> Result<Spec, SandboxError> {
    let mut v: serde_json::Value = serde_json::from_str(plan.kind.template())
        .map_err(|e| setup(format!("bundle template: {e}")))?;
    v["process"]["args"] = serde_json::json!(plan.argv);
    v["process"]["cwd"] = serde_json::json!(plan.cwd);
    v["process"]["env"] = serde_json::json!([]);
    // Root inside, in a user namespace of its own: as an ordinary user the
    // caller's uid (rootless); as root an unprivileged uid of the run's own
    // (`sandbox_host_ids`), never the host's root.
    let (uid, gid) = sandbox_host_ids();
    v["process"]["user"] = if nix::unistd::geteuid().is_root() {
        // Without a list libcontainer keeps the caller's supplementary
        // groups (host gid 0 under sudo): the run's own gid only.
        serde_json::json!({ "uid": 0, "gid": 0, "additionalGids": [0] })
    } else {
        // Rootless: setgroups is denied in the user namespace; the
        // caller's groups are the caller's to have.
        serde_json::json!({ "uid": 0, "gid": 0 })
    };
    v["linux"]["namespaces"]
        .as_array_mut()
        .ok_or_else(|| setup("bundle template: no linux.namespaces"))?
        .push(serde_json::json!({ "type": "user" }));
    v["linux"]["uidMappings"] = serde_json::json!([{ "containerID": 0, "hostID": uid, "size": 1 }]);
    v["linux"]["gidMappings"] = serde_json::json!([{ "containerID": 0, "hostID": gid, "size": 1 }]);
    v["linux"]["cgroupsPath"] = serde_json::json!(cgroup_path(id));
    v["process"]["terminal"] = serde_json::json!(false);
    // The templates state the secure values themselves (a run policy
    // without `isolation` follows them); buntime's seccomp profile depends
    // on the network mode, so it is added here.
    v["linux"]["seccomp"] = serde_json::to_value(crate::spec::default_seccomp(
        plan.sandbox.policy.network.mode,
    ))
    .map_err(|e| setup(format!("seccomp profile: {e}")))?;
    if plan.sandbox.policy.network.mode == crate::policy::NetMode::Host {
        // sysfs can only be mounted by the owner of the network namespace;
        // in the host's, the host's /sys is bound read-only (as runc does
        // rootless).
        for m in v["mounts"].as_array_mut().into_iter().flatten() {
            if m["type"] == "sysfs" {
                *m = serde_json::json!({ "destination": "/sys", "type": "bind", "source": "/sys",
                    "options": ["rbind", "ro", "nosuid", "nodev", "noexec"] });
            }
        }
    }
    if let Some(t) = ask_timeout {
        v["annotations"] = serde_json::json!({ crate::supervisor::ANNOTATION_ASK_TIMEOUT: t });
    }
    serde_json::from_value(v).map_err(|e| setup(format!("bundle template: {e}")))
}

/// First host uid (and gid) of the sandboxes `buntime run` starts as root:
/// the run's uid is this plus the pid of its `buntime`, unique among the
/// runs going on, far above the ranges of users and of /etc/subuid's
/// usual allocations, below 2^31 (tools that read ids as signed ints).
pub const RUN_ID_BASE: u32 = 2_140_000_000;

/// The host uid and gid a run's sandbox acts as (root inside maps to it).
pub fn sandbox_host_ids() -> (u32, u32) {
    if nix::unistd::geteuid().is_root() {
        let id = RUN_ID_BASE + std::process::id();
        (id, id)
    } else {
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    }
}

/// Deletes the sandbox when dropped while armed: an early return after the
/// create, or a panic (a bug), still takes it away.
struct Cleanup<'a> {
    root: &'a Root,
    id: &'a str,
    armed: bool,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = lifecycle::delete(self.root, self.id, true) {
                tracing::warn!(target: "cli", "delete sandbox {}: {e}", self.id);
            }
        }
    }
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
    // Before any thread: the staging binds of root's sandbox
    // (`runtime::stage`) stay in this process's namespace.
    if nix::unistd::geteuid().is_root() {
        crate::runtime::stage::private_mount_namespace()?;
    }
    // Before the bundle is even made (see cgroup_warmup); reaped after create.
    let warmup = crate::runtime::cgroup_warmup::Warmup::start();
    let plan = plan(&req)?;
    let id = format!("run-{}", std::process::id());
    let spec = bundle_spec(&plan, &id, req.ask_timeout.as_deref())?;
    {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&req.state_root)
            .map_err(|e| setup(format!("create {}: {e}", req.state_root.display())))?;
    }
    let root = Root::open(&req.state_root, false)?;
    let bundle = scratch::BundleDir::create(&req.state_root, &id)?;
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
    let mut spec = spec;
    let learner = if req.learn {
        // Said before anything of the run's happens, not only after (once:
        // a run re-executed from a sealed copy, `exeseal`, said it already).
        if crate::exeseal::sealed().is_none() {
            crate::logging::say(
            "buntime: --learn: this run is NOT sandboxed by filesystem or network rules (it may read, write, run and connect as far as its uid may; docs/learn.md): learn only with code you would run without a sandbox",
            );
        }
        let dir = bundle.path.join("learn");
        let listener = crate::learn::Listener::start(&dir).map_err(|e| {
            setup(format!(
                "--learn: listen on {}: {e}",
                dir.join(crate::learn::observe::SOCKET_NAME).display()
            ))
        })?;
        crate::learn::observe::attach(&mut spec, &listener.socket).map_err(setup)?;
        Some(listener)
    } else {
        None
    };
    spec.save(bundle.path.join("config.json"))
        .map_err(|e| setup(format!("write bundle: {e}")))?;
    let memory = plan.sandbox.policy.resources.memory.map(|m| m.to_string());
    let req_limits = plan.sandbox.policy.resources.clone();
    // resources.output: the sandbox's stdout/stderr are relayed and counted.
    let output_limit = req_limits.output;
    let plumbing = match output_limit {
        Some(_) => Some(relay::plumb().map_err(|e| setup(format!("output pipes: {e}")))?),
        None => None,
    };

    foreground::become_subreaper()?;
    let opts = CreateOptions {
        id: id.clone(),
        bundle: bundle.path.clone(),
        detach: false,
        sandbox: Some(plan.sandbox),
        stdout: plumbing.as_ref().map(|p| p.stdout.clone()),
        stderr: plumbing.as_ref().map(|p| p.stderr.clone()),
        ..CreateOptions::default()
    };
    let container = create(&root, &opts)?;
    // Our copies of the sandbox's ends: its exit must bring EOF.
    drop(opts);
    drop(warmup);
    let mut cleanup = Cleanup {
        root: &root,
        id: &id,
        armed: true,
    };
    let pid = container
        .pid()
        .map(|p| Pid::from_raw(p.as_raw()))
        .ok_or_else(|| setup("created sandbox has no pid"))?;
    let cgroup = cgroup_path(&id);
    if !nix::unistd::geteuid().is_root() {
        limits::apply_v1(&cgroup, &req_limits)?;
    }
    let set = foreground::block_signals()?;
    let state = root.extra_dir(&id);
    // After the mask: the relay thread must not take the signals we wait for.
    let relay = match (plumbing, output_limit) {
        (Some(p), Some(limit)) => match relay::Relay::start(p, limit.bytes(), pid.as_raw()) {
            Ok(r) => Some(r),
            Err(e) => {
                foreground::unblock_signals(&set);
                return Err(setup(format!("output relay: {e}")));
            }
        },
        _ => None,
    };
    // Threads only now: libcontainer has forked what it had to.
    let _ui = match debug_ui::start(&req, &id) {
        Ok(ui) => ui,
        Err(e) => {
            foreground::unblock_signals(&set);
            return Err(e);
        }
    };
    // The UI is the approver when there is one (the newest approver wins).
    if req.prompt && req.debug_ui.is_none() {
        let sock = state.join(crate::statedir::APPROVER_FILE);
        let _ = std::thread::Builder::new()
            .name("prompt".into())
            .spawn(move || prompt::serve(&sock));
    }
    let waited = lifecycle::start(&root, &id)
        .map_err(SandboxError::from)
        .and_then(|()| foreground::wait_forward(pid, &set).map_err(SandboxError::from));
    tracing::debug!(target: "cli", "run: sandbox exited");
    let relayed = relay
        .map(|r| r.finish(crate::supervisor::WIND_DOWN))
        .unwrap_or_default();
    // The supervisor's last audit lines (a proxy connection that ended
    // with the sandbox) are written before it exits: read after that.
    if waited.is_ok() {
        let pid = root.read_meta(&id).supervisor_pid;
        if let Some(s) = crate::supervisor::begin_finish(pid, &id) {
            s.wait();
        }
    }
    if relayed.limit_hit {
        audit_output_kill(&state, &id, relayed.bytes);
    }
    let records = crate::audit::read_all(&state);
    let ooms = report::oom_kills(&cgroup);
    cleanup.armed = false;
    if let Err(e) = lifecycle::delete(&root, &id, true) {
        tracing::warn!(target: "cli", "delete sandbox {id}: {e}");
    }
    tracing::debug!(target: "cli", "run: sandbox deleted");
    foreground::unblock_signals(&set);
    let mut code = waited?;
    if relayed.limit_hit {
        crate::logging::say(&format!(
            "buntime: killed: the output limit{} was reached",
            output_limit.map(|b| format!(" ({b})")).unwrap_or_default()
        ));
        code = relay::OUTPUT_LIMIT_EXIT;
    } else if report::timed_out(&records) {
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
    if let Some(line) = report::denied_summary(&records) {
        crate::logging::say(&line);
    }
    Ok((code, learner.map(crate::learn::Listener::finish)))
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
