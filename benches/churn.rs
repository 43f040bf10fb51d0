//! Churn: how many sandboxes the machine turns over per second, and the CPU
//! each one costs, for buntime against its baseline in the same run.
//!
//! * `/bin/true` in a busybox bundle, `run` (create + start + wait +
//!   delete), `CHURN_N` containers (100) at each parallelism of
//!   `CHURN_PAR` (`1,4,8`): `buntime-runc run` against Debian's `runc run`
//!   (`CHURN_N=0` skips it);
//! * `buntime run hello.py` against `/usr/bin/python3 hello.py`,
//!   `CHURN_RUN_N` runs (60) at the same parallelisms; `CHURN_RUN_FLOOR=1`
//!   adds `buntime run -- python3 hello.py` (no worker) and `buntime run
//!   -- /bin/true` (no Python), `CHURN_RUN_BASELINE=/path/to/buntime` an
//!   older build's `buntime run hello.py`.
//!
//! The sides alternate phase by phase (the order reverses every round,
//! `CHURN_ROUNDS`, 1), so all see the same machine.
//! `CHURN_BASELINE=/path/to/an/older/buntime-runc` adds that build's row
//! to the busybox table (and its ratio to this build's).
//!
//! CPU per container is user + sys of every process the command started,
//! whatever became of it: this process is a child subreaper, so the
//! container's init (orphaned by the runtime's intermediate process), the
//! supervisor and every helper are reparented here (or to a runtime that
//! is itself a subreaper) and reaped, and `getrusage(RUSAGE_CHILDREN)`
//! counts them. Not counted: kernel threads working on a container's
//! behalf after its processes are gone (namespace teardown in kworkers,
//! RCU callbacks): the "kthreads" column is the CPU of every kernel thread
//! during the phase per container, and "host busy" (all CPUs, from
//! /proc/stat) bounds everything from above; both include other work on
//! the host.
//!
//! Needs root. Prints the load average first: figures taken with a load
//! above the CPU count are a busy host's (docs/performance.md).

mod shared;
#[path = "shared/summary.rs"]
mod summary;
use shared::make_bundle;
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

const BUNTIME_RUNC: &str = env!("CARGO_BIN_EXE_buntime-runc");
const BUNTIME: &str = env!("CARGO_BIN_EXE_buntime");

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.split(',')
                .filter_map(|p| p.trim().parse().ok())
                .filter(|&p| p > 0)
                .collect::<Vec<_>>()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

/// Reaps every child (ours and adopted orphans) in one thread, so that
/// `RUSAGE_CHILDREN` counts them, and hands exit statuses to whoever
/// started the process.
struct Reaper {
    done: Mutex<HashMap<i32, bool>>,
    cv: Condvar,
    /// Times `waitpid` found no child at all.
    idle: AtomicUsize,
}

impl Reaper {
    fn start() -> Arc<Self> {
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
    fn run(&self, cmd: &mut Command) -> bool {
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

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

struct Phase {
    rate: f64,
    cpu_ms: f64,
    host_busy: f64,
    kthreads_ms: f64,
    failed: usize,
    wall: Duration,
}

/// Runs `n` commands, `par` at a time; `make(i)` builds the i-th.
fn phase(
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

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

type Side<'a> = (&'a str, Box<dyn Fn(usize) -> Command + Sync + 'a>);

/// What `compare` measured: each side's best rate over the parallelisms,
/// and each parallelism's mean rate per side.
struct Rates {
    best: Vec<f64>,
    mean: Vec<(usize, Vec<f64>)>,
}

/// Every parallelism, both sides alternated; prints one table.
fn compare(reaper: &Arc<Reaper>, title: &str, n: usize, pars: &[usize], sides: &[Side]) -> Rates {
    let rounds = env_num("CHURN_ROUNDS", 1).max(1);
    println!(
        "\n{title}: {n} per phase, {rounds} round(s), load average {}",
        loadavg()
    );
    println!(
        "{:>4}  {:<26} {:>8} {:>9} {:>12} {:>11} {:>13} {:>7}",
        "par", "", "wall s", "per s", "cpu ms/each", "kthreads ms", "host busy ms", "failed"
    );
    let mut best: Vec<f64> = vec![0.0; sides.len()];
    let mut means = Vec::new();
    for &par in pars {
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
        for round in 0..rounds {
            let mut order: Vec<usize> = (0..sides.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for k in order {
                let (name, make) = &sides[k];
                let p = phase(reaper, n, par, make.as_ref());
                println!(
                    "{:>4}  {:<26} {:>8.2} {:>9.1} {:>12.2} {:>11.2} {:>13.2} {:>7}",
                    par,
                    name,
                    p.wall.as_secs_f64(),
                    p.rate,
                    p.cpu_ms,
                    p.kthreads_ms,
                    p.host_busy,
                    p.failed
                );
                rates[k].push(p.rate);
                best[k] = best[k].max(p.rate);
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        for k in 1..sides.len() {
            println!(
                "{:>4}  mean rate of {} / {}: {:.2}",
                par,
                sides[0].0,
                sides[k].0,
                mean(&rates[0]) / mean(&rates[k])
            );
        }
        means.push((par, rates.iter().map(|r| mean(r)).collect()));
    }
    for k in 1..sides.len() {
        println!(
            "best of {:?}: {} {:.1}/s, {} {:.1}/s, ratio {:.2}",
            pars,
            sides[0].0,
            best[0],
            sides[k].0,
            best[k],
            best[0] / best[k]
        );
    }
    Rates { best, mean: means }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if args.iter().any(|f| !"churn".contains(f.as_str())) {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("churn bench: needs root; skipped");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("buntime-bench-churn-")
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    // From here on every child is waited for by the reaper alone (no
    // `Command::status`: its child would be reaped under it).
    let reaper = Reaper::start();
    let pars = env_list("CHURN_PAR", &[1, 4, 8]);
    // CHURN_N=0: the `buntime run` phases only.
    let n = env_num("CHURN_N", 100);
    if n > 0 {
        run_busybox(&reaper, dir.path(), &pars, n);
    }
    run_hello(&reaper, dir.path(), &pars);
}

/// `buntime run hello.py` against `python3 hello.py`. `CHURN_RUN_FLOOR=1`
/// adds what a run costs without the Python worker (`buntime run --
/// python3 hello.py`) and without Python (`buntime run -- /bin/true`), so
/// the CPU per run splits into runtime, worker and interpreter
/// (docs/performance.md); `CHURN_RUN_BASELINE=/path/to/an/older/buntime`
/// adds that build's `buntime run hello.py`.
fn run_hello(reaper: &Arc<Reaper>, dir: &Path, pars: &[usize]) {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let hello = examples.join("hello.py");
    let root = dir.join("state");
    let buntime_run = |bin: PathBuf, args: Vec<OsString>| {
        let root = root.clone();
        move |_| {
            let mut c = Command::new(&bin);
            c.arg("--root").arg(&root).arg("run").args(&args);
            c
        }
    };
    let mut py: Vec<Side> = vec![
        (
            "buntime run hello.py",
            Box::new(buntime_run(BUNTIME.into(), vec![hello.clone().into()])),
        ),
        (
            "python3 hello.py",
            Box::new(|_| {
                let mut c = Command::new("/usr/bin/python3");
                c.arg(&hello);
                c
            }),
        ),
    ];
    if let Some(base) = std::env::var_os("CHURN_RUN_BASELINE") {
        let side = buntime_run(base.into(), vec![hello.clone().into()]);
        py.push(("baseline run hello.py", Box::new(side)));
    }
    if std::env::var("CHURN_RUN_FLOOR").is_ok_and(|v| v == "1") {
        let mut allow = OsString::from("--allow-read=");
        allow.push(&examples);
        let no_worker = vec![
            allow,
            "--".into(),
            "/usr/bin/python3".into(),
            hello.clone().into(),
        ];
        let no_python = vec!["--".into(), "/bin/true".into()];
        py.push((
            "run -- python3 hello.py",
            Box::new(buntime_run(BUNTIME.into(), no_worker)),
        ));
        py.push((
            "run -- /bin/true",
            Box::new(buntime_run(BUNTIME.into(), no_python)),
        ));
    }
    for (_, make) in &py {
        reaper.run(&mut make(0));
    }
    let rates = compare(
        reaper,
        "buntime run hello.py against python3 hello.py",
        env_num("CHURN_RUN_N", 60).max(1),
        pars,
        &py,
    );
    // The issue's row is at 4 in parallel; else the most parallel phase.
    let at = rates
        .mean
        .iter()
        .find(|(p, _)| *p == 4)
        .or(rates.mean.last());
    if let Some((par, mean)) = at {
        summary::record(&summary::Row {
            what: &format!("buntime run hello.py, {par} in parallel"),
            value: mean[0],
            baseline: Some(("python3 hello.py", mean[1])),
            unit: "/s",
            relative: true,
            goal: summary::Goal::AtLeast,
            target: 0.6,
        });
    }
}

/// A `run` of the busybox bundle by `bin` (an OCI runtime's CLI), state in
/// `root`, container ids `churn-TAG-I`.
fn oci_run(
    bin: PathBuf,
    root: PathBuf,
    bundle: PathBuf,
    tag: String,
) -> impl Fn(usize) -> Command + Sync {
    move |i| {
        let mut c = Command::new(&bin);
        c.arg("--root")
            .arg(&root)
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(format!("churn-{tag}{i}"));
        c
    }
}

/// `/bin/true` in a busybox bundle: buntime-runc against runc (and
/// `CHURN_BASELINE`'s buntime-runc), `n` containers per phase.
fn run_busybox(reaper: &Arc<Reaper>, dir: &Path, pars: &[usize], n: usize) {
    let bundle = make_bundle(dir);
    let tag = std::process::id();
    let mut sides: Vec<Side> = vec![(
        "buntime-runc run",
        Box::new(oci_run(
            BUNTIME_RUNC.into(),
            dir.join("root-b"),
            bundle.clone(),
            format!("{tag}-b"),
        )),
    )];
    match which("runc") {
        Some(runc) => sides.push((
            "runc run",
            Box::new(oci_run(
                runc,
                dir.join("root-r"),
                bundle.clone(),
                format!("{tag}-r"),
            )),
        )),
        None => eprintln!("churn: runc not installed; its rows are skipped"),
    }
    if let Some(base) = std::env::var_os("CHURN_BASELINE") {
        sides.push((
            "baseline buntime-runc run",
            Box::new(oci_run(
                base.into(),
                dir.join("root-base"),
                bundle.clone(),
                format!("{tag}-o"),
            )),
        ));
    }
    // One of each first: page cache, the seccomp cache, cgroup parents.
    for (_, make) in &sides {
        reaper.run(&mut make(usize::MAX));
    }
    let rates = compare(
        reaper,
        "churn, /bin/true in a busybox bundle (create+start+wait+delete)",
        n,
        pars,
        &sides,
    );
    if sides.len() > 1 && sides[1].0 == "runc run" {
        summary::record(&summary::Row {
            what: "churn: run of /bin/true, best of the parallelisms",
            value: rates.best[0],
            baseline: Some(("runc", rates.best[1])),
            unit: "/s",
            relative: true,
            goal: summary::Goal::AtLeast,
            target: 4.0,
        });
    }
}
