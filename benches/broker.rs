//! The permission broker's cost through the real supervisor, hot (back to
//! back), in one run:
//!
//! * the Rust worker library (`buntime-test-worker` in a busybox container
//!   under `buntime-runc`): an allowed FS_READ of a small file (request,
//!   policy decision, audit line, fd passed over the control socket, file
//!   read) against opening and reading the same file directly, and an
//!   FS_READ of a `filesystem.deny` path (decision, audit line, DENY);
//! * the Python worker (`buntime run bench.py`, `import buntime`):
//!   `buntime.read_file` of a host file the broker grants, and of
//!   `/etc/shadow` (refused), with the ctypes client over
//!   libbuntime_ipc.so (the default) and with the pure-Python doorbell
//!   client (`BUNTIME_PY_CLIENT=python`), run alternately, twice each.
//!
//! Besides the worker's wall-clock round trip, the supervisor's own view:
//! the latency it audits per request (decision, open, reply). The echo
//! benchmark (benches/ipc.rs) times the transport alone. Beside the rows,
//! their physical floors from the same run (benches/shared/broker_floor.rs):
//! the kernel's fd passing between two spinning processes for the allowed
//! row, a blocking round trip between two Python processes for the
//! pure-Python client's. `BROKER_ROUNDS`
//! sets the round trips of each kind (2000). Needs root.

#[path = "shared/broker_floor.rs"]
mod broker_floor;
#[path = "shared/summary.rs"]
mod summary;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

#[path = "../tests/common/mod.rs"]
mod common;

use common::{install_worker, RUNC};

const BUNTIME: &str = env!("CARGO_BIN_EXE_buntime");

/// p50 and p99 of the latencies the supervisor audited for `kind` with
/// `decision` (microseconds).
fn audited(log: &Path, kind: &str, decision: &str) -> Option<(u64, u64, usize)> {
    let mut v: Vec<u64> = fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == kind && v["decision"] == decision)
        .filter_map(|v| v["latency_us"].as_u64())
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    Some((at(0.5), at(0.99), v.len()))
}

fn field(line: &str, k: &str) -> f64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{k}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn row(label: &str, p50: f64, p99: f64) {
    println!("{label:<44} {p50:>10.2} {p99:>10.2}");
}

fn audit_row(label: &str, a: Option<(u64, u64, usize)>) {
    if let Some((p50, p99, n)) = a {
        println!("{label:<44} {p50:>10} {p99:>10}   ({n} audited, whole-us resolution)");
    }
}

const PY_BENCH: &str = r#"
import os, sys
os.environ["BUNTIME_PY_CLIENT"] = sys.argv[4]
import time, buntime
path, denied, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def timed(f):
    t = []
    for _ in range(n):
        s = time.perf_counter_ns()
        f()
        t.append(time.perf_counter_ns() - s)
    t.sort()
    return t[len(t) // 2] / 1e3, t[int((len(t) - 1) * 0.99)] / 1e3
def deny():
    try:
        buntime.read_file(denied)
    except PermissionError:
        return
    raise SystemExit("bench: " + denied + " was granted")
buntime.read_file(path)
a = timed(lambda: buntime.read_file(path))
d = timed(deny)
print("RESULT allow_p50_us=%.2f allow_p99_us=%.2f deny_p50_us=%.2f deny_p99_us=%.2f" % (a + d))
"#;

/// The Python worker under `buntime run`: allowed and refused FS_READ.
fn python(dir: &Path, rounds: usize) {
    let default = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/default.json");
    let Ok(mut policy) = fs::read_to_string(&default)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).map_err(|e| e.to_string()))
    else {
        return println!("python: cannot read {}", default.display());
    };
    policy["broker"] = serde_json::json!({"fs_read": "allow", "fs_write": "deny",
        "list_dir": "deny", "net_connect": "deny", "exec": "deny"});
    let pdir = dir.join("py");
    fs::create_dir_all(&pdir).expect("mkdir");
    fs::write(pdir.join("policy.json"), policy.to_string()).expect("write policy");
    fs::write(pdir.join("bench.py"), PY_BENCH).expect("write bench.py");
    // Outside every mount of the sandbox: the broker's grant names the
    // host's file (docs/supervisor.md, "Files").
    let data = dir.join("host-data.txt");
    fs::write(&data, "a small file\n").expect("write");
    // Before and after the clients' runs: the same load as theirs.
    let mut floors = vec![blocking_floor()];
    // Alternately, so that both see the same load.
    let (mut ctypes, mut pure) = (Vec::new(), Vec::new());
    for &(client, label) in [[("ctypes", "ctypes"), ("python", "pure")]; 2]
        .iter()
        .flatten()
    {
        let got = python_run(dir, &pdir, &data, rounds, client, label);
        let to = if client == "python" {
            &mut pure
        } else {
            &mut ctypes
        };
        to.extend(got);
    }
    let mean = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| {
        v.iter().map(f).sum::<f64>() / v.len().max(1) as f64
    };
    floors.push(blocking_floor());
    let floors: Vec<f64> = floors.into_iter().flatten().collect();
    if pure.is_empty() || ctypes.is_empty() {
        return;
    }
    let floor = (!floors.is_empty()).then(|| floors.iter().sum::<f64>() / floors.len() as f64);
    for (what, f) in [
        (
            "pure-Python client: read_file allowed (fd, read), p50",
            (|r: &(f64, f64)| r.0) as fn(&(f64, f64)) -> f64,
        ),
        (
            "pure-Python client: read_file refused, p50",
            |r: &(f64, f64)| r.1,
        ),
    ] {
        summary::record_with_floor(
            &summary::Row {
                what,
                value: mean(&pure, f),
                baseline: Some(("ctypes client", mean(&ctypes, f))),
                unit: "us",
                relative: false,
                goal: summary::Goal::AtMost,
                target: 15.0,
            },
            floor.map(|v| ("blocking wake-up floor", v)),
        );
    }
}

/// Python processes' blocking round trip (3000 rounds), on two CPUs
/// (each reply a wake-up of the other) and on one, printed as rows; the
/// p50 on two CPUs.
fn blocking_floor() -> Option<f64> {
    let mut two = None;
    for (cpus, label) in [
        (2, "  floor: blocking round trip, Pythons, 2 CPUs"),
        (1, "  floor: blocking round trip, Pythons, 1 CPU"),
    ] {
        match broker_floor::blocking_python(3000, cpus) {
            Ok((p50, p99)) => {
                row(label, p50, p99);
                if cpus == 2 {
                    two = Some(p50);
                }
            }
            Err(e) => println!("{label}: {e}"),
        }
    }
    two
}

/// One `buntime run bench.py` with the worker's `client`: the allowed and
/// refused p50, if it ran.
fn python_run(
    dir: &Path,
    pdir: &Path,
    data: &Path,
    rounds: usize,
    client: &str,
    label: &str,
) -> Option<(f64, f64)> {
    let root = dir.join("state-py");
    let out = Command::new(BUNTIME)
        .arg("--root")
        .arg(&root)
        .args(["run", "--base"])
        .arg(pdir.join("policy.json"))
        .arg(pdir.join("bench.py"))
        .arg(data)
        .arg("/etc/shadow")
        .arg(rounds.to_string())
        .arg(client)
        .stdin(Stdio::null())
        .output()
        .expect("buntime run");
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().find(|l| l.contains("RESULT")) else {
        println!(
            "python worker: no result: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    };
    row(
        &format!("Python ({label}): read_file, allowed (fd, read)"),
        field(line, "allow_p50_us"),
        field(line, "allow_p99_us"),
    );
    row(
        &format!("Python ({label}): read_file, denied"),
        field(line, "deny_p50_us"),
        field(line, "deny_p99_us"),
    );
    Some((field(line, "allow_p50_us"), field(line, "deny_p50_us")))
}

/// The node's default policy for the bench's container, in `dir/etc`
/// (returned, for `BUNTIME_ETC`).
fn node_policy(dir: &Path) -> std::path::PathBuf {
    let policy = r#"{"version":1,"description":"broker bench",
      "filesystem":{"read":["/bin","/lib","/lib64","/usr","/proc","/data"],
                    "write":["/tmp","/dev/null"],"exec":["/bin","/lib","/lib64","/usr"],
                    "deny":["/data/secret.txt"]},
      "network":{"mode":"none"},
      "broker":{"fs_read":"allow","fs_write":"deny","list_dir":"deny","net_connect":"deny","exec":"deny"}}"#;
    // The node's default policy (as an admin would grant the broker), not
    // an annotation: a pod author may not grant `broker … allow` itself.
    let etc = dir.join("etc");
    fs::create_dir_all(&etc).expect("mkdir etc");
    fs::write(etc.join("default.json"), policy).expect("write default.json");
    etc
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("broker bench: needs root; skipped");
        return;
    }
    // Not under /tmp: the Python sandbox has a /tmp of its own, and its
    // broker grant must name a host file outside every sandbox mount.
    let dir = tempfile::Builder::new()
        .prefix("buntime-bench-broker-")
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    let bundle = dir.path().join("bundle");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/make-bundle.sh");
    let rounds = std::env::var("BROKER_ROUNDS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(2000)
        .max(1);
    let read = format!("bench-read:/data/small.txt:{rounds}");
    let deny = format!("bench-deny:/data/secret.txt:{rounds}");
    let ok = Command::new("bash")
        .arg(script)
        .arg(&bundle)
        .args(["/bin/worker", &read, &deny])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "make-bundle.sh failed");
    let rootfs = bundle.join("rootfs");
    install_worker(&rootfs);
    fs::create_dir_all(rootfs.join("data")).expect("mkdir");
    fs::write(rootfs.join("data/small.txt"), "a small file\n").expect("write");
    fs::write(rootfs.join("data/secret.txt"), "not for you\n").expect("write");
    let etc = node_policy(dir.path());

    let out = Command::new(RUNC)
        .env("BUNTIME_ETC", &etc)
        .arg("--root")
        .arg(dir.path().join("root"))
        .args(["run", "--keep", "--bundle"])
        .arg(&bundle)
        .arg("broker-bench")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    // The supervisor's own view: the latency it audits per request
    // (policy match, open beneath the root, reply with the fd).
    let audit = dir.path().join("root/.buntime/broker-bench/audit.log");
    let allow_audit = audited(&audit, "fs_read", "allow");
    let deny_audit = audited(&audit, "fs_read", "deny");
    let _ = Command::new(RUNC)
        .env("BUNTIME_ETC", &etc)
        .arg("--root")
        .arg(dir.path().join("root"))
        .args(["delete", "--force", "broker-bench"])
        .status();
    // Right after the container's rounds, under the same load; the bench
    // has one thread here (the floor's server is a fork).
    let fd_floor = broker_floor::fd_passing(dir.path(), rounds);
    let text = String::from_utf8_lossy(&out.stdout);
    let find = |tag: &str| {
        text.lines()
            .find(|l| l.starts_with(tag) && l.contains("RESULT"))
            .map(str::to_string)
    };
    let (Some(read), Some(deny)) = (find("bench-read"), find("bench-deny")) else {
        eprintln!(
            "broker bench failed: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    };
    let audits = [allow_audit, deny_audit];
    report_rust(&read, &deny, audits, fd_floor, rounds);
    python(dir.path(), rounds);
}

type Audited = Option<(u64, u64, usize)>;

/// The Rust worker's rows (`read`, `deny`: its RESULT lines) with the
/// supervisor's audited latencies and the fd-passing floors, printed and
/// recorded.
fn report_rust(
    read: &str,
    deny: &str,
    audits: [Audited; 2],
    fd_floor: Result<broker_floor::Spinning, String>,
    rounds: usize,
) {
    println!("\nbroker round trips through the real supervisor, hot, {rounds} each");
    println!("{:<44} {:>10} {:>10}", "", "p50 us", "p99 us");
    row(
        "Rust worker: FS_READ allowed, fd + read",
        field(read, "broker_p50_us"),
        field(read, "broker_p99_us"),
    );
    row(
        "  baseline: direct open + read",
        field(read, "direct_p50_us"),
        field(read, "direct_p99_us"),
    );
    match &fd_floor {
        Ok(f) => {
            row(
                "  floor: fd passing, two spinning processes",
                f.fd.0,
                f.fd.1,
            );
            row(
                "  floor: the same ping-pong, no open or fd",
                f.bare.0,
                f.bare.1,
            );
            row(
                "  floor: fd passing, request in shared memory",
                f.ring.0,
                f.ring.1,
            );
        }
        Err(e) => println!("fd passing floor: {e}"),
    }
    row(
        "Rust worker: FS_READ denied",
        field(deny, "deny_p50_us"),
        field(deny, "deny_p99_us"),
    );
    audit_row("  supervisor's audited latency, allow", audits[0]);
    audit_row("  supervisor's audited latency, deny", audits[1]);
    println!(
        "allowed FS_READ adds {:.1} us at p50 over a direct open (decision + audit + fd passing + wake-up); targets: deny <= 1.5 us, allow+fd <= 8 us",
        field(read, "broker_p50_us") - field(read, "direct_p50_us")
    );
    let fd_floor = fd_floor.ok().map(|f| ("fd passing floor", f.fd.0));
    for (what, value, target, floor) in [
        (
            "broker: Rust worker, FS_READ allowed with fd, p50",
            field(read, "broker_p50_us"),
            8.0,
            fd_floor,
        ),
        (
            "broker: Rust worker, FS_READ refused, p50",
            field(deny, "deny_p50_us"),
            1.5,
            None,
        ),
    ] {
        summary::record_with_floor(
            &summary::Row {
                what,
                value,
                baseline: Some(("direct open + read", field(read, "direct_p50_us"))),
                unit: "us",
                relative: false,
                goal: summary::Goal::AtMost,
                target,
            },
            floor,
        );
    }
}
