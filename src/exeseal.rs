//! Sealing the running binary against CVE-2019-5736-style overwrites,
//! where the kernel's other layers do not already stop them.
//!
//! A process that enters a container (libcontainer's intermediate and
//! init, and `exec`'s process, are clones of `create`/`run`/`exec`) runs
//! the runtime's binary inside it until its final exec. A container that
//! gets hold of such a process's `/proc/PID/exe` (a program of its image
//! replaced by `#!/proc/self/exe` that `exec` then runs; a hook it
//! controls) can reopen the magic link for writing once the process is
//! gone: the host's runtime would run its code next time.
//!
//! Writing through `/proc/PID/exe` is checked by Landlock on the host path
//! of the binary: Landlock rules are attached to inodes, and the walk goes
//! from the binary up through the host's directories (hidden mount points
//! skipped). So a container whose Landlock domain is enforced can write
//! the binary only if one of its write rules (`filesystem.write`:
//! write-file and truncate among its rights; read and exec rules grant
//! neither) was opened on the binary or on one of those directories, which
//! takes a bind mount of the binary's directory (or an ancestor). The
//! runtime decides after the Landlock plan is known ([`decide`]) and,
//! only when that can happen or cannot be ruled out, re-executes the
//! whole command from a read-only copy: the binary through a detached
//! read-only overlay of its directory ([`overlay_open`], as runc 1.2), or
//! where that cannot be mounted a sealed memfd copy
//! (`F_SEAL_SEAL|SHRINK|GROW|WRITE` and `F_SEAL_EXEC`, as runc did before
//! 1.2 and youki's CLI does). Under `buntime run`'s policies nothing is
//! re-executed; the engine default (`landlock: off`) always is: about 2 ms
//! through the overlay, 10 through the memfd.
//!
//! The command is redone from the start: the call that decided returns
//! [`crate::runtime::RuntimeError::Reseal`], everything it made is undone
//! on the way out, and `main` calls [`reexec`]. The sealed process finds
//! [`MARKER`] (the original path), removes it at once, checks
//! `/proc/self/exe` itself ([`init`]) and never asks again.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use libcontainer::oci_spec::runtime::{LinuxNamespaceType, Mount, Spec};

use crate::landlock::LandlockPlan;

/// Set on the re-executed process to the original binary's path; removed
/// from the environment first thing, so children never see it.
pub const MARKER: &str = "_BUNTIME_SEALED_FROM";

/// The seals a memfd copy must carry.
const MEMFD_SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
/// `F_SEAL_EXEC` (Linux 6.3): the copy's mode bits cannot be changed.
const F_SEAL_EXEC: libc::c_int = 0x20;
/// `MFD_EXEC` (Linux 6.3): an executable memfd where `vm.memfd_noexec`
/// would otherwise make it non-executable.
const MFD_EXEC: libc::c_uint = 0x10;

/// Landlock handles truncation from ABI 3 on; before, `truncate(2)` of
/// `/proc/PID/exe` is not Landlock's to refuse.
const TRUNCATE_ABI: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("sealing the runtime binary: {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("sealing the runtime binary: re-executed from a sealed copy, but /proc/self/exe is still a writable file")]
    NotSealed,
    #[error("sealing the runtime binary: already re-executed once ({0}); not looping")]
    Loop(SealReason),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SealError {
    let what = what.into();
    move |source| SealError::Io { what, source }
}

/// How `/proc/self/exe` is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sealed {
    /// A memfd carrying every write seal.
    Memfd,
    /// A file on a read-only mount (a binary installed on a read-only
    /// filesystem): the magic link reopens it through that mount.
    ReadOnlyMount,
}

/// Set by [`init`] in a re-executed process: how it is sealed and the
/// original binary's path.
static STATE: OnceLock<(Sealed, PathBuf)> = OnceLock::new();

/// Call first thing in `main`, before any thread is started. Without
/// [`MARKER`] in the environment it does nothing else. With it, it removes
/// it and checks that this process really runs from a sealed copy (fails
/// closed otherwise).
pub fn init() -> Result<(), SealError> {
    let Some(from) = std::env::var_os(MARKER) else {
        return Ok(());
    };
    // Single-threaded still (see above): no one reads the environment
    // concurrently.
    std::env::remove_var(MARKER);
    let kind = self_exe_sealed()?.ok_or(SealError::NotSealed)?;
    let _ = STATE.set((kind, PathBuf::from(from)));
    Ok(())
}

/// How this process is sealed, if it was re-executed from a sealed copy.
pub fn sealed() -> Option<Sealed> {
    STATE.get().map(|(k, _)| *k)
}

/// The path of the binary on disk: where the sealed copy came from, else
/// `current_exe` (whose answer for a sealed copy names no real file).
pub fn exe_path() -> std::io::Result<PathBuf> {
    match STATE.get() {
        Some((_, p)) => Ok(p.clone()),
        None => std::env::current_exe(),
    }
}

/// A command that starts another copy of ourselves (the supervisor): the
/// sealed file itself when this process is sealed (the child is sealed
/// too, at no cost, and knows the original path), else the binary's path.
pub fn self_command() -> std::io::Result<std::process::Command> {
    use std::os::unix::process::CommandExt;
    Ok(match STATE.get() {
        Some((_, path)) => {
            let mut cmd = std::process::Command::new("/proc/self/exe");
            cmd.arg0(path).env(MARKER, path);
            cmd
        }
        None => std::process::Command::new(std::env::current_exe()?),
    })
}

/// Is `/proc/self/exe` a sealed memfd or a file on a read-only mount?
pub fn self_exe_sealed() -> Result<Option<Sealed>, SealError> {
    let f = File::open("/proc/self/exe").map_err(io("open /proc/self/exe"))?;
    Ok(file_sealed(&f))
}

/// The same check for any open file.
pub fn file_sealed(f: &File) -> Option<Sealed> {
    // SAFETY: F_GET_SEALS on a descriptor we own; fails (EINVAL) on
    // anything but a memfd.
    let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    if seals >= 0 && seals & MEMFD_SEALS == MEMFD_SEALS {
        return Some(Sealed::Memfd);
    }
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: fstatvfs fills `st` on success.
    let r = unsafe { libc::fstatvfs(f.as_raw_fd(), st.as_mut_ptr()) };
    if r == 0 {
        // SAFETY: initialised by the successful call.
        let st = unsafe { st.assume_init() };
        // The mount's flags: a container cannot remount a host mount.
        if st.f_flag & libc::ST_RDONLY != 0 {
            return Some(Sealed::ReadOnlyMount);
        }
    }
    None
}

// ---------------------------------------------------------------------
// The decision.

/// Why the binary must be sealed before a container is entered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SealReason {
    /// No Landlock domain for the container (the kernel has none, or the
    /// container was made without one): only file modes stand in the way.
    NoLandlock,
    /// The kernel's Landlock cannot refuse truncation (ABI below 3).
    TruncateNotHandled { abi: u32 },
    /// The container shares a pid namespace (the host's, or another's):
    /// processes outside its Landlock domain can see the runtime's.
    SharedPidNamespace,
    /// This write rule is opened, in the container, on the binary or a
    /// directory above it on the host.
    WriteRuleCoversBinary { rule: PathBuf },
    /// Something could not be determined (fail closed).
    Undetermined { what: String },
}

impl std::fmt::Display for SealReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SealReason::NoLandlock => write!(f, "no Landlock domain for the container"),
            SealReason::TruncateNotHandled { abi } => {
                write!(
                    f,
                    "the kernel's Landlock ABI {abi} cannot refuse truncation"
                )
            }
            SealReason::SharedPidNamespace => {
                write!(f, "the container has no pid namespace of its own")
            }
            SealReason::WriteRuleCoversBinary { rule } => write!(
                f,
                "filesystem.write rule {} covers the runtime binary",
                rule.display()
            ),
            SealReason::Undetermined { what } => write!(f, "cannot tell: {what}"),
        }
    }
}

/// Whether the command must re-execute from a sealed copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SealDecision {
    NotNeeded,
    Needed(SealReason),
}

/// The inodes Landlock looks at when the binary is written through
/// `/proc/PID/exe`: the file and every directory of its host path, as
/// `(st_dev, st_ino)`. (A mount point's hidden directory is not among
/// them: the walk skips it, and `stat` of the path shows the mount.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinaryInodes {
    pub path: PathBuf,
    ids: Vec<(u64, u64)>,
}

impl BinaryInodes {
    /// The running binary's.
    pub fn current() -> Result<BinaryInodes, SealError> {
        let path = std::fs::read_link("/proc/self/exe").map_err(io("readlink /proc/self/exe"))?;
        if path.as_os_str().as_bytes().ends_with(b" (deleted)") {
            return Err(SealError::Io {
                what: format!("{} was replaced while running", path.display()),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        let file = std::fs::metadata("/proc/self/exe").map_err(io("stat /proc/self/exe"))?;
        Self::of(&path, &file)
    }

    /// The file at `path` (for tests).
    pub fn at(path: &Path) -> Result<BinaryInodes, SealError> {
        let m = std::fs::metadata(path).map_err(io(format!("stat {}", path.display())))?;
        Self::of(path, &m)
    }

    fn of(path: &Path, file: &std::fs::Metadata) -> Result<BinaryInodes, SealError> {
        let mut ids = vec![(file.dev(), file.ino())];
        for dir in path.ancestors().skip(1) {
            let m = std::fs::metadata(dir).map_err(io(format!("stat {}", dir.display())))?;
            ids.push((m.dev(), m.ino()));
        }
        Ok(BinaryInodes {
            path: path.to_path_buf(),
            ids,
        })
    }

    fn contains(&self, id: (u64, u64)) -> bool {
        self.ids.contains(&id)
    }
}

/// Where a rule's path leads in the container.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    /// This host inode.
    Inode(u64, u64),
    /// Nothing: Landlock skips the rule (missing, or a symlink on the way).
    Absent,
    /// A filesystem made for the container (tmpfs, proc, ...).
    Fresh,
    Unknown(String),
}

/// How the container sees paths.
pub enum ContainerView<'a> {
    /// Not built yet (`create`): the rootfs and the spec's mounts, which
    /// libcontainer mounts in order (a later mount hides what is beneath).
    Planned {
        rootfs: &'a Path,
        mounts: &'a [Mount],
    },
    /// Running (`exec`): a handle on the init's root (`/proc/PID/root`),
    /// which lookups cross into the container's own mounts.
    Running { root: &'a File },
}

/// Filesystem types that are always a new superblock of their own, never
/// one the binary's directories could be on.
const FRESH_TYPES: &[&str] = &[
    "tmpfs", "proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2", "ramfs", "overlay",
];

/// A [`ContainerView`] ready for lookups: the rootfs opened once, the
/// destinations of the mounts that can matter made canonical once.
enum Resolver<'a> {
    Planned {
        root: File,
        /// Each mount with its destination as libcontainer makes it.
        mounts: Vec<(&'a Mount, Option<PathBuf>)>,
    },
    Running {
        root: &'a File,
    },
    Broken(String),
}

impl<'a> ContainerView<'a> {
    fn resolver(&self) -> Resolver<'a> {
        match *self {
            ContainerView::Running { root } => Resolver::Running { root },
            ContainerView::Planned { rootfs, mounts } => {
                let root = match open_path(rootfs) {
                    Ok(f) => f,
                    Err(e) => {
                        return Resolver::Broken(format!("open rootfs {}: {e}", rootfs.display()))
                    }
                };
                let root_real = std::fs::canonicalize(rootfs).ok();
                // libcontainer follows symlinks in a destination within the
                // rootfs. Only binds (and unknown types) need it: a fresh
                // mount missed here leaves a lookup in the rootfs or an
                // earlier bind, which can only make sealing more likely.
                let mounts = mounts
                    .iter()
                    .map(|m| {
                        let canon = root_real
                            .as_deref()
                            .filter(|_| !is_fresh(m))
                            .and_then(|real| canonical_dest(&root, real, &destination(m)));
                        (m, canon)
                    })
                    .collect();
                Resolver::Planned { root, mounts }
            }
        }
    }
}

impl Resolver<'_> {
    fn target(&self, rule: &Path) -> Target {
        if !rule.is_absolute() || rule.components().any(|c| c == Component::ParentDir) {
            return Target::Unknown(format!("rule {} is not a clean path", rule.display()));
        }
        match self {
            Resolver::Running { root } => lookup_in(root, rule, true),
            Resolver::Planned { root, mounts } => planned_target(root, mounts, rule),
            Resolver::Broken(why) => Target::Unknown(why.clone()),
        }
    }
}

/// libcontainer takes a relative destination as relative to the rootfs.
fn destination(m: &Mount) -> PathBuf {
    Path::new("/").join(m.destination())
}

/// An `O_PATH` handle (symlinks followed): opening a FIFO or a device
/// named by a mount must neither block nor do anything.
pub fn open_path(p: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(p)
}

fn is_fresh(m: &Mount) -> bool {
    !crate::spec::is_bind(m) && FRESH_TYPES.contains(&m.typ().as_deref().unwrap_or_default())
}

/// `rule` in the container as libcontainer will build it: below the last
/// mount whose destination contains it, else in the rootfs.
fn planned_target(root: &File, mounts: &[(&Mount, Option<PathBuf>)], rule: &Path) -> Target {
    for (m, canon) in mounts.iter().rev() {
        let dest = destination(m);
        let rest = rule
            .strip_prefix(&dest)
            .ok()
            .or_else(|| canon.as_deref().and_then(|c| rule.strip_prefix(c).ok()));
        let Some(rest) = rest else { continue };
        if is_fresh(m) {
            return Target::Fresh;
        }
        if !crate::spec::is_bind(m) {
            return Target::Unknown(format!(
                "mount {} of type {:?} (possibly the binary's filesystem)",
                dest.display(),
                m.typ().as_deref().unwrap_or_default()
            ));
        }
        let Some(src) = m.source().as_deref().filter(|s| s.is_absolute()) else {
            return Target::Unknown(format!(
                "bind mount {} has no absolute source",
                dest.display()
            ));
        };
        // mount(2) follows symlinks in the source.
        let src = match open_path(src) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Target::Absent,
            Err(e) => return Target::Unknown(format!("open {}: {e}", src.display())),
        };
        if rest.as_os_str().is_empty() {
            return stat_target(&src);
        }
        return lookup_in(&src, rest, false);
    }
    let rel = rule.strip_prefix("/").unwrap_or(rule);
    if rel.as_os_str().is_empty() {
        return stat_target(root);
    }
    lookup_in(root, rel, true)
}

/// `dest` with symlinks resolved inside the rootfs (as far as it exists),
/// relative to the rootfs as `/`.
fn canonical_dest(root: &File, root_real: &Path, dest: &Path) -> Option<PathBuf> {
    for existing in dest.ancestors() {
        let Ok(fd) = openat2_path(root, existing, RESOLVE_IN_ROOT_FOLLOW) else {
            continue;
        };
        let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
        let inside = Path::new("/").join(real.strip_prefix(root_real).ok()?);
        let rest = dest.strip_prefix(existing).ok()?;
        return Some(if rest.as_os_str().is_empty() {
            inside
        } else {
            inside.join(rest)
        });
    }
    None
}

fn stat_target(f: &File) -> Target {
    match f.metadata() {
        Ok(m) => Target::Inode(m.dev(), m.ino()),
        Err(e) => Target::Unknown(format!("stat: {e}")),
    }
}

const RESOLVE_IN_ROOT_FOLLOW: u8 = 0;
const RESOLVE_NO_LINKS_IN_ROOT: u8 = 1;
const RESOLVE_NO_LINKS_BENEATH: u8 = 2;

fn openat2_path(dir: &File, path: &Path, mode: u8) -> nix::Result<OwnedFd> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    let resolve = match mode {
        RESOLVE_IN_ROOT_FOLLOW => ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        RESOLVE_NO_LINKS_IN_ROOT => ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_SYMLINKS,
        _ => ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS,
    };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(resolve);
    let fd = openat2(dir.as_raw_fd(), path, how)?;
    // SAFETY: a new descriptor from openat2, owned here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `path` below `dir` following no symlink, as Landlock's `apply` opens
/// rule paths in the container.
fn lookup_in(dir: &File, path: &Path, in_root: bool) -> Target {
    let mode = if in_root {
        RESOLVE_NO_LINKS_IN_ROOT
    } else {
        RESOLVE_NO_LINKS_BENEATH
    };
    match openat2_path(dir, path, mode) {
        Ok(fd) => stat_target(&File::from(fd)),
        // Missing, or a symlink on the way: `apply` skips the rule too.
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR | nix::errno::Errno::ELOOP) => {
            Target::Absent
        }
        Err(e) => Target::Unknown(format!("look up {}: {e}", path.display())),
    }
}

/// Must processes that enter this container run from a sealed copy?
/// `plan` is the Landlock plan they will apply (`None`: none), `abi` the
/// kernel's Landlock ABI, `spec` the effective spec (namespaces), `view`
/// how the plan's paths resolve in the container. Anything that cannot be
/// determined means sealing.
pub fn decide(
    plan: Option<&LandlockPlan>,
    abi: Option<u32>,
    spec: &Spec,
    binary: &BinaryInodes,
    view: &ContainerView<'_>,
) -> SealDecision {
    let Some(plan) = plan else {
        return SealDecision::Needed(SealReason::NoLandlock);
    };
    let Some(abi) = abi else {
        return SealDecision::Needed(SealReason::NoLandlock);
    };
    if abi < TRUNCATE_ABI {
        return SealDecision::Needed(SealReason::TruncateNotHandled { abi });
    }
    if !crate::runtime::create::has_new_ns(spec, LinuxNamespaceType::Pid) {
        return SealDecision::Needed(SealReason::SharedPidNamespace);
    }
    // Only `write` rules carry write-file and truncate (landlock.rs).
    let resolver = view.resolver();
    for rule in &plan.write {
        match resolver.target(rule) {
            Target::Inode(dev, ino) if binary.contains((dev, ino)) => {
                return SealDecision::Needed(SealReason::WriteRuleCoversBinary {
                    rule: rule.clone(),
                })
            }
            Target::Inode(..) | Target::Absent | Target::Fresh => {}
            Target::Unknown(what) => {
                return SealDecision::Needed(SealReason::Undetermined {
                    what: format!("filesystem.write rule {}: {what}", rule.display()),
                })
            }
        }
    }
    SealDecision::NotNeeded
}

/// A new pid namespace (no path to join): the container's processes see
/// no process outside it.
/// The decision for this process: `Ok` to go on (not needed, or already
/// sealed, or the binary is on a read-only mount), `Err(reason)` when the
/// command must be redone from a sealed copy.
pub fn check(
    plan: Option<&LandlockPlan>,
    abi: Option<u32>,
    spec: &Spec,
    view: &ContainerView<'_>,
) -> Result<(), SealReason> {
    if sealed().is_some() {
        return Ok(());
    }
    let decision = match BinaryInodes::current() {
        Ok(binary) => decide(plan, abi, spec, &binary, view),
        Err(e) => SealDecision::Needed(SealReason::Undetermined {
            what: e.to_string(),
        }),
    };
    match decision {
        SealDecision::NotNeeded => Ok(()),
        SealDecision::Needed(reason) => require(reason),
    }
}

/// Sealing is needed for `reason`: `Ok` if this process already runs from
/// a copy that cannot be written, else `Err(reason)`.
pub fn require(reason: SealReason) -> Result<(), SealReason> {
    if sealed().is_some() {
        return Ok(());
    }
    if matches!(self_exe_sealed(), Ok(Some(Sealed::ReadOnlyMount))) {
        tracing::debug!(target: "cli", "exeseal: {reason}; the binary is on a read-only mount");
        return Ok(());
    }
    tracing::debug!(target: "cli", "exeseal: {reason}; re-executing from a sealed copy");
    Err(reason)
}

// ---------------------------------------------------------------------
// The sealed copy.

fn last_err(what: &str) -> SealError {
    SealError::Io {
        what: what.to_string(),
        source: std::io::Error::last_os_error(),
    }
}

fn cstr(b: &[u8], what: &str) -> Result<CString, SealError> {
    CString::new(b).map_err(|_| SealError::Io {
        what: format!("{what}: contains a NUL byte"),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })
}

// The new mount API (linux/mount.h), for the overlay below.
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: libc::c_uint = 0x1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;

/// A detached mount (attached nowhere: no path reaches it) of `fstype`
/// with these string options, read-only.
fn detached_mount(fstype: &str, opts: &[(&str, &str)]) -> Result<OwnedFd, SealError> {
    let name = cstr(fstype.as_bytes(), "filesystem type")?;
    // SAFETY: fsopen with a valid C string; returns a new fd or -1.
    let fs = unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) };
    if fs < 0 {
        return Err(last_err("fsopen"));
    }
    // SAFETY: a fresh descriptor that we own.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as RawFd) };
    for (k, v) in opts {
        let (k, v) = (cstr(k.as_bytes(), "option")?, cstr(v.as_bytes(), "option")?);
        // SAFETY: fsconfig on our context with valid C strings.
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_STRING,
                k.as_ptr(),
                v.as_ptr(),
                0,
            )
        };
        if r < 0 {
            return Err(last_err("fsconfig"));
        }
    }
    // SAFETY: fsconfig's create command takes no key or value.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if r < 0 {
        return Err(last_err("fsconfig create"));
    }
    let attrs = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    // SAFETY: fsmount on our configured context; returns a new fd or -1.
    let m = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) };
    if m < 0 {
        return Err(last_err("fsmount"));
    }
    // SAFETY: a fresh descriptor that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(m as RawFd) })
}

/// The binary, opened through a detached read-only overlay of its
/// directory (as runc from 1.2 does): nothing is copied, so the page cache
/// is the binary's own, shared by every process running it, where the
/// memfd copy costs a 14 MB copy at every start and 14 MB of shmem for as
/// long as the supervisor runs. An overlay without an upper layer has no
/// place to write: `/proc/PID/exe` reopened for writing or truncation
/// fails (EROFS) however the mount's flags are changed, and the mount is
/// attached nowhere. The second lower layer (overlayfs wants two without
/// an upper one) is an empty detached tmpfs. Needs the right to mount
/// (root); any failure falls back to the memfd copy.
fn overlay_open(original: &Path) -> Result<File, SealError> {
    let unusable = |what: &str| SealError::Io {
        what: what.to_string(),
        source: std::io::Error::from(std::io::ErrorKind::Unsupported),
    };
    let (Some(dir), Some(name)) = (original.parent(), original.file_name()) else {
        return Err(unusable("the binary's path has no directory"));
    };
    let dir_bytes = dir.as_os_str().as_bytes();
    // overlayfs separates layers with ':' and escapes with '\\'.
    if !original.is_absolute() || dir_bytes.iter().any(|b| matches!(b, b':' | b'\\' | b',')) {
        return Err(unusable(
            "the binary's directory cannot name an overlay layer",
        ));
    }
    let empty = detached_mount("tmpfs", &[("size", "4k"), ("mode", "0555")])?;
    let lower = format!("{}:/proc/self/fd/{}", dir.display(), empty.as_raw_fd());
    let ovl = detached_mount("overlay", &[("lowerdir", &lower)])?;
    let name = cstr(name.as_bytes(), "binary name")?;
    // SAFETY: openat beneath our mount's root with a valid C string.
    let fd = unsafe {
        libc::openat(
            ovl.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    };
    if fd < 0 {
        return Err(last_err("open the binary in the overlay"));
    }
    // SAFETY: a fresh descriptor that we own.
    let f = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    // The same file this process runs (not one replaced on disk since),
    // and really read-only.
    let now = File::open("/proc/self/exe")
        .and_then(|e| e.metadata())
        .map_err(io("stat /proc/self/exe"))?;
    let there = f.metadata().map_err(io("stat the overlay's binary"))?;
    let same = there.is_file()
        && there.len() == now.len()
        && there.mtime() == now.mtime()
        && there.mtime_nsec() == now.mtime_nsec()
        && there.ctime() == now.ctime()
        && there.ctime_nsec() == now.ctime_nsec();
    if !same {
        return Err(unusable("the binary on disk is not the one running"));
    }
    if file_sealed(&f) != Some(Sealed::ReadOnlyMount) {
        return Err(unusable("the overlay is not read-only"));
    }
    Ok(f)
}

/// A sealed memfd holding a copy of `/proc/self/exe`.
fn memfd_copy() -> Result<OwnedFd, SealError> {
    let src = File::open("/proc/self/exe").map_err(io("open /proc/self/exe"))?;
    let size = src.metadata().map_err(io("stat /proc/self/exe"))?.len();
    let name = cstr(b"buntime-sealed", "memfd name")?;
    let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: memfd_create with a valid name; returns a new fd or -1.
    let mut fd = unsafe { libc::memfd_create(name.as_ptr(), base | MFD_EXEC) };
    if fd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // Before Linux 6.3 there is no MFD_EXEC (and memfds are executable).
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(name.as_ptr(), base) };
    }
    if fd < 0 {
        return Err(last_err("memfd_create"));
    }
    // SAFETY: a fresh descriptor that we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let mut copied: u64 = 0;
    while copied < size {
        let left = (size - copied).min(1 << 30) as usize;
        // SAFETY: sendfile between two descriptors we own, the source's
        // own offset advancing.
        let n =
            unsafe { libc::sendfile(fd.as_raw_fd(), src.as_raw_fd(), std::ptr::null_mut(), left) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(last_err("copy the binary into the memfd"));
        }
        if n == 0 {
            break;
        }
        copied += n as u64;
    }
    if copied != size {
        return Err(SealError::Io {
            what: format!("copied {copied} of {size} bytes of the binary"),
            source: std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
        });
    }
    // Best effort: F_SEAL_EXEC is newer than the others.
    // SAFETY: fcntl on our memfd.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, F_SEAL_EXEC) };
    // SAFETY: fcntl on our memfd.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, MEMFD_SEALS) } < 0 {
        return Err(last_err("seal the memfd"));
    }
    Ok(fd)
}

/// Redoes the command (same argv, environment and descriptors) from a
/// sealed memfd copy of the binary, with [`MARKER`] set to the original
/// path. Returns only on failure; refuses in a process that is already a
/// sealed copy (no loop).
pub fn reexec(reason: SealReason) -> SealError {
    if sealed().is_some() {
        return SealError::Loop(reason);
    }
    match reexec_inner() {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn reexec_inner() -> Result<std::convert::Infallible, SealError> {
    let original = std::fs::read_link("/proc/self/exe").map_err(io("readlink /proc/self/exe"))?;
    let fd = match overlay_open(&original) {
        Ok(f) => OwnedFd::from(f),
        Err(e) => {
            tracing::debug!(target: "cli", "exeseal: no read-only overlay ({e}); a memfd copy");
            memfd_copy()?
        }
    };
    let argv: Vec<CString> = std::env::args_os()
        .map(|a| cstr(a.as_bytes(), "argument"))
        .collect::<Result<_, _>>()?;
    let mut envp: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != MARKER)
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            cstr(kv.as_bytes(), "environment")
        })
        .collect::<Result<_, _>>()?;
    let mut marker = OsString::from(MARKER);
    marker.push("=");
    marker.push(original.as_os_str());
    envp.push(cstr(marker.as_bytes(), "binary path")?);
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    let empty = cstr(b"", "path")?;
    // SAFETY: NULL-terminated arrays of valid C strings that outlive the
    // call; on success the call does not return.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd.as_raw_fd(),
            empty.as_ptr(),
            argv_p.as_ptr(),
            envp_p.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    Err(last_err("re-execute from the sealed copy"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::landlock::NetPlan;
    use libcontainer::oci_spec::runtime::{LinuxBuilder, LinuxNamespaceBuilder, MountBuilder};

    #[test]
    fn overlay_copy_is_read_only() {
        if !nix::unistd::geteuid().is_root() {
            return; // mounting needs root
        }
        let original = std::fs::read_link("/proc/self/exe").expect("readlink");
        let f = overlay_open(&original).expect("overlay");
        assert_eq!(file_sealed(&f), Some(Sealed::ReadOnlyMount));
        // Through the magic link, as an attacker would: neither a write
        // nor a truncation opens.
        let path = format!("/proc/self/fd/{}", f.as_raw_fd());
        let err = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect_err("must not open for writing");
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        let err = nix::unistd::truncate(path.as_str(), 0).expect_err("nor truncate");
        assert_eq!(err, nix::errno::Errno::EROFS);
    }

    #[test]
    fn memfd_copy_is_sealed_against_writes() {
        let fd = memfd_copy().expect("memfd copy");
        let f = File::from(fd);
        assert_eq!(file_sealed(&f), Some(Sealed::Memfd));
        // Through the magic link, as an attacker would: the open works, no
        // write does (F_SEAL_WRITE, F_SEAL_GROW).
        let path = format!("/proc/self/fd/{}", f.as_raw_fd());
        let w = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open for writing");
        use std::os::unix::fs::FileExt;
        let err = w
            .write_at(b"\x7f", 0)
            .expect_err("a sealed memfd must not be written");
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
        let err = w.set_len(1).expect_err("nor truncated");
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    }

    fn plan(write: &[&str]) -> LandlockPlan {
        LandlockPlan {
            read: vec![PathBuf::from("/")],
            write: write.iter().map(PathBuf::from).collect(),
            exec: vec![PathBuf::from("/")],
            exec_names: vec![],
            path_var: String::new(),
            net: NetPlan::Unrestricted,
            filesystem: true,
            required: false,
        }
    }

    fn spec(pid_ns_path: Option<&str>) -> Spec {
        let mut ns = LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Pid)
            .build()
            .expect("namespace");
        ns.set_path(pid_ns_path.map(PathBuf::from));
        let mut s = Spec::default();
        s.set_linux(Some(
            LinuxBuilder::default()
                .namespaces(vec![ns])
                .build()
                .expect("linux"),
        ));
        s
    }

    fn bind(src: &Path, dst: &str) -> Mount {
        MountBuilder::default()
            .destination(dst)
            .typ("bind")
            .source(src)
            .options(vec!["rbind".to_string(), "ro".to_string()])
            .build()
            .expect("mount")
    }

    fn tmpfs(dst: &str) -> Mount {
        MountBuilder::default()
            .destination(dst)
            .typ("tmpfs")
            .source("tmpfs")
            .build()
            .expect("mount")
    }

    /// A host directory with the "binary" in `rt/bin/`, and a rootfs.
    struct Fixture {
        _dir: tempfile::TempDir,
        rootfs: PathBuf,
        rt: PathBuf,
        data: PathBuf,
        binary: BinaryInodes,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let rootfs = dir.path().join("rootfs");
        let rt = dir.path().join("rt");
        let data = dir.path().join("data");
        for d in [
            rootfs.join("opt/rt"),
            rootfs.join("tmp"),
            rootfs.join("data"),
            rt.join("bin"),
            data.clone(),
        ] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        std::fs::write(rt.join("bin/buntime-runc"), b"\x7fELF").expect("binary");
        std::os::unix::fs::symlink("opt", rootfs.join("link")).expect("symlink");
        let binary = BinaryInodes::at(&rt.join("bin/buntime-runc")).expect("inodes");
        Fixture {
            _dir: dir,
            rootfs,
            rt,
            data,
            binary,
        }
    }

    fn decide_planned(
        f: &Fixture,
        p: Option<&LandlockPlan>,
        abi: u32,
        m: &[Mount],
    ) -> SealDecision {
        let view = ContainerView::Planned {
            rootfs: &f.rootfs,
            mounts: m,
        };
        decide(p, Some(abi), &spec(None), &f.binary, &view)
    }

    #[test]
    fn no_landlock_means_sealing() {
        let f = fixture();
        let view = ContainerView::Planned {
            rootfs: &f.rootfs,
            mounts: &[],
        };
        let p = plan(&["/tmp"]);
        assert_eq!(
            decide(None, Some(6), &spec(None), &f.binary, &view),
            SealDecision::Needed(SealReason::NoLandlock)
        );
        assert_eq!(
            decide(Some(&p), None, &spec(None), &f.binary, &view),
            SealDecision::Needed(SealReason::NoLandlock)
        );
        assert_eq!(
            decide(Some(&p), Some(2), &spec(None), &f.binary, &view),
            SealDecision::Needed(SealReason::TruncateNotHandled { abi: 2 })
        );
    }

    #[test]
    fn a_write_rule_over_the_binarys_directory_means_sealing() {
        let f = fixture();
        let mounts = [bind(&f.rt, "/opt/rt"), tmpfs("/tmp")];
        for rule in ["/opt/rt", "/opt/rt/bin", "/opt/rt/bin/buntime-runc"] {
            assert_eq!(
                decide_planned(&f, Some(&plan(&["/tmp", rule])), 6, &mounts),
                SealDecision::Needed(SealReason::WriteRuleCoversBinary { rule: rule.into() }),
                "{rule}"
            );
        }
        // Through a symlink in the destination, as libcontainer mounts it.
        let mounts = [bind(&f.rt, "/link/rt")];
        assert_eq!(
            decide_planned(&f, Some(&plan(&["/opt/rt/bin"])), 6, &mounts),
            SealDecision::Needed(SealReason::WriteRuleCoversBinary {
                rule: "/opt/rt/bin".into()
            })
        );
        // A rootfs that is the binary's directory's parent.
        let view = ContainerView::Planned {
            rootfs: f.rt.parent().expect("parent"),
            mounts: &[],
        };
        assert!(matches!(
            decide(
                Some(&plan(&["/rt"])),
                Some(6),
                &spec(None),
                &f.binary,
                &view
            ),
            SealDecision::Needed(SealReason::WriteRuleCoversBinary { .. })
        ));
    }

    #[test]
    fn write_rules_elsewhere_need_no_sealing() {
        let f = fixture();
        // Grant-everything except writing where the binary is: read and
        // exec of its directory are no write access.
        let mounts = [
            bind(&f.rt, "/opt/rt"),
            bind(&f.data, "/data"),
            tmpfs("/tmp"),
        ];
        let p = plan(&["/", "/tmp", "/data", "/opt", "/missing"]);
        assert_eq!(
            decide_planned(&f, Some(&p), 6, &mounts),
            SealDecision::NotNeeded
        );
        // A later tmpfs hides the bind beneath it.
        let mounts = [bind(&f.rt, "/opt/rt"), tmpfs("/opt")];
        assert_eq!(
            decide_planned(&f, Some(&plan(&["/opt/rt"])), 6, &mounts),
            SealDecision::NotNeeded
        );
        // A symlink on the rule's way: Landlock skips the rule.
        let mounts = [bind(&f.rt, "/opt/rt")];
        assert_eq!(
            decide_planned(&f, Some(&plan(&["/link/rt"])), 6, &mounts),
            SealDecision::NotNeeded
        );
    }

    #[test]
    fn doubt_means_sealing() {
        let f = fixture();
        let disk = MountBuilder::default()
            .destination("/mnt")
            .typ("ext4")
            .source("/dev/vda")
            .build()
            .expect("mount");
        assert!(matches!(
            decide_planned(&f, Some(&plan(&["/mnt/x"])), 6, &[disk]),
            SealDecision::Needed(SealReason::Undetermined { .. })
        ));
        let view = ContainerView::Planned {
            rootfs: &f.rootfs,
            mounts: &[],
        };
        assert_eq!(
            decide(
                Some(&plan(&["/tmp"])),
                Some(6),
                &spec(Some("/proc/1/ns/pid")),
                &f.binary,
                &view
            ),
            SealDecision::Needed(SealReason::SharedPidNamespace)
        );
    }

    #[test]
    fn running_view_crosses_the_containers_mounts() {
        // A "container" whose root is the rootfs, looked up as `exec` does.
        let f = fixture();
        let root = File::open(&f.rootfs).expect("root");
        let view = ContainerView::Running { root: &root };
        assert_eq!(
            decide(
                Some(&plan(&["/", "/tmp"])),
                Some(6),
                &spec(None),
                &f.binary,
                &view
            ),
            SealDecision::NotNeeded
        );
        let host_root = File::open("/").expect("/");
        let view = ContainerView::Running { root: &host_root };
        let rt = f.rt.to_string_lossy().into_owned();
        assert!(matches!(
            decide(Some(&plan(&[&rt])), Some(6), &spec(None), &f.binary, &view),
            SealDecision::Needed(SealReason::WriteRuleCoversBinary { .. })
        ));
    }
}
