//! `create`: from a bundle to a container waiting for `start`, in named
//! steps (see [`create`]): prepare the policy (`policy_step`), plan the
//! container (`plan::Plan::make`), claim the state directory (from then on
//! a `guard::CreateGuard` undoes everything if a later step fails, when it
//! is dropped), write the state (`Plan::write_state`), start the
//! supervisor, write the metadata, build, bring `lo` up, serve.

mod denied;
mod guard;
mod plan;
mod policy_step;
mod seccomp_files;

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::oci_spec::runtime::{LinuxNamespaceType, Spec};
use libcontainer::syscall::syscall::SyscallType;

use super::bundle::{self, Bundle};
use super::error::{Result, RuntimeError};
use super::executor::BuntimeExecutor;
use super::refusal::PolicyRef;
use super::seccomp_bpf::Program;
use super::state::{validate_id, Root};
use crate::landlock::LandlockPlan;
use guard::CreateGuard;
use plan::Plan;

pub use seccomp_files::{load_landlock, load_seccomp_programs};

/// The options of `create` (and of the create half of `run`).
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub preserve_fds: i32,
    pub no_pivot: bool,
    /// False for a foreground `run`, whose terminal needs no console socket.
    pub detach: bool,
    /// `buntime run`: the policy comes from here, not from annotations.
    pub sandbox: Option<crate::prepare::RunSandbox>,
    /// The init's stdout and stderr instead of ours (`buntime run` relays
    /// them to count `resources.output`).
    pub stdout: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
    pub stderr: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
}

/// Creates the container. On failure nothing is left behind: no state
/// directory, no cgroup, no process.
pub fn create(root: &Root, opts: &CreateOptions) -> Result<Container> {
    validate_id(&opts.id)?;
    if root.exists(&opts.id) {
        return Err(RuntimeError::Exists(opts.id.clone()));
    }
    // The kernel's wait before the first cgroup attach runs meanwhile.
    let _warmup = super::cgroup_warmup::Warmup::start();
    let bundle = Bundle::load(&opts.bundle)?;
    tracing::debug!(target: "cli", "create: bundle loaded");
    let base = bundle::effective_spec(&bundle, &opts.id, root.systemd_cgroup)?;
    refuse_run_only_annotations(&base, opts)?;
    let rootfs = bundle.rootfs()?;
    let policy = policy_step::prepare_policy(&base, opts.sandbox.as_ref())?;
    tracing::debug!(target: "cli", "create: policy translated");
    let mut plan = Plan::make(root, opts, rootfs, policy)?;
    // From here on, a failure undoes everything made.
    let mut guard = CreateGuard::claim(root, &opts.id, &plan.spec)?;
    let hook = plan.write_state(root, opts, &base, guard.dir())?;
    let dir = guard.dir().clone();
    plan.start_supervisor(root, opts, &dir, &mut guard.supervisor)?;
    let supervisor_pid = guard.supervisor.as_ref().map(|s| s.pid);
    plan.write_meta(root, opts, &bundle.dir, supervisor_pid)?;
    tracing::debug!(target: "cli", "create: state written, building");
    let container = build(
        root,
        opts,
        &bundle.dir,
        guard.dir().path(),
        plan.applied_landlock(),
        std::mem::take(&mut plan.programs),
        plan.policy_ref(),
    )?;
    tracing::debug!(target: "cli", "create: built");
    // `lo` first: the supervisor binds its proxy on 127.0.0.1 there.
    if has_new_netns(&plan.spec) && !plan.rootless_netns {
        if let Some(pid) = container.pid() {
            super::loopback::bring_up_in(pid.as_raw())?;
        }
    }
    tracing::debug!(target: "cli", "create: lo up");
    let listener = match &hook {
        Some(h) => Some(h.take_listener(crate::proxy::PROXY_PORT)?),
        None => plan.pod_listener.take(),
    };
    if let Some(s) = guard.supervisor.take() {
        serve(s, &container, plan.proxy_mode(), listener)?;
    }
    guard.disarm();
    Ok(container)
}

/// `buntime.dev/timeout-from` is `buntime run --pool`'s alone: from any
/// other bundle it would let a container's `resources.timeout` wait for a
/// claim that never comes.
fn refuse_run_only_annotations(spec: &Spec, opts: &CreateOptions) -> Result<()> {
    let key = crate::supervisor::ANNOTATION_TIMEOUT_FROM;
    let set = spec
        .annotations()
        .as_ref()
        .is_some_and(|a| a.contains_key(key));
    if set && opts.sandbox.is_none() {
        return Err(RuntimeError::Invalid(format!(
            "annotation {key} is reserved for buntime run's pooled sandboxes"
        )));
    }
    Ok(())
}

/// The supervisor gets the init's pid (and the proxy's listener) and
/// starts serving.
fn serve(
    mut s: crate::supervisor::Spawned,
    container: &Container,
    proxy_mode: bool,
    listener: Option<TcpListener>,
) -> Result<()> {
    let ready = s.wait_ready();
    tracing::debug!(target: "cli", "create: supervisor ready");
    if let Err(e) = ready {
        s.abort();
        return Err(RuntimeError::Invalid(e.to_string()));
    }
    let pid = container
        .pid()
        .ok_or_else(|| RuntimeError::Invalid("created container has no pid".into()))?;
    s.start_serving(pid.as_raw(), proxy_mode, listener)
        .map_err(|e| RuntimeError::Invalid(e.to_string()))?;
    tracing::debug!(target: "cli", "create: supervisor serving");
    Ok(())
}

/// Where the container's allow-list proxy listens (`proxy`, `pod`).
pub const ANNOTATION_PROXY: &str = "buntime.dev/proxy";

/// libcontainer reads the effective spec from `effective_dir` (buntime's
/// state directory, also what `exec` reads); the OCI state it gives hooks
/// reports the caller's `bundle`.
fn build(
    root: &Root,
    opts: &CreateOptions,
    bundle: &Path,
    effective_dir: &Path,
    landlock: Option<LandlockPlan>,
    seccomp: Vec<Program>,
    policy_name: PolicyRef,
) -> Result<Container> {
    let pid_file = opts.pid_file.as_ref().map(|p| absolute(p)).transpose()?;
    let console = opts
        .console_socket
        .as_ref()
        .map(|p| absolute(p))
        .transpose()?;
    let dup = |fd: &std::sync::Arc<std::os::fd::OwnedFd>| {
        fd.try_clone()
            .map_err(|e| RuntimeError::io("duplicate the sandbox's stdio", e))
    };
    let mut builder = ContainerBuilder::new(opts.id.clone(), SyscallType::default());
    if let Some(fd) = &opts.stdout {
        builder = builder.with_stdout(dup(fd)?);
    }
    if let Some(fd) = &opts.stderr {
        builder = builder.with_stderr(dup(fd)?);
    }
    builder
        .with_root_path(root.path())
        .map_err(|e| RuntimeError::backend("--root", &e))?
        .with_pid_file(pid_file)
        .map_err(|e| RuntimeError::backend("--pid-file", &e))?
        .with_console_socket(console)
        .with_preserved_fds(opts.preserve_fds)
        .with_executor(BuntimeExecutor::for_init(landlock, seccomp, policy_name))
        .as_init(effective_dir)
        .with_oci_bundle(bundle)
        .with_systemd(root.systemd_cgroup)
        .with_detach(opts.detach)
        .with_no_pivot(opts.no_pivot)
        .build()
        .map_err(|e| RuntimeError::backend(format!("create container {:?}", opts.id), &e))
}

pub use crate::prepare::container::ANNOTATION_SUPERVISOR_OFF;

/// True when the container gets a network namespace of its own.
fn has_new_netns(spec: &Spec) -> bool {
    has_new_ns(spec, LinuxNamespaceType::Network)
}

fn has_new_userns(spec: &Spec) -> bool {
    has_new_ns(spec, LinuxNamespaceType::User)
}

pub(crate) use crate::spec::has_new_ns;

/// Paths given on the command line are relative to the caller's directory.
pub(crate) fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    let cwd = std::env::current_dir().map_err(|e| RuntimeError::io("current directory", e))?;
    Ok(cwd.join(p))
}

/// The `buntime.dev/landlock` annotation; what best effort leaves out is
/// also a warning at create (`"landlock": "required"` was refused before,
/// in `LandlockPlan::check_supported`).
fn landlock_note(
    requirement: crate::policy::LandlockRequirement,
    abi: Option<u32>,
    restricts_tcp: bool,
) -> String {
    if requirement == crate::policy::LandlockRequirement::Off {
        return match abi {
            // `pod` mode: its TCP rule only (`load_landlock` reads "abi-").
            Some(abi) => format!("abi-{abi}; tcp only, filesystem off by policy"),
            None => "off by policy".to_string(),
        };
    }
    match abi {
        Some(abi) if restricts_tcp && abi < 4 => {
            tracing::warn!(target: "cli",
                "landlock: the kernel's ABI {abi} cannot restrict TCP (ABI 4); this network \
                 mode relies on its network namespace and seccomp alone");
            format!("abi-{abi}; tcp not restricted")
        }
        Some(abi) => format!("abi-{abi}"),
        None => {
            tracing::warn!(target: "cli",
                "landlock: this kernel has no Landlock; the policy's file and TCP rules rely \
                 on mounts, namespaces and seccomp alone");
            "not-applied: kernel has no landlock".to_string()
        }
    }
}

#[cfg(test)]
mod landlock_note_tests {
    use super::landlock_note;

    #[test]
    fn the_annotation_says_what_best_effort_left_out() {
        use crate::policy::LandlockRequirement::{BestEffort, Off};
        assert_eq!(landlock_note(BestEffort, Some(7), true), "abi-7");
        assert_eq!(landlock_note(BestEffort, Some(3), false), "abi-3");
        assert_eq!(
            landlock_note(BestEffort, Some(3), true),
            "abi-3; tcp not restricted"
        );
        assert_eq!(
            landlock_note(BestEffort, None, true),
            "not-applied: kernel has no landlock"
        );
        assert_eq!(landlock_note(Off, None, true), "off by policy");
    }
}
