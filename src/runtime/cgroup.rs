//! The container's cgroup, for the commands libcontainer has no API for
//! (`ps`, `update`) and for cleaning up after a failed create.

use std::path::Path;

use libcgroups::common::{
    create_cgroup_manager, AnyCgroupManager, CgroupConfig, CgroupManager, WrappedIoError,
};
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
    pids_if_present(container)?.ok_or_else(|| {
        RuntimeError::Invalid(format!("pids of {:?}: its cgroup is gone", container.id()))
    })
}

/// The pids in the container's cgroup, sorted; None when the cgroup no
/// longer exists (systemd removes a container's scope once its last
/// process has exited).
pub fn pids_if_present(container: &Container) -> Result<Option<Vec<i32>>> {
    let mgr = manager(container)?;
    let found = match mgr.get_all_pids() {
        Ok(found) => found,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => {
            return Err(RuntimeError::backend(
                format!("pids of {:?}", container.id()),
                &e,
            ))
        }
    };
    let mut pids: Vec<i32> = found.into_iter().map(|p| p.as_raw()).collect();
    pids.sort_unstable();
    pids.dedup();
    Ok(Some(pids))
}

/// Whether a cgroup error is a missing file or directory (libcgroups keeps
/// the io error inside its `WrappedIoError`, not as a source).
fn is_not_found(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        let kind = e
            .downcast_ref::<WrappedIoError>()
            .map(|w| w.inner().kind())
            .or_else(|| e.downcast_ref::<std::io::Error>().map(|io| io.kind()));
        if kind == Some(std::io::ErrorKind::NotFound) {
            return true;
        }
        cur = e.source();
    }
    false
}

/// Why `--systemd-cgroup` cannot work on this host: what libcontainer's
/// systemd driver needs is missing. Checked before anything is made, so
/// that the flag never silently falls back to cgroupfs (libcgroups uses
/// its v1 manager on a v1/hybrid host whatever the flag says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemdDriverProblem {
    /// No systemd as PID 1 (`/run/systemd/system` is missing, sd_booted).
    NotBooted,
    /// cgroup v1 or hybrid: the driver is for pure cgroup v2 only.
    NotUnified,
}

impl std::fmt::Display for SystemdDriverProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NotBooted => {
                "--systemd-cgroup: systemd is not running on this host (no /run/systemd/system), \
                 so nothing can make the container's scope; run without --systemd-cgroup to use cgroupfs"
            }
            Self::NotUnified => {
                "--systemd-cgroup: this host's cgroups are v1 or hybrid, and the systemd driver \
                 needs pure cgroup v2 (boot with systemd.unified_cgroup_hierarchy=1); \
                 run without --systemd-cgroup to use cgroupfs"
            }
        })
    }
}

/// What stands in the way of the systemd driver, from whether systemd
/// runs and the host's cgroup layout.
pub fn systemd_driver_problem(booted: bool, unified: bool) -> Option<SystemdDriverProblem> {
    if !booted {
        Some(SystemdDriverProblem::NotBooted)
    } else if !unified {
        Some(SystemdDriverProblem::NotUnified)
    } else {
        None
    }
}

/// Fails with [`SystemdDriverProblem`] unless `--systemd-cgroup` can work here.
pub fn check_systemd_driver() -> Result<()> {
    use libcgroups::common::{get_cgroup_setup, CgroupSetup};
    let unified = matches!(get_cgroup_setup(), Ok(CgroupSetup::Unified));
    match systemd_driver_problem(libcgroups::systemd::booted(), unified) {
        Some(p) => Err(RuntimeError::Invalid(p.to_string())),
        None => Ok(()),
    }
}

/// Checks a `cgroupsPath` for the systemd driver: `slice:prefix:name`,
/// as runc wants it (the slice may be empty: `system.slice`). An absolute
/// path would make libcgroups use cgroupfs behind systemd's back.
pub fn systemd_cgroups_path(path: &str) -> std::result::Result<(), String> {
    let parts: Vec<&str> = path.split(':').collect();
    let [slice, _prefix, name] = parts.as_slice() else {
        return Err(format!(
            "{path:?} is not \"slice:prefix:name\" (e.g. \"system.slice:buntime:ID\"), \
             which --systemd-cgroup needs"
        ));
    };
    if name.is_empty() || name.contains('/') {
        return Err(format!(
            "{path:?}: the name (after the last ':') must be non-empty, without '/'"
        ));
    }
    if !slice.is_empty() && (!slice.ends_with(".slice") || slice.contains('/')) {
        return Err(format!(
            "{path:?}: {slice:?} is not a systemd slice (NAME.slice)"
        ));
    }
    Ok(())
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
    fn a_missing_cgroup_is_told_from_other_cgroup_errors() {
        use libcgroups::common::AnyManagerError;
        use libcgroups::v2::manager::V2ManagerError;
        let wrapped = |kind: std::io::ErrorKind| -> AnyManagerError {
            V2ManagerError::from(WrappedIoError::Read {
                err: std::io::Error::from(kind),
                path: "/sys/fs/cgroup/x.slice/y.scope".into(),
            })
            .into()
        };
        assert!(is_not_found(&wrapped(std::io::ErrorKind::NotFound)));
        assert!(!is_not_found(&wrapped(
            std::io::ErrorKind::PermissionDenied
        )));
        assert!(is_not_found(&std::io::Error::from(
            std::io::ErrorKind::NotFound
        )));
    }

    #[test]
    fn systemd_driver_needs_systemd_and_pure_v2() {
        assert_eq!(
            systemd_driver_problem(false, true),
            Some(SystemdDriverProblem::NotBooted)
        );
        assert_eq!(
            systemd_driver_problem(false, false),
            Some(SystemdDriverProblem::NotBooted)
        );
        assert_eq!(
            systemd_driver_problem(true, false),
            Some(SystemdDriverProblem::NotUnified)
        );
        assert_eq!(systemd_driver_problem(true, true), None);
        assert!(SystemdDriverProblem::NotBooted
            .to_string()
            .contains("--systemd-cgroup"));
    }

    #[test]
    fn systemd_cgroups_path_is_slice_prefix_name() {
        for ok in [
            "system.slice:buntime:x",
            ":buntime:x",
            "machine.slice:libpod:abc",
            "kubepods-besteffort-pod1.slice:cri-containerd:c1",
        ] {
            assert_eq!(systemd_cgroups_path(ok), Ok(()), "{ok}");
        }
        for bad in [
            "/buntime/x",
            "buntime:x",
            "a:b:c:d",
            "system.slice:buntime:",
            "system:buntime:x",
            "a/b.slice:p:x",
            "system.slice:p:a/b",
        ] {
            assert!(systemd_cgroups_path(bad).is_err(), "{bad}");
        }
    }

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
