//! Start the RCU grace period a cgroup attach waits for, early.
//!
//! Every write to a `cgroup.procs` file takes the kernel's global
//! `cgroup_threadgroup_rwsem` for writing, and the first writer after a
//! quiet spell waits for an RCU grace period (about 8 ms on this kind of
//! host, up to 16 ms when busy); writers within a few grace periods of the
//! last one pass at once. libcontainer moves the container's first process
//! into its cgroups several milliseconds into `create` (or `exec`), and
//! paid that whole wait, as runc does.
//!
//! So `create` and `exec` begin by forking a child that writes `0` (itself)
//! into the `cgroup.procs` of the cgroup it already is in: a no-op move that
//! starts the grace period while the parent reads the bundle and builds the
//! container. When libcontainer's own write comes, it waits only for what
//! is left of that period. Any failure (no permission, no such file, a
//! kernel that no longer serialises attaches this way) only means no head
//! start.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// A writer of this process is still out: a second one would gain nothing.
static IN_FLIGHT: AtomicBool = AtomicBool::new(false);

/// The forked writer; reaped when dropped. One at a time per process:
/// `buntime run` starts one before it builds the bundle, and the `create`
/// it calls then needs none of its own.
pub struct Warmup {
    pid: libc::pid_t,
}

impl Warmup {
    /// Fork the writer (the child runs nothing but open/write/_exit, all
    /// async-signal-safe, so this is sound with threads too).
    pub fn start() -> Option<Warmup> {
        if IN_FLIGHT.swap(true, Ordering::Relaxed) {
            return None;
        }
        let w = Self::fork_writer();
        if w.is_none() {
            IN_FLIGHT.store(false, Ordering::Relaxed);
        }
        w
    }

    fn fork_writer() -> Option<Warmup> {
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let path = procs_file(&cgroups, Path::new("/sys/fs/cgroup"))?;
        let path = CString::new(path.into_os_string().into_encoded_bytes()).ok()?;
        // SAFETY: the child only makes raw system calls on memory prepared
        // before the fork and leaves with _exit.
        match unsafe { libc::fork() } {
            0 => unsafe {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd >= 0 {
                    libc::write(fd, b"0".as_ptr().cast(), 1);
                }
                libc::_exit(0)
            },
            pid if pid > 0 => Some(Warmup { pid }),
            _ => None,
        }
    }
}

impl Drop for Warmup {
    fn drop(&mut self) {
        // By now libcontainer's own attach has waited for the same grace
        // period (or there was none to make), so this returns at once.
        let mut status = 0;
        // SAFETY: our own child, a plain out-pointer.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
        IN_FLIGHT.store(false, Ordering::Relaxed);
    }
}

/// The `cgroup.procs` of the cgroup this process is in, from the text of
/// /proc/self/cgroup: a v1 hierarchy's (its mount point named after its
/// first controller, as on systemd and cgroupfs-mount hosts), else the
/// unified hierarchy's (hybrid: `unified/`, pure v2: the mount itself).
fn procs_file(cgroups: &str, mount: &Path) -> Option<PathBuf> {
    let mut unified = None;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        // The path is the kernel's; keep it inside the mount regardless.
        let rel = path.trim_start_matches('/');
        if rel.split('/').any(|c| c == "..") {
            continue;
        }
        if controllers.is_empty() {
            unified = Some(rel.to_string());
            continue;
        }
        let Some(first) = controllers.split(',').find(|c| !c.starts_with("name=")) else {
            continue;
        };
        let file = mount.join(first).join(rel).join("cgroup.procs");
        if file.exists() {
            return Some(file);
        }
    }
    let rel = unified?;
    [mount.join("unified"), mount.to_path_buf()]
        .into_iter()
        .map(|m| m.join(&rel).join("cgroup.procs"))
        .find(|f| f.exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in files {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, "").expect("write");
        }
        dir
    }

    #[test]
    fn prefers_a_v1_hierarchy_then_the_unified_one() {
        let t = tree(&["pids/a/b/cgroup.procs", "unified/a/b/cgroup.procs"]);
        let v1 = "12:pids:/a/b\n1:name=systemd:/a/b\n0::/a/b\n";
        assert_eq!(
            procs_file(v1, t.path()),
            Some(t.path().join("pids/a/b/cgroup.procs"))
        );
        let only_v2 = "1:name=systemd:/a/b\n0::/a/b\n";
        assert_eq!(
            procs_file(only_v2, t.path()),
            Some(t.path().join("unified/a/b/cgroup.procs"))
        );
        // A pure v2 host: the mount itself is the hierarchy.
        let t = tree(&["x/cgroup.procs"]);
        assert_eq!(
            procs_file("0::/x\n", t.path()),
            Some(t.path().join("x/cgroup.procs"))
        );
    }

    #[test]
    fn nothing_outside_the_mount_or_missing() {
        let t = tree(&["cgroup.procs"]);
        assert_eq!(procs_file("0::/../../etc\n", t.path()), None);
        assert_eq!(procs_file("3:cpu:/gone\n", t.path()), None);
        assert_eq!(procs_file("garbage\n", t.path()), None);
    }

    /// The kernel side: a real write of "0" into our own cgroup leaves the
    /// child where it was and the parent unaffected.
    #[test]
    fn writer_runs_and_is_reaped() {
        let before = std::fs::read_to_string("/proc/self/cgroup").expect("cgroup");
        if let Some(w) = Warmup::start() {
            let pid = w.pid;
            drop(w);
            // Reaped: no such child any more.
            let mut status = 0;
            assert_eq!(
                unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) },
                -1
            );
        }
        let after = std::fs::read_to_string("/proc/self/cgroup").expect("cgroup");
        assert_eq!(before, after);
    }
}
