//! The container's cgroup, for the commands libcontainer has no API for
//! (`ps`, `update`) and for cleaning up after a failed create.

use std::path::Path;

use libcgroups::common::{create_cgroup_manager, AnyCgroupManager, CgroupConfig, CgroupManager};
use libcontainer::container::Container;

use super::error::{Result, RuntimeError};

/// The cgroup manager of a created container.
pub fn manager(container: &Container) -> Result<AnyCgroupManager> {
    let config = container
        .spec()
        .map_err(|e| RuntimeError::backend(format!("container {:?} config", container.id()), &e))?;
    manager_for(&config.cgroup_path, container.systemd(), container.id())
}

/// The cgroup manager for a cgroup path.
pub fn manager_for(cgroup_path: &Path, systemd: bool, id: &str) -> Result<AnyCgroupManager> {
    create_cgroup_manager(CgroupConfig {
        cgroup_path: cgroup_path.to_path_buf(),
        systemd_cgroup: systemd,
        container_name: id.to_string(),
    })
    .map_err(|e| RuntimeError::backend(format!("cgroup of {id:?}"), &e))
}

/// The pids in the container's cgroup, sorted.
pub fn pids(container: &Container) -> Result<Vec<i32>> {
    let mgr = manager(container)?;
    let mut pids: Vec<i32> = mgr
        .get_all_pids()
        .map_err(|e| RuntimeError::backend(format!("pids of {:?}", container.id()), &e))?
        .into_iter()
        .map(|p| p.as_raw())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// Removes a cgroup that a failed create may have left; errors are ignored
/// because the cgroup may never have been made.
pub fn remove_quietly(cgroup_path: &Path, systemd: bool, id: &str) {
    if let Ok(mgr) = manager_for(cgroup_path, systemd, id) {
        let _ = mgr.remove();
    }
}

/// Removes a stopped container's cgroup directly: one read of mountinfo
/// and an rmdir per hierarchy, where building libcgroups' manager reads
/// mountinfo once per controller (about 1.5 ms of a 25 ms run). Processes
/// still there are killed first (`cgroup.kill` on cgroup v2), and a busy
/// directory retried, as libcgroups does. Returns false, having touched
/// nothing, for what it does not handle (nested cgroups the container
/// made, escaped mount points): libcontainer's delete then does it. Not
/// for systemd-managed cgroups.
pub fn remove_direct(cgroup_path: &Path) -> Result<bool> {
    use std::path::Component;
    let rel = cgroup_path.strip_prefix("/").unwrap_or(cgroup_path);
    if rel.as_os_str().is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(RuntimeError::Invalid(format!(
            "cgroup path {} is not below a hierarchy's root",
            cgroup_path.display()
        )));
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| RuntimeError::io("read /proc/self/mountinfo", e))?;
    let Some(mounts) = cgroup_mounts(&info) else {
        return Ok(false);
    };
    let dirs: Vec<std::path::PathBuf> = mounts
        .iter()
        .map(|m| m.join(rel))
        .filter(|d| d.is_dir())
        .collect();
    let nested = |d: &Path| {
        std::fs::read_dir(d).map_or(true, |rd| {
            rd.flatten()
                .any(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        })
    };
    if dirs.iter().any(|d| nested(d)) {
        return Ok(false);
    }
    for dir in &dirs {
        let _ = std::fs::write(dir.join("cgroup.kill"), "1");
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let mut attempt = 0;
        loop {
            match std::fs::remove_dir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 4 => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) => return Err(RuntimeError::io(format!("remove {}", dir.display()), e)),
            }
        }
    }
    Ok(true)
}

/// Mount points of the cgroup hierarchies that hold controllers (v1) and
/// of cgroup2, from mountinfo text; None if one is octal-escaped (a space
/// in its path), which is left to libcgroups. Named v1 hierarchies
/// (`name=systemd`) are not ours.
fn cgroup_mounts(mountinfo: &str) -> Option<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mut post = post.split(' ');
        let fstype = post.next().unwrap_or("");
        let _source = post.next();
        let opts = post.next().unwrap_or("");
        let Some(point) = pre.split(' ').nth(4) else {
            continue;
        };
        let ours = match fstype {
            "cgroup2" => true,
            "cgroup" => !opts.split(',').any(|o| o.starts_with("name=")),
            _ => false,
        };
        if !ours {
            continue;
        }
        if point.contains('\\') {
            return None;
        }
        out.push(std::path::PathBuf::from(point));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_hierarchies_are_read_from_mountinfo() {
        let info = "\
25 31 0:22 / /sys rw,nosuid shared:7 - sysfs sysfs rw
30 25 0:26 / /sys/fs/cgroup ro shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw shared:10 - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,xattr,name=systemd
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw shared:15 - cgroup cgroup rw,cpu,cpuacct
36 30 0:32 / /sys/fs/cgroup/memory rw shared:16 - cgroup cgroup rw,memory
";
        let m = cgroup_mounts(info).unwrap();
        assert_eq!(
            m,
            vec![
                std::path::PathBuf::from("/sys/fs/cgroup/unified"),
                "/sys/fs/cgroup/cpu,cpuacct".into(),
                "/sys/fs/cgroup/memory".into(),
            ]
        );
    }

    #[test]
    fn escaped_mount_points_are_left_to_libcgroups() {
        let info = "36 30 0:32 / /sys/fs/cgroup/my\\040memory rw - cgroup cgroup rw,memory\n";
        assert!(cgroup_mounts(info).is_none());
    }

    #[test]
    fn paths_that_climb_out_are_refused() {
        for p in ["/", "", "/a/../../b", "../x"] {
            assert!(remove_direct(Path::new(p)).is_err(), "{p:?}");
        }
    }
}
