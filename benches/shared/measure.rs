//! The churn bench's instruments (benches/churn.rs): a reaper that makes
//! `RUSAGE_CHILDREN` count every process a command started, and a phase
//! of `n` commands measured by it, the kernel threads and the host.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

/// Reaps every child (ours and adopted orphans) in one thread, so that
/// `RUSAGE_CHILDREN` counts them, and hands exit statuses to whoever
/// started the process.
pub struct Reaper {
    done: Mutex<HashMap<i32, bool>>,
    cv: Condvar,
    /// Times `waitpid` found no child at all.
    idle: AtomicUsize,
}

impl Reaper {
    pub fn start() -> Arc<Self> {
        // SAFETY: prctl with an integer argument; no memory is passed.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(rc, 0, "PR_SET_CHILD_SUBREAPER");
        let r = Arc::new(Reaper {
            done: Mutex::new(HashMap::new()),
            cv: Condvar::new(),
            idle: AtomicUsize::new(0),
        });
        let me = Arc::clone(&r);
        std::thread::spawn(move || loop {
            match waitpid(Pid::from_raw(-1), None) {
                Ok(WaitStatus::Exited(pid, code)) => me.finish(pid.as_raw(), code == 0),
                Ok(WaitStatus::Signaled(pid, ..)) => me.finish(pid.as_raw(), false),
                Ok(_) => {}
                Err(nix::errno::Errno::ECHILD) => {
                    me.idle.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        });
        r
    }

    fn finish(&self, pid: i32, ok: bool) {
        if let Ok(mut m) = self.done.lock() {
            m.insert(pid, ok);
        }
        self.cv.notify_all();
    }

    /// Starts `cmd` and waits for it (through the reaper): true on exit 0.
    pub fn run(&self, cmd: &mut Command) -> bool {
        let child = match cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(_) => return false,
        };
        let pid = child.id() as i32;
        // Dropping a Child neither kills nor waits for it.
        drop(child);
        let Ok(mut m) = self.done.lock() else {
            return false;
        };
        loop {
            if let Some(ok) = m.remove(&pid) {
                return ok;
            }
            m = match self.cv.wait(m) {
                Ok(m) => m,
                Err(_) => return false,
            };
        }
    }

    /// Waits until no descendant is left (supervisors winding down,
    /// orphans), so the phase's rusage is complete. False on timeout.
    fn quiesce(&self, limit: Duration) -> bool {
        let start = Instant::now();
        let seen = self.idle.load(Ordering::SeqCst);
        while start.elapsed() < limit {
            if self.idle.load(Ordering::SeqCst) > seen + 1 {
                if let Ok(mut m) = self.done.lock() {
                    m.clear();
                }
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }
}

fn children_cpu() -> Duration {
    getrusage(UsageWho::RUSAGE_CHILDREN)
        .map(|u| {
            let t = |tv: nix::sys::time::TimeVal| {
                Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000)
            };
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or_default()
}

/// Busy and total jiffies of all CPUs (/proc/stat's first line).
fn host_jiffies() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// user + sys ticks of every kernel thread (kthreadd's children):
/// namespace teardown, cgroup destruction, RCU callbacks and deferred
/// frees run there, on no container's account (other work's too).
fn kthread_ticks() -> u64 {
    let mut sum = 0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let text = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // Field 2 after the name is the parent's pid; kthreadd is 2.
        if n(1) == 2 {
            sum += n(11) + n(12);
        }
    }
    sum
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub struct Phase {
    pub rate: f64,
    pub cpu_ms: f64,
    pub host_busy: f64,
    pub kthreads_ms: f64,
    pub failed: usize,
    pub wall: Duration,
}

/// Runs `n` commands, `par` at a time; `make(i)` builds the i-th.
pub fn phase(
    reaper: &Arc<Reaper>,
    n: usize,
    par: usize,
    make: &(dyn Fn(usize) -> Command + Sync),
) -> Phase {
    let next = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let cpu0 = children_cpu();
    let (busy0, total0) = host_jiffies();
    let k0 = kthread_ticks();
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..par {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    break;
                }
                if !reaper.run(&mut make(i)) {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    let wall = start.elapsed();
    let (busy1, total1) = host_jiffies();
    if !reaper.quiesce(Duration::from_secs(10)) {
        eprintln!("churn: descendants still running 10 s after the phase");
    }
    let cpu = children_cpu().saturating_sub(cpu0);
    let k1 = kthread_ticks();
    // SAFETY: sysconf has no memory arguments.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    Phase {
        rate: n as f64 / wall.as_secs_f64(),
        cpu_ms: cpu.as_secs_f64() * 1e3 / n as f64,
        // CPU-seconds of the whole host (all CPUs, everyone's work) per
        // command, in ms.
        host_busy: (busy1 - busy0) as f64 / (total1 - total0).max(1) as f64
            * ncpu
            * wall.as_secs_f64()
            * 1e3
            / n as f64,
        kthreads_ms: k1.saturating_sub(k0) as f64 / hz * 1e3 / n as f64,
        failed: failed.load(Ordering::SeqCst),
        wall,
    }
}
