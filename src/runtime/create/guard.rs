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
