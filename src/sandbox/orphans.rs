//! Pooled sandboxes whose pooled run was killed before its claim. Their
//! supervisor killed them (`supervisor::claim`), but what only the pooled
//! run removes (the container's state directory, cgroups, bundle) stays, and
//! the id `run-PID` would be refused to a later run of that pid. `pool
//! fill` and `pool drain` delete them (docs/run.md, "Pool").

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::runtime::{lifecycle, Root};

/// Deletes the pooled sandboxes of `state_root` whose pooled run is gone;
/// how many. Gone means its life lock (`RunLock`) is free: taken here
/// without blocking and held through the delete, so no live run's sandbox
/// is deleted whatever its pid namespace, and no two sweeps race.
pub fn sweep_orphans(state_root: &Path) -> usize {
    let Ok(root) = Root::open(state_root, false) else {
        return 0;
    };
    let mut n = 0;
    for id in root.ids().unwrap_or_default() {
        if !pooled(&root, &id) {
            continue;
        }
        let Some(lock) = RunLock::acquire(&root, &id, false) else {
            continue;
        };
        // Under the lock no pooled run can make or own this sandbox.
        if !pooled(&root, &id) {
            continue;
        }
        match lifecycle::delete(&root, &id, true) {
            Ok(()) => {
                super::scratch::remove_left(state_root, &id);
                n += 1;
            }
            Err(e) => tracing::warn!(target: "cli", "pool: delete orphaned sandbox {id}: {e}"),
        }
        drop(lock);
    }
    n
}

/// A pooled run's life lock: an exclusive flock on
/// `<state root>/.buntime/.pool-<id>.lock`, taken before its sandbox is
/// created and held until the run ends (released by the kernel however it
/// ends). Opened close-on-exec: the sandbox never inherits it. Whoever
/// holds it and still finds the file at its path may delete the file.
pub struct RunLock {
    file: File,
    path: PathBuf,
}

impl RunLock {
    /// The pooled run's lock on sandbox `id` (waits out a sweep deleting
    /// a dead run's leftovers of the same id).
    pub fn hold(state_root: &Path, id: &str) -> std::io::Result<RunLock> {
        let root = Root::open(state_root, false).map_err(std::io::Error::other)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root.extra_root())?;
        let mut lock = Self::acquire(&root, id, true)
            .ok_or_else(|| std::io::Error::other(format!("cannot lock {id}'s life lock")))?;
        // Off the low numbers, the sandbox's to inherit (fd 3: the go
        // socket); the flock is the open file's, kept by the copy.
        let high = nix::fcntl::fcntl(lock.file.as_raw_fd(), nix::fcntl::F_DUPFD_CLOEXEC(10))?;
        // SAFETY: `high` is ours alone, just made.
        lock.file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(high) };
        Ok(lock)
    }

    /// The lock, if taken (`wait`: blocking) on the file still at its
    /// path (one unlinked meanwhile by its holder is retried).
    fn acquire(root: &Root, id: &str, wait: bool) -> Option<RunLock> {
        let path = root.extra_root().join(format!(".pool-{id}.lock"));
        let op = if wait {
            libc::LOCK_EX
        } else {
            libc::LOCK_EX | libc::LOCK_NB
        };
        for _ in 0..16 {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .ok()?;
            // SAFETY: flock on a descriptor we own.
            while unsafe { libc::flock(file.as_raw_fd(), op) } != 0 {
                if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                    return None;
                }
            }
            if same_file(&file, &path) {
                return Some(RunLock { file, path });
            }
        }
        None
    }
}

/// Is `file` still the one at `path`?
fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

impl Drop for RunLock {
    /// The file goes while still held (its sandbox is gone by now: the
    /// pooled run deletes it first, a sweep has); then the lock.
    fn drop(&mut self) {
        if same_file(&self.file, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn pooled(root: &Root, id: &str) -> bool {
    root.state_dir(id)
        .read_json::<libcontainer::oci_spec::runtime::Spec>(crate::statedir::SPEC_FILE)
        .ok()
        .and_then(|s| s.annotations().clone())
        .and_then(|a| a.get(crate::supervisor::ANNOTATION_TIMEOUT_FROM).cloned())
        .is_some_and(|v| v == "claim")
}
