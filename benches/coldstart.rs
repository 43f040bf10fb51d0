//! Cold start: the same busybox bundle running `/bin/true` through
//! `buntime-runc run` and through Debian's `runc run`, alternated in one
//! run so both see the same machine. Prints median and p90 of each and the
//! ratio. A plain process start is the floor. buntime-runc also applies
//! the default policy (seccomp, Landlock, masks, limits), which the plain
//! bundle does not ask runc for; a third row gives runc the effective spec
//! buntime runs, so the two runtimes are compared doing the same work.
//! `COLDSTART_BASELINE=/path/to/an/older/buntime-runc` adds that build's
//! row, alternated in the same loop, and the ratio of the two medians;
//! `COLDSTART_RUNS=N` runs each N times instead of 40.
//! Needs root.

mod shared;
use shared::make_bundle;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 40;

/// A copy of the bundle whose config.json is the effective spec that
/// buntime-runc derives from it (without its cgroup path).
fn effective_bundle(ours: &str, bundle: &Path, dir: &Path) -> Option<PathBuf> {
    let root = dir.join("root-e");
    let ok = Command::new(ours)
        .arg("--root")
        .arg(&root)
        .args(["create", "--bundle"])
        .arg(bundle)
        .arg("probe")
        .stdout(Stdio::null())
        .status()
        .ok()?
        .success();
    if !ok {
        return None;
    }
    // The effective spec, seccomp profile included (libcontainer's copy
    // may leave it to a precompiled program).
    let text = std::fs::read(root.join(".buntime/probe/effective-spec.json")).ok();
    let _ = Command::new(ours)
        .arg("--root")
        .arg(&root)
        .args(["delete", "--force", "probe"])
        .status();
    let mut spec: serde_json::Value = serde_json::from_slice(&text?).ok()?;
    if let Some(linux) = spec.get_mut("linux").and_then(|l| l.as_object_mut()) {
        linux.remove("cgroupsPath");
    }
    // The supervisor's directory went with the probe (runc has none).
    if let Some(mounts) = spec.get_mut("mounts").and_then(|m| m.as_array_mut()) {
        mounts.retain(|m| m["destination"] != "/run/buntime");
    }
    let out = dir.join("bundle-effective");
    std::fs::create_dir_all(&out).ok()?;
    std::fs::write(out.join("config.json"), spec.to_string()).ok()?;
    Some(out)
}

fn time_one(mut cmd: Command) -> Option<Duration> {
    let start = Instant::now();
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    let took = start.elapsed();
    status.success().then_some(took)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("coldstart: needs root; skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = make_bundle(dir.path());
    let ours = env!("CARGO_BIN_EXE_buntime-runc");
    let runc = which("runc");
    let mut results: Vec<(&str, Vec<Duration>)> = vec![
        ("plain /bin/true", Vec::new()),
        ("buntime-runc run", Vec::new()),
    ];
    let runs = std::env::var("COLDSTART_RUNS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(RUNS);
    let baseline = std::env::var_os("COLDSTART_BASELINE").map(PathBuf::from);
    if baseline.is_some() {
        results.push(("baseline run", Vec::new()));
    }
    let base_row = results.len() - 1;
    let effective = effective_bundle(ours, &bundle, dir.path());
    let runc_row = results.len();
    if runc.is_some() {
        results.push(("runc run", Vec::new()));
        results.push(("runc run, effective", Vec::new()));
    } else {
        eprintln!("coldstart: runc not installed; its row is skipped");
    }
    for i in 0..runs {
        let id = format!("cold-{i}");
        if let Some(d) = time_one(Command::new("/bin/true")) {
            results[0].1.push(d);
        }
        // The two builds take turns going first: whatever the previous
        // run leaves the kernel doing (RCU grace periods, writeback) then
        // falls on both alike.
        let mut pair = vec![(1, PathBuf::from(ours), "root-b")];
        if let Some(base) = &baseline {
            pair.push((base_row, base.clone(), "root-base"));
            if i % 2 == 1 {
                pair.reverse();
            }
        }
        for (row, exe, root) in pair {
            let mut c = Command::new(exe);
            c.arg("--root")
                .arg(dir.path().join(root))
                .args(["run", "--bundle"])
                .arg(&bundle)
                .arg(&id);
            if let Some(d) = time_one(c) {
                results[row].1.push(d);
            }
        }
        if let Some(runc) = &runc {
            let mut c = Command::new(runc);
            c.arg("--root")
                .arg(dir.path().join("root-r"))
                .args(["run", "--bundle"])
                .arg(&bundle)
                .arg(&id);
            if let Some(d) = time_one(c) {
                results[runc_row].1.push(d);
            }
            if let Some(eff) = &effective {
                let mut c = Command::new(runc);
                c.arg("--root")
                    .arg(dir.path().join("root-r"))
                    .args(["run", "--bundle"])
                    .arg(eff)
                    .arg(format!("eff-{i}"));
                if let Some(d) = time_one(c) {
                    results[runc_row + 1].1.push(d);
                }
            }
        }
    }
    println!("\ncold start of /bin/true in a busybox bundle, {runs} runs each, alternated");
    println!(
        "{:<20} {:>6} {:>12} {:>12}",
        "", "runs", "median ms", "p90 ms"
    );
    let mut medians = Vec::new();
    for (name, mut v) in results {
        v.sort();
        let med = percentile(&v, 0.5);
        medians.push((name, med));
        println!(
            "{:<20} {:>6} {:>12.2} {:>12.2}",
            name,
            v.len(),
            ms(med),
            ms(percentile(&v, 0.9))
        );
    }
    if let (Some((_, b)), Some((_, r))) = (medians.get(1), medians.get(runc_row)) {
        if !r.is_zero() {
            println!(
                "buntime-runc / runc median ratio: {:.2} (target <= 0.70)",
                b.as_secs_f64() / r.as_secs_f64()
            );
        }
    }
    if let (Some((_, b)), Some((_, r))) = (medians.get(1), medians.get(runc_row + 1)) {
        if !r.is_zero() {
            println!(
                "buntime-runc / runc-with-the-same-effective-spec median ratio: {:.2}",
                b.as_secs_f64() / r.as_secs_f64()
            );
        }
    }
    if baseline.is_some() {
        if let (Some((_, b)), Some((_, r))) = (medians.get(1), medians.get(base_row)) {
            if !r.is_zero() {
                println!(
                    "buntime-runc / baseline median ratio: {:.3}",
                    b.as_secs_f64() / r.as_secs_f64()
                );
            }
        }
    }
    println!(
        "note: buntime-runc applies the default policy (seccomp, Landlock, masks, limits); \"runc run\" runs the bundle as is, \"runc run, effective\" runs buntime's effective spec."
    );
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}
