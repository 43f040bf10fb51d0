//! The permission broker's cost: an allowed FS_READ of a small file through
//! the supervisor (request, policy decision, audit line, fd passed over the
//! control socket, file read) against opening and reading the same file
//! directly, both from a process in a container, in one run. Needs root.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

#[path = "../tests/common/mod.rs"]
mod common;

use common::{install_worker, RUNC};

const ROUNDS: &str = "2000";

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("broker bench: needs root; skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("bundle");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/make-bundle.sh");
    let target = format!("bench-read:/data/small.txt:{ROUNDS}");
    let ok = Command::new("bash")
        .arg(script)
        .arg(&bundle)
        .args(["/bin/worker", &target])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "make-bundle.sh failed");
    let rootfs = bundle.join("rootfs");
    install_worker(&rootfs);
    fs::create_dir_all(rootfs.join("data")).expect("mkdir");
    fs::write(rootfs.join("data/small.txt"), "a small file\n").expect("write");
    let policy = r#"{"version":1,"description":"broker bench",
      "filesystem":{"read":["/bin","/lib","/lib64","/usr","/proc","/data"],
                    "write":["/tmp","/dev/null"],"exec":["/bin","/lib","/lib64","/usr"]},
      "network":{"mode":"none"},
      "broker":{"fs_read":"allow","fs_write":"deny","list_dir":"deny","net_connect":"deny","exec":"deny"}}"#;
    // The node's default policy (as an admin would grant the broker), not
    // an annotation: a pod author may not grant `broker … allow` itself.
    let etc = dir.path().join("etc");
    fs::create_dir_all(&etc).expect("mkdir etc");
    fs::write(etc.join("default.json"), policy).expect("write default.json");

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
    let mut decided: Vec<u64> = fs::read_to_string(&audit)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "fs_read")
        .filter_map(|v| v["latency_us"].as_u64())
        .collect();
    decided.sort_unstable();
    let _ = Command::new(RUNC)
        .env("BUNTIME_ETC", &etc)
        .arg("--root")
        .arg(dir.path().join("root"))
        .args(["delete", "--force", "broker-bench"])
        .status();
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().find(|l| l.contains("RESULT")) else {
        eprintln!(
            "broker bench failed: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    };
    let field = |k: &str| -> f64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    println!("\nFS_READ of a 13-byte file from a process in a container, {ROUNDS} rounds each");
    println!("{:<28} {:>10} {:>10}", "", "p50 us", "p99 us");
    println!(
        "{:<28} {:>10.1} {:>10.1}",
        "through the broker",
        field("broker_p50_us"),
        field("broker_p99_us")
    );
    println!(
        "{:<28} {:>10.1} {:>10.1}",
        "direct open + read",
        field("direct_p50_us"),
        field("direct_p99_us")
    );
    println!(
        "broker adds {:.1} us at p50 (decision + audit + fd passing + wake-up)",
        field("broker_p50_us") - field("direct_p50_us")
    );
    if !decided.is_empty() {
        let at = |p: f64| decided[((decided.len() - 1) as f64 * p).round() as usize];
        println!(
            "audited latency (decision + open + reply with fd, {} requests): p50 {} us, p99 {} us (decision target < 5 us at p50)",
            decided.len(),
            at(0.5),
            at(0.99)
        );
    }
}
