//! `create`: from a bundle to a container waiting for `start`.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;

use super::bundle::{self, Bundle};
use super::error::{Result, RuntimeError};
use super::executor::BuntimeExecutor;
use super::state::{validate_id, Meta, Root};
use crate::landlock::LandlockPlan;
use crate::policy::{prepare_resolved, resolve_container, PolicySources};
use crate::spec::{canonical_spec_json, SpecContext};
use libcontainer::oci_spec::runtime::LinuxSeccomp;

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
    pub sandbox: Option<crate::policy::RunSandbox>,
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
    let rootfs = bundle.rootfs()?;
    // The policy: resolved from annotations, node config and defaults, and
    // translated into the spec libcontainer runs. Any error: nothing made.
    // `pod` mode in a namespace the bundle joins (the pod's): the proxy is
    // bound there now, on a port of its own (the pod's containers share
    // its loopback), as the port goes into the spec.
    let mut pod_listener: Option<std::net::TcpListener> = None;
    let mut learning = false;
    let prepared = match &opts.sandbox {
        None => {
            let sources =
                PolicySources::system().map_err(|e| RuntimeError::Policy(e.to_string()))?;
            // `buntime.dev/learn`: observed under its own policy (learn).
            learning = crate::learn::container::requested(&base, &sources)
                .map_err(RuntimeError::Policy)?;
            let resolved = resolve_container(&base, &sources)
                .map_err(|e| RuntimeError::Policy(e.to_string()))?;
            let mut ctx = SpecContext::oci();
            if resolved.policy.network.mode == crate::policy::NetMode::Pod {
                if let Some(path) = crate::spec::pod_netns(&base)
                    .map_err(|e| RuntimeError::Policy(e.to_string()))?
                {
                    let l = crate::proxy::bind_in_netns_path(&path, 0).map_err(|e| {
                        RuntimeError::Policy(format!(
                            "network.mode \"pod\": bind the proxy on 127.0.0.1 in the pod's network namespace {}: {e}",
                            path.display()
                        ))
                    })?;
                    ctx.proxy_port = Some(
                        l.local_addr()
                            .map_err(|e| RuntimeError::io("the pod proxy's address", e))?
                            .port(),
                    );
                    pod_listener = Some(l);
                }
            }
            prepare_resolved(&base, resolved, &ctx)
        }
        Some(run) => crate::policy::prepare_run(&base, run),
    }
    .map_err(|e| RuntimeError::Policy(e.to_string()))?;
    let proxy_port = match (&pod_listener, prepared.resolved.policy.network.mode) {
        (Some(l), _) => l.local_addr().ok().map(|a| a.port()),
        (None, m) if m.is_proxied() => Some(crate::proxy::PROXY_PORT),
        _ => None,
    };
    let mut spec = prepared.effective;
    tracing::debug!(target: "cli", "create: policy translated");
    if opts.sandbox.is_none() {
        // Host paths are for `buntime run` only: a bundle must not be able
        // to make its supervisor open files on the host.
        if let Some(mut a) = spec.annotations().clone() {
            if a.remove(crate::policy::source::ANNOTATION_PATHS).is_some() {
                spec.set_annotations(Some(a));
            }
        }
    }
    // A bundle that brings its own seccomp profile keeps it; with
    // `isolation.seccomp: buntime` the policy's is stacked on top in the
    // executor.
    let policy_seccomp = crate::spec::stacked_seccomp(&prepared.resolved.policy, &base);
    // A user namespace's root cannot reach the state directory: what the
    // container binds from buntime (the supervisor's directory, the
    // unreadable file of deny masks) lies behind a gate (`userns`).
    // (`buntime run` stages what its sandbox cannot reach instead: `stage`.)
    let mapped_root = match opts.sandbox {
        None => super::userns::mapped_root(&spec)?,
        Some(_) => None,
    };
    let bind_dir = match mapped_root {
        Some(_) => super::userns::gate_dir(root, &opts.id),
        None => root.extra_dir(&opts.id),
    };
    let deny_files = unreadable_deny_files(
        &mut spec,
        &prepared.resolved.policy,
        opts.sandbox.is_some(),
        &rootfs,
        &bind_dir,
    )?;
    super::mounts::keep_cgroup_readonly(&mut spec)?;
    let mut landlock_plan = prepared.landlock;
    let supervised = wants_supervisor(&spec);
    if supervised {
        let source = bind_dir.join(crate::supervisor::RUN_DIR);
        add_supervisor(&mut spec, &mut landlock_plan, &source)?;
    }
    // Canonical paths now, so that applying the plan later (at every exec)
    // need not follow symlinks the container may have planted since.
    // (`buntime run` binds host paths at the same place: they are already
    // what the container sees; only program names need looking up.)
    if opts.sandbox.is_some() {
        landlock_plan.resolve_names_in_root(Path::new("/"));
    } else {
        landlock_plan.resolve_in_root(&rootfs);
    }
    // The init and intermediate are clones of this process: decide now,
    // before anything is made, whether they must run from a sealed copy.
    crate::exeseal::check(
        prepared
            .landlock_abi
            .filter(|_| landlock_plan.filesystem)
            .map(|_| &landlock_plan),
        prepared.landlock_abi,
        &spec,
        &crate::exeseal::ContainerView::Planned {
            rootfs: &rootfs,
            mounts: spec.mounts().as_deref().unwrap_or_default(),
        },
    )
    .map_err(RuntimeError::Reseal)?;
    let mut supervisor: Option<crate::supervisor::Spawned> = None;

    let extra = root.extra_dir(&opts.id);
    if let Some(parent) = extra.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| RuntimeError::io(format!("create {}", parent.display()), e))?;
    }
    // Made exclusively: it is the lock that keeps a concurrent create of
    // the same id from going on (and from "cleaning up" the other's work).
    match fs::DirBuilder::new().mode(0o700).create(&extra) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(RuntimeError::Exists(opts.id.clone()))
        }
        Err(e) => return Err(RuntimeError::io(format!("create {}", extra.display()), e)),
    }

    // A new network namespace is set up from the host after the build
    // (`lo` up; the supervisor binds the proxy there). Rootless that is not
    // possible: in proxy mode a hook does both from inside (`netns_hook`);
    // otherwise `lo` stays down (mode `none` has no inet sockets anyway).
    let rootless_netns = has_new_netns(&spec) && !nix::unistd::geteuid().is_root();
    let proxy_mode = prepared.resolved.policy.network.mode.is_proxied();
    let mut hook_socket: Option<super::netns_hook::HookSocket> = None;

    let result = (|| {
        if let Some(m) = mapped_root {
            super::userns::make_gate(root, &opts.id, m.gid)?;
        }
        if deny_files {
            make_denied_file(&bind_dir)?;
        }
        // The effective spec as the policy made it, seccomp included
        // (`spec --explain`); libcontainer's copy below may lack the
        // profile, which then runs as a precompiled program.
        let pretty = serde_json::to_string_pretty(&canonical_spec_json(&spec))
            .map_err(|e| RuntimeError::Invalid(format!("encode effective spec: {e}")))?;
        write_json(&extra.join(EFFECTIVE_FILE), &pretty)?;
        if rootless_netns && supervised && proxy_mode {
            let h = super::netns_hook::HookSocket::bind(&extra)?;
            super::netns_hook::add_to_spec(&mut spec, h.dir(), crate::proxy::PROXY_PORT)?;
            hook_socket = Some(h);
        }
        let (programs, seccomp_note) =
            precompile_seccomp(root, &extra, &mut spec, policy_seccomp.as_ref())?;
        if learning {
            // After the precompiled programs are made: the bundle's own
            // profile stays whole for init and every `exec`; the observing
            // filter only adds itself to init's (learn::container::attach).
            let socket = extra.join(crate::learn::container::SOCKET_FILE);
            crate::learn::container::attach(&mut spec, &socket).map_err(RuntimeError::Policy)?;
        }
        tracing::debug!(target: "cli", "create: seccomp ready");
        if supervised {
            // Its directory now: the container binds it.
            let run_dir = extra.join(crate::supervisor::RUN_DIR);
            match mapped_root {
                Some(_) => super::userns::make_run(root, &opts.id, &run_dir)?,
                None => fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&run_dir)
                    .map_err(|e| RuntimeError::io(format!("create {}", run_dir.display()), e))?,
            }
        }
        if let Some(m) = mapped_root {
            let dirs = super::userns::added_mount_dirs(&spec, &base);
            super::userns::make_mountpoints(&rootfs, m, &dirs)?;
        }
        // Root's `buntime run`: the sandbox's uid mounts the binds itself.
        if opts.sandbox.is_some() && nix::unistd::geteuid().is_root() && has_new_userns(&spec) {
            super::stage::stage_sources(&mut spec, &opts.bundle)?;
        }
        bundle::write_spec(&extra, &spec)?;
        write_json(
            &extra.join(POLICY_FILE),
            &prepared.resolved.canonical_json(),
        )?;
        let plan = serde_json::to_string_pretty(&landlock_plan)
            .map_err(|e| RuntimeError::Invalid(format!("encode landlock plan: {e}")))?;
        write_json(&extra.join(LANDLOCK_FILE), &plan)?;
        let mut annotations = std::collections::BTreeMap::new();
        annotations.insert(
            "buntime.dev/policy-sha256".to_string(),
            prepared.resolved.sha256(),
        );
        annotations.insert(
            "buntime.dev/policy-origin".to_string(),
            prepared.resolved.origin.to_string(),
        );
        annotations.insert("buntime.dev/seccomp".to_string(), seccomp_note);
        annotations.insert(
            "buntime.dev/landlock".to_string(),
            landlock_note(
                prepared.resolved.policy.landlock,
                prepared.landlock_abi,
                landlock_plan.restricts_tcp(),
            ),
        );
        if let Some(port) = proxy_port {
            // `exec` sets the same proxy variables (the port is per
            // container in `pod` mode); `state` shows where it listens.
            annotations.insert(ANNOTATION_PROXY.to_string(), format!("127.0.0.1:{port}"));
        }
        if supervised {
            // The supervisor starts while the container is built.
            let s = crate::supervisor::spawn(root.path(), &opts.id, &extra)
                .map_err(|e| RuntimeError::Invalid(e.to_string()))?;
            supervisor = Some(s);
            tracing::debug!(target: "cli", "create: supervisor started");
        }
        if learning {
            // Its learn socket must listen before libcontainer hands it
            // the filter, and the init's first calls wait for its answers.
            let s = supervisor.as_mut().ok_or_else(|| {
                RuntimeError::Policy(format!(
                    "annotation {}: learning needs the supervisor ({ANNOTATION_SUPERVISOR_OFF}: off is set)",
                    crate::learn::container::ANNOTATION_LEARN
                ))
            })?;
            s.wait_ready()
                .map_err(|e| RuntimeError::Invalid(e.to_string()))?;
            annotations.insert(
                crate::learn::container::ANNOTATION_LEARN.to_string(),
                "observing".to_string(),
            );
        }
        let meta = Meta {
            bundle: bundle.dir.clone(),
            rootfs: rootfs.clone(),
            annotations,
            supervisor_pid: supervisor.as_ref().map(|s| s.pid),
            policy_name: Some(prepared.resolved.origin.name()),
        };
        root.write_meta(&opts.id, &meta)?;
        let landlock = prepared.landlock_abi.map(|_| landlock_plan.clone());
        tracing::debug!(target: "cli", "create: state written, building");
        let policy_name = super::refusal::PolicyRef::new(
            prepared.resolved.origin.name(),
            &prepared.resolved.policy,
        );
        let container = build(
            root,
            opts,
            &bundle.dir,
            &extra,
            landlock,
            programs,
            policy_name,
        )?;
        tracing::debug!(target: "cli", "create: built");
        // `lo` first: the supervisor binds its proxy on 127.0.0.1 there.
        if has_new_netns(&spec) && !rootless_netns {
            if let Some(pid) = container.pid() {
                super::loopback::bring_up_in(pid.as_raw())?;
            }
        }
        tracing::debug!(target: "cli", "create: lo up");
        let bound = match &hook_socket {
            Some(h) => Some(h.take_listener(crate::proxy::PROXY_PORT)?),
            None => pod_listener.take(),
        };
        if let Some(mut s) = supervisor.take() {
            let ready = s.wait_ready();
            tracing::debug!(target: "cli", "create: supervisor ready");
            if let Err(e) = ready {
                s.abort();
                return Err(RuntimeError::Invalid(e.to_string()));
            }
            let pid = container
                .pid()
                .ok_or_else(|| RuntimeError::Invalid("created container has no pid".into()))?;
            s.start_serving(pid.as_raw(), proxy_mode, bound)
                .map_err(|e| RuntimeError::Invalid(e.to_string()))?;
            tracing::debug!(target: "cli", "create: supervisor serving");
        }
        Ok(container)
    })();
    if result.is_err() {
        if let Some(s) = supervisor.take() {
            s.abort();
        }
        cleanup_failed(root, &opts.id);
        if let Some(path) = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().as_ref())
        {
            super::cgroup::remove_quietly(path, root.systemd_cgroup, &opts.id);
        }
    }
    result
}

/// Where the container's allow-list proxy listens (`proxy`, `pod`).
pub const ANNOTATION_PROXY: &str = "buntime.dev/proxy";

/// The applied policy (canonical JSON) in buntime's state directory.
pub const POLICY_FILE: &str = "policy.json";
/// The Landlock plan, read again by `exec`.
pub const LANDLOCK_FILE: &str = "landlock.json";
/// The effective spec in canonical form, for `spec --explain`.
pub const EFFECTIVE_FILE: &str = "effective-spec.json";

fn write_json(path: &Path, body: &str) -> Result<()> {
    fs::write(path, body).map_err(|e| RuntimeError::io(format!("write {}", path.display()), e))
}

/// The bundle's seccomp profile, precompiled (see `seccomp_bpf`).
pub const SECCOMP_BPF_FILE: &str = "seccomp.bpf";
/// The policy's seccomp profile stacked on the bundle's own, precompiled.
pub const POLICY_SECCOMP_BPF_FILE: &str = "policy-seccomp.bpf";

/// Compiles (or takes from the cache) the container's seccomp programs and
/// stores them in its state directory, in the order the executor loads
/// them; also returns the `buntime.dev/seccomp` annotation naming them
/// (`exec` refuses to run without one it names). The bundle's profile
/// leaves the spec (libcontainer would compile it again in init) when it
/// can be loaded late, right before exec: no notify action, no_new_privs
/// set (loading after the capability drop needs it; a bundle without it
/// keeps setuid binaries working and libcontainer's order), and no
/// startContainer hooks (libcontainer runs them after its filter, in the
/// container).
fn precompile_seccomp(
    root: &Root,
    extra: &Path,
    spec: &mut libcontainer::oci_spec::runtime::Spec,
    policy: Option<&LinuxSeccomp>,
) -> Result<(Vec<super::seccomp_bpf::Program>, String)> {
    use super::seccomp_bpf::{cache_dir, precompilable, Program};
    let cache = cache_dir(&root.extra_root());
    let mut programs = Vec::new();
    let mut files = Vec::new();
    let nnp = spec
        .process()
        .as_ref()
        .and_then(|p| p.no_new_privileges())
        .unwrap_or(false);
    let start_hooks = spec
        .hooks()
        .as_ref()
        .and_then(|h| h.start_container().as_ref())
        .is_some_and(|v| !v.is_empty());
    if let Some(mut linux) = spec.linux().clone() {
        let late = |p: &&LinuxSeccomp| nnp && !start_hooks && precompilable(p);
        if let Some(profile) = linux.seccomp().as_ref().filter(late) {
            let p = Program::cached_at(&cache, profile, &extra.join(SECCOMP_BPF_FILE))?;
            programs.push(p);
            files.push(SECCOMP_BPF_FILE);
            linux.set_seccomp(None);
            spec.set_linux(Some(linux));
        }
    }
    if let Some(profile) = policy {
        let p = Program::cached_at(&cache, profile, &extra.join(POLICY_SECCOMP_BPF_FILE))?;
        programs.push(p);
        files.push(POLICY_SECCOMP_BPF_FILE);
    }
    let note = if files.is_empty() {
        "libcontainer".to_string()
    } else {
        format!("bpf: {}", files.join(" "))
    };
    Ok((programs, note))
}

/// Before precompiled programs, the stacked policy profile was stored as
/// JSON, in libcontainer's argument order.
const LEGACY_POLICY_SECCOMP_FILE: &str = "policy-seccomp.json";

/// The precompiled seccomp programs of a container, for `exec`. Every
/// program its `buntime.dev/seccomp` annotation names must be there: a
/// missing one fails the exec rather than run it less confined. A
/// container made before programs existed has its stacked profile as JSON.
pub fn load_seccomp_programs(
    root: &Root,
    id: &str,
    meta: &Meta,
) -> Result<Vec<super::seccomp_bpf::Program>> {
    use super::seccomp_bpf::Program;
    let dir = root.extra_dir(id);
    let Some(note) = meta.annotations.get("buntime.dev/seccomp") else {
        let legacy = dir.join(LEGACY_POLICY_SECCOMP_FILE);
        return match fs::read(&legacy) {
            Ok(text) => {
                let profile: LinuxSeccomp = serde_json::from_slice(&text)
                    .map_err(|e| RuntimeError::Invalid(format!("{}: {e}", legacy.display())))?;
                Ok(vec![Program::compile(&bundle::libcontainer_arg_order(
                    profile,
                ))?])
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(RuntimeError::io(format!("read {}", legacy.display()), e)),
        };
    };
    let Some(names) = note.strip_prefix("bpf: ") else {
        return Ok(Vec::new());
    };
    names
        .split(' ')
        .map(|name| {
            if name != SECCOMP_BPF_FILE && name != POLICY_SECCOMP_BPF_FILE {
                return Err(RuntimeError::Invalid(format!(
                    "container {id:?}: unknown seccomp program {name:?}"
                )));
            }
            Program::load(&dir.join(name))
        })
        .collect()
}

/// The Landlock plan stored for a container, if Landlock applies to it.
pub fn load_landlock(root: &Root, id: &str, meta: &Meta) -> Result<Option<LandlockPlan>> {
    let applied = meta
        .annotations
        .get("buntime.dev/landlock")
        .is_some_and(|v| v.starts_with("abi-"));
    if !applied {
        return Ok(None);
    }
    let path = root.extra_dir(id).join(LANDLOCK_FILE);
    let text =
        fs::read(&path).map_err(|e| RuntimeError::io(format!("read {}", path.display()), e))?;
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| RuntimeError::Invalid(format!("{}: {e}", path.display())))
}

/// libcontainer reads the effective spec from `effective_dir` (buntime's
/// state directory, also what `exec` reads); the OCI state it gives hooks
/// reports the caller's `bundle`.
fn build(
    root: &Root,
    opts: &CreateOptions,
    bundle: &Path,
    effective_dir: &Path,
    landlock: Option<LandlockPlan>,
    seccomp: Vec<super::seccomp_bpf::Program>,
    policy_name: super::refusal::PolicyRef,
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

/// Bundle annotation `buntime.dev/supervisor: off` runs the container
/// without a supervisor (no broker, no `/run/buntime`): it only removes
/// rights, so any bundle may ask for it.
pub const ANNOTATION_SUPERVISOR_OFF: &str = "buntime.dev/supervisor";

fn wants_supervisor(spec: &libcontainer::oci_spec::runtime::Spec) -> bool {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_SUPERVISOR_OFF))
        .is_none_or(|v| v != "off")
}

/// A read-only bind with nothing to run or open as a device: what buntime
/// itself puts into a container (the supervisor's directory, deny masks).
fn sealed_bind(src: &Path, dst: &Path) -> Result<libcontainer::oci_spec::runtime::Mount> {
    libcontainer::oci_spec::runtime::MountBuilder::default()
        .destination(dst)
        .typ("bind")
        .source(src)
        .options(
            ["bind", "ro", "nosuid", "nodev", "noexec"]
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .build()
        .map_err(|e| RuntimeError::Invalid(format!("mount {}: {e}", dst.display())))
}

/// In the state directory: an empty file nobody may read (mode 000), bound
/// over `filesystem.deny` files.
const DENIED_FILE: &str = "denied";

/// A denied *file* is masked with an unreadable file instead of
/// `/dev/null`, so that reading it fails (`EACCES`: no capability in the
/// sandbox overrides the mode) instead of looking empty. Directories stay
/// masked by an empty read-only tmpfs. A deny pattern (`/etc/shadow*`)
/// is masked as the entries it matches now, in the container's view.
/// Returns whether any file was found.
fn unreadable_deny_files(
    spec: &mut libcontainer::oci_spec::runtime::Spec,
    policy: &crate::policy::Policy,
    host_paths: bool,
    rootfs: &Path,
    extra: &Path,
) -> Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let view = |p: &Path| {
        if host_paths {
            p.to_path_buf()
        } else {
            rootfs.join(p.strip_prefix("/").unwrap_or(p))
        }
    };
    let mut files = Vec::new();
    let mut masked = Vec::new();
    // A mask is a mount, and mounts follow symlinks: one in the way of a
    // deny path fails create (super::mounts).
    let spec_mounts = spec.mounts().clone().unwrap_or_default();
    let mask_view = if host_paths {
        super::mounts::MaskView::Host
    } else {
        super::mounts::MaskView::Image {
            rootfs,
            mounts: &spec_mounts,
        }
    };
    let no_link = |rule: &Path, p: &Path| super::mounts::refuse_symlinked_mask(rule, p, &mask_view);
    for p in &policy.filesystem.deny {
        let p = crate::policy::normalize_path(p.as_path());
        let Some((dir, prefix)) = crate::policy::paths::deny_pattern(&p) else {
            no_link(&p, &p)?;
            if fs::symlink_metadata(view(&p)).is_ok_and(|m| m.is_file()) {
                files.push(p);
            }
            continue;
        };
        // The pattern's directory must be the one the policy names (not a
        // link in the image), and listable: else the pattern would mask
        // nothing while the names resolve elsewhere inside.
        no_link(&p, dir)?;
        let entries = match fs::read_dir(view(dir)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(RuntimeError::Policy(format!(
                    "filesystem.deny {:?}: cannot list {} to mask what it matches: {e}",
                    p.display(),
                    dir.display()
                )))
            }
        };
        for e in entries.flatten() {
            if !e.file_name().as_bytes().starts_with(prefix) {
                continue;
            }
            let found = dir.join(e.file_name());
            no_link(&p, &found)?;
            // As for an ordinary entry: a regular file gets the
            // unreadable file, anything else libcontainer's masking.
            match fs::symlink_metadata(view(&found)) {
                Ok(m) if m.is_file() => files.push(found),
                Ok(_) => masked.push(found.to_string_lossy().into_owned()),
                Err(_) => {}
            }
        }
    }
    if !masked.is_empty() {
        if let Some(mut linux) = spec.linux().clone() {
            let mut all = linux.masked_paths().clone().unwrap_or_default();
            all.extend(masked);
            linux.set_masked_paths(Some(all));
            spec.set_linux(Some(linux));
        }
    }
    if files.is_empty() {
        return Ok(false);
    }
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for p in &files {
        mounts.push(sealed_bind(&extra.join(DENIED_FILE), p)?);
    }
    spec.set_mounts(Some(mounts));
    if let Some(mut linux) = spec.linux().clone() {
        if let Some(mut masked) = linux.masked_paths().clone() {
            masked.retain(|m| !files.iter().any(|f| Path::new(m) == f));
            linux.set_masked_paths(Some(masked));
        }
        spec.set_linux(Some(linux));
    }
    Ok(true)
}

fn make_denied_file(dir: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(DENIED_FILE);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(&path)
        .map(|_| ())
        .map_err(|e| RuntimeError::io(format!("create {}", path.display()), e))
}

/// Binds the supervisor's directory (socket and segment; `source`)
/// read-only at `/run/buntime`, points the worker at it through the
/// environment (which `exec` inherits: it reads the same effective
/// config.json), and lets Landlock read it.
fn add_supervisor(
    spec: &mut libcontainer::oci_spec::runtime::Spec,
    plan: &mut LandlockPlan,
    source: &Path,
) -> Result<()> {
    use crate::supervisor::{CONTAINER_CONTROL, CONTAINER_DIR, CONTAINER_IPC};
    let mount = sealed_bind(source, Path::new(CONTAINER_DIR))?;
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.retain(|m| !m.destination().starts_with(CONTAINER_DIR));
    mounts.push(mount);
    spec.set_mounts(Some(mounts));
    if let Some(mut process) = spec.process().clone() {
        let mut env = process.env().clone().unwrap_or_default();
        env.retain(|e| !e.starts_with("BUNTIME_IPC=") && !e.starts_with("BUNTIME_CONTROL="));
        env.push(format!("{}={CONTAINER_IPC}", crate::ipc::ENV_IPC));
        env.push(format!("{}={CONTAINER_CONTROL}", crate::ipc::ENV_CONTROL));
        process.set_env(Some(env));
        spec.set_process(Some(process));
    }
    plan.read.push(PathBuf::from(CONTAINER_DIR));
    Ok(())
}

/// True when the container gets a network namespace of its own.
fn has_new_netns(spec: &libcontainer::oci_spec::runtime::Spec) -> bool {
    has_new_ns(
        spec,
        libcontainer::oci_spec::runtime::LinuxNamespaceType::Network,
    )
}

fn has_new_userns(spec: &libcontainer::oci_spec::runtime::Spec) -> bool {
    has_new_ns(
        spec,
        libcontainer::oci_spec::runtime::LinuxNamespaceType::User,
    )
}

/// The spec makes a namespace of `typ` of its own (not one joined by path).
pub(crate) fn has_new_ns(
    spec: &libcontainer::oci_spec::runtime::Spec,
    typ: libcontainer::oci_spec::runtime::LinuxNamespaceType,
) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| ns.iter().any(|n| n.typ() == typ && n.path().is_none()))
}

/// Paths given on the command line are relative to the caller's directory.
pub(crate) fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    let cwd = std::env::current_dir().map_err(|e| RuntimeError::io("current directory", e))?;
    Ok(cwd.join(p))
}

/// Undoes a failed create: kills whatever started, removes the cgroup and
/// both state directories. Best effort: the original error is what matters.
fn cleanup_failed(root: &Root, id: &str) {
    let dir = root.container_dir(id);
    if dir.join("state.json").exists() {
        if let Ok(mut c) = Container::load(dir.clone()) {
            if let Err(e) = c.delete(true) {
                tracing::debug!(target: "cli", "cleanup of failed create {id}: {e}");
            }
        }
    }
    if dir.exists() {
        let _ = fs::remove_dir_all(&dir);
    }
    let _ = root.remove_extra(id);
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
