//! The supervisor's directory for a container with a user namespace.
//!
//! libcontainer mounts the spec's binds from inside the container's user
//! namespace, as its mapped root (an unprivileged host uid such as 100000):
//! the source of the `/run/buntime` bind must be reachable by that uid.
//! buntime's state directory (`<root>/.buntime/<id>`, under a root of mode
//! 0700) is not, and must not be. So root's containers with a user
//! namespace get the supervisor's directory elsewhere, behind a gate only
//! their mapped root passes:
//!
//! ```text
//! /run/buntime-userns/            root:root      0711  (no listing)
//!   <key of the state root>/      root:root      0711
//!     <id>/                       root:<gid>     0710  the gate
//!       run/                      root:root      0755  bound at /run/buntime
//! ```
//!
//! `<gid>` is the host gid the container's gid 0 maps to: the container's
//! root has it while libcontainer mounts, no other unprivileged host user
//! does, and being root's, the gate cannot be changed from the container
//! side. `<root>/.buntime/<id>/run` is a link to the gate's `run`, so the
//! supervisor finds it where it always does. Other containers, and
//! rootless ones (whose mapped root is the caller), keep the directory in
//! the state directory.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::{LinuxNamespaceType, Spec};
use nix::unistd::{chown, Gid};
use sha2::{Digest, Sha256};

use super::error::{Result, RuntimeError};
use super::state::Root;

/// Where the gates of every state root live.
pub const GATE_BASE: &str = "/run/buntime-userns";

/// The host gid the container's gid 0 maps to, when root creates a
/// container with a user namespace of its own whose root is not host root:
/// such a container needs a gate. `None`: the state directory will do.
pub fn gate_gid(spec: &Spec) -> Result<Option<Gid>> {
    if !nix::unistd::geteuid().is_root()
        || !super::create::has_new_ns(spec, LinuxNamespaceType::User)
    {
        return Ok(None);
    }
    let linux = spec.linux().as_ref();
    let mapped = |maps: Option<&Vec<libcontainer::oci_spec::runtime::LinuxIdMapping>>| {
        maps.into_iter()
            .flatten()
            .find(|m| m.container_id() == 0 && m.size() > 0)
            .map(|m| m.host_id())
    };
    let uid = mapped(linux.and_then(|l| l.uid_mappings().as_ref()));
    if uid == Some(0) {
        return Ok(None);
    }
    match mapped(linux.and_then(|l| l.gid_mappings().as_ref())) {
        Some(gid) => Ok(Some(Gid::from_raw(gid))),
        None => Err(RuntimeError::Invalid(
            "linux.gidMappings: a container with a user namespace needs its gid 0 mapped \
             (the supervisor's directory is opened to that host gid)"
                .into(),
        )),
    }
}

/// The gate of container `id` of `root`.
pub fn gate_dir(root: &Root, id: &str) -> PathBuf {
    root_dir(root).join(id)
}

/// The directory bound at `/run/buntime`, inside the gate.
pub fn run_dir(root: &Root, id: &str) -> PathBuf {
    gate_dir(root, id).join(crate::supervisor::RUN_DIR)
}

/// One directory per state root, so that the same id under two roots
/// (`--root`) never meets.
fn root_dir(root: &Root) -> PathBuf {
    let digest = Sha256::digest(root.path().as_os_str().as_encoded_bytes());
    let key: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    Path::new(GATE_BASE).join(key)
}

/// Makes the gate and its `run` directory, and links `link` (the state
/// directory's `run`) to it. The gate is made exclusively: one left over
/// by a crash is refused rather than trusted.
pub fn make(root: &Root, id: &str, gid: Gid, link: &Path) -> Result<PathBuf> {
    let io = |what: &str, p: &Path| {
        let what = format!("{what} {}", p.display());
        move |e: std::io::Error| RuntimeError::io(what, e)
    };
    let base = root_dir(root);
    for dir in [Path::new(GATE_BASE), base.as_path()] {
        match fs::DirBuilder::new().mode(0o711).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("create", dir)(e)),
        }
        // The umask may have taken the search bit, or a directory been
        // left with another mode: it must be exactly this.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o711)).map_err(io("chmod", dir))?;
    }
    let gate = gate_dir(root, id);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&gate)
        .map_err(io("create", &gate))?;
    let run = gate.join(crate::supervisor::RUN_DIR);
    fs::DirBuilder::new()
        .mode(0o755)
        .create(&run)
        .map_err(io("create", &run))?;
    fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).map_err(io("chmod", &run))?;
    // Opened last, when everything inside is in place.
    chown(&gate, None, Some(gid))
        .map_err(|e| RuntimeError::io(format!("chown {}", gate.display()), e.into()))?;
    fs::set_permissions(&gate, fs::Permissions::from_mode(0o710)).map_err(io("chmod", &gate))?;
    std::os::unix::fs::symlink(&run, link).map_err(io("link", link))?;
    Ok(run)
}

/// Makes `/run/buntime` in the image, as host root: the container's root
/// mounts the supervisor's directory there but may not be allowed to create
/// it in an image host root owns. Resolved inside `rootfs` (its links
/// cannot lead out of it). Like any mount point, it stays in the image.
pub fn make_mountpoint(rootfs: &Path) -> Result<()> {
    let dst = crate::supervisor::CONTAINER_DIR.trim_start_matches('/');
    let err = |e: pathrs::error::Error| {
        RuntimeError::Invalid(format!(
            "create the mount point /{dst} in {} for a user namespace's root: {e}",
            rootfs.display()
        ))
    };
    let root = pathrs::Root::open(rootfs).map_err(err)?;
    root.mkdir_all(dst, &fs::Permissions::from_mode(0o755))
        .map(|_| ())
        .map_err(err)
}

/// Removes the gate of `id` (if any) and its root's directory once empty.
pub fn remove(root: &Root, id: &str) -> Result<()> {
    let gate = gate_dir(root, id);
    match fs::remove_dir_all(&gate) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(RuntimeError::io(format!("remove {}", gate.display()), e)),
    }
    // Fails while other containers of the root have gates: fine.
    let _ = fs::remove_dir(root_dir(root));
    Ok(())
}
