//! `create`: from a bundle to a container waiting for `start`.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;

use super::bundle::{self, Bundle};
use super::error::{Result, RuntimeError};
use super::executor::BuntimeExecutor;
use super::state::{validate_id, Meta, Root};

/// The options of `create` (and of the create half of `run`).
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub preserve_fds: i32,
    pub no_pivot: bool,
    /// False for a foreground `run`, whose terminal needs no console socket.
    pub detach: bool,
}

/// Creates the container. On failure nothing is left behind: no state
/// directory, no cgroup, no process.
pub fn create(root: &Root, opts: &CreateOptions) -> Result<Container> {
    validate_id(&opts.id)?;
    if root.exists(&opts.id) {
        return Err(RuntimeError::Exists(opts.id.clone()));
    }
    let bundle = Bundle::load(&opts.bundle)?;
    let spec = bundle::effective_spec(&bundle, &opts.id, root.systemd_cgroup)?;
    let rootfs = bundle.rootfs()?;

    let extra = root.extra_dir(&opts.id);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&extra)
        .map_err(|e| RuntimeError::io(format!("create {}", extra.display()), e))?;

    let result = (|| {
        bundle::write_spec(&extra, &spec)?;
        let meta = Meta {
            bundle: bundle.dir.clone(),
            rootfs,
            annotations: Default::default(),
        };
        root.write_meta(&opts.id, &meta)?;
        build(root, opts, &extra)
    })();
    if result.is_err() {
        cleanup_failed(root, &opts.id);
        if let Some(path) = spec.linux().as_ref().and_then(|l| l.cgroups_path().as_ref()) {
            super::cgroup::remove_quietly(path, root.systemd_cgroup, &opts.id);
        }
    }
    result
}

fn build(root: &Root, opts: &CreateOptions, effective_bundle: &Path) -> Result<Container> {
    let pid_file = opts.pid_file.as_ref().map(|p| absolute(p)).transpose()?;
    let console = opts.console_socket.as_ref().map(|p| absolute(p)).transpose()?;
    ContainerBuilder::new(opts.id.clone(), SyscallType::default())
        .with_root_path(root.path())
        .map_err(|e| RuntimeError::backend("--root", &e))?
        .with_pid_file(pid_file)
        .map_err(|e| RuntimeError::backend("--pid-file", &e))?
        .with_console_socket(console)
        .with_preserved_fds(opts.preserve_fds)
        .with_executor(BuntimeExecutor::for_init())
        .as_init(effective_bundle)
        .with_systemd(root.systemd_cgroup)
        .with_detach(opts.detach)
        .with_no_pivot(opts.no_pivot)
        .build()
        .map_err(|e| RuntimeError::backend(format!("create container {:?}", opts.id), &e))
}

/// Paths given on the command line are relative to the caller's directory.
fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    let cwd = std::env::current_dir().map_err(|e| RuntimeError::io("current directory", e))?;
    Ok(cwd.join(p))
}

/// Undoes a failed create: kills whatever started, removes the cgroup and
/// both state directories. Best effort: the original error is what matters.
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
