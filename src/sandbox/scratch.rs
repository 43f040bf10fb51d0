//! Where a run's bundle goes, and its removal.
//!
//! The bundle is scratch: a config.json that libcontainer reads once and an
//! empty root in which it makes a mount point per mount (about fifteen).
//! On a disk filesystem every one of those inodes is a journal entry: on
//! this project's CI host, whose /run is ext4, a mkdir costs about 0.1 ms
//! against 3 us on tmpfs, some 2 ms per run in all. So when the state root
//! is not on a memory filesystem and `/dev/shm` is, root's runs put their
//! bundle in a fresh directory there (mode 0700, made with mkdir, which
//! never reuses an existing path or follows a planted symlink). Rootless
//! runs keep it in the state root: their user namespace could not remount
//! a nosuid/nodev `/dev/shm` bind without those flags.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::SandboxError;

/// The memory filesystem tried when the state root is on disk.
const SHM: &str = "/dev/shm";

/// The bundle directory of one run, removed when dropped, however the run
/// ends.
pub struct BundleDir {
    pub path: PathBuf,
    /// `bundles/` in the state root, removed too once empty.
    parent: Option<PathBuf>,
}

impl BundleDir {
    /// Makes an empty bundle directory with an empty `rootfs/` for `id`.
    pub fn create(state_root: &Path, id: &str) -> Result<BundleDir, SandboxError> {
        let on_memory = |p: &Path| {
            nix::sys::statfs::statfs(p)
                .is_ok_and(|f| f.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
        };
        if !on_memory(state_root) && nix::unistd::geteuid().is_root() && on_memory(Path::new(SHM)) {
            if let Some(dir) = fresh_dir(Path::new(SHM), id) {
                let b = BundleDir {
                    path: dir,
                    parent: None,
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

/// A new directory `buntime-bundle-ID[-N]` under `base`, or None.
fn fresh_dir(base: &Path, id: &str) -> Option<PathBuf> {
    (0..16).find_map(|n| {
        let name = match n {
            0 => format!("buntime-bundle-{id}"),
            n => format!("buntime-bundle-{id}-{n}"),
        };
        let dir = base.join(name);
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => Some(Some(dir)),
            // Someone else's, or a leftover: try the next name.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => None,
            Err(_) => Some(None),
        }
    })?
}

impl Drop for BundleDir {
    fn drop(&mut self) {
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
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o700
        );
    }

    #[test]
    fn the_bundle_goes_away_with_its_parent_when_empty() {
        let root = tempfile::tempdir().expect("tempdir");
        let b = BundleDir::create(root.path(), "run-1").expect("bundle");
        assert!(b.path.join("rootfs").is_dir());
        let path = b.path.clone();
        drop(b);
        assert!(!path.exists());
        assert!(!root.path().join("bundles").exists());
    }
}
