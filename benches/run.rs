//! What `buntime run` adds to a script, in one run: `buntime run hello.py`
//! against `python3 hello.py`, `buntime run hello.ts` against
//! `bun hello.ts` (medians and the added milliseconds, runs alternated),
//! the same wall with a pool of ready sandboxes (`buntime run --pool`),
//! and the supervisor's memory (RSS) while a sandbox runs. Needs root.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "shared/summary.rs"]
mod summary;

const BUNTIME: &str = env!("CARGO_BIN_EXE_buntime");
const ROUNDS: usize = 30;

fn time(cmd: &mut Command) -> Duration {
    let start = Instant::now();
    let st = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .status()
        .expect("spawn");
    assert!(st.success(), "{cmd:?} failed");
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Alternates `sandboxed` and `bare`; prints both medians and the gap, and
/// returns them.
fn compare(
    label: &str,
    sandboxed: &mut dyn FnMut() -> Command,
    bare: &mut dyn FnMut() -> Command,
) -> (Duration, Duration) {
    // Warm caches (page cache, staged worker files) first.
    time(&mut sandboxed());
    time(&mut bare());
    let (mut s, mut b) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        s.push(time(&mut sandboxed()));
        b.push(time(&mut bare()));
    }
    let (s, b) = (median(s), median(b));
    println!(
        "{label:<28} sandboxed {:7.1} ms   bare {:7.1} ms   added {:6.1} ms",
        ms(s),
        ms(b),
        ms(s) - ms(b)
    );
    (s, b)
}

/// The wall row with a pool (`buntime pool fill`, docs/run.md): each
/// round fills a pool of one (untimed, returns once the sandbox is ready),
/// then times `buntime run --pool hello.py`, alternated with a fresh run
/// and bare Python. A round the pool did not serve is counted, not timed.
fn pooled_wall(root: &Path, hello: &Path) {
    let buntime = |args: &[&str]| {
        let mut c = Command::new(BUNTIME);
        c.arg("--root").arg(root).args(args).arg(hello);
        c
    };
    let python = || {
        let mut c = Command::new("/usr/bin/python3");
        c.arg(hello);
        c
    };
    let pool_dir = root.join("pool");
    let (mut pooled, mut fresh, mut bare, mut missed) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for i in 0..ROUNDS + 1 {
        time(&mut buntime(&["pool", "fill"]));
        let p = time(&mut buntime(&["run", "--pool"]));
        let served = !pool_dir.exists();
        if !served {
            missed += 1;
            time(&mut buntime(&["pool", "drain"]));
        }
        let f = time(&mut buntime(&["run"]));
        let b = time(&mut python());
        // The first round warms caches.
        if i > 0 {
            if served {
                pooled.push(p);
            }
            fresh.push(f);
            bare.push(b);
        }
    }
    if pooled.is_empty() {
        println!("run --pool hello.py: the pool served no run ({missed} missed)");
        return;
    }
    let (p, f, b) = (median(pooled), median(fresh), median(bare));
    println!(
        "{:<28} pooled {:7.1} ms   fresh {:7.1} ms   bare {:7.1} ms   pooled/bare {:.2}x ({missed} not served)",
        "run --pool hello.py",
        ms(p),
        ms(f),
        ms(b),
        ms(p) / ms(b)
    );
    summary::record(&summary::Row {
        what: "buntime run --pool hello.py (pool of ready sandboxes), one run, wall (median)",
        value: ms(p),
        baseline: Some(("python3 hello.py", ms(b))),
        unit: "ms",
        relative: true,
        goal: summary::Goal::AtMost,
        target: 1.5,
    });
}

fn supervisor_rss(root: &Path, script: &Path) -> Option<u64> {
    let mut child = Command::new(BUNTIME)
        .arg("--root")
        .arg(root)
        .arg("run")
        .arg(script)
        .stdout(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .ok()?;
    let id = format!("run-{}", child.id());
    let mut rss = None;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(50));
        let out = Command::new("pgrep")
            .args(["-f", &format!("supervise {id}")])
            .output()
            .ok()?;
        if let Some(pid) = String::from_utf8_lossy(&out.stdout).lines().next() {
            // Give it a moment to finish setting up, then read.
            std::thread::sleep(Duration::from_millis(300));
            let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).ok()?;
            rss = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok());
            break;
        }
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGTERM,
    );
    let _ = child.wait();
    rss
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if args.iter().any(|f| !"run".contains(f.as_str())) {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("run bench: needs root; skipped");
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::Builder::new()
        .prefix("buntime-bench-run-")
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    let root = dir.path().join("state");
    let hello_py = repo.join("examples/hello.py");
    let hello_ts = repo.join("examples/hello.ts");
    let run = |script: PathBuf| {
        let root = root.clone();
        move || {
            let mut c = Command::new(BUNTIME);
            c.arg("--root").arg(&root).arg("run").arg(&script);
            c
        }
    };
    println!("buntime run: median of {ROUNDS}, alternated with the bare interpreter");
    let (s, b) = compare(
        "hello.py (/usr/bin/python3)",
        &mut run(hello_py.clone()),
        &mut || {
            let mut c = Command::new("/usr/bin/python3");
            c.arg(&hello_py);
            c
        },
    );
    summary::record(&summary::Row {
        what: "buntime run hello.py, one run, wall (median)",
        value: ms(s),
        baseline: Some(("python3 hello.py", ms(b))),
        unit: "ms",
        relative: true,
        goal: summary::Goal::AtMost,
        target: 1.5,
    });
    pooled_wall(&root, &hello_py);
    let bun = repo.join(".build/bun/bun");
    if bun.exists() {
        compare("hello.ts (bun)", &mut run(hello_ts.clone()), &mut || {
            let mut c = Command::new(&bun);
            c.arg(&hello_ts);
            c
        });
    } else {
        println!(
            "hello.ts: no Bun at {} (hack/install-bun.sh); skipped",
            bun.display()
        );
    }
    let sleeper = dir.path().join("sleep.py");
    std::fs::write(&sleeper, "import time\ntime.sleep(30)\n").expect("write");
    match supervisor_rss(&root, &sleeper) {
        Some(kb) => {
            println!(
                "supervisor RSS while a sandbox runs: {:.1} MiB (target <= 4 MiB)",
                kb as f64 / 1024.0
            );
            summary::record(&summary::Row {
                what: "supervisor RSS, one sandbox",
                value: kb as f64 / 1024.0,
                baseline: None,
                unit: "MiB",
                relative: false,
                goal: summary::Goal::AtMost,
                target: 4.0,
            });
        }
        None => println!("supervisor RSS: not measured (supervisor not found)"),
    }
}
