//! The state directory `create` claims, and the guard that undoes a
//! failed create when it is dropped armed.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use libcontainer::container::Container;
use libcontainer::oci_spec::runtime::Spec;

use crate::runtime::error::{Result, RuntimeError};
use crate::runtime::state::Root;
use crate::statedir::StateDir;

/// Owns a create in progress: dropped before [`CreateGuard::disarm`], it
/// stops the supervisor, kills whatever started, and removes the cgroup
/// and both state directories.
pub(super) struct CreateGuard<'a> {
    root: &'a Root,
    id: &'a str,
    dir: StateDir,
    cgroups_path: Option<PathBuf>,
    /// The supervisor, while `create` has not handed it the init.
    pub supervisor: Option<crate::supervisor::Spawned>,
    armed: bool,
}

impl<'a> CreateGuard<'a> {
    /// Makes the container's state directory, exclusively: it is the lock
    /// that keeps a concurrent create of the same id from going on (and
    /// from "cleaning up" the other's work). Nothing to undo when this
    /// fails.
    pub fn claim(root: &'a Root, id: &'a str, spec: &Spec) -> Result<Self> {
        let dir = root.state_dir(id);
        if let Some(parent) = dir.path().parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| RuntimeError::io(format!("create {}", parent.display()), e))?;
        }
        match fs::DirBuilder::new().mode(0o700).create(dir.path()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(RuntimeError::Exists(id.to_string()))
            }
            Err(e) => {
                return Err(RuntimeError::io(
                    format!("create {}", dir.path().display()),
                    e,
                ))
            }
        }
        let cgroups_path = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone());
        Ok(CreateGuard {
            root,
            id,
            dir,
            cgroups_path,
            supervisor: None,
            armed: true,
        })
    }

    pub fn dir(&self) -> &StateDir {
        &self.dir
    }

    /// The container is made: nothing to undo.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for CreateGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(s) = self.supervisor.take() {
            s.abort();
        }
        cleanup_failed(self.root, self.id);
        if let Some(path) = &self.cgroups_path {
            crate::runtime::cgroup::remove_quietly(path, self.root.systemd_cgroup, self.id);
        }
    }
}

/// Undoes a failed create: kills whatever started, removes both state
/// directories. Best effort: the original error is what matters.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The claimed directory is the lock: a second claim of the id is
    /// refused and undoes nothing of the first; an armed guard removes
    /// what was made, a disarmed one keeps it.
    #[test]
    fn a_dropped_guard_undoes_its_claim_and_a_disarmed_one_keeps_it() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::open(d.path(), false).unwrap();
        let spec = Spec::default();
        let first = CreateGuard::claim(&root, "c1", &spec).unwrap();
        let made = first.dir().path().to_path_buf();
        std::fs::write(made.join("policy.json"), "{}").unwrap();
        let second = CreateGuard::claim(&root, "c1", &spec).err().unwrap();
        assert!(matches!(second, RuntimeError::Exists(_)), "{second}");
        assert!(made.join("policy.json").exists(), "the loser undid nothing");
        drop(first);
        assert!(!made.exists(), "an armed guard removes the state directory");
        let kept = CreateGuard::claim(&root, "c2", &spec).unwrap();
        let path = kept.dir().path().to_path_buf();
        kept.disarm();
        assert!(path.is_dir());
    }
}
