//! How the container sees the Landlock plan's paths: the binary's host
//! inodes, and where each rule's path leads in the (planned or running)
//! container.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use libcontainer::oci_spec::runtime::Mount;

use super::{io, SealError};

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

    pub(super) fn contains(&self, id: (u64, u64)) -> bool {
        self.ids.contains(&id)
    }
}

/// Where a rule's path leads in the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Target {
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
pub(super) enum Resolver<'a> {
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
    pub(super) fn resolver(&self) -> Resolver<'a> {
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
    pub(super) fn target(&self, rule: &Path) -> Target {
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
