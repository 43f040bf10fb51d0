//! Translation of a policy into an OCI runtime spec: one pure function,
//! `policy + bundle spec -> effective spec` ([`effective_spec`]), and the
//! check that a spec derived from an annotation policy only takes rights
//! away ([`check_only_narrows`]).

pub mod capabilities;
pub mod narrow;
pub mod seccomp;

use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::{
    Linux, LinuxCpu, LinuxMemory, LinuxNamespace, LinuxNamespaceType, LinuxPids, LinuxResources,
    LinuxSeccomp, Mount, PosixRlimit, PosixRlimitBuilder, PosixRlimitType, Process, Root, Spec,
};

use crate::policy::{normalize_path, NamespaceKind, NetMode, Policy, SeccompChoice};

pub use narrow::{check_only_narrows, NarrowingError};
pub use seccomp::default_seccomp;

/// Where the spec is used. Also the container's mode in its metadata
/// (`runtime::state::Meta`): the supervisor opens a `Run` container's
/// policy paths on the host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpecMode {
    /// `buntime-runc create`: the bundle's rootfs is the sandbox's world;
    /// no host path is ever added.
    #[default]
    Oci,
    /// `buntime run`: the person running it binds their own host paths;
    /// policy paths are host paths, bound at the same place.
    Run,
}

/// Hard resource limits of the host; the spec never asks for more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostLimits {
    /// (type, hard limit); `u64::MAX` means unlimited. Types not listed are
    /// treated as unlimited.
    pub hard: Vec<(PosixRlimitType, u64)>,
}

impl HostLimits {
    /// The calling process's hard limits (what a child could get at most).
    pub fn current() -> Self {
        let read = |res: libc::__rlimit_resource_t| -> u64 {
            let mut r = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit only writes the struct we pass.
            let rc = unsafe { libc::getrlimit(res, &mut r) };
            if rc != 0 || r.rlim_max == libc::RLIM_INFINITY {
                u64::MAX
            } else {
                r.rlim_max
            }
        };
        HostLimits {
            hard: vec![
                (PosixRlimitType::RlimitNofile, read(libc::RLIMIT_NOFILE)),
                (PosixRlimitType::RlimitCore, read(libc::RLIMIT_CORE)),
                (PosixRlimitType::RlimitFsize, read(libc::RLIMIT_FSIZE)),
                (PosixRlimitType::RlimitNproc, read(libc::RLIMIT_NPROC)),
                (PosixRlimitType::RlimitStack, read(libc::RLIMIT_STACK)),
                (PosixRlimitType::RlimitMemlock, read(libc::RLIMIT_MEMLOCK)),
                (PosixRlimitType::RlimitAs, read(libc::RLIMIT_AS)),
            ],
        }
    }

    /// No limits at all (for tests and golden files).
    pub fn unlimited() -> Self {
        HostLimits { hard: Vec::new() }
    }

    pub fn hard(&self, typ: PosixRlimitType) -> u64 {
        self.hard
            .iter()
            .find(|(t, _)| *t == typ)
            .map_or(u64::MAX, |(_, v)| *v)
    }
}

/// Everything besides the policy and the bundle that the translation needs.
#[derive(Clone, Debug)]
pub struct SpecContext {
    pub mode: SpecMode,
    pub host_limits: HostLimits,
    /// The allow-list proxy's TCP port in `proxy` and `pod` modes (Landlock
    /// and the proxy variables).
    pub proxy_port: Option<u16>,
    /// In `Run` mode, the caller's environment, filtered by the env rules.
    /// `None`: the bundle's `process.env` is the environment filtered.
    pub host_env: Option<Vec<(String, String)>>,
}

impl SpecContext {
    /// OCI mode with the host's real limits.
    pub fn oci() -> Self {
        SpecContext {
            mode: SpecMode::Oci,
            host_limits: HostLimits::current(),
            proxy_port: Some(crate::proxy::PROXY_PORT),
            host_env: None,
        }
    }
}

/// Errors of the translation.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("policy path {0:?} is relative; resolve policy paths before translating")]
    RelativePath(String),
    #[error("network.mode \"pod\" keeps the network namespace the bundle gives, but this bundle has none (it shares the host's network, e.g. hostNetwork or --network host); give the container a network namespace, or use a policy whose network.mode is \"host\"")]
    PodWithoutNetns,
    #[error("network.mode \"pod\" is for containers an engine runs in a pod's network namespace; `buntime run` has none: use \"proxy\"")]
    PodInRun,
}

/// The network namespace a `pod`-mode container keeps: `Some(path)` when
/// the bundle joins one (a pod's, made before the container), `None` when
/// the container makes its own. A bundle without one is refused.
pub fn pod_netns(bundle: &Spec) -> Result<Option<PathBuf>, SpecError> {
    bundle
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|ns| ns.iter().find(|n| n.typ() == LinuxNamespaceType::Network))
        .map(|n| n.path().clone())
        .ok_or(SpecError::PodWithoutNetns)
}

/// runc's default masked paths.
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// runc's default read-only paths.
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Used when the env rules leave no PATH: a search path is not a secret and
/// without one the entrypoint could not be found.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The CFS period we use with a CPU quota (100ms, the kernel default).
pub const CPU_PERIOD_US: u64 = 100_000;

/// Paths the container gets from its own mounts (proc, sysfs, devices, the
/// private /tmp) and that `buntime run` therefore never binds from the host.
/// Paths the sandbox gets its own of (kernel filesystems, the private
/// `/tmp`), never bound from the host. A path *under* `/tmp` is the host's
/// and is bound like any other.
fn is_virtual(p: &Path) -> bool {
    ["/proc", "/sys", "/dev"].iter().any(|v| p.starts_with(v))
        || p == Path::new("/tmp")
        || p == Path::new("/")
}

/// A bind mount: by type, or by a `bind`/`rbind` option.
pub fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind")
}

fn bind_mount(path: &Path, writable: bool) -> Mount {
    let mut m = Mount::default();
    m.set_destination(path.to_path_buf());
    m.set_typ(Some("bind".into()));
    m.set_source(Some(path.to_path_buf()));
    let rw = if writable { "rw" } else { "ro" };
    m.set_options(Some(vec![
        "rbind".into(),
        rw.into(),
        "nosuid".into(),
        "nodev".into(),
    ]));
    m
}

fn tmp_mount(exec: bool) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from("/tmp"));
    m.set_typ(Some("tmpfs".into()));
    m.set_source(Some(PathBuf::from("tmpfs")));
    let mut opts = vec!["nosuid".to_string(), "nodev".to_string()];
    if !exec {
        opts.push("noexec".into());
    }
    opts.push("mode=1777".into());
    m.set_options(Some(opts));
    m
}

fn union_paths(defaults: &[&str], bundle: Option<&Vec<String>>, extra: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in defaults
        .iter()
        .map(|s| s.to_string())
        .chain(bundle.into_iter().flatten().cloned())
        .chain(extra.iter().cloned())
    {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a.filter(|v| *v > 0), b.filter(|v| *v > 0)) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// Keep environment entries whose names the policy passes, then apply the
/// fixed ones. Order: passed variables in input order, then fixed ones
/// sorted by name.
pub fn filter_env(policy: &Policy, vars: &[(String, String)]) -> Vec<String> {
    let env = &policy.env;
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in vars {
        if env.set.keys().any(|n| n.as_str() == k) || out.iter().any(|(ok, _)| ok == k) {
            continue;
        }
        if env.pass.iter().any(|p| p.matches(k)) {
            out.push((k.clone(), v.clone()));
        }
    }
    for (k, v) in &env.set {
        out.push((k.as_str().to_string(), v.clone()));
    }
    if !out.iter().any(|(k, _)| k == "PATH") {
        out.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    out.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The environment of a container process: `vars` through the policy's
/// env rules, then (in proxy mode) the proxy variables. Init's
/// ([`effective_spec`]) and every exec'd process's (`runtime::exec`) are
/// made here, so the two cannot drift apart.
pub fn process_env(
    policy: &Policy,
    vars: &[(String, String)],
    proxy_port: Option<u16>,
) -> Vec<String> {
    let mut env = filter_env(policy, vars);
    match (policy.network.mode, proxy_port) {
        (NetMode::Proxy, Some(port)) => set_proxy_env(&mut env, port, true),
        // The pod's loopback is its containers': reached through the proxy
        // (which connects in the pod's namespace) when the policy names
        // it, directly only on the ports Landlock opens.
        (NetMode::Pod, Some(port)) => set_proxy_env(&mut env, port, false),
        _ => {}
    }
    env
}

/// Points every common HTTP client at the proxy (curl, pip, npm, Python's
/// urllib, Bun and Node read one spelling or the other); loopback stays
/// direct when `loopback_direct`. Replaces whatever the caller set for
/// these names.
fn set_proxy_env(env: &mut Vec<String>, port: u16, loopback_direct: bool) {
    const NAMES: [&str; 3] = ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"];
    let url = format!("http://127.0.0.1:{port}");
    env.retain(|e| {
        let name = e.split('=').next().unwrap_or_default();
        !NAMES.iter().any(|n| name.eq_ignore_ascii_case(n))
            && !name.eq_ignore_ascii_case("NO_PROXY")
    });
    for n in NAMES {
        env.push(format!("{n}={url}"));
        env.push(format!("{}={url}", n.to_ascii_lowercase()));
    }
    if loopback_direct {
        env.push("NO_PROXY=localhost,127.0.0.1".into());
        env.push("no_proxy=localhost,127.0.0.1".into());
    }
}

/// `KEY=VALUE` entries as pairs (an entry without `=` is a name with an
/// empty value).
pub fn split_env(env: &[String]) -> Vec<(String, String)> {
    env.iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (e.clone(), String::new()),
        })
        .collect()
}

fn rlimit(typ: PosixRlimitType, hard: u64, soft: u64) -> PosixRlimit {
    PosixRlimitBuilder::default()
        .typ(typ)
        .hard(hard)
        .soft(soft.min(hard))
        .build()
        .expect("every field of the rlimit is set")
}

/// The bundle's rlimits with the policy's (`open_files`, `core`) and the
/// host's hard limits applied; `None` when the bundle has none and the
/// policy sets none (absent stays absent).
fn clamp_rlimits(
    policy: &Policy,
    bundle: Option<&Vec<PosixRlimit>>,
    host: &HostLimits,
) -> Option<Vec<PosixRlimit>> {
    let res = &policy.resources;
    if bundle.is_none() && res.open_files.is_none() && res.core.is_none() {
        return None;
    }
    let mut out: Vec<PosixRlimit> = bundle.cloned().unwrap_or_default();
    let mut set = |typ: PosixRlimitType, value: u64| {
        if let Some(r) = out.iter_mut().find(|r| r.typ() == typ) {
            // The bundle's limit stays when it is already lower.
            *r = rlimit(typ, r.hard().min(value), r.soft().min(value));
        } else {
            out.push(rlimit(typ, value, value));
        }
    };
    if let Some(n) = res.open_files {
        set(PosixRlimitType::RlimitNofile, u64::from(n.get()));
    }
    if let Some(core) = res.core {
        set(PosixRlimitType::RlimitCore, core.bytes());
    }
    Some(
        out.into_iter()
            .map(|r| rlimit(r.typ(), r.hard().min(host.hard(r.typ())), r.soft()))
            .collect(),
    )
}

fn namespace_type(kind: NamespaceKind) -> LinuxNamespaceType {
    match kind {
        NamespaceKind::Pid => LinuxNamespaceType::Pid,
        NamespaceKind::Ipc => LinuxNamespaceType::Ipc,
        NamespaceKind::Uts => LinuxNamespaceType::Uts,
        NamespaceKind::Mount => LinuxNamespaceType::Mount,
        NamespaceKind::Cgroup => LinuxNamespaceType::Cgroup,
    }
}

/// A namespace of `typ` unless the bundle has one (its own or one it joins,
/// as a pod's containers share theirs).
fn ensure_namespace(ns: &mut Vec<LinuxNamespace>, typ: LinuxNamespaceType) {
    if !ns.iter().any(|n| n.typ() == typ) {
        let mut n = LinuxNamespace::default();
        n.set_typ(typ);
        ns.push(n);
    }
}

fn apply_resources(policy: &Policy, linux: &mut Linux) {
    let res = &policy.resources;
    if res.memory.is_none() && res.pids.is_none() && res.cpu.is_none() {
        // Nothing to limit: the bundle's resources, absent or not, stand.
        return;
    }
    let mut r: LinuxResources = linux.resources().clone().unwrap_or_default();
    if let Some(mem) = res.memory {
        let want = i64::try_from(mem.bytes()).unwrap_or(i64::MAX);
        let mut m: LinuxMemory = r.memory().unwrap_or_default();
        m.set_limit(min_opt(m.limit(), Some(want)));
        r.set_memory(Some(m));
    }
    if let Some(pids) = res.pids {
        let want = i64::from(pids.get());
        let mut p: LinuxPids = r.pids().unwrap_or_default();
        let limit = min_opt(Some(p.limit()), Some(want)).unwrap_or(want);
        p.set_limit(limit);
        r.set_pids(Some(p));
    }
    if let Some(cpu) = res.cpu {
        // The quota must be at least 1ms for the kernel to accept it.
        let want = ((cpu.get() * CPU_PERIOD_US as f64).round() as i64).max(1000);
        let mut c: LinuxCpu = r.cpu().clone().unwrap_or_default();
        let bundle_quota = match (c.quota(), c.period()) {
            (Some(q), Some(p)) if q > 0 && p > 0 => {
                // Scale the bundle's quota to our period to compare.
                Some(((q as f64) * CPU_PERIOD_US as f64 / p as f64).round() as i64)
            }
            _ => None,
        };
        c.set_quota(min_opt(bundle_quota, Some(want)));
        c.set_period(Some(CPU_PERIOD_US));
        r.set_cpu(Some(c));
    }
    linux.set_resources(Some(r));
}

/// Where buntime's seccomp profile goes for a policy and a bundle; chosen
/// once per container, by [`seccomp_placement`].
#[derive(Clone, Debug, PartialEq)]
pub enum SeccompPlacement {
    /// None of buntime's: the policy says `isolation.seccomp: bundle`, or
    /// the bundle already brings buntime's very profile.
    None,
    /// The only profile: the bundle has none, so it goes into the spec.
    InSpec(LinuxSeccomp),
    /// Stacked on the bundle's own profile at create (a second filter the
    /// executor loads).
    Stacked(LinuxSeccomp),
}

/// The one place buntime's default profile is chosen: buntime's for the
/// network mode when the policy asks for it (`isolation.seccomp:
/// buntime`); in the spec when the bundle has none, stacked when it brings
/// one of its own that is not that very one (`buntime run`'s templates
/// carry it).
pub fn seccomp_placement(policy: &Policy, bundle: &Spec) -> SeccompPlacement {
    if policy.isolation.seccomp != SeccompChoice::Buntime {
        return SeccompPlacement::None;
    }
    let ours = default_seccomp(policy.network.mode);
    match bundle.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        None => SeccompPlacement::InSpec(ours),
        Some(own) if *own == ours => SeccompPlacement::None,
        Some(_) => SeccompPlacement::Stacked(ours),
    }
}

/// The translation of a policy for a bundle: the effective spec, and the
/// profile `create` stacks on the bundle's own.
#[derive(Clone, Debug)]
pub struct Translated {
    pub spec: Spec,
    pub stacked_seccomp: Option<LinuxSeccomp>,
}

/// The effective spec for running `bundle` under `policy` (see
/// [`translate`]).
pub fn effective_spec(
    policy: &Policy,
    bundle: &Spec,
    ctx: &SpecContext,
) -> Result<Spec, SpecError> {
    translate(policy, bundle, ctx).map(|t| t.spec)
}

/// Translates `policy` for `bundle`.
///
/// `policy` must have absolute paths (see `Policy::resolve_relative`); in
/// OCI mode they are container paths, in `Run` mode host paths that are
/// bound at the same place.
pub fn translate(
    policy: &Policy,
    bundle: &Spec,
    ctx: &SpecContext,
) -> Result<Translated, SpecError> {
    let fs = &policy.filesystem;
    if let Some(p) = fs
        .read
        .iter()
        .chain(&fs.write)
        .chain(&fs.exec)
        .chain(&fs.deny)
        .find(|p| !p.is_absolute())
    {
        return Err(SpecError::RelativePath(p.to_string()));
    }
    let clean = |v: &[crate::policy::FsPath]| -> Vec<PathBuf> {
        v.iter().map(|p| normalize_path(p.as_path())).collect()
    };
    let (read, write, exec, deny) = (
        clean(&fs.read),
        clean(&fs.write),
        clean(&fs.exec),
        clean(&fs.deny),
    );
    let writable = |p: &Path| write.iter().any(|w| p.starts_with(w));

    let iso = &policy.isolation;
    let mut spec = bundle.clone();

    if iso.read_only_root {
        let mut root: Root = spec.root().clone().unwrap_or_default();
        root.set_readonly(Some(true));
        spec.set_root(Some(root));
    }

    // Mounts. The filesystem rules stay deny-by-default: a bundle bind
    // outside the write paths becomes read-only.
    let had_mounts = spec.mounts().is_some();
    let mut mounts: Vec<Mount> = spec.mounts().clone().unwrap_or_default();
    for m in mounts.iter_mut() {
        if is_bind(m) && !writable(m.destination()) {
            let mut opts: Vec<String> = m
                .options()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|o| o != "rw")
                .collect();
            if !opts.iter().any(|o| o == "ro") {
                opts.push("ro".into());
            }
            m.set_options(Some(opts));
        }
    }
    // `buntime run` binds host paths: its /tmp is always its own.
    if iso.private_tmp || ctx.mode == SpecMode::Run {
        mounts.retain(|m| m.destination() != Path::new("/tmp"));
        let tmp_exec = exec
            .iter()
            .any(|e| Path::new("/tmp").starts_with(e) || e.starts_with("/tmp"));
        mounts.push(tmp_mount(tmp_exec));
    }
    if ctx.mode == SpecMode::Run {
        let mut binds: Vec<(PathBuf, bool)> = Vec::new();
        // A read path under a bound writable one comes with it; under the
        // private /tmp it is the host's and needs a bind of its own.
        let bound_writable = |p: &Path| write.iter().any(|w| !is_virtual(w) && p.starts_with(w));
        for p in read.iter().chain(&exec) {
            if !is_virtual(p) && !bound_writable(p) && !binds.iter().any(|(b, _)| b == p) {
                binds.push((p.clone(), false));
            }
        }
        for p in &write {
            if !is_virtual(p) && !binds.iter().any(|(b, _)| b == p) {
                binds.push((p.clone(), true));
            }
        }
        // Parents before children so a nested bind is not hidden; a
        // read-only path inside another bind comes with it (rbind).
        binds.sort_by_key(|(p, _)| (p.components().count(), p.clone()));
        let all = binds.clone();
        binds.retain(|(p, w)| *w || !all.iter().any(|(q, _)| q != p && p.starts_with(q)));
        for (p, w) in binds {
            if !mounts.iter().any(|m| *m.destination() == p) {
                mounts.push(bind_mount(&p, w));
            }
        }
    }
    if had_mounts || !mounts.is_empty() {
        spec.set_mounts(Some(mounts));
    }

    // Process.
    let mut process: Process = spec.process().clone().unwrap_or_default();
    let uid = process.user().uid();
    process.set_capabilities(capabilities::restrict(
        process.capabilities().as_ref(),
        &iso.capabilities,
        uid,
    ));
    if iso.no_new_privileges {
        process.set_no_new_privileges(Some(true));
    }
    process.set_rlimits(clamp_rlimits(
        policy,
        process.rlimits().as_ref(),
        &ctx.host_limits,
    ));
    let source_env = match &ctx.host_env {
        Some(vars) => vars.clone(),
        None => split_env(process.env().as_deref().unwrap_or_default()),
    };
    process.set_env(Some(process_env(policy, &source_env, ctx.proxy_port)));
    spec.set_process(Some(process));

    // Linux: namespaces, masking, seccomp, cgroups.
    let mut linux: Linux = spec.linux().clone().unwrap_or_default();
    let had_namespaces = linux.namespaces().is_some();
    let mut ns: Vec<LinuxNamespace> = linux.namespaces().clone().unwrap_or_default();
    for kind in &iso.namespaces {
        ensure_namespace(&mut ns, namespace_type(*kind));
    }
    match policy.network.mode {
        NetMode::None | NetMode::Proxy => {
            // A fresh network namespace, even if the bundle joined one.
            ns.retain(|n| n.typ() != LinuxNamespaceType::Network);
            ensure_namespace(&mut ns, LinuxNamespaceType::Network);
        }
        // The bundle's own network namespace (or none), as it is.
        NetMode::Bundle => {}
        NetMode::Pod => {
            if ctx.mode == SpecMode::Run {
                return Err(SpecError::PodInRun);
            }
            pod_netns(bundle)?;
        }
        NetMode::Host => {
            // Only `buntime run` can give host networking; in OCI mode the
            // bundle's choice stands (an annotation cannot add it).
            if ctx.mode == SpecMode::Run {
                ns.retain(|n| n.typ() != LinuxNamespaceType::Network);
            }
        }
    }
    if had_namespaces || !ns.is_empty() {
        linux.set_namespaces(Some(ns));
    }
    // Patterns (`/etc/shadow*`) are masked as the files they match when
    // the container is created (runtime::create), not here: what they
    // match depends on the root filesystem.
    let deny_strings: Vec<String> = deny
        .iter()
        .filter(|p| crate::policy::paths::deny_pattern(p).is_none())
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let kernel_masks: &[&str] = if iso.mask_kernel_paths {
        DEFAULT_MASKED_PATHS
    } else {
        &[]
    };
    if !kernel_masks.is_empty() || !deny_strings.is_empty() {
        linux.set_masked_paths(Some(union_paths(
            kernel_masks,
            linux.masked_paths().as_ref(),
            &deny_strings,
        )));
    }
    if iso.mask_kernel_paths {
        linux.set_readonly_paths(Some(union_paths(
            DEFAULT_READONLY_PATHS,
            linux.readonly_paths().as_ref(),
            &[],
        )));
    }
    // buntime's profile: the only one when the bundle has none, else
    // stacked on the bundle's at create.
    let stacked_seccomp = match seccomp_placement(policy, bundle) {
        SeccompPlacement::InSpec(ours) => {
            linux.set_seccomp(Some(ours));
            None
        }
        SeccompPlacement::Stacked(ours) => Some(ours),
        SeccompPlacement::None => None,
    };
    apply_resources(policy, &mut linux);
    spec.set_linux(Some(linux));
    Ok(Translated {
        spec,
        stacked_seccomp,
    })
}

/// The profile `create` stacks on the bundle's own seccomp profile
/// ([`seccomp_placement`]).
pub fn stacked_seccomp(policy: &Policy, bundle: &Spec) -> Option<LinuxSeccomp> {
    match seccomp_placement(policy, bundle) {
        SeccompPlacement::Stacked(ours) => Some(ours),
        _ => None,
    }
}

/// A stable JSON form of a spec for golden files and the state directory:
/// object keys sorted, capability sets sorted.
pub fn canonical_spec_json(spec: &Spec) -> serde_json::Value {
    fn sort(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.sort_keys();
                for (k, val) in m.iter_mut() {
                    if matches!(
                        k.as_str(),
                        "bounding" | "effective" | "inheritable" | "permitted" | "ambient"
                    ) {
                        if let serde_json::Value::Array(a) = val {
                            a.sort_by_key(|x| x.to_string());
                        }
                    }
                    sort(val);
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(sort),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(spec).unwrap_or_default();
    sort(&mut v);
    v
}

#[cfg(test)]
mod tests;
