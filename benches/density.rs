//! Idle density: `DENSITY_N` (200) sandboxes at once, each `buntime run
//! sleep.py` under the default policy, and what each one costs while it
//! sleeps:
//!
//! * the supervisor's RSS and PSS (`/proc/PID/smaps_rollup`);
//! * the `buntime run` process that waits for it (RSS, PSS);
//! * the sandbox's own processes (PSS) and its memory cgroup
//!   (`memory.usage_in_bytes`, `memory.kmem.usage_in_bytes`: pages and
//!   kernel objects charged to it);
//! * kernel objects not charged to any sandbox, as far as measurable:
//!   deltas of /proc/meminfo (Slab, KernelStack, PageTables, MemAvailable)
//!   from before the first start to when all are up, divided by N. Other
//!   work on the host moves these; they are labelled as such;
//! * the CPU the idle fleet uses over `DENSITY_IDLE_S` (5) seconds.
//!
//! Then every sandbox is stopped (SIGTERM to `buntime run`, which passes
//! it on) and the bench checks nothing is left (processes, cgroups, state).
//! `DENSITY_N=0` skips it. `DENSITY_RUNC=1` adds the same for
//! `buntime-runc create`/`start` of busybox `sleep` containers under the
//! engine default policy (`DENSITY_RUNC_BIN=/path/to/buntime-runc` measures
//! another build), deleted with `delete --force`. Needs root.

#[path = "shared/summary.rs"]
mod summary;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BUNTIME: &str = env!("CARGO_BIN_EXE_buntime");
const MEMCG: &str = "/sys/fs/cgroup/memory/buntime";

fn meminfo() -> HashMap<String, i64> {
    fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.to_string(), v.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

/// (RSS, PSS) in KiB.
fn rss_pss(pid: i32) -> (u64, u64) {
    (smaps(pid, "Rss:"), smaps(pid, "Pss:"))
}

/// One field of `/proc/PID/smaps_rollup`, in KiB.
fn smaps(pid: i32, key: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    get(key)
}

fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
    {
        let Ok(task) = task else { continue };
        let text = fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    out
}

fn cmdline(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// user + sys ticks of a process (its threads included).
fn ticks(pid: i32) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which may hold spaces.
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

fn read_u64(p: &Path) -> u64 {
    fs::read_to_string(p)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

fn procs(cg: &Path) -> Vec<i32> {
    fs::read_to_string(cg.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

struct Sandbox {
    child: Child,
    cg: PathBuf,
}

impl Sandbox {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The sandbox's script runs (a python3 in its memory cgroup).
    fn up(&self) -> bool {
        procs(&self.cg)
            .iter()
            .any(|p| cmdline(*p).contains("sleep.py"))
    }

    fn supervisor(&self) -> Option<i32> {
        children(self.pid())
            .into_iter()
            .find(|c| cmdline(*c).contains(" supervise "))
    }
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn mib(kib: f64) -> f64 {
    kib / 1024.0
}

/// N detached busybox `sleep` containers through `buntime-runc`: the
/// supervisor's memory, the container's memory cgroup, meminfo deltas.
fn runc_fleet(n: usize, dir: &Path) {
    let bin = std::env::var_os("DENSITY_RUNC_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_buntime-runc")));
    let bundle = dir.join("bundle");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/make-bundle.sh");
    let made = Command::new("bash")
        .arg(script)
        .arg(&bundle)
        .args(["sleep", "3600"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !made {
        return println!("buntime-runc density: make-bundle.sh failed");
    }
    let root = dir.join("state-runc");
    let rt = |args: &[&str]| {
        Command::new(&bin)
            .arg("--root")
            .arg(&root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    println!(
        "\nidle density: {n} busybox `sleep` containers through {} (engine default policy)",
        bin.display()
    );
    let before = meminfo();
    let start = Instant::now();
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("density-{}-{i}", std::process::id());
        let b = bundle.to_string_lossy().into_owned();
        if rt(&["create", "--bundle", &b, &id]) && rt(&["start", &id]) {
            ids.push(id);
        }
    }
    println!(
        "started {} of {n} in {:.1} s",
        ids.len(),
        start.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(2));
    let after = meminfo();
    let (mut rss, mut pss, mut shmem, mut cg) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for id in &ids {
        let state = fs::read_to_string(root.join(".buntime").join(id).join("buntime.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        if let Some(pid) = state
            .as_ref()
            .and_then(|v| v["supervisorPid"].as_i64())
            .map(|p| p as i32)
        {
            let (r, p) = rss_pss(pid);
            rss.push(r);
            pss.push(p);
            shmem.push(smaps(pid, "Pss_Shmem:"));
        }
        cg.push(read_u64(&Path::new(MEMCG).join(id).join("memory.usage_in_bytes")) / 1024);
    }
    let avg = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
    println!("per container (median / mean, MiB):");
    for (label, v) in [
        ("supervisor RSS", &rss),
        ("supervisor PSS", &pss),
        ("  of which shmem (a sealed memfd copy)", &shmem),
        ("container memory cgroup usage", &cg),
    ] {
        println!(
            "  {label:<46} {:>7.2} / {:>7.2}   (n={})",
            mib(median(v.clone()) as f64),
            mib(avg(v)),
            v.len()
        );
    }
    let per = |k: &str| {
        (after.get(k).unwrap_or(&0) - before.get(k).unwrap_or(&0)) as f64 / ids.len().max(1) as f64
    };
    println!("host /proc/meminfo deltas per container (other work on the host included, MiB):");
    for k in [
        "MemAvailable",
        "Shmem",
        "Slab",
        "SUnreclaim",
        "KernelStack",
        "PageTables",
    ] {
        println!("  {k:<46} {:>+8.2}", mib(per(k)));
    }
    let stop = Instant::now();
    let failed = ids
        .iter()
        .filter(|id| !rt(&["delete", "--force", id]))
        .count();
    let left = ids
        .iter()
        .filter(|id| Path::new(MEMCG).join(id).exists() || root.join(id).exists())
        .count();
    println!(
        "deleted in {:.1} s; failed deletes: {failed}; cgroups or state left: {left}",
        stop.elapsed().as_secs_f64()
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if args.iter().any(|f| !"density".contains(f.as_str())) {
        return;
    }
    let n: usize = std::env::var("DENSITY_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    if n == 0 {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("density bench: needs root; skipped");
        return;
    }
    let idle_s: u64 = std::env::var("DENSITY_IDLE_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::Builder::new()
        .prefix("buntime-bench-density-")
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    let root = dir.path().join("state");
    let script = dir.path().join("sleep.py");
    fs::write(&script, "import time\ntime.sleep(3600)\n").expect("write");
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\nidle density: {n} sandboxes (`buntime run sleep.py`, default policy), load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let before = meminfo();
    let start = Instant::now();
    let mut fleet: Vec<Sandbox> = Vec::with_capacity(n);
    // A few starts in flight at a time: the figure is what idle sandboxes
    // cost, not how fast they come up (benches/churn.rs).
    let mut failed = 0;
    for _ in 0..n {
        let child = match Command::new(BUNTIME)
            .arg("--root")
            .arg(&root)
            .arg("run")
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("density: spawn: {e}");
                failed += 1;
                continue;
            }
        };
        let cg = Path::new(MEMCG).join(format!("run-{}", child.id()));
        fleet.push(Sandbox { child, cg });
        while fleet.iter().filter(|s| !s.up()).count() >= 4 {
            std::thread::sleep(Duration::from_millis(5));
            if start.elapsed() > Duration::from_secs(60 + n as u64) {
                break;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while fleet.iter().any(|s| !s.up()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let up = fleet.iter().filter(|s| s.up()).count();
    println!(
        "started {up} of {n} in {:.1} s ({failed} failed to spawn)",
        start.elapsed().as_secs_f64()
    );
    // Let start-up garbage settle (freed pages, RCU-freed objects).
    std::thread::sleep(Duration::from_secs(2));
    let after = meminfo();

    let mut sup_rss = Vec::new();
    let mut sup_pss = Vec::new();
    let mut sup_anon = Vec::new();
    let mut sup_shmem = Vec::new();
    let mut cli_rss = Vec::new();
    let mut cli_pss = Vec::new();
    let mut box_pss = Vec::new();
    let mut cg_usage = Vec::new();
    let mut cg_kmem = Vec::new();
    let mut all_pids = Vec::new();
    for s in &fleet {
        let (r, p) = rss_pss(s.pid());
        cli_rss.push(r);
        cli_pss.push(p);
        all_pids.push(s.pid());
        if let Some(sup) = s.supervisor() {
            let (r, p) = rss_pss(sup);
            sup_rss.push(r);
            sup_pss.push(p);
            sup_anon.push(smaps(sup, "Pss_Anon:"));
            sup_shmem.push(smaps(sup, "Pss_Shmem:"));
            all_pids.push(sup);
        }
        let inside = procs(&s.cg);
        box_pss.push(inside.iter().map(|p| rss_pss(*p).1).sum::<u64>());
        all_pids.extend(inside);
        cg_usage.push(read_u64(&s.cg.join("memory.usage_in_bytes")) / 1024);
        cg_kmem.push(read_u64(&s.cg.join("memory.kmem.usage_in_bytes")) / 1024);
    }
    let t0: u64 = all_pids.iter().map(|p| ticks(*p)).sum();
    std::thread::sleep(Duration::from_secs(idle_s));
    let t1: u64 = all_pids.iter().map(|p| ticks(*p)).sum();
    // SAFETY: sysconf has no memory arguments.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;

    let avg = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
    println!("per sandbox (median / mean, MiB):");
    let line = |label: &str, v: &[u64]| {
        println!(
            "  {label:<46} {:>7.2} / {:>7.2}   (n={})",
            mib(median(v.to_vec()) as f64),
            mib(avg(v)),
            v.len()
        )
    };
    line("supervisor RSS", &sup_rss);
    line("supervisor PSS", &sup_pss);
    for (what, v) in [
        ("supervisor RSS per idle sandbox (median)", &sup_rss),
        ("supervisor PSS per idle sandbox (median)", &sup_pss),
    ] {
        summary::record(&summary::Row {
            what: &format!("{what}, {up} at once"),
            value: mib(median(v.to_vec()) as f64),
            baseline: None,
            unit: "MiB",
            relative: false,
            goal: summary::Goal::AtMost,
            target: 4.0,
        });
    }
    line("  of which anonymous (heap, stacks, rings)", &sup_anon);
    line(
        "  of which shmem (a sealed memfd copy, segments)",
        &sup_shmem,
    );
    line("`buntime run` process RSS", &cli_rss);
    line("`buntime run` process PSS", &cli_pss);
    line("sandbox processes PSS (python3 + worker)", &box_pss);
    line("sandbox memory cgroup usage (pages + kmem)", &cg_usage);
    line("  of which kernel memory (memory.kmem)", &cg_kmem);
    let total = avg(&sup_pss) + avg(&cli_pss) + avg(&cg_usage);
    println!(
        "  {:<46} {:>7.2} MiB   (supervisor PSS + runtime PSS + cgroup usage)",
        "total charged per sandbox",
        mib(total)
    );
    let per = |k: &str| {
        (after.get(k).unwrap_or(&0) - before.get(k).unwrap_or(&0)) as f64 / up.max(1) as f64
    };
    println!("host /proc/meminfo deltas per sandbox (other work on the host included, MiB):");
    for k in [
        "MemAvailable",
        "Slab",
        "SUnreclaim",
        "KernelStack",
        "PageTables",
        "Shmem",
    ] {
        println!("  {k:<46} {:>+8.2}", mib(per(k)));
    }
    println!(
        "idle CPU of the whole fleet over {idle_s} s: {:.1} % of one CPU ({:.3} % per sandbox)",
        (t1 - t0) as f64 / hz / idle_s as f64 * 100.0,
        (t1 - t0) as f64 / hz / idle_s as f64 * 100.0 / up.max(1) as f64
    );

    // Stop everything; check nothing is left.
    let stop = Instant::now();
    for s in &fleet {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(s.pid()),
            nix::sys::signal::SIGTERM,
        );
    }
    let mut leftover = 0;
    for s in &mut fleet {
        let limit = Duration::from_secs(30).saturating_sub(stop.elapsed());
        let waited = Instant::now();
        loop {
            if let Ok(Some(_)) = s.child.try_wait() {
                break;
            }
            if waited.elapsed() > limit {
                let _ = s.child.kill();
                let _ = s.child.wait();
                leftover += 1;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let cgroups_left = fleet.iter().filter(|s| s.cg.exists()).count();
    let state_left = fs::read_dir(&root)
        .map(|d| {
            d.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0);
    println!(
        "stopped in {:.1} s; killed after 30 s: {leftover}; memory cgroups left: {cgroups_left}; state entries left: {state_left}",
        stop.elapsed().as_secs_f64()
    );
    if std::env::var("DENSITY_RUNC").as_deref() == Ok("1") {
        runc_fleet(n, dir.path());
    }
}
