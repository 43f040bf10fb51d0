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
//!       denied                    root:root      0000  bound over deny files
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
use nix::unistd::{chown, Gid, Uid};
use sha2::{Digest, Sha256};

use super::error::{Result, RuntimeError};
use super::state::Root;

/// Where the gates of every state root live.
pub const GATE_BASE: &str = "/run/buntime-userns";

/// The host uid and gid of a user namespace's root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappedRoot {
    pub uid: Uid,
    pub gid: Gid,
}

/// The host ids the container's root maps to, when root creates a
/// container with a user namespace of its own whose root is not host root:
/// such a container needs a gate. `None`: the state directory will do.
pub fn mapped_root(spec: &Spec) -> Result<Option<MappedRoot>> {
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
    let uid = match mapped(linux.and_then(|l| l.uid_mappings().as_ref())) {
        Some(0) => return Ok(None),
        Some(uid) => Uid::from_raw(uid),
        None => {
            return Err(RuntimeError::Invalid(
                "linux.uidMappings: a container with a user namespace needs its uid 0 mapped"
                    .into(),
            ))
        }
    };
    match mapped(linux.and_then(|l| l.gid_mappings().as_ref())) {
        Some(gid) => Ok(Some(MappedRoot {
            uid,
            gid: Gid::from_raw(gid),
        })),
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
    gate_dir(root, id).join(crate::statedir::RUN_DIR)
}

/// One directory per state root, so that the same id under two roots
/// (`--root`) never meets.
fn root_dir(root: &Root) -> PathBuf {
    let digest = Sha256::digest(root.path().as_os_str().as_encoded_bytes());
    let key: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    Path::new(GATE_BASE).join(key)
}

/// Makes the gate of `id`, open to `gid`. Made exclusively: one left over
/// by a crash is refused rather than trusted.
pub fn make_gate(root: &Root, id: &str, gid: Gid) -> Result<PathBuf> {
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
    chown(&gate, None, Some(gid))
        .map_err(|e| RuntimeError::io(format!("chown {}", gate.display()), e.into()))?;
    fs::set_permissions(&gate, fs::Permissions::from_mode(0o710)).map_err(io("chmod", &gate))?;
    Ok(gate)
}

/// Makes the supervisor's `run` directory in the gate of `id`, and links
/// `link` (the state directory's `run`) to it.
pub fn make_run(root: &Root, id: &str, link: &Path) -> Result<()> {
    let run = run_dir(root, id);
    fs::DirBuilder::new()
        .mode(0o755)
        .create(&run)
        .map_err(io("create", &run))?;
    fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).map_err(io("chmod", &run))?;
    std::os::unix::fs::symlink(&run, link).map_err(io("link", link))
}

fn io(what: &str, p: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let what = format!("{what} {}", p.display());
    move |e| RuntimeError::io(what, e)
}

/// The directories buntime's own mounts need in the image: the
/// destinations of `spec`'s mounts that `bundle` (the caller's spec) does
/// not have (the supervisor's `/run/buntime`, a policy's private `/tmp`),
/// other than binds of a file.
pub fn added_mount_dirs(spec: &Spec, bundle: &Spec) -> Vec<PathBuf> {
    let theirs: Vec<&Path> = bundle
        .mounts()
        .iter()
        .flatten()
        .map(|m| m.destination().as_path())
        .collect();
    spec.mounts()
        .iter()
        .flatten()
        .filter(|m| !theirs.contains(&m.destination().as_path()))
        .filter(|m| !crate::spec::is_bind(m) || m.source().as_ref().is_some_and(|s| s.is_dir()))
        .map(|m| m.destination().clone())
        .collect()
}

/// Makes `dirs` (mount points of buntime's own mounts) in the image, as
/// host root: the container's root mounts there but may not be allowed to
/// create them in an image host root owns. What is made is given to the
/// container's root, as if it had made it (the engine's own mounts, such
/// as podman's `/run/.containerenv`, go in after). Resolved inside
/// `rootfs` (its links cannot lead out of it). Like any mount point, they
/// stay in the image.
pub fn make_mountpoints(rootfs: &Path, owner: MappedRoot, dirs: &[PathBuf]) -> Result<()> {
    let root = pathrs::Root::open(rootfs).map_err(|e| mountpoint_error(rootfs, "/", &e))?;
    for dst in dirs {
        let mut path = PathBuf::new();
        for part in dst.components().skip_while(|c| c.as_os_str() == "/") {
            path.push(part);
            if root.resolve(&path).is_ok() {
                continue;
            }
            let err =
                |e: &dyn std::fmt::Display| mountpoint_error(rootfs, &dst.to_string_lossy(), e);
            let dir = root
                .mkdir_all(&path, &fs::Permissions::from_mode(0o755))
                .and_then(|h| h.reopen(pathrs::flags::OpenFlags::O_RDONLY))
                .map_err(|e| err(&e))?;
            std::os::unix::fs::fchown(&dir, Some(owner.uid.as_raw()), Some(owner.gid.as_raw()))
                .map_err(|e| err(&e))?;
        }
    }
    Ok(())
}

fn mountpoint_error(rootfs: &Path, dst: &str, e: &dyn std::fmt::Display) -> RuntimeError {
    RuntimeError::Invalid(format!(
        "create the mount point {dst} in {} for a user namespace's root: {e}",
        rootfs.display()
    ))
}

/// Removes the gate of `id` (if any) and its root's directory once empty.
pub fn remove(root: &Root, id: &str) -> Result<()> {
    // Only root makes gates.
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> Spec {
        let text = format!(
            r#"{{"ociVersion":"1.0.2","root":{{"path":"rootfs"}},
            "linux":{{"namespaces":[{{"type":"mount"}}{extra}}}}}"#
        );
        serde_json::from_str(&text).expect("spec")
    }

    #[test]
    fn only_a_user_namespace_whose_root_is_not_host_root_needs_a_gate() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        assert_eq!(mapped_root(&spec("]")).ok(), Some(None));
        let map = |h: u32| format!(r#"[{{"containerID":0,"hostID":{h},"size":65536}}]"#);
        let userns = |u: u32, g: Option<u32>| {
            let gids = g.map(|g| format!(r#","gidMappings":{}"#, map(g)));
            spec(&format!(
                r#",{{"type":"user"}}],"uidMappings":{}{}"#,
                map(u),
                gids.unwrap_or_default()
            ))
        };
        assert_eq!(
            mapped_root(&userns(100000, Some(200000))).ok(),
            Some(Some(MappedRoot {
                uid: Uid::from_raw(100000),
                gid: Gid::from_raw(200000)
            }))
        );
        assert_eq!(mapped_root(&userns(0, Some(0))).ok(), Some(None));
        let err = mapped_root(&userns(100000, None)).expect_err("no gid 0");
        assert!(err.to_string().contains("linux.gidMappings"), "{err}");
    }
}
