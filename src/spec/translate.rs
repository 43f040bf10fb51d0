//! The translation itself: a policy and a bundle's spec in, the effective
//! spec out ([`translate`]), section by section.

use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::{
    Linux, LinuxCpu, LinuxMemory, LinuxNamespace, LinuxNamespaceType, LinuxPids, LinuxResources,
    LinuxSeccomp, Mount, PosixRlimit, PosixRlimitBuilder, PosixRlimitType, Process, Root, Spec,
};

use super::{
    capabilities, default_seccomp, is_bind, pod_netns, process_env, split_env, HostLimits,
    SpecContext, SpecError, SpecMode, CPU_PERIOD_US, DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS,
};
use crate::policy::{normalize_path, NamespaceKind, NetMode, Policy, SeccompChoice};

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

pub(super) fn bind_mount(path: &Path, writable: bool) -> Mount {
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

/// The policy's filesystem paths, normalized.
struct Paths {
    read: Vec<PathBuf>,
    write: Vec<PathBuf>,
    exec: Vec<PathBuf>,
    deny: Vec<PathBuf>,
}

impl Paths {
    fn of(policy: &Policy) -> Result<Paths, SpecError> {
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
        Ok(Paths {
            read: clean(&fs.read),
            write: clean(&fs.write),
            exec: clean(&fs.exec),
            deny: clean(&fs.deny),
        })
    }

    fn writable(&self, p: &Path) -> bool {
        self.write.iter().any(|w| p.starts_with(w))
    }
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
    let paths = Paths::of(policy)?;
    let mut spec = bundle.clone();
    if policy.isolation.read_only_root {
        let mut root: Root = spec.root().clone().unwrap_or_default();
        root.set_readonly(Some(true));
        spec.set_root(Some(root));
    }
    apply_mounts(&mut spec, policy, &paths, ctx);
    apply_process(&mut spec, policy, ctx);
    let stacked_seccomp = apply_linux(&mut spec, policy, bundle, &paths, ctx)?;
    Ok(Translated {
        spec,
        stacked_seccomp,
    })
}

/// Mounts. The filesystem rules stay deny-by-default: a bundle bind
/// outside the write paths becomes read-only.
fn apply_mounts(spec: &mut Spec, policy: &Policy, paths: &Paths, ctx: &SpecContext) {
    let had_mounts = spec.mounts().is_some();
    let mut mounts: Vec<Mount> = spec.mounts().clone().unwrap_or_default();
    for m in mounts.iter_mut() {
        if is_bind(m) && !paths.writable(m.destination()) {
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
    if policy.isolation.private_tmp || ctx.mode == SpecMode::Run {
        mounts.retain(|m| m.destination() != Path::new("/tmp"));
        let tmp_exec = paths
            .exec
            .iter()
            .any(|e| Path::new("/tmp").starts_with(e) || e.starts_with("/tmp"));
        mounts.push(tmp_mount(tmp_exec));
    }
    if ctx.mode == SpecMode::Run {
        add_host_binds(&mut mounts, paths);
    }
    if had_mounts || !mounts.is_empty() {
        spec.set_mounts(Some(mounts));
    }
}

/// `buntime run`: the policy's host paths, bound at the same place.
fn add_host_binds(mounts: &mut Vec<Mount>, paths: &Paths) {
    let (read, write, exec) = (&paths.read, &paths.write, &paths.exec);
    let mut binds: Vec<(PathBuf, bool)> = Vec::new();
    // A read path under a bound writable one comes with it; under the
    // private /tmp it is the host's and needs a bind of its own.
    let bound_writable = |p: &Path| write.iter().any(|w| !is_virtual(w) && p.starts_with(w));
    for p in read.iter().chain(exec) {
        if !is_virtual(p) && !bound_writable(p) && !binds.iter().any(|(b, _)| b == p) {
            binds.push((p.clone(), false));
        }
    }
    for p in write {
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

/// Process: capabilities, no_new_privileges, rlimits, environment.
fn apply_process(spec: &mut Spec, policy: &Policy, ctx: &SpecContext) {
    let iso = &policy.isolation;
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
}

/// Linux: namespaces, masking, seccomp, cgroups. Returns the profile to
/// stack on the bundle's own.
fn apply_linux(
    spec: &mut Spec,
    policy: &Policy,
    bundle: &Spec,
    paths: &Paths,
    ctx: &SpecContext,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    let mut linux: Linux = spec.linux().clone().unwrap_or_default();
    apply_namespaces(&mut linux, policy, bundle, ctx)?;
    apply_masks(&mut linux, policy, &paths.deny);
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
    Ok(stacked_seccomp)
}

fn apply_namespaces(
    linux: &mut Linux,
    policy: &Policy,
    bundle: &Spec,
    ctx: &SpecContext,
) -> Result<(), SpecError> {
    let had_namespaces = linux.namespaces().is_some();
    let mut ns: Vec<LinuxNamespace> = linux.namespaces().clone().unwrap_or_default();
    for kind in &policy.isolation.namespaces {
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
    Ok(())
}

fn apply_masks(linux: &mut Linux, policy: &Policy, deny: &[PathBuf]) {
    let iso = &policy.isolation;
    // Patterns (`/etc/shadow*`) are masked as the files they match when
    // the container is created (`prepare::container`), not here: what they
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
}
