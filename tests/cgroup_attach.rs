//! The libcgroups patch (third_party/README.md): a process that puts itself
//! into a cgroup v1 cgroup moves whole, whether it has one thread (it moves
//! through `tasks`, skipping the kernel's global lock) or several (it must
//! go through `cgroup.procs`, or its other threads would stay behind).
//! Needs root and a cgroup v1 host.

use std::fs;
use std::path::Path;

use libcgroups::common::{create_cgroup_manager, CgroupConfig, CgroupManager};
use nix::unistd::{fork, ForkResult, Pid};

/// The controllers libcgroups manages (a host may mount more, e.g. rdma
/// and misc, which it leaves alone).
const MANAGED: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "hugetlb",
    "memory",
    "pids",
    "perf_event",
    "blkio",
    "net_prio",
    "net_cls",
    "freezer",
];

/// The lines of a /proc/.../cgroup file for managed v1 controllers whose
/// path is not `want`.
fn misplaced(cgroup_file: &Path, want: &str) -> Vec<String> {
    fs::read_to_string(cgroup_file)
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, ctrl, path) = (parts.next(), parts.next(), parts.next());
            ctrl.is_some_and(|c| c.split(',').any(|c| MANAGED.contains(&c))) && path != Some(want)
        })
        .map(str::to_string)
        .collect()
}

/// Every thread of `pid` in `want`, in every managed v1 hierarchy; what is
/// not (or why it could not be read).
fn all_threads_in(pid: Pid, want: &str) -> Vec<String> {
    let tasks = match fs::read_dir(format!("/proc/{pid}/task")) {
        Ok(t) => t,
        Err(e) => return vec![format!("/proc/{pid}/task: {e}")],
    };
    let mut wrong = Vec::new();
    for task in tasks.flatten() {
        for line in misplaced(&task.path().join("cgroup"), want) {
            wrong.push(format!("{}: {line}", task.file_name().to_string_lossy()));
        }
    }
    wrong
}

/// Moves this process back where it was and removes the test cgroup, even
/// when an assertion failed.
struct Restore {
    original: String,
    mgr: libcgroups::common::AnyCgroupManager,
}

impl Drop for Restore {
    fn drop(&mut self) {
        for line in self.original.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(ctrl), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Some(first) = ctrl
                .split(',')
                .find(|c| !c.is_empty() && !c.starts_with("name="))
            else {
                continue;
            };
            let procs = Path::new("/sys/fs/cgroup")
                .join(first)
                .join(path.trim_start_matches('/'))
                .join("cgroup.procs");
            let _ = fs::write(procs, std::process::id().to_string());
        }
        let _ = self.mgr.remove();
        // And the parent the manager made (busy if another run uses it).
        for dir in fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = fs::remove_dir(dir.path().join("buntime-test"));
        }
    }
}

#[test]
fn a_process_moving_itself_moves_with_all_its_threads() {
    if !nix::unistd::geteuid().is_root() {
        // `make test` (hack/test.sh) counts a skip as a failure.
        assert!(
            std::env::var_os("BUNTIME_TEST_STRICT").is_none(),
            "needs root"
        );
        eprintln!("skipped: needs root");
        return;
    }
    if !Path::new("/sys/fs/cgroup/pids/tasks").exists() {
        // The patch is about cgroup v1; a v2-only host has nothing to test.
        eprintln!("skipped: no cgroup v1 pids hierarchy");
        return;
    }
    let name = format!("/buntime-test/attach-{}", std::process::id());
    let mgr = create_cgroup_manager(CgroupConfig {
        cgroup_path: name.clone().into(),
        systemd_cgroup: false,
        container_name: "attach".into(),
    })
    .expect("cgroup manager");
    let restore = Restore {
        original: fs::read_to_string("/proc/self/cgroup").expect("own cgroups"),
        mgr,
    };

    // One thread: a forked child moves itself (the intermediate process's
    // case, which goes through `tasks`; that it lands whole is what is
    // checked here) and waits to be looked at.
    let (ready_r, ready_w) = nix::unistd::pipe().expect("pipe");
    // SAFETY: the child calls into libcgroups (allocation is fork-safe in
    // glibc), reports through a pipe and leaves with _exit.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let ok = restore.mgr.add_task(Pid::this()).is_ok();
            let _ = nix::unistd::write(&ready_w, if ok { b"y" } else { b"n" });
            std::thread::sleep(std::time::Duration::from_secs(30));
            unsafe { libc::_exit(0) };
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            let mut buf = [0u8; 1];
            let n = nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&ready_r), &mut buf);
            let wrong = all_threads_in(child, &name);
            let _ = nix::sys::signal::kill(child, nix::sys::signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(child, None);
            assert_eq!((n.ok(), buf[0]), (Some(1), b'y'), "child's add_task failed");
            assert!(
                wrong.is_empty(),
                "single-threaded child not moved: {wrong:?}"
            );
        }
    }

    // Several threads: this test process itself, with a parked extra thread.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let parked = std::thread::spawn(move || {
        let _ = rx.recv();
    });
    assert!(
        fs::read_dir("/proc/self/task").expect("tasks").count() >= 2,
        "the test needs a second thread"
    );
    restore.mgr.add_task(Pid::this()).expect("add_task");
    let wrong = all_threads_in(Pid::this(), &name);
    drop(tx);
    let _ = parked.join();
    drop(restore);
    assert!(wrong.is_empty(), "threads left behind: {wrong:?}");
}
