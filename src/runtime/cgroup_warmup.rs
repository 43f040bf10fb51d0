//! Start the RCU grace period a cgroup attach waits for, early.
//!
//! Every write to a `cgroup.procs` file takes the kernel's global
//! `cgroup_threadgroup_rwsem` for writing, and the first writer after a
//! quiet spell waits for an RCU grace period (about 8 ms on this kind of
//! host, up to 16 ms when busy); writers within a few grace periods of the
//! last one pass at once. libcontainer moves the container's first process
//! into its cgroups several milliseconds into `create` (or `exec`).
//!
//! On cgroup v1 with a kernel from 5.5 on, that move does not wait at all:
//! our libcgroups patch has the single-threaded intermediate process move
//! itself through `tasks`, which skips the lock (third_party/README.md). A
//! warm-up there would only hurt: the writer holds `cgroup_mutex` through
//! its grace period, so the intermediate's mkdirs and moves would wait.
//!
//! Elsewhere (a pure cgroup v2 host, where libcontainer writes
//! `cgroup.procs`, or an older kernel) `create` and `exec` begin by forking
//! a child that writes `0` (itself) into the `cgroup.procs` of the cgroup it
//! already is in: a no-op move that starts the grace period while the
//! parent reads the bundle and builds the container; libcontainer's own
//! write then waits only for what is left of it. Any failure (no
//! permission, no such file) only means no head start.

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
        if !attach_waits() {
            return None;
        }
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let path = procs_file(&cgroups, Path::new("/sys/fs/cgroup"))?;
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

/// Whether libcontainer's cgroup join will wait for the grace period: on
/// a pure cgroup v2 host, or on v1 with a kernel older than 5.5 (before
/// "cgroup: Optimize single thread migration", a thread moving itself took
/// the lock too).
fn attach_waits() -> bool {
    let v2 = nix::sys::statfs::statfs("/sys/fs/cgroup")
        .is_ok_and(|f| f.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
    v2 || !kernel_at_least(
        &nix::sys::utsname::uname().map_or_else(
            |_| String::new(),
            |u| u.release().to_string_lossy().into_owned(),
        ),
        (5, 5),
    )
}

/// Whether a kernel release string ("6.18.44-fc") is at least `want`.
fn kernel_at_least(release: &str, want: (u32, u32)) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= want,
        _ => false,
    }
}

/// Whether the `cgroup.procs` at `path` lists `pid`.
fn lists(path: &Path, pid: u32) -> bool {
    let want = pid.to_string();
    std::fs::read_to_string(path).is_ok_and(|t| t.lines().any(|l| l == want))
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
        assert_eq!(procs_file("3:cpu:/gone\n", t.path()), None);
        assert_eq!(procs_file("garbage\n", t.path()), None);
    }

    #[test]
    fn kernel_versions() {
        assert!(kernel_at_least("6.18.44-fc-v657", (5, 5)));
        assert!(kernel_at_least("5.5.0", (5, 5)));
        assert!(!kernel_at_least("5.4.213-generic", (5, 5)));
        assert!(!kernel_at_least("3.10.0-1160.el7.x86_64", (5, 5)));
        assert!(!kernel_at_least("garbage", (5, 5)));
    }

    /// The kernel side: where the join waits, a real write of "0" into our
    /// own cgroup leaves the child where it was and the parent as well;
    /// where it does not (this project's CI host), there is no writer.
    #[test]
    fn writer_only_where_the_join_waits_and_reaped() {
        let before = std::fs::read_to_string("/proc/self/cgroup").expect("cgroup");
        let w = Warmup::start();
        if !attach_waits() {
            assert!(w.is_none(), "a warm-up where the join does not wait");
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
