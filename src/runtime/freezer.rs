//! Whether a container's cgroup is frozen, read from the kernel rather
//! than from libcontainer's saved status (which says `paused` only when
//! `pause` saved it): a cgroup frozen by other means (`freezer.state` or
//! `cgroup.freeze` written directly, `systemctl freeze`) counts too.

use std::io;
use std::path::{Path, PathBuf};

/// Where cgroup hierarchies are mounted.
const CGROUP_FS: &str = "/sys/fs/cgroup";

/// Whether the cgroup of process `pid` is frozen: cgroup v1
/// `freezer.state` not `THAWED`, or cgroup v2 `cgroup.freeze` `1`. An
/// error when the hierarchy that freezes it cannot be read.
pub fn frozen(pid: i32) -> io::Result<bool> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    frozen_in(&cgroups, Path::new(CGROUP_FS))
}

/// [`frozen`] for a `/proc/PID/cgroup` text and hierarchies under `fs`.
/// The v1 freezer decides when the process is in one (a hybrid host
/// freezes there); the unified hierarchy is read too where it holds the
/// process, and must be readable when there is no v1 freezer.
pub fn frozen_in(cgroups: &str, fs: &Path) -> io::Result<bool> {
    let mut v1 = None;
    let mut v2 = None;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(n), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if n == "0" && controllers.is_empty() {
            v2 = Some(path);
        } else if controllers.split(',').any(|c| c == "freezer") {
            v1 = Some((controllers, path));
        }
    }
    let unified = v2.map(|path| unified_frozen(fs, path));
    match (v1, unified) {
        (Some((controllers, path)), unified) => {
            let state = read(&below(&fs.join(controllers), path).join("freezer.state"))?;
            Ok(state.trim() != "THAWED" || matches!(unified, Some(Ok(true))))
        }
        (None, Some(unified)) => unified,
        (None, None) => Err(io::Error::other("the process is in no freezer cgroup")),
    }
}

/// Whether the unified-hierarchy cgroup `path` is frozen. Its mount is
/// `fs` itself (cgroup v2) or `fs/unified` (hybrid). The root cgroup
/// cannot be frozen (it has no `cgroup.freeze`).
fn unified_frozen(fs: &Path, path: &str) -> io::Result<bool> {
    if path == "/" {
        return Ok(false);
    }
    let mount = if fs.join("cgroup.controllers").exists() {
        fs.to_path_buf()
    } else {
        fs.join("unified")
    };
    Ok(read(&below(&mount, path).join("cgroup.freeze"))?.trim() == "1")
}

fn below(mount: &Path, path: &str) -> PathBuf {
    mount.join(path.trim_start_matches('/'))
}

fn read(path: &Path) -> io::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| io::Error::new(e.kind(), format!("read {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, body: &str) {
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, body).expect("write");
    }

    #[test]
    fn v1_freezer_decides_and_an_unreadable_one_is_an_error() {
        let d = tempfile::tempdir().expect("tempdir");
        let fs = d.path();
        let text = "7:freezer:/c1\n0::/c1\n";
        write(&fs.join("freezer/c1/freezer.state"), "THAWED\n");
        assert!(!frozen_in(text, fs).expect("read"));
        write(&fs.join("freezer/c1/freezer.state"), "FREEZING\n");
        assert!(frozen_in(text, fs).expect("read"));
        write(&fs.join("freezer/c1/freezer.state"), "THAWED\n");
        // Hybrid: frozen through the unified hierarchy too.
        write(&fs.join("unified/c1/cgroup.freeze"), "1\n");
        assert!(frozen_in(text, fs).expect("read"));
        assert!(frozen_in("7:freezer:/gone\n", fs).is_err());
        assert!(frozen_in("", fs).is_err());
    }

    #[test]
    fn v2_cgroup_freeze() {
        let d = tempfile::tempdir().expect("tempdir");
        let fs = d.path();
        write(&fs.join("cgroup.controllers"), "cpu memory\n");
        write(&fs.join("k/c2/cgroup.freeze"), "0\n");
        assert!(!frozen_in("0::/k/c2\n", fs).expect("read"));
        write(&fs.join("k/c2/cgroup.freeze"), "1\n");
        assert!(frozen_in("0::/k/c2\n", fs).expect("read"));
        assert!(frozen_in("0::/k/none\n", fs).is_err());
    }
}
