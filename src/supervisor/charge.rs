//! The supervisor's CPU is its sandbox's: what it does on the sandbox's
//! behalf (decisions, audit lines, output frames, proxied bytes, and
//! wake-ups the sandbox causes) is charged to the container's CPU cgroup,
//! so `resources.cpu` bounds it and `cpuacct.usage` / `cpu.stat` count it.
//!
//! cgroup v1: the supervisor joins the container's `cpu` and `cpuacct`
//! hierarchies only (v1 lets a task sit in different cgroups per
//! hierarchy). Its memory, pids, freezer and devices cgroups stay its own,
//! so `ps`, `kill --all` (which read the devices hierarchy), the pids
//! limit, `pause` and the memory limit do not see it. cgroup v2 (no cpu
//! controller on v1): one hierarchy, so it joins the container's leaf; see
//! docs/supervisor.md for what that costs and how `ps`, `kill --all` and
//! `delete` leave it out.
//!
//! It joins once, at handover (it has the init's pid, and no thread yet),
//! and never leaves on its own: it exits soon after the init, and `delete`
//! waits for that before the cgroup is removed, or (a container deleted
//! while it runs) moves it out first (`evict`).

use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ChargeError {
    #[error("cpu cgroup: read {what}: {source}")]
    Read {
        what: String,
        source: std::io::Error,
    },
    #[error("cpu cgroup: join {dir}: {source}")]
    Join {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Which cgroup version a directory belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// A cgroup that accounts a process's CPU: its directory, and the mount
/// of its hierarchy (directories of one hierarchy share it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuCgroup {
    pub version: Version,
    pub mount: PathBuf,
    pub dir: PathBuf,
}

struct Mount<'a> {
    root: &'a str,
    point: &'a str,
    version: Version,
    opts: Vec<&'a str>,
}

fn mounts(mountinfo: &str) -> Vec<Mount<'_>> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mut post = post.split(' ');
        let version = match post.next() {
            Some("cgroup") => Version::V1,
            Some("cgroup2") => Version::V2,
            _ => continue,
        };
        let _source = post.next();
        let opts = post.next().unwrap_or("").split(',').collect();
        let mut pre = pre.split(' ');
        let (Some(root), Some(point)) = (pre.nth(3), pre.next()) else {
            continue;
        };
        // An octal-escaped mount point (a space in it) is not ours to guess.
        if point.contains('\\') || root.contains('\\') {
            continue;
        }
        out.push(Mount {
            root,
            point,
            version,
            opts,
        });
    }
    out
}

/// `path` (as /proc/PID/cgroup shows it) under a mount of `root` at
/// `point`; None if it is not below that mount or climbs out.
fn under(m: &Mount, path: &str) -> Option<PathBuf> {
    let rel = if m.root == "/" {
        path
    } else {
        let rest = path.strip_prefix(m.root)?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        rest
    };
    let rel = Path::new(rel.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(Path::new(m.point).join(rel))
}

/// The cgroups that account CPU for the process whose /proc/PID/cgroup is
/// `proc_cgroup`: its v1 `cpu` and `cpuacct` hierarchies (one directory
/// each, or one for a combined `cpu,cpuacct`), or, where no v1 hierarchy
/// has them, its cgroup v2 directory.
pub fn cpu_cgroups(proc_cgroup: &str, mountinfo: &str) -> Vec<CpuCgroup> {
    let mounts = mounts(mountinfo);
    let mut v1 = Vec::new();
    let mut v2 = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" && ctrls.is_empty() {
            v2 = mounts
                .iter()
                .filter(|m| m.version == Version::V2)
                .find_map(|m| {
                    under(m, path).map(|dir| CpuCgroup {
                        version: Version::V2,
                        mount: PathBuf::from(m.point),
                        dir,
                    })
                });
            continue;
        }
        let ctrls: Vec<&str> = ctrls.split(',').collect();
        if !ctrls.iter().any(|c| *c == "cpu" || *c == "cpuacct") {
            continue;
        }
        let found = mounts
            .iter()
            .filter(|m| m.version == Version::V1 && ctrls.iter().all(|c| m.opts.contains(c)))
            .find_map(|m| {
                under(m, path).map(|dir| CpuCgroup {
                    version: Version::V1,
                    mount: PathBuf::from(m.point),
                    dir,
                })
            });
        if let Some(c) = found {
            if !v1.contains(&c) {
                v1.push(c);
            }
        }
    }
    if v1.is_empty() {
        v2.into_iter().collect()
    } else {
        v1
    }
}

fn read(path: &str) -> Result<String, ChargeError> {
    std::fs::read_to_string(path).map_err(|source| ChargeError::Read {
        what: path.to_string(),
        source,
    })
}

/// The CPU cgroups of process `pid`, as this process sees them.
pub fn of_pid(pid: i32) -> Result<Vec<CpuCgroup>, ChargeError> {
    let info = read("/proc/self/mountinfo")?;
    let cg = read(&format!("/proc/{pid}/cgroup"))?;
    Ok(cpu_cgroups(&cg, &info))
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

fn write(file: PathBuf, value: &str) -> Result<(), ChargeError> {
    std::fs::write(&file, value).map_err(|source| ChargeError::Join { dir: file, source })
}

/// Moves this process into the CPU cgroups of the container whose init is
/// `init_pid`. Returns the directories joined (empty: it was there already,
/// e.g. a rootless container without cgroups of its own).
///
/// Called while the supervisor has a single thread: on v1 it then writes
/// `0` to `tasks`, which moves the calling thread without the kernel's
/// global `cgroup_threadgroup_rwsem` (whose writer waits for an RCU grace
/// period, ~8 ms, and holds up every fork on the host meanwhile); threads
/// made later start where their creator is. With more threads it moves
/// the whole process through `cgroup.procs`. v2 has only `cgroup.procs`.
pub fn join(init_pid: i32) -> Result<Vec<PathBuf>, ChargeError> {
    let info = read("/proc/self/mountinfo")?;
    let theirs = cpu_cgroups(&read(&format!("/proc/{init_pid}/cgroup"))?, &info);
    let ours = cpu_cgroups(&read("/proc/self/cgroup")?, &info);
    let mut joined = Vec::new();
    for target in theirs.iter().filter(|t| !ours.contains(t)) {
        match target.version {
            Version::V1 if threads() == 1 => write(target.dir.join("tasks"), "0")?,
            Version::V1 => write(
                target.dir.join("cgroup.procs"),
                &std::process::id().to_string(),
            )?,
            Version::V2 => write(target.dir.join("cgroup.procs"), "0")?,
        }
        joined.push(target.dir.clone());
    }
    Ok(joined)
}

/// For `delete` of a container whose init still runs: moves its
/// supervisor `sup_pid` out of the container's CPU cgroups (into the
/// caller's own; where the caller may not write that, as a rootless user,
/// into the parent of the container's on v1, the user's delegated
/// subtree), so that removing the cgroup neither kills it nor fails busy,
/// and it still writes its last audit lines. Best effort: a supervisor
/// that cannot be moved is killed with the cgroup, as before.
pub fn evict(sup_pid: i32, init_pid: i32) {
    let (Ok(sup), Ok(init), Ok(me)) = (
        of_pid(sup_pid),
        of_pid(init_pid),
        of_pid(std::process::id() as i32),
    ) else {
        return;
    };
    for c in sup.iter().filter(|c| init.contains(c) && !me.contains(c)) {
        let pid = sup_pid.to_string();
        let mine = me.iter().find(|m| m.mount == c.mount);
        let moved = mine.is_some_and(|m| write(m.dir.join("cgroup.procs"), &pid).is_ok());
        if !moved && c.version == Version::V1 {
            if let Some(parent) = c.dir.parent().filter(|p| p.starts_with(&c.mount)) {
                let _ = write(parent.join("cgroup.procs"), &pid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    fn c(version: Version, mount: &str, dir: &str) -> CpuCgroup {
        CpuCgroup {
            version,
            mount: mount.into(),
            dir: dir.into(),
        }
    }

    #[test]
    fn v1_cpu_and_cpuacct_only() {
        let cg = "9:name=systemd:/\n8:pids:/buntime/run-7\n4:memory:/buntime/run-7\n\
                  2:cpuacct:/buntime/run-7\n1:cpu:/buntime/run-7\n0::/\n";
        assert_eq!(
            cpu_cgroups(cg, HYBRID),
            vec![
                c(
                    Version::V1,
                    "/sys/fs/cgroup/cpuacct",
                    "/sys/fs/cgroup/cpuacct/buntime/run-7"
                ),
                c(
                    Version::V1,
                    "/sys/fs/cgroup/cpu",
                    "/sys/fs/cgroup/cpu/buntime/run-7"
                ),
            ]
        );
    }

    #[test]
    fn v1_combined_hierarchy() {
        let info =
            "35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw shared:15 - cgroup cgroup rw,cpu,cpuacct\n";
        let cg = "3:cpu,cpuacct:/kubepods/pod1/abc\n";
        assert_eq!(
            cpu_cgroups(cg, info),
            vec![c(
                Version::V1,
                "/sys/fs/cgroup/cpu,cpuacct",
                "/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/abc"
            )]
        );
    }

    #[test]
    fn v2_when_no_v1_hierarchy_has_cpu() {
        let info = "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let cg = "0::/user.slice/user-1000.slice/buntime-x\n";
        assert_eq!(
            cpu_cgroups(cg, info),
            vec![c(
                Version::V2,
                "/sys/fs/cgroup",
                "/sys/fs/cgroup/user.slice/user-1000.slice/buntime-x"
            )]
        );
        // Hybrid: v1 has cpu, the unified mount is not used.
        let cg = "1:cpu:/a\n2:cpuacct:/a\n0::/a\n";
        assert!(cpu_cgroups(cg, HYBRID)
            .iter()
            .all(|c| c.version == Version::V1));
    }

    #[test]
    fn mount_roots_and_escapes() {
        // A mount of a subtree (a cgroup namespace's view, bind mounts).
        let info = "32 31 0:29 /machine /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(
            cpu_cgroups("1:cpu:/machine/c1\n", info),
            vec![c(
                Version::V1,
                "/sys/fs/cgroup/cpu",
                "/sys/fs/cgroup/cpu/c1"
            )]
        );
        assert!(cpu_cgroups("1:cpu:/machinery/c1\n", info).is_empty());
        assert!(cpu_cgroups("1:cpu:/machine/../x\n", info).is_empty());
    }
}
