//! `buntime setup-user USER` (as root, once per boot): what an ordinary
//! user needs for rootless `buntime run` on a cgroup v1 host, which has no
//! unprivileged delegation of its own: a cgroup subtree
//! `/buntime/user-UID` in each v1 hierarchy, owned by the user (limits
//! below it are theirs to set, never above the parent's), and the empty
//! `/opt/buntime` mount point.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::unistd::{chown, Gid, Uid};

use super::{user_cgroup, SandboxError, WORKER_DIR};

const V1: &str = "/sys/fs/cgroup";

fn err(what: &str, p: &Path, e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Setup(format!("setup-user: {what} {}: {e}", p.display()))
}

/// Copies cpuset.cpus/mems from `from` when `to` has none (a new cpuset
/// cgroup starts empty and takes no tasks).
fn init_cpuset(from: &Path, to: &Path) -> Result<(), SandboxError> {
    for f in ["cpuset.cpus", "cpuset.mems"] {
        let cur = fs::read_to_string(to.join(f)).unwrap_or_default();
        if cur.trim().is_empty() {
            let v = fs::read_to_string(from.join(f)).map_err(|e| err("read", &from.join(f), e))?;
            fs::write(to.join(f), v.trim()).map_err(|e| err("write", &to.join(f), e))?;
        }
    }
    Ok(())
}

/// Delegates `/buntime/user-UID` in every v1 hierarchy to `uid`:`gid`.
/// Returns the directories made or kept.
pub fn setup_user(uid: u32, gid: u32) -> Result<Vec<String>, SandboxError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(SandboxError::Setup(
            "setup-user: must run as root (it hands a cgroup subtree to the user)".into(),
        ));
    }
    let rel = user_cgroup(uid);
    let mut done = Vec::new();
    let entries = fs::read_dir(V1).map_err(|e| err("read", Path::new(V1), e))?;
    for entry in entries.flatten() {
        let top = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        // Real v1 hierarchies only (not the unified v2 mount, not the
        // combined-name symlinks, not systemd's named hierarchy).
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !is_dir || name == "unified" || name == "systemd" || !top.join("tasks").exists() {
            continue;
        }
        let mine = top.join(rel.trim_start_matches('/'));
        fs::create_dir_all(&mine).map_err(|e| err("create", &mine, e))?;
        if name.split(',').any(|c| c == "cpuset") {
            let parent = mine.parent().unwrap_or(&top).to_path_buf();
            init_cpuset(&top, &parent)?;
            init_cpuset(&parent, &mine)?;
            fs::write(mine.join("cgroup.clone_children"), "1")
                .map_err(|e| err("write", &mine.join("cgroup.clone_children"), e))?;
        }
        // The directory and its control files (cgroup.procs, tasks, ...).
        let own = |p: &Path| {
            chown(p, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                .map_err(|e| err("chown", p, e))
        };
        own(&mine)?;
        for f in fs::read_dir(&mine)
            .map_err(|e| err("read", &mine, e))?
            .flatten()
        {
            if f.file_type().is_ok_and(|t| t.is_file()) {
                own(&f.path())?;
            }
        }
        done.push(mine.display().to_string());
    }
    let mp = Path::new(WORKER_DIR);
    if !mp.exists() {
        fs::create_dir_all(mp).map_err(|e| err("create", mp, e))?;
    }
    // Sanity: the subtree really is the user's now.
    if let Some(first) = done.first() {
        let m = fs::metadata(first).map_err(|e| err("stat", Path::new(first), e))?;
        if m.uid() != uid {
            return Err(SandboxError::Setup(format!(
                "setup-user: {first} is not owned by uid {uid}"
            )));
        }
    }
    Ok(done)
}
