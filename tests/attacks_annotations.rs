//! Attacks through annotation policies (issue 19, finding 4): a bundle (or
//! a pod, through podman's `--annotation`) chooses its own policy, and the
//! proxy and the broker act from the host's network namespace. An
//! annotation may not ask for the node's loopback, metadata or other
//! special addresses, broker `allow`, or host networking beyond what the
//! node's default policy (or its ceiling) grants: `create` is refused with
//! the field named, and a listener on the host's loopback sees nothing.
//!
//! Judged from the host: the listener's record, `create`'s exit status and
//! message, and what is left of the container. The node configuration is
//! the test's own (`BUNTIME_ETC`), never the real /etc/buntime.

mod common;
#[path = "engines/mod.rs"]
mod engines;

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{read, wait_until, Env};
use serde_json::{json, Value};

/// A listener on the host's loopback that records every request it gets.
struct HostListener {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl HostListener {
    fn start() -> HostListener {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind host loopback");
        let port = l.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rec = Arc::clone(&seen);
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let rec = Arc::clone(&rec);
                std::thread::spawn(move || {
                    let mut s = s;
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).unwrap_or(0);
                    rec.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                    let _ = std::io::Write::write_all(
                        &mut s,
                        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
                    );
                });
            }
        });
        HostListener { port, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A policy that narrows the busybox bundle: busybox, /proc, /tmp, and the
/// given network section (and broker section, if any).
fn policy(network: Value, broker: Option<Value>) -> String {
    let mut p = json!({
        "version": 1,
        "filesystem": {"read": ["/bin", "/proc", "/etc"], "write": ["/tmp", "/dev/null"], "exec": ["/bin"]},
        "network": network
    });
    if let Some(b) = broker {
        p["broker"] = b;
    }
    p.to_string()
}

fn annotate(bundle: &Path, policy: &str) {
    let file = bundle.join("config.json");
    let mut cfg: Value = serde_json::from_str(&read(&file)).expect("config.json");
    cfg["annotations"] = json!({ "buntime.dev/policy": policy });
    fs::write(&file, cfg.to_string()).expect("write config.json");
}

/// The node of these tests: nothing configured (the built-in default), or
/// a default policy of `default`.
fn node(env: &Env, default: Option<&str>) {
    let etc = env.etc();
    let _ = fs::remove_dir_all(&etc);
    fs::create_dir_all(&etc).expect("etc");
    if let Some(d) = default {
        fs::write(etc.join("default.json"), d).expect("default.json");
    }
}

/// `create` of `policy` must fail naming `want`, leave nothing, and (the
/// container never ran) the listener sees nothing.
fn refused(env: &Env, id: &str, policy: &str, want: &str, listener: &HostListener) {
    let b = env.bundle(
        id,
        &[
            "sh",
            "-c",
            &format!("wget -q -T 3 -O- http://127.0.0.1:{}/{id}", listener.port),
        ],
        &[],
    );
    annotate(&b, policy);
    let err = env.fails(&["create", "--bundle", b.to_str().unwrap_or_default(), id]);
    assert!(err.contains(want), "{id}: {err}");
    assert!(
        err.contains("which the node's default policy does not allow"),
        "{id}: {err}"
    );
    env.assert_gone(id);
    std::thread::sleep(Duration::from_millis(200));
    assert!(listener.seen().is_empty(), "{:?}", listener.seen());
}

#[test]
fn an_annotation_cannot_open_the_hosts_loopback_metadata_or_broker() {
    let env = Env::new();
    node(&env, None);
    let host = HostListener::start();
    let port = host.port;
    let loopback = policy(
        json!({"mode": "proxy", "allow": [format!("127.0.0.1:{port}")]}),
        None,
    );
    refused(
        &env,
        "loopback",
        &loopback,
        &format!(
            "annotation policy: network.allow[0] \"127.0.0.1:{port}\" names a loopback address"
        ),
        &host,
    );
    let metadata = policy(
        json!({"mode": "proxy", "allow": ["169.254.169.254:80"]}),
        None,
    );
    refused(
        &env,
        "metadata",
        &metadata,
        "network.allow[0] \"169.254.169.254:80\" names a cloud metadata address",
        &host,
    );
    let private = policy(json!({"mode": "proxy", "allow": ["10.0.0.0/8"]}), None);
    refused(
        &env,
        "private",
        &private,
        "network.allow[0] \"10.0.0.0/8\" covers a private address",
        &host,
    );
    let broker = policy(
        json!({"mode": "proxy", "allow": ["example.test:443"]}),
        Some(json!({"net_connect": "allow"})),
    );
    refused(
        &env,
        "broker",
        &broker,
        "broker.net_connect is \"allow\" (the node's is \"deny\")",
        &host,
    );
    let host_mode = policy(json!({"mode": "host"}), None);
    refused(&env, "hostnet", &host_mode, "network.mode \"host\"", &host);
    // A node default that names the listener: the annotation may name it
    // too, and the proxy reaches it (the attack above is real).
    node(
        &env,
        Some(&policy(
            json!({"mode": "proxy", "allow": [format!("127.0.0.1:{port}")]}),
            None,
        )),
    );
    let b = env.bundle(
        "allowed",
        &[
            "sh",
            "-c",
            // busybox wget does not run under this policy: speak to the
            // proxy directly.
            &format!(
                "printf 'GET http://127.0.0.1:{port}/allowed HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n' \
                 | nc 127.0.0.1 3128; echo rc=$?"
            ),
        ],
        &[],
    );
    annotate(&b, &loopback);
    let log = env.dir.path().join("allowed.log");
    env.create_logged("allowed", &b, &log);
    env.ok(&["start", "allowed"]);
    assert!(
        wait_until(Duration::from_secs(30), || env.status("allowed")
            == "stopped"),
        "allowed did not stop"
    );
    let seen = host.seen();
    assert!(
        seen.iter().any(|r| r.starts_with("GET /allowed ")),
        "the node allows it: {seen:?}\n{}",
        read(&log)
    );
    env.ok(&["delete", "allowed"]);
}

/// Just enough podman (see tests/engine_podman.rs): private storage, the
/// runtime with this test's node configuration, cleanup on drop.
use engines::podman::Podman;

#[test]
fn podman_annotation_cannot_open_the_hosts_loopback() {
    let Some(p) = Podman::new(|_| {}) else { return };
    let host = HostListener::start();
    let port = host.port;
    let pol = policy(
        json!({"mode": "proxy", "allow": [format!("127.0.0.1:{port}")]}),
        None,
    );
    // podman parses --annotation as CSV: quote it.
    let ann = format!("\"buntime.dev/policy={}\"", pol.replace('"', "\"\""));
    let mut c = p.cmd();
    c.args(["run", "--rm", "--network", "none", "--cgroup-parent"])
        .arg(&p.cgroup_parent)
        .args([
            "--ulimit",
            "nofile=20000:20000",
            "--ulimit",
            "nproc=32768:32768",
        ])
        .args(["--annotation", &ann, "--rootfs"])
        .arg(&p.rootfs)
        .args([
            "sh",
            "-c",
            &format!(
                "printf 'GET http://127.0.0.1:{port}/podman HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n' \
                 | nc 127.0.0.1 3128"
            ),
        ]);
    let out = engines::run(&mut c, Duration::from_secs(90));
    std::thread::sleep(Duration::from_millis(200));
    assert!(host.seen().is_empty(), "{:?}\n{out:?}", host.seen());
    assert!(!out.ok(), "podman run succeeded: {out:?}");
    assert!(
        out.stderr.contains(&format!(
            "network.allow[0] \"127.0.0.1:{port}\" names a loopback address"
        )),
        "buntime's refusal reaches the user: {}",
        out.stderr
    );
    let ids = engines::run(
        p.cmd().args(["ps", "--all", "--quiet"]),
        Duration::from_secs(60),
    );
    assert!(
        ids.stdout.trim().is_empty(),
        "containers left: {}",
        ids.stdout
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(host.seen().is_empty(), "{:?}", host.seen());
}
