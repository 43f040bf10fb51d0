//! Mount sources an unprivileged sandbox can reach.
//!
//! A `buntime run` sandbox started by root runs in a user namespace whose
//! root is an unprivileged host uid (no host root inside). libcontainer
//! mounts the spec's binds from inside that namespace, so it looks the
//! sources up with that uid: a directory the policy grants under a parent
//! of mode 0700 (`/root/project`, a `mktemp -d`, buntime's own state
//! directory) could not be bound. Such sources are bound first, by root,
//! onto `<bundle>/stage/N` (a directory others may pass through), and the
//! spec names that instead. The bind shows the same tree, so the modes of
//! the granted directory and its files still apply to the sandbox's uid;
//! only the parents it was never granted are passed over.
//!
//! The staging binds live in `buntime run`'s own mount namespace
//! (`private_mount_namespace`), so they vanish with it whatever happens.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::Spec;
use nix::mount::{mount, MsFlags};

use super::error::{Result, RuntimeError};

/// The staging directory in a bundle.
pub const STAGE_DIR: &str = "stage";

/// Gives the calling process a mount namespace of its own whose mounts
/// follow the host's (slave). Must run before any thread starts
/// (unshare(CLONE_NEWNS) refuses a process that shares its fs state).
pub fn private_mount_namespace() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| RuntimeError::io("unshare mount namespace", e.into()))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| RuntimeError::io("make / a slave mount", e.into()))
}

/// True when `uid` (not the owner, in no group of the path's) can walk
/// from `/` down to `path`: every parent directory lets others search it.
pub fn reachable_by_others(path: &Path) -> bool {
    path.ancestors()
        .skip(1)
        .all(|dir| fs::metadata(dir).is_ok_and(|m| m.mode() & 0o001 != 0))
}

/// Binds each bind source of `spec` that others cannot reach onto
/// `<bundle>/stage/N` and points the spec at it.
pub fn stage_sources(spec: &mut Spec, bundle: &Path) -> Result<()> {
    let Some(mut mounts) = spec.mounts().clone() else {
        return Ok(());
    };
    let stage = bundle.join(STAGE_DIR);
    let mut n = 0usize;
    for m in mounts.iter_mut() {
        let is_bind = crate::spec::is_bind(m);
        let Some(src) = m.source().clone().filter(|s| is_bind && s.is_absolute()) else {
            continue;
        };
        if reachable_by_others(&src) {
            continue;
        }
        if n == 0 {
            fs::DirBuilder::new()
                .mode(0o711)
                .create(&stage)
                .map_err(|e| RuntimeError::io(format!("create {}", stage.display()), e))?;
            // The umask may have taken bits away.
            fs::set_permissions(&stage, fs::Permissions::from_mode(0o711))
                .map_err(|e| RuntimeError::io(format!("chmod {}", stage.display()), e))?;
        }
        let target = stage.join(n.to_string());
        n += 1;
        bind(&src, &target)?;
        m.set_source(Some(target));
    }
    spec.set_mounts(Some(mounts));
    Ok(())
}

fn bind(src: &Path, target: &PathBuf) -> Result<()> {
    let meta =
        fs::metadata(src).map_err(|e| RuntimeError::io(format!("stat {}", src.display()), e))?;
    let made = if meta.is_dir() {
        fs::create_dir(target)
    } else {
        fs::File::create(target).map(|_| ())
    };
    made.map_err(|e| RuntimeError::io(format!("create {}", target.display()), e))?;
    mount(
        Some(src),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| RuntimeError::io(format!("bind {} for the sandbox", src.display()), e.into()))
}

/// Detaches what `stage_sources` bound in `bundle` (before the bundle is
/// removed; the namespace's end would do it too).
pub fn unstage(bundle: &Path) {
    let Ok(entries) = fs::read_dir(bundle.join(STAGE_DIR)) else {
        return;
    };
    for e in entries.flatten() {
        let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parent_closed_to_others_makes_a_path_unreachable() {
        let d = tempfile::tempdir().unwrap();
        let inner = d.path().join("a/b");
        fs::create_dir_all(&inner).unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(d.path().join("a"), fs::Permissions::from_mode(0o755)).unwrap();
        let open = reachable_by_others(&inner);
        fs::set_permissions(d.path().join("a"), fs::Permissions::from_mode(0o700)).unwrap();
        assert!(!reachable_by_others(&inner));
        // /tmp and the rest above the tempdir are searchable by others.
        assert!(open);
    }
}
