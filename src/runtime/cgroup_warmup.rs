//! Start the RCU grace period a cgroup attach waits for, early (cgroup v2).
//!
//! Every write to a `cgroup.procs` file takes the kernel's global
//! `cgroup_threadgroup_rwsem` for writing, and the first writer after a
//! quiet spell waits for an RCU grace period (about 8 ms on this kind of
//! host, up to 16 ms when busy); writers within a few grace periods of the
//! last one pass at once. libcontainer moves the container's first process
//! into its cgroup several milliseconds into `create` (or `exec`).
//!
//! On cgroup v1 that move no longer waits at all: our libcgroups patch has
//! the single-threaded intermediate process move itself through `tasks`,
//! which skips the lock (third_party/README.md). A warm-up there would only
//! hurt: the writer holds `cgroup_mutex` through its grace period, so the
//! intermediate's mkdirs and moves would wait for it.
//!
//! On a pure cgroup v2 host libcontainer writes `cgroup.procs`, so `create`
//! and `exec` begin by forking a child that writes `0` (itself) into the
//! `cgroup.procs` of the cgroup it already is in: a no-op move that starts
//! the grace period while the parent reads the bundle and builds the
//! container; libcontainer's own write then waits only for what is left of
//! it. Any failure (no permission, no such file, a kernel that no longer
//! serialises attaches this way) only means no head start.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// A writer of this process is still out: a second one would gain nothing.
static IN_FLIGHT: AtomicBool = AtomicBool::new(false);

/// The forked writer; reaped when dropped. One at a time per process:
/// `buntime run` starts one before it builds the bundle, and the `create`
/// it calls then needs none of its own.
pub struct Warmup {
    pid: libc::pid_t,
    /// Waited on instead of the pid when there is one: a pid can be
    /// reused if the child was reaped behind our back (SIGCHLD ignored).
    pidfd: Option<OwnedFd>,
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
        // Only where libcontainer will use its cgroup v2 manager.
        let mount = Path::new("/sys/fs/cgroup");
        let fs = nix::sys::statfs::statfs(mount).ok()?;
        if fs.filesystem_type() != nix::sys::statfs::CGROUP2_SUPER_MAGIC {
            return None;
        }
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let path = procs_file(&cgroups, mount)?;
        // Only a file we may write and that lists us: under a cgroup
        // namespace with the host's /sys/fs/cgroup mounted, the same
        // relative path names another cgroup (the host's root, say).
        if !lists(&path, std::process::id()) {
            return None;
        }
        let path = CString::new(path.into_os_string().into_encoded_bytes()).ok()?;
        // SAFETY: a valid C string; faccessat only reads it.
        let writable =
            unsafe { libc::faccessat(libc::AT_FDCWD, path.as_ptr(), libc::W_OK, libc::AT_EACCESS) }
                == 0;
        if !writable {
            return None;
        }
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
            pid if pid > 0 => {
                // SAFETY: pidfd_open takes no pointers; a new fd is ours.
                let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
                let pidfd = (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) });
                Some(Warmup { pid, pidfd })
            }
            _ => None,
        }
    }
}

impl Drop for Warmup {
    fn drop(&mut self) {
        // By now libcontainer's own attach has waited for the same grace
        // period (or there was none to make), so this returns at once.
        match &self.pidfd {
            Some(fd) => loop {
                // SAFETY: a zeroed siginfo_t is a valid out-buffer.
                let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
                // SAFETY: waits for (and reaps) exactly the process the
                // pidfd names; ECHILD if it was reaped already.
                let r = unsafe {
                    libc::waitid(
                        libc::P_PIDFD,
                        fd.as_raw_fd() as libc::id_t,
                        &mut info,
                        libc::WEXITED,
                    )
                };
                if r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    break;
                }
            },
            None => {
                let mut status = 0;
                // SAFETY: our own child, a plain out-pointer; WNOHANG: never
                // block on a pid that may have been reused.
                unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            }
        }
        IN_FLIGHT.store(false, Ordering::Relaxed);
    }
}

/// Whether the `cgroup.procs` at `path` lists `pid`.
fn lists(path: &Path, pid: u32) -> bool {
    let want = pid.to_string();
    std::fs::read_to_string(path).is_ok_and(|t| t.lines().any(|l| l == want))
}

/// The `cgroup.procs` of the cgroup this process is in, from the text of
/// /proc/self/cgroup, on a host whose `mount` is the cgroup v2 hierarchy.
fn procs_file(cgroups: &str, mount: &Path) -> Option<PathBuf> {
    let rel = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    // The path is the kernel's; keep it inside the mount regardless.
    let rel = rel.trim_start_matches('/');
    if rel.split('/').any(|c| c == "..") {
        return None;
    }
    let file = mount.join(rel).join("cgroup.procs");
    file.exists().then_some(file)
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
    fn the_unified_hierarchy_line() {
        let t = tree(&["a/b/cgroup.procs", "cgroup.procs"]);
        assert_eq!(
            procs_file("0::/a/b\n", t.path()),
            Some(t.path().join("a/b/cgroup.procs"))
        );
        // The root cgroup.
        assert_eq!(
            procs_file("0::/\n", t.path()),
            Some(t.path().join("cgroup.procs"))
        );
        // v1 lines are not it.
        assert_eq!(procs_file("3:pids:/a/b\n", t.path()), None);
    }

    #[test]
    fn only_a_cgroup_that_lists_us() {
        let t = tree(&["x/cgroup.procs"]);
        let f = t.path().join("x/cgroup.procs");
        std::fs::write(&f, "1\n23\n456\n").expect("write");
        assert!(lists(&f, 23));
        assert!(!lists(&f, 2));
        assert!(!lists(&t.path().join("missing"), 23));
    }

    #[test]
    fn nothing_outside_the_mount_or_missing() {
        let t = tree(&["cgroup.procs"]);
        assert_eq!(procs_file("0::/../../etc\n", t.path()), None);
        assert_eq!(procs_file("0::/gone\n", t.path()), None);
        assert_eq!(procs_file("garbage\n", t.path()), None);
    }

    /// The kernel side: on cgroup v1 (where libcgroups moves its process
    /// without the lock) there is no writer; on v2 a real write of "0" into
    /// our own cgroup leaves the child where it was and the parent as well.
    #[test]
    fn writer_only_on_cgroup_v2_and_reaped() {
        let v2 = nix::sys::statfs::statfs("/sys/fs/cgroup")
            .is_ok_and(|f| f.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
        let before = std::fs::read_to_string("/proc/self/cgroup").expect("cgroup");
        let w = Warmup::start();
        if !v2 {
            assert!(w.is_none(), "a warm-up on a cgroup v1 host");
            return;
        }
        if let Some(w) = w {
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
