//! Landlock enforcement of a policy, applied inside the container right
//! before exec (for init and exec'd processes alike).
//!
//! The runtime builds a [`LandlockPlan`] from the policy and the effective
//! spec (container-side paths), keeps it in the container's state directory
//! (it is plain serde data), and calls [`LandlockPlan::apply`] in the
//! container process. Paths missing in the container are skipped. The best
//! ABI the kernel offers is used; [`LandlockStatus`] records what was
//! enforced. Landlock only grants: `filesystem.deny` carve-outs inside an
//! allowed tree are enforced by masking in the spec, not here.

use std::path::{Path, PathBuf};

use ::landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use libcontainer::oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::policy::{normalize_path, LandlockRequirement, NetMode, Policy};

/// The newest ABI this build knows; rights the kernel lacks are dropped
/// (best effort), so asking for the newest gets the best the kernel has.
const NEWEST: ABI = ABI::V10;

/// TCP rights for the sandbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum NetPlan {
    /// TCP is not restricted by Landlock (`host` mode).
    Unrestricted,
    /// Only these ports may be connected to / bound (`none`: neither;
    /// `proxy`: connect to the proxy's port only).
    Tcp { connect: Vec<u16>, bind: Vec<u16> },
    /// Only connect is handled, to these ports; bind is free (`pod`: the
    /// pod's servers listen on its ports). Landlock filters by port, not
    /// address: a port here is open at every address.
    Connect { connect: Vec<u16> },
}

fn yes() -> bool {
    true
}

/// Everything needed to build the ruleset inside the container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockPlan {
    /// Read files and list directories beneath these paths.
    pub read: Vec<PathBuf>,
    /// Read and write (create, remove, truncate, ...) beneath these paths.
    pub write: Vec<PathBuf>,
    /// Execute (and read) beneath these paths; absolute `exec.allow`
    /// programs are here too.
    pub exec: Vec<PathBuf>,
    /// `exec.allow` names, resolved in `path_var` when applying.
    pub exec_names: Vec<String>,
    /// The container's PATH.
    pub path_var: String,
    pub net: NetPlan,
    /// Whether the filesystem rules (and scopes) are applied; `false` with
    /// `"landlock": "off"` in `pod` mode, whose TCP rule is its egress
    /// control and is applied all the same.
    #[serde(default = "yes")]
    pub filesystem: bool,
    /// Fail instead of running unconfined when Landlock is unavailable.
    pub required: bool,
}

/// How much of the ruleset the kernel enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    Full,
    Partial,
    NotEnforced,
}

/// What was applied; stored in the container's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockStatus {
    /// The kernel's Landlock ABI, `None` when it has no Landlock.
    pub kernel_abi: Option<u32>,
    pub enforcement: Enforcement,
    /// Whether TCP was restricted by Landlock.
    pub tcp_restricted: bool,
    /// Plan paths that did not exist in the container.
    pub skipped: Vec<PathBuf>,
}

/// Landlock errors.
#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("the policy requires Landlock (\"landlock\": \"required\"), but {0}")]
    Unsupported(String),
    #[error("network.mode \"pod\" controls egress with Landlock's TCP rules (ABI 4), but {0}; the container is not run with open egress")]
    PodNeedsTcp(String),
    #[error("building the Landlock ruleset failed: {0}")]
    Ruleset(#[from] ::landlock::RulesetError),
}

/// The running kernel's Landlock ABI version, `None` without Landlock.
pub fn kernel_abi() -> Option<u32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a NULL attr and size 0 this flag only returns the ABI
    // version; no memory is touched.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(v).ok().filter(|v| *v > 0)
}

/// Dynamic loaders live in these directories; a process that may execute a
/// dynamically linked program must be able to "execute" its loader too.
const LOADER_DIRS: &[&str] = &[
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
];

/// The loaders' names (glibc and musl, for the common architectures),
/// looked up by name in `LOADER_DIRS`, which hold the x86-64 and aarch64
/// loaders (other architectures' multiarch directories are not searched).
/// Listing the directories instead cost about a millisecond of every exec
/// on a host whose /usr/lib holds thousands of files.
const LOADER_NAMES: &[&str] = &[
    "ld-linux-x86-64.so.2",
    "ld-linux.so.2",
    "ld-linux-x32.so.2",
    "ld-linux-aarch64.so.1",
    "ld-linux-armhf.so.3",
    "ld-linux.so.3",
    "ld-linux-riscv64-lp64d.so.1",
    "ld64.so.1",
    "ld64.so.2",
    "ld-musl-x86_64.so.1",
    "ld-musl-i386.so.1",
    "ld-musl-aarch64.so.1",
    "ld-musl-armhf.so.1",
    "ld-musl-ppc64le.so.1",
    "ld-musl-s390x.so.1",
    "ld-musl-riscv64.so.1",
];

fn loaders() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in LOADER_DIRS {
        for name in LOADER_NAMES {
            let p = Path::new(d).join(name);
            if !p.exists() {
                continue;
            }
            // An older glibc names its loader `ld-2.NN.so` and links the
            // standard name to it in the same directory; `apply` follows no
            // symlink, so grant the file itself. Only that shape (a bare
            // `ld-*.so*` name): a link elsewhere has its own entry above.
            if let Ok(target) = std::fs::read_link(&p) {
                if let Some(file) = same_dir_loader(&target) {
                    let real = Path::new(d).join(file);
                    // A file, not a directory: a rule on a directory would
                    // cover everything beneath it.
                    if std::fs::symlink_metadata(&real).is_ok_and(|m| m.file_type().is_file()) {
                        out.push(real);
                    }
                }
            }
            out.push(p);
        }
    }
    out
}

/// `target` if it is a bare file name that looks like a loader
/// (`ld-*.so*`, `ld64*.so*`).
fn same_dir_loader(target: &Path) -> Option<&Path> {
    let name = target.to_str()?;
    let bare = !name.contains('/');
    let named = (name.starts_with("ld-") || name.starts_with("ld64")) && name.contains(".so");
    (bare && named).then_some(target)
}

/// The PATH in the spec's process environment (else the default one).
pub(crate) fn env_path(spec: &Spec) -> String {
    spec.process()
        .as_ref()
        .and_then(|p| p.env().as_ref())
        .and_then(|env| env.iter().find_map(|e| e.strip_prefix("PATH=")))
        .unwrap_or(crate::spec::DEFAULT_PATH)
        .to_string()
}

impl LandlockPlan {
    /// Derive the plan from a policy (absolute, container-side paths) and
    /// the effective spec (for PATH). `proxy_port` is the proxy's TCP port
    /// in `proxy` mode.
    pub fn from_policy(policy: &Policy, effective: &Spec, proxy_port: Option<u16>) -> Self {
        let clean = |v: &[crate::policy::FsPath]| -> Vec<PathBuf> {
            v.iter().map(|p| normalize_path(p.as_path())).collect()
        };
        let fs = &policy.filesystem;
        let mut exec = clean(&fs.exec);
        let mut exec_names = Vec::new();
        for prog in &policy.exec.allow {
            if prog.is_name() {
                exec_names.push(prog.as_str().to_string());
            } else {
                exec.push(normalize_path(Path::new(prog.as_str())));
            }
        }
        let net = match policy.network.mode {
            // The bundle's own network (or the host's): no TCP rules.
            NetMode::Bundle | NetMode::Host => NetPlan::Unrestricted,
            NetMode::None => NetPlan::Tcp {
                connect: vec![],
                bind: vec![],
            },
            NetMode::Proxy => NetPlan::Tcp {
                connect: proxy_port.into_iter().collect(),
                bind: vec![],
            },
            NetMode::Pod => {
                let mut connect: Vec<u16> = proxy_port.into_iter().collect();
                connect.extend(policy.network.direct_ports());
                connect.sort_unstable();
                connect.dedup();
                NetPlan::Connect { connect }
            }
        };
        LandlockPlan {
            read: clean(&fs.read),
            write: clean(&fs.write),
            exec,
            exec_names,
            path_var: env_path(effective),
            net,
            filesystem: policy.landlock != LandlockRequirement::Off,
            required: policy.landlock == LandlockRequirement::Required,
        }
    }

    /// `pod` mode's egress rests on the TCP connect rule: a kernel that
    /// cannot enforce it (no Landlock, ABI < 4) is refused whatever
    /// `landlock` says, never run open.
    pub fn needs_tcp_rules(&self) -> bool {
        matches!(self.net, NetPlan::Connect { .. })
    }

    /// Whether the plan restricts TCP (modes `none`, `proxy` and `pod`).
    pub fn restricts_tcp(&self) -> bool {
        matches!(self.net, NetPlan::Tcp { .. } | NetPlan::Connect { .. })
    }

    /// Check at create time, before anything runs: a plan that requires
    /// Landlock fails on a kernel without it. Returns the kernel ABI.
    pub fn check_supported(&self) -> Result<Option<u32>, LandlockError> {
        let abi = kernel_abi();
        if self.needs_tcp_rules() {
            match abi {
                None => {
                    return Err(LandlockError::PodNeedsTcp(
                        "this kernel has no Landlock".into(),
                    ))
                }
                Some(a) if a < 4 => {
                    return Err(LandlockError::PodNeedsTcp(format!(
                        "the kernel's Landlock ABI is {a}"
                    )))
                }
                _ => {}
            }
        }
        if self.required && abi.is_none() {
            return Err(LandlockError::Unsupported(
                "this kernel has no Landlock (not built in or not enabled at boot)".into(),
            ));
        }
        self.check_abi(abi)?;
        Ok(abi)
    }

    /// "Required" must not quietly mean less than the policy says: TCP
    /// rules need ABI 4 and truncation control ABI 3. (Newer rights the
    /// kernel lacks, such as scopes, are best effort.)
    fn check_abi(&self, abi: Option<u32>) -> Result<(), LandlockError> {
        let tcp = self.restricts_tcp();
        match abi {
            Some(a) if self.required && a < 4 && (tcp || a < 3) => {
                Err(LandlockError::Unsupported(format!(
                    "the kernel's Landlock ABI {a} cannot enforce this policy's {} rules",
                    if tcp { "TCP" } else { "truncate" }
                )))
            }
            _ => Ok(()),
        }
    }

    /// Executables the plan grants: `exec` paths plus names found in PATH,
    /// plus the dynamic loaders when anything is executable.
    fn exec_paths(&self) -> Vec<PathBuf> {
        let mut out = self.exec.clone();
        for name in &self.exec_names {
            for dir in self.path_var.split(':').filter(|d| d.starts_with('/')) {
                let cand = Path::new(dir).join(name);
                if cand.exists() {
                    out.push(cand);
                }
            }
        }
        if !out.is_empty() {
            out.extend(loaders());
        }
        out
    }

    /// Build and enforce the ruleset on the calling process (and its future
    /// children). Call in the container right before exec. Sets
    /// no_new_privs (required by the kernel without CAP_SYS_ADMIN).
    pub fn apply(&self) -> Result<LandlockStatus, LandlockError> {
        let abi = self.check_supported()?;
        let tcp_restricted = self.restricts_tcp();
        let mut skipped = Vec::new();
        let created = self.ruleset()?.create()?;
        let created = self.add_path_rules(created, &mut skipped)?;
        let created = self.add_port_rules(created)?;
        let status = created.restrict_self()?;
        let enforcement = match status.ruleset {
            RulesetStatus::FullyEnforced => Enforcement::Full,
            RulesetStatus::PartiallyEnforced => Enforcement::Partial,
            RulesetStatus::NotEnforced => Enforcement::NotEnforced,
        };
        if (self.required || self.needs_tcp_rules()) && enforcement == Enforcement::NotEnforced {
            return Err(LandlockError::Unsupported(
                "the kernel did not enforce the ruleset".into(),
            ));
        }
        Ok(LandlockStatus {
            kernel_abi: abi,
            enforcement,
            tcp_restricted: tcp_restricted && abi.is_some_and(|a| a >= 4),
            skipped,
        })
    }

    /// The rights the ruleset handles.
    fn ruleset(&self) -> Result<::landlock::Ruleset, LandlockError> {
        // Best effort even when required: rights this kernel lacks are
        // dropped, but a kernel without Landlock is refused above and an
        // unenforced ruleset below.
        let mut ruleset = Ruleset::default().set_compatibility(CompatLevel::BestEffort);
        if self.filesystem {
            ruleset = ruleset.handle_access(AccessFs::from_all(NEWEST))?;
        }
        match self.net {
            NetPlan::Tcp { .. } => {
                ruleset = ruleset.handle_access(AccessNet::ConnectTcp | AccessNet::BindTcp)?
            }
            NetPlan::Connect { .. } => {
                // Required, not best effort: it is the mode's egress control.
                ruleset = ruleset
                    .set_compatibility(CompatLevel::HardRequirement)
                    .handle_access(AccessNet::ConnectTcp)?
                    .set_compatibility(CompatLevel::BestEffort)
            }
            NetPlan::Unrestricted => {}
        }
        if self.filesystem {
            ruleset = ruleset.scope(Scope::AbstractUnixSocket | Scope::Signal)?;
        }
        Ok(ruleset)
    }

    /// A rule for each path of the plan that is still what create saw;
    /// the others go to `skipped`.
    fn add_path_rules(
        &self,
        mut created: ::landlock::RulesetCreated,
        skipped: &mut Vec<PathBuf>,
    ) -> Result<::landlock::RulesetCreated, LandlockError> {
        if !self.filesystem {
            return Ok(created);
        }
        let read_rights: BitFlags<AccessFs> = AccessFs::ReadFile | AccessFs::ReadDir;
        let write_rights = read_rights | AccessFs::from_write(NEWEST);
        let exec_rights = read_rights | AccessFs::Execute;
        let groups: Vec<(Vec<PathBuf>, BitFlags<AccessFs>)> = vec![
            (self.read.clone(), read_rights),
            (self.write.clone(), write_rights),
            (self.exec_paths(), exec_rights),
        ];
        for (paths, rights) in groups {
            for p in paths {
                // No symlink is followed: the paths were made canonical at
                // create (`resolve_in_root`), so a link found now was planted
                // by the container to widen the rule; the rule is dropped.
                let Some(fd) = open_no_symlinks(&p) else {
                    skipped.push(p);
                    continue;
                };
                let is_dir = match nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&fd)) {
                    Ok(st) => st.st_mode & libc::S_IFMT == libc::S_IFDIR,
                    Err(_) => {
                        skipped.push(p);
                        continue;
                    }
                };
                // Directory-only rights are invalid on a file.
                let rights = if is_dir {
                    rights
                } else {
                    rights & AccessFs::from_file(NEWEST)
                };
                created = created.add_rule(PathBeneath::new(fd, rights))?;
            }
        }
        Ok(created)
    }

    /// The TCP ports the network plan opens.
    fn add_port_rules(
        &self,
        mut created: ::landlock::RulesetCreated,
    ) -> Result<::landlock::RulesetCreated, LandlockError> {
        if let NetPlan::Tcp { connect, bind } = &self.net {
            for port in connect {
                created = created.add_rule(NetPort::new(*port, AccessNet::ConnectTcp))?;
            }
            for port in bind {
                created = created.add_rule(NetPort::new(*port, AccessNet::BindTcp))?;
            }
        }
        if let NetPlan::Connect { connect } = &self.net {
            for port in connect {
                created = created.add_rule(NetPort::new(*port, AccessNet::ConnectTcp))?;
            }
        }
        Ok(created)
    }

    /// Makes every path canonical as the container will see it, resolving
    /// symlinks inside `rootfs` (never out of it), and resolves `exec.allow`
    /// names in PATH now. Call at create, on the host; `apply` then follows
    /// no symlink at all. Paths missing from the rootfs (mount points, files
    /// made later) are kept as given.
    pub fn resolve_in_root(&mut self, rootfs: &Path) {
        let Ok(root) = std::fs::File::open(rootfs) else {
            return;
        };
        let canon = |p: &PathBuf| canonical_in_root(&root, rootfs, p).unwrap_or_else(|| p.clone());
        self.read = self.read.iter().map(canon).collect();
        self.write = self.write.iter().map(canon).collect();
        let mut exec: Vec<PathBuf> = self.exec.iter().map(canon).collect();
        for name in std::mem::take(&mut self.exec_names) {
            for dir in self.path_var.split(':').filter(|d| d.starts_with('/')) {
                let cand = Path::new(dir).join(&name);
                if let Some(c) = canonical_in_root(&root, rootfs, &cand) {
                    exec.push(c);
                }
            }
        }
        self.exec = exec;
    }

    /// Like [`LandlockPlan::resolve_in_root`] for `exec.allow` names only;
    /// the paths stay as written.
    pub fn resolve_names_in_root(&mut self, rootfs: &Path) {
        let Ok(root) = std::fs::File::open(rootfs) else {
            return;
        };
        for name in std::mem::take(&mut self.exec_names) {
            for dir in self.path_var.split(':').filter(|d| d.starts_with('/')) {
                let cand = Path::new(dir).join(&name);
                if let Some(c) = canonical_in_root(&root, rootfs, &cand) {
                    self.exec.push(c);
                }
            }
        }
    }

    /// Whether the plan lets `path` (absolute, canonical as the container
    /// sees it) be executed: an `exec` rule (or resolved `exec.allow` name,
    /// or loader) is the path itself or a directory above it.
    pub fn grants_exec(&self, path: &Path) -> bool {
        self.exec_paths().iter().any(|r| path.starts_with(r))
    }

    /// Whether the plan lets `path` be read (any of its rules covers it).
    pub fn grants_read(&self, path: &Path) -> bool {
        self.read
            .iter()
            .chain(&self.write)
            .any(|r| path.starts_with(r))
            || self.grants_exec(path)
    }

    /// The status to record when the plan is not applied because the
    /// kernel has no Landlock (create still works unless required).
    pub fn unsupported_status() -> LandlockStatus {
        LandlockStatus {
            kernel_abi: None,
            enforcement: Enforcement::NotEnforced,
            tcp_restricted: false,
            skipped: Vec::new(),
        }
    }
}

/// Opens `path` as an O_PATH descriptor without following any symlink.
fn open_no_symlinks(path: &Path) -> Option<std::os::fd::OwnedFd> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    use std::os::fd::FromRawFd;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
    let fd = openat2(libc::AT_FDCWD, path, how).ok()?;
    // SAFETY: openat2 returned a new descriptor that nobody else owns.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// `path`'s canonical form inside `rootfs` (symlinks resolved as if
/// `rootfs` were `/`), or None when it does not exist there.
fn canonical_in_root(root: &std::fs::File, rootfs: &Path, path: &Path) -> Option<PathBuf> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = openat2(root.as_raw_fd(), path, how).ok()?;
    // SAFETY: a new descriptor from openat2, owned here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    let root_real = std::fs::canonicalize(rootfs).ok()?;
    let inside = real.strip_prefix(&root_real).ok()?;
    Some(Path::new("/").join(inside))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_policy;

    fn spec_with_path(path: &str) -> Spec {
        let mut s = Spec::default();
        let mut p = s.process().clone().unwrap_or_default();
        p.set_env(Some(vec![format!("PATH={path}"), "HOME=/".into()]));
        s.set_process(Some(p));
        s
    }

    #[test]
    fn plan_follows_policy() {
        let p = parse_policy(
            r#"{"version":1,"filesystem":{"read":["/usr/./lib"],"write":["/tmp"],"exec":["/usr/bin"]},
                "exec":{"allow":["python3","/bin/sh"]},"network":{"mode":"proxy","allow":["pypi.org"]},
                "landlock":"required"}"#,
            "t",
        )
        .unwrap();
        let plan =
            LandlockPlan::from_policy(&p, &spec_with_path("/usr/local/bin:/usr/bin"), Some(3128));
        assert_eq!(plan.read, vec![PathBuf::from("/usr/lib")]);
        assert_eq!(plan.write, vec![PathBuf::from("/tmp")]);
        assert_eq!(
            plan.exec,
            vec![PathBuf::from("/usr/bin"), PathBuf::from("/bin/sh")]
        );
        assert_eq!(plan.exec_names, vec!["python3".to_string()]);
        assert_eq!(plan.path_var, "/usr/local/bin:/usr/bin");
        assert_eq!(
            plan.net,
            NetPlan::Tcp {
                connect: vec![3128],
                bind: vec![]
            }
        );
        assert!(plan.required);
    }

    #[test]
    fn network_modes() {
        let none = parse_policy(r#"{"version":1}"#, "t").unwrap();
        let plan = LandlockPlan::from_policy(&none, &Spec::default(), Some(3128));
        assert_eq!(
            plan.net,
            NetPlan::Tcp {
                connect: vec![],
                bind: vec![]
            }
        );
        assert!(!plan.required);
        let host = parse_policy(r#"{"version":1,"network":{"mode":"host"}}"#, "t").unwrap();
        assert_eq!(
            LandlockPlan::from_policy(&host, &Spec::default(), None).net,
            NetPlan::Unrestricted
        );
    }

    #[test]
    fn plan_round_trips_through_json() {
        let p = crate::policy::builtin_run_default();
        let plan = LandlockPlan::from_policy(&p, &spec_with_path("/bin"), None);
        let s = serde_json::to_string(&plan).unwrap();
        assert_eq!(serde_json::from_str::<LandlockPlan>(&s).unwrap(), plan);
    }

    #[test]
    fn only_same_directory_loader_links_are_followed() {
        assert_eq!(
            same_dir_loader(Path::new("ld-2.28.so")),
            Some(Path::new("ld-2.28.so"))
        );
        assert_eq!(same_dir_loader(Path::new("../../etc/shadow")), None);
        assert_eq!(same_dir_loader(Path::new("/lib/ld-2.28.so")), None);
        assert_eq!(same_dir_loader(Path::new("libc.so.6")), None);
        assert_eq!(same_dir_loader(Path::new("..")), None);
        assert_eq!(same_dir_loader(Path::new("ld-x")), None);
    }

    #[test]
    fn exec_names_resolve_in_path_with_loaders() {
        let plan = LandlockPlan {
            read: vec![],
            write: vec![],
            exec: vec![],
            exec_names: vec!["sh".into()],
            path_var: "/usr/bin:/bin".into(),
            net: NetPlan::Unrestricted,
            filesystem: true,
            required: false,
        };
        let paths = plan.exec_paths();
        assert!(paths.iter().any(|p| p.ends_with("sh")), "{paths:?}");
        assert!(
            paths.iter().any(|p| p.to_string_lossy().contains("ld-")),
            "the loader is executable too: {paths:?}"
        );
    }

    #[test]
    fn required_plans_refuse_kernels_too_old_for_their_rules() {
        let plan = |tcp: bool, required: bool| LandlockPlan {
            read: vec![],
            write: vec![],
            exec: vec![],
            exec_names: vec![],
            path_var: String::new(),
            net: if tcp {
                NetPlan::Tcp {
                    connect: vec![3128],
                    bind: vec![],
                }
            } else {
                NetPlan::Unrestricted
            },
            filesystem: true,
            required,
        };
        let err = |p: &LandlockPlan, abi| p.check_abi(Some(abi)).unwrap_err().to_string();
        assert!(err(&plan(true, true), 3).contains("ABI 3 cannot enforce this policy's TCP rules"));
        assert!(plan(true, true).check_abi(Some(4)).is_ok());
        assert!(plan(false, true).check_abi(Some(3)).is_ok());
        assert!(err(&plan(false, true), 2).contains("truncate"));
        // Best effort: the kernel's best, with a warning at create.
        assert!(plan(true, false).check_abi(Some(1)).is_ok());
    }

    /// Applies a ruleset in a forked child and checks the kernel enforces
    /// it. Landlock is per-process, so the test process stays unconfined.
    #[test]
    fn kernel_enforces_plan_in_child() {
        if kernel_abi().is_none() {
            // `make test` (hack/test.sh) counts a skip as a failure.
            assert!(
                std::env::var_os("BUNTIME_TEST_STRICT").is_none(),
                "no Landlock on this kernel"
            );
            eprintln!("skipping: no Landlock on this kernel");
            return;
        }
        let dir = std::env::temp_dir().join(format!("buntime-ll-{}", std::process::id()));
        let allowed = dir.join("allowed");
        let other = dir.join("other");
        std::fs::create_dir_all(&allowed).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("secret"), "x").unwrap();
        let plan = LandlockPlan {
            read: vec![],
            write: vec![allowed.clone(), PathBuf::from("/does/not/exist")],
            exec: vec![],
            exec_names: vec![],
            path_var: String::new(),
            net: NetPlan::Tcp {
                connect: vec![],
                bind: vec![],
            },
            filesystem: true,
            required: true,
        };
        // SAFETY: the child only makes syscalls and exits with a code.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = match plan.apply() {
                Ok(st) => {
                    let w = std::fs::write(allowed.join("f"), "ok").is_ok();
                    let r = std::fs::read(other.join("secret")).is_err();
                    let skipped = st.skipped == vec![PathBuf::from("/does/not/exist")];
                    let tcp = std::net::TcpListener::bind("127.0.0.1:0").is_err();
                    match (w, r, skipped, tcp) {
                        (true, true, true, true) => 0,
                        (false, ..) => 10,
                        (_, false, ..) => 11,
                        (_, _, false, _) => 12,
                        _ => 13,
                    }
                }
                Err(_) => 20,
            };
            // SAFETY: leave the forked child without running test harness code.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let _ = std::fs::remove_dir_all(&dir);
        assert!(libc::WIFEXITED(status));
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "child reported a failed check"
        );
    }
}
