//! Cold start: the same busybox bundle running `/bin/true` through
//! `buntime-runc run` and through Debian's `runc run`, alternated in one
//! run so both see the same machine. Prints median and p90 of each and the
//! ratio. A plain process start is the floor. Needs root.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 40;

fn make_bundle(dir: &Path) -> PathBuf {
    let bundle = dir.join("bundle");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/make-bundle.sh");
    let ok = Command::new("bash")
        .arg(script)
        .arg(&bundle)
        .arg("/bin/true")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "make-bundle.sh failed");
    bundle
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
    if runc.is_some() {
        results.push(("runc run", Vec::new()));
    } else {
        eprintln!("coldstart: runc not installed; its row is skipped");
    }
    for i in 0..RUNS {
        let id = format!("cold-{i}");
        if let Some(d) = time_one(Command::new("/bin/true")) {
            results[0].1.push(d);
        }
        let mut c = Command::new(ours);
        c.arg("--root")
            .arg(dir.path().join("root-b"))
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(&id);
        if let Some(d) = time_one(c) {
            results[1].1.push(d);
        }
        if let Some(runc) = &runc {
            let mut c = Command::new(runc);
            c.arg("--root")
                .arg(dir.path().join("root-r"))
                .args(["run", "--bundle"])
                .arg(&bundle)
                .arg(&id);
            if let Some(d) = time_one(c) {
                results[2].1.push(d);
            }
        }
    }
    println!("\ncold start of /bin/true in a busybox bundle, {RUNS} runs each, alternated");
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
    if let (Some((_, b)), Some((_, r))) = (medians.get(1), medians.get(2)) {
        if !r.is_zero() {
            println!(
                "buntime-runc / runc median ratio: {:.2} (target <= 0.70)",
                b.as_secs_f64() / r.as_secs_f64()
            );
        }
    }
    println!(
        "note: buntime-runc also applies the default policy (seccomp, Landlock, cgroup limits); runc runs the bundle as is."
    );
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}
