//! Where a run's bundle goes, and its removal.
//!
//! The bundle is scratch: a config.json that libcontainer reads once and an
//! empty root in which it makes a mount point per mount (about fifteen).
//! On a disk filesystem every one of those inodes is a journal entry: on
//! this project's CI host, whose /run is ext4, a mkdir costs about 0.1 ms
//! against 3 us on tmpfs, some 2 ms per run in all. So when root's state
//! root is not on a memory filesystem, the bundle goes in a fresh directory
//! in `/dev/shm`, if that is a tmpfs owned by root with the sticky bit (so
//! that nobody else can rename or replace what root makes there). The
//! directory is made with mkdir, mode 0700, and never reuses an existing
//! path. Others (rootless runs) keep it in their state root, usually in
//! `$XDG_RUNTIME_DIR`, a tmpfs already.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::SandboxError;

/// The memory filesystem tried when the state root is on disk.
const SHM: &str = "/dev/shm";
/// Bundle directories there are named `PREFIX<id>` or `PREFIX<id>-N`.
const PREFIX: &str = "buntime-bundle-";

/// The bundle directory of one run, removed when dropped, however the run
/// ends.
pub struct BundleDir {
    pub path: PathBuf,
    /// `bundles/` in the state root, removed too once empty.
    parent: Option<PathBuf>,
    /// In /dev/shm: a flock on the directory, held for the run's life,
    /// taken before its `rootfs` is made (see `remove_stale`).
    _lock: Option<fs::File>,
}

impl BundleDir {
    /// Makes an empty bundle directory with an empty `rootfs/` for `id`.
    pub fn create(state_root: &Path, id: &str) -> Result<BundleDir, SandboxError> {
        // Root's sandboxes run as an unprivileged uid that must reach the
        // rootfs: /dev/shm (searchable by all), not a 0700 state root.
        let root = nix::unistd::geteuid().is_root();
        let memory = (root
            && !(on_memory(state_root)
                && crate::runtime::stage::reachable_by_others(&state_root.join("bundles"))))
        .then(|| Path::new(SHM))
        .filter(|shm| safe_shared_dir(shm));
        Self::create_in(state_root, id, memory)
    }

    /// As `create`, with the memory directory to use (if any) given.
    fn create_in(
        state_root: &Path,
        id: &str,
        memory: Option<&Path>,
    ) -> Result<BundleDir, SandboxError> {
        if let Some(base) = memory {
            remove_stale(base);
            if let Some(dir) = fresh_dir(base, id) {
                let lock = lock_dir(&dir, libc::LOCK_EX)
                    .map_err(|e| SandboxError::Setup(format!("lock {}: {e}", dir.display())))?;
                let b = BundleDir {
                    path: dir,
                    parent: None,
                    _lock: Some(lock),
                };
                b.make_rootfs()?;
                return Ok(b);
            }
        }
        let parent = state_root.join("bundles");
        let path = parent.join(id);
        // A run killed before its clean-up may have left one (ids are pids).
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path)
            .map_err(|e| SandboxError::Setup(format!("create {}: {e}", path.display())))?;
        let b = BundleDir {
            path,
            parent: Some(parent),
            _lock: None,
        };
        b.make_rootfs()?;
        Ok(b)
    }

    fn make_rootfs(&self) -> Result<(), SandboxError> {
        let rootfs = self.path.join("rootfs");
        fs::create_dir(&rootfs)
            .map_err(|e| SandboxError::Setup(format!("create {}: {e}", rootfs.display())))
    }
}

fn on_memory(p: &Path) -> bool {
    nix::sys::statfs::statfs(p).is_ok_and(|f| f.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

/// A tmpfs directory (not a symlink) owned by root with the sticky bit:
/// entries root makes there cannot be renamed or removed by anyone else.
fn safe_shared_dir(dir: &Path) -> bool {
    fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir() && m.uid() == 0 && m.mode() & 0o1000 != 0)
        && on_memory(dir)
}

/// A new directory `PREFIX<id>[-N]` under `base`, or None.
fn fresh_dir(base: &Path, id: &str) -> Option<PathBuf> {
    (0..16).find_map(|n| {
        let name = match n {
            0 => format!("{PREFIX}{id}"),
            n => format!("{PREFIX}{id}-{n}"),
        };
        let dir = base.join(name);
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            // Others may pass through (not list): the sandbox of root's run
            // is an unprivileged uid that must reach `rootfs`.
            Ok(()) if nix::unistd::geteuid().is_root() => Some(
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o711))
                    .ok()
                    .map(|()| dir),
            ),
            Ok(()) => Some(Some(dir)),
            // Someone else's, or a leftover: try the next name.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => None,
            Err(_) => Some(None),
        }
    })?
}

/// The bundles a killed run `id` left: where `BundleDir::create` puts
/// them (`bundles/<id>` in the state root, `buntime-bundle-<id>[-N]` in
/// /dev/shm), derived from the id alone (never from its state, which
/// whoever can write the state root could point anywhere). Each removed
/// if it is one of ours (a real directory we own), never through a link.
pub(super) fn remove_left(state_root: &Path, id: &str) {
    if !plain_name(id) {
        return;
    }
    let bundles = state_root.join("bundles");
    remove_beneath(&bundles, id);
    // rmdir never follows a link; a run's bundle still there keeps it.
    let _ = fs::remove_dir(&bundles);
    if safe_shared_dir(Path::new(SHM)) {
        for name in shm_names(id) {
            remove_beneath(Path::new(SHM), &name);
        }
    }
}

/// A name of one path component: not empty, no '/', not `.` or `..`.
fn plain_name(id: &str) -> bool {
    !id.is_empty() && id != "." && id != ".." && !id.contains(['/', '\0'])
}

/// The names `fresh_dir` may have given a bundle of `id` in /dev/shm.
fn shm_names(id: &str) -> impl Iterator<Item = String> + '_ {
    (0..16).map(move |n| match n {
        0 => format!("{PREFIX}{id}"),
        n => format!("{PREFIX}{id}-{n}"),
    })
}

/// Removes the directory `name` in `parent` if it is ours: `parent`
/// opened without following a link (O_NOFOLLOW), `name` looked at and
/// removed beneath that descriptor (its /proc/self/fd path), so no link
/// swapped in on the way is followed; `remove_dir_all` itself follows
/// none below.
fn remove_beneath(parent: &Path, name: &str) {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(dir) = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(parent)
    else {
        return;
    };
    let fd = dir.as_raw_fd();
    let uid = nix::unistd::geteuid().as_raw();
    let ours = nix::sys::stat::fstatat(Some(fd), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR && st.st_uid == uid);
    if ours {
        let _ = fs::remove_dir_all(format!("/proc/self/fd/{fd}/{name}"));
    }
}

/// `dir` (never through a link) opened close-on-exec at a number of 10 or
/// more (the low ones are the sandbox's to inherit) and flocked with `op`.
fn lock_dir(dir: &Path, op: libc::c_int) -> std::io::Result<fs::File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)?;
    let high = nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::F_DUPFD_CLOEXEC(10))?;
    // SAFETY: `high` is ours alone, just made.
    let f = unsafe { fs::File::from_raw_fd(high) };
    // SAFETY: flock on a descriptor we own.
    while unsafe { libc::flock(f.as_raw_fd(), op) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(f)
}

/// Removes bundles that runs killed before their clean-up left in `base`:
/// ours (same owner, a real directory), named after a `run-PID` whose
/// process is gone, and whose lock is free (taken here without blocking,
/// held through the removal). The pid alone would not do: from another
/// pid namespace a live run's pid names nothing. A directory without
/// `rootfs` may be one whose run has not locked it yet: left alone.
fn remove_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    let uid = nix::unistd::geteuid().as_raw();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|n| n.strip_prefix("run-"))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
            .filter(|p| *p > 0)
        else {
            continue;
        };
        let ours = fs::symlink_metadata(e.path()).is_ok_and(|m| m.is_dir() && m.uid() == uid);
        let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH);
        if !(ours && gone && e.path().join("rootfs").is_dir()) {
            continue;
        }
        if let Ok(_held) = lock_dir(&e.path(), libc::LOCK_EX | libc::LOCK_NB) {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

impl Drop for BundleDir {
    fn drop(&mut self) {
        crate::runtime::stage::unstage(&self.path);
        let _ = fs::remove_dir_all(&self.path);
        // `bundles/` too once no other run has one there (a concurrent
        // run's bundle keeps it: ENOTEMPTY).
        if let Some(parent) = &self.parent {
            let _ = fs::remove_dir(parent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_directory_never_reuses_a_path() {
        let base = tempfile::tempdir().expect("tempdir");
        // Planted: a directory and a symlink under the first two names.
        fs::create_dir(base.path().join("buntime-bundle-run-7")).expect("mkdir");
        std::os::unix::fs::symlink("/etc", base.path().join("buntime-bundle-run-7-1"))
            .expect("symlink");
        let dir = fresh_dir(base.path(), "run-7").expect("a directory");
        assert_eq!(dir, base.path().join("buntime-bundle-run-7-2"));
        let meta = fs::symlink_metadata(&dir).expect("stat");
        assert!(meta.is_dir());
        let want = if nix::unistd::geteuid().is_root() {
            0o711
        } else {
            0o700
        };
        assert_eq!(meta.mode() & 0o777, want);
    }

    #[test]
    fn in_the_state_root_the_bundle_goes_away_with_its_parent() {
        let root = tempfile::tempdir().expect("tempdir");
        let b = BundleDir::create_in(root.path(), "run-1", None).expect("bundle");
        assert_eq!(b.path, root.path().join("bundles/run-1"));
        assert!(b.path.join("rootfs").is_dir());
        drop(b);
        assert!(!root.path().join("bundles").exists());
    }

    #[test]
    fn in_memory_the_bundle_goes_away_and_so_do_dead_runs_leftovers() {
        let root = tempfile::tempdir().expect("tempdir");
        let shm = tempfile::tempdir().expect("tempdir");
        // A leftover of a run whose process is gone (pid_max is below
        // 2^22), one of a live process (this one), and a stranger's link.
        let dead = shm.path().join("buntime-bundle-run-9999999-1");
        fs::create_dir_all(dead.join("rootfs")).expect("mkdir");
        let live = shm
            .path()
            .join(format!("buntime-bundle-run-{}", std::process::id()));
        fs::create_dir(&live).expect("mkdir");
        let link = shm.path().join("buntime-bundle-run-9999998");
        std::os::unix::fs::symlink(root.path(), &link).expect("symlink");
        // A live run's seen from another pid namespace: its pid names
        // nothing here, but it holds its lock.
        let elsewhere = shm.path().join("buntime-bundle-run-9999997");
        fs::create_dir_all(elsewhere.join("rootfs")).expect("mkdir");
        let held = lock_dir(&elsewhere, libc::LOCK_EX).expect("lock");

        let b = BundleDir::create_in(root.path(), "run-5", Some(shm.path())).expect("bundle");
        assert_eq!(b.path, shm.path().join("buntime-bundle-run-5"));
        assert!(b.path.join("rootfs").is_dir());
        assert!(!dead.exists(), "a dead run's bundle stays");
        assert!(live.exists(), "a live run's bundle was removed");
        assert!(fs::symlink_metadata(&link).is_ok(), "a link was followed");
        assert!(
            elsewhere.join("rootfs").is_dir(),
            "a locked bundle was removed"
        );
        drop(held);
        let path = b.path.clone();
        drop(b);
        assert!(!path.exists());
        assert!(!root.path().join("bundles").exists());
    }

    #[test]
    fn only_a_sticky_root_owned_tmpfs_is_shared() {
        let d = tempfile::tempdir().expect("tempdir");
        // Not sticky (and /tmp here may not even be a tmpfs).
        assert!(!safe_shared_dir(d.path()));
        let shm = Path::new(SHM);
        if on_memory(shm) {
            let m = fs::symlink_metadata(shm).expect("stat");
            assert_eq!(safe_shared_dir(shm), m.uid() == 0 && m.mode() & 0o1000 != 0);
        }
    }

    #[test]
    fn a_left_bundle_is_named_by_a_plain_id_only() {
        for bad in ["", ".", "..", "../x", "a/b", "/", "a\0b"] {
            assert!(!plain_name(bad), "{bad:?} taken as a name");
        }
        assert!(plain_name("run-42"));
        // `..` would name the state root itself: left alone.
        let root = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(root.path().join("bundles/run-1")).expect("mkdir");
        fs::write(root.path().join("keep"), b"x").expect("write");
        remove_left(root.path(), "..");
        remove_left(root.path(), "bundles/..");
        assert!(root.path().join("keep").exists(), "the state root went");
        remove_left(root.path(), "run-1");
        assert!(!root.path().join("bundles").exists());
        assert!(root.path().join("keep").exists());
    }

    #[test]
    fn a_left_bundle_is_never_removed_through_a_link() {
        let root = tempfile::tempdir().expect("tempdir");
        let elsewhere = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(elsewhere.path().join("run-1/rootfs")).expect("mkdir");
        fs::create_dir(elsewhere.path().join("bundles")).expect("mkdir");
        fs::create_dir(root.path().join("bundles")).expect("mkdir");
        // `bundles/run-2` a link to a directory, `bundles` itself a link.
        std::os::unix::fs::symlink(
            elsewhere.path().join("run-1"),
            root.path().join("bundles/run-2"),
        )
        .expect("symlink");
        remove_left(root.path(), "run-2");
        assert!(
            elsewhere.path().join("run-1/rootfs").is_dir(),
            "followed run-2"
        );
        fs::remove_file(root.path().join("bundles/run-2")).expect("rm");
        fs::remove_dir(root.path().join("bundles")).expect("rmdir");
        std::os::unix::fs::symlink(elsewhere.path(), root.path().join("bundles")).expect("symlink");
        remove_left(root.path(), "run-1");
        assert!(
            elsewhere.path().join("run-1/rootfs").is_dir(),
            "followed bundles"
        );
    }
}
