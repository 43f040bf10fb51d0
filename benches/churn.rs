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
//! * beside each, the "kernel floor" (benches/shared/floor.rs): the same
//!   container's kernel work with no runtime around it, read from the
//!   effective spec buntime-runc writes for the bundle (busybox
//!   `/bin/true`; a host-root bundle for `python3 hello.py`), with its CPU
//!   per container against what the targets need (`CHURN_FLOOR=0` skips).
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

#[path = "shared/floor.rs"]
mod floor;
#[path = "shared/measure.rs"]
mod measure;
mod shared;
#[path = "shared/summary.rs"]
mod summary;
use measure::{loadavg, phase, Reaper};
use shared::make_bundle;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

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
    /// Each side's CPU per container (rusage + kthreads), mean of phases.
    cpu: Vec<f64>,
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
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
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
                cpu[k].push(p.cpu_ms + p.kthreads_ms);
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
    let cpu = cpu
        .iter()
        .map(|c| c.iter().sum::<f64>() / c.len().max(1) as f64);
    Rates {
        best,
        mean: means,
        cpu: cpu.collect(),
    }
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
    // CHURN_N=0: the `buntime run` phases only.
    let n = env_num("CHURN_N", 100);
    // Made before the reaper starts: make-bundle.sh is waited for by
    // `Command::status`.
    let bundle = (n > 0).then(|| make_bundle(dir.path()));
    // From here on every child is waited for by the reaper alone (no
    // `Command::status`: its child would be reaped under it).
    let reaper = Reaper::start();
    let pars = env_list("CHURN_PAR", &[1, 4, 8]);
    if let Some(bundle) = bundle {
        run_busybox(&reaper, dir.path(), &bundle, &pars, n);
    }
    run_hello(&reaper, dir.path(), &pars);
    let left = floor::leftovers(&std::process::id().to_string());
    if left > 0 {
        eprintln!("churn: the kernel floor left {left} cgroup directories (removed now)");
    }
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
    py.extend(python_floor(reaper, dir, &hello));
    let rates = compare(
        reaper,
        "buntime run hello.py against python3 hello.py",
        env_num("CHURN_RUN_N", 60).max(1),
        pars,
        &py,
    );
    hello_summary(&py, &rates);
}

/// The issue's `buntime run hello.py` row (at 4 in parallel, else the
/// most parallel phase), and the floor's beside it.
fn hello_summary(py: &[Side], rates: &Rates) {
    let at = rates
        .mean
        .iter()
        .find(|(p, _)| *p == 4)
        .or(rates.mean.last());
    let Some((par, mean)) = at else {
        return;
    };
    summary::record(&summary::Row {
        what: &format!("buntime run hello.py, {par} in parallel"),
        value: mean[0],
        baseline: Some(("python3 hello.py", mean[1])),
        unit: "/s",
        relative: true,
        goal: summary::Goal::AtLeast,
        target: 0.6,
    });
    let Some(fl) = py.iter().position(|(n, _)| *n == FLOOR_PY) else {
        return;
    };
    summary::record(&summary::Row {
        what: &format!("kernel floor + python3 hello.py (no runtime), {par} in parallel"),
        value: mean[fl],
        baseline: Some(("python3 hello.py", mean[1])),
        unit: "/s",
        relative: true,
        goal: summary::Goal::AtLeast,
        target: 0.6,
    });
    let need = rates.cpu[1] / 0.6;
    println!(
        "CPU per run (rusage + kthreads, mean of phases): buntime run hello.py {:.2} ms, \
         python3 {:.2}, kernel floor + python3 {:.2}; 0.6x python3 needs <= {need:.2}; \
         buntime run is {:.2} ms above the floor",
        rates.cpu[0],
        rates.cpu[1],
        rates.cpu[fl],
        rates.cpu[0] - rates.cpu[fl]
    );
    summary::record(&summary::Row {
        what: "buntime run hello.py: CPU per run (target: python3's / 0.6)",
        value: rates.cpu[0],
        baseline: Some(("kernel floor + python3", rates.cpu[fl])),
        unit: "ms",
        relative: false,
        goal: summary::Goal::AtMost,
        target: need,
    });
}

/// The kernel floor (benches/shared/floor.rs) of a container that runs
/// `python3 hello.py`: a bundle of the host's /usr, /lib, /bin, /etc
/// (read-only binds, hack/make-bundle.sh `HOSTROOT=1`) and the examples
/// directory, under buntime-runc's engine default. Not `buntime run`'s
/// default policy (no user namespace, no Landlock, no worker): the kernel
/// work of a sandbox plus the interpreter's.
fn python_floor<'a>(reaper: &Arc<Reaper>, dir: &Path, hello: &Path) -> Option<Side<'a>> {
    if std::env::var("CHURN_FLOOR").is_ok_and(|v| v == "0") {
        return None;
    }
    let bundle = dir.join("bundle-py");
    let mut make = Command::new("bash");
    make.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/make-bundle.sh"))
        .arg(&bundle)
        .args([Path::new("/usr/bin/python3"), hello])
        .env("HOSTROOT", "1");
    let examples = hello.parent()?;
    let config = bundle.join("config.json");
    let added = reaper.run(&mut make)
        && std::fs::read_to_string(&config)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|mut spec| {
                let bind = serde_json::json!({"destination": examples, "type": "bind",
                    "source": examples, "options": ["bind", "ro", "nosuid", "nodev"]});
                spec["mounts"].as_array_mut()?.push(bind);
                std::fs::write(&config, spec.to_string()).ok()
            })
            .is_some();
    if !added {
        eprintln!("churn: python floor skipped: its bundle could not be made");
        return None;
    }
    let plan = floor_plan(reaper, dir, &bundle, &format!("{}-py", std::process::id()))?;
    Some((FLOOR_PY, Box::new(move |i| plan.command(i))))
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
fn run_busybox(reaper: &Arc<Reaper>, dir: &Path, bundle: &Path, pars: &[usize], n: usize) {
    let tag = std::process::id();
    let mut sides: Vec<Side> = vec![(
        "buntime-runc run",
        Box::new(oci_run(
            BUNTIME_RUNC.into(),
            dir.join("root-b"),
            bundle.to_path_buf(),
            format!("{tag}-b"),
        )),
    )];
    match which("runc") {
        Some(runc) => sides.push((
            "runc run",
            Box::new(oci_run(
                runc,
                dir.join("root-r"),
                bundle.to_path_buf(),
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
                bundle.to_path_buf(),
                format!("{tag}-o"),
            )),
        ));
    }
    // One of each first: page cache, the seccomp cache, cgroup parents.
    for (_, make) in &sides {
        reaper.run(&mut make(usize::MAX));
    }
    // After the warm-up: the cgroup parents and mount points exist.
    let plan = floor_plan(reaper, dir, bundle, &tag.to_string());
    if let Some(plan) = &plan {
        let plan = Arc::clone(plan);
        sides.push((FLOOR, Box::new(move |i| plan.command(i))));
    }
    let rates = compare(
        reaper,
        "churn, /bin/true in a busybox bundle (create+start+wait+delete)",
        n,
        pars,
        &sides,
    );
    if let Some(plan) = &plan {
        floor_leftovers(plan);
    }
    busybox_summary(&sides, &rates);
}

/// The kernel floor's side names (benches/shared/floor.rs).
const FLOOR: &str = "kernel floor";
const FLOOR_PY: &str = "kernel floor + python3";

/// The kernel floor for `bundle` under buntime-runc's engine default, or
/// None (`CHURN_FLOOR=0`, or it could not be prepared: said on stderr).
fn floor_plan(
    reaper: &Arc<Reaper>,
    dir: &Path,
    bundle: &Path,
    tag: &str,
) -> Option<Arc<floor::Plan>> {
    if std::env::var("CHURN_FLOOR").is_ok_and(|v| v == "0") {
        return None;
    }
    let work = dir.join(format!("floor-{tag}"));
    let run = |c: &mut Command| reaper.run(c);
    let plan = floor::from_runtime(Path::new(BUNTIME_RUNC), &run, bundle, &work, tag);
    let plan = plan
        .map_err(|e| eprintln!("churn: kernel floor skipped: {e}"))
        .ok()?;
    // It must be the container it claims to be (and one first, as for
    // the other sides).
    let failed = plan.probe(&run);
    floor_leftovers(&plan);
    if !failed.is_empty() || !reaper.run(&mut plan.command(usize::MAX)) {
        eprintln!("churn: kernel floor skipped: its container failed {failed:?}");
        return None;
    }
    Some(plan)
}

/// The floor's cgroups must all be gone (each P0 removes its own).
fn floor_leftovers(plan: &floor::Plan) {
    let left = plan.leftovers();
    if left > 0 {
        eprintln!("churn: kernel floor left {left} cgroup directories (removed now)");
    }
}

/// The issue's churn rows, and the floor's (a row of its own and the CPU
/// per container against what 4× runc would need).
fn busybox_summary(sides: &[Side], rates: &Rates) {
    let at = |name: &str| sides.iter().position(|(n, _)| *n == name);
    let Some(runc) = at("runc run") else {
        return;
    };
    summary::record(&summary::Row {
        what: "churn: run of /bin/true, best of the parallelisms",
        value: rates.best[0],
        baseline: Some(("runc", rates.best[runc])),
        unit: "/s",
        relative: true,
        goal: summary::Goal::AtLeast,
        target: 4.0,
    });
    let Some(fl) = at(FLOOR) else {
        return;
    };
    summary::record(&summary::Row {
        what: "churn: kernel floor alone (no runtime), best of the parallelisms",
        value: rates.best[fl],
        baseline: Some(("runc", rates.best[runc])),
        unit: "/s",
        relative: true,
        goal: summary::Goal::AtLeast,
        target: 4.0,
    });
    let need = rates.cpu[runc] / 4.0;
    println!(
        "CPU per container (rusage + kthreads, mean of phases): buntime-runc {:.2} ms, runc {:.2}, \
         kernel floor {:.2}; 4x runc needs <= {need:.2}; buntime-runc is {:.2} ms above the floor",
        rates.cpu[0],
        rates.cpu[runc],
        rates.cpu[fl],
        rates.cpu[0] - rates.cpu[fl]
    );
    summary::record(&summary::Row {
        what: "churn: CPU per container, buntime-runc (target: runc's / 4)",
        value: rates.cpu[0],
        baseline: Some(("kernel floor", rates.cpu[fl])),
        unit: "ms",
        relative: false,
        goal: summary::Goal::AtMost,
        target: need,
    });
}
