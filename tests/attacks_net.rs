//! Attacks on the host's own addresses from inside `buntime run` (issue 18,
//! finding 3): a sandbox allowed to reach "a public host" asks the proxy
//! (forwarded HTTP and CONNECT) and the broker's NET_CONNECT for an address
//! of the host itself: addresses this test gives the host end of a veth pair
//! (documentation addresses (203.0.113.0/24, 2001:db8::/32, classed public),
//! and a listener bound to every address (`[::]`, dual-stack, as a service
//! bound to 0.0.0.0); it must see nothing. Names resolve through the
//! supervisor's own /etc/hosts (a private mount namespace); its resolver
//! points at a closed loopback port, so no query leaves the machine.

mod common;

use common::{show, token};
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const BUNTIME: &str = env!("CARGO_BIN_EXE_buntime");

fn sh(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A veth pair whose host end holds one IPv4 and (when the host has IPv6)
/// one IPv6 address of this host, its peer in a test network namespace
/// (this kernel has no dummy interfaces); removed on drop.
struct HostIface {
    ns: String,
    v4: String,
    v6: Option<String>,
}

impl HostIface {
    fn new() -> HostIface {
        let pid = std::process::id();
        let ns = format!("bt-an-{pid}");
        let host_if = format!("btan{}h", pid % 100_000);
        let v4 = format!("203.0.113.{}", 20 + pid % 200);
        let v6 = format!("2001:db8::{:x}", 0x100 + pid % 0xff00);
        let _ = sh(&format!("ip netns del {ns}"));
        assert!(
            sh(&format!(
                "ip netns add {ns} && ip link add {host_if} type veth peer name eth0 netns {ns} && \
                 ip addr add {v4}/32 dev {host_if} && ip link set {host_if} up && \
                 ip -n {ns} link set eth0 up"
            )),
            "cannot create the test interface {host_if}"
        );
        let v6 = sh(&format!("ip -6 addr add {v6}/128 dev {host_if} nodad")).then_some(v6);
        HostIface { ns, v4, v6 }
    }
}

impl Drop for HostIface {
    fn drop(&mut self) {
        // Deleting the namespace removes the pair.
        let _ = sh(&format!("ip netns del {}", self.ns));
    }
}

/// A host service on every address: counts connections and answers each
/// with `body` (which must then never appear in a sandbox's output).
struct Listener {
    port: u16,
    seen: Arc<AtomicUsize>,
    peers: Arc<Mutex<Vec<String>>>,
}

impl Listener {
    fn new(body: String) -> Listener {
        let l = TcpListener::bind("[::]:0")
            .or_else(|_| TcpListener::bind("0.0.0.0:0"))
            .expect("bind the host listener");
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(AtomicUsize::new(0));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let (s, p) = (Arc::clone(&seen), Arc::clone(&peers));
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                s.fetch_add(1, Ordering::SeqCst);
                if let Ok(a) = c.peer_addr() {
                    p.lock().unwrap().push(a.to_string());
                }
                let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(2)));
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf);
                let _ = write!(
                    c,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Listener { port, seen, peers }
    }

    fn seen(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }
}

/// Runs under `buntime run`: for every target, a forwarded HTTP request
/// and a CONNECT through the proxy, then the broker's NET_CONNECT. One
/// line per attempt: `KIND TARGET RESULT…`.
const ATTACK_PY: &str = r#"
import os, socket, sys, urllib.request, urllib.error
import buntime

port = int(sys.argv[1])

def report(label, fn):
    try:
        print(label, "REACHED", fn(), flush=True)
    except urllib.error.HTTPError as e:
        print(label, "HTTP", e.code, e.headers.get("X-Buntime-Deny"), flush=True)
    except PermissionError as e:
        print(label, "DENIED", e, flush=True)
    except Exception as e:
        print(label, "ERROR", type(e).__name__, e, flush=True)

def forwarded(t):
    return urllib.request.urlopen(f"http://{t}:{port}/", timeout=10).read().decode()

def tunnel(t):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
    s.sendall(f"CONNECT {t}:{port} HTTP/1.1\r\nHost: {t}:{port}\r\n\r\n".encode())
    head = s.recv(4096).decode(errors="replace")
    status = head.split("\r\n")[0]
    if " 200 " not in status:
        raise PermissionError("refused " + status)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    return status + " " + s.recv(4096).decode(errors="replace")

def broker(t):
    s = buntime.connect(t.strip("[]"), port)
    s.settimeout(10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    return s.recv(4096).decode(errors="replace")

for t in sys.argv[2:]:
    kinds = ["http", "tunnel", "broker"]
    if t.startswith("broker-only:"):
        t, kinds = t[len("broker-only:"):], ["broker"]
    for kind in kinds:
        report(f"{kind} {t}", lambda: {"http": forwarded, "tunnel": tunnel, "broker": broker}[kind](t))
"#;

/// A scratch directory outside /tmp (the sandbox's /tmp is its own), the
/// supervisor's /etc/hosts and resolv.conf, and a state root.
struct Lab {
    dir: tempfile::TempDir,
}

impl Lab {
    fn new(iface: &HostIface) -> Lab {
        let dir = tempfile::Builder::new()
            .prefix("buntime-test-attack-")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        let mut hosts = format!(
            "127.0.0.1 localhost\n{} public.test\n{} other.test\n",
            iface.v4, iface.v4
        );
        if let Some(v6) = &iface.v6 {
            hosts.push_str(&format!("{v6} public6.test\n"));
        }
        fs::write(dir.path().join("hosts"), hosts).unwrap();
        // Nothing listens there: a lookup that misses the hosts file fails
        // at once, on this machine.
        fs::write(
            dir.path().join("resolv.conf"),
            "nameserver 127.0.53.99\noptions timeout:1 attempts:1\n",
        )
        .unwrap();
        fs::write(dir.path().join("attack.py"), ATTACK_PY).unwrap();
        Lab { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `buntime run ARGS…` with the lab's /etc/hosts and resolv.conf.
    fn run(&self, args: &[&str]) -> Output {
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(
                "mount --bind \"$1\" /etc/hosts && mount --bind \"$2\" /etc/resolv.conf && \
                 shift 2 && exec \"$@\"",
            )
            .arg("sh")
            .arg(self.path("hosts"))
            .arg(self.path("resolv.conf"))
            .arg(BUNTIME)
            .arg("--root")
            .arg(self.path("state"))
            .arg("run")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run buntime")
    }
}

/// The default policy with the broker granting every NET_CONNECT it is
/// asked for: the broker's allow must not open the host either.
fn broker_allow_policy(dir: &Path) -> PathBuf {
    let src =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/default.json"))
            .unwrap();
    let mut p: serde_json::Value = serde_json::from_str(&src).unwrap();
    p["broker"] = serde_json::json!({"net_connect": "allow"});
    let f = dir.join("broker-allow.json");
    fs::write(&f, p.to_string()).unwrap();
    f
}

#[test]
fn the_hosts_own_addresses_are_not_reached_through_proxy_or_broker() {
    let iface = HostIface::new();
    let secret = format!("host-service-{}", token());
    let service = Listener::new(secret.clone());
    let lab = Lab::new(&iface);
    let port = service.port.to_string();
    let script = lab.path("attack.py");
    let script = script.to_str().unwrap();

    // Allowed "public" names and ranges that all lead to this host.
    let mut targets = vec![
        "public.test".to_string(),
        iface.v4.clone(),
        "0.0.0.0".to_string(),
    ];
    let mut allow = vec![
        "--allow-net=public.test".to_string(),
        "--allow-net=203.0.113.0/24".to_string(),
        "--allow-net=*".to_string(),
    ];
    if let Some(v6) = &iface.v6 {
        targets.push("public6.test".into());
        targets.push(format!("[{v6}]"));
        allow.push("--allow-net=public6.test".into());
        allow.push("--allow-net=2001:db8::/32".into());
    }
    let mut args: Vec<&str> = allow.iter().map(String::as_str).collect();
    args.push(script);
    args.push(&port);
    args.extend(targets.iter().map(String::as_str));
    let o = lab.run(&args);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        !out.contains(&secret),
        "the host service answered:\n{}",
        show(&o)
    );
    assert!(!out.contains("REACHED"), "{}", show(&o));
    for t in &targets {
        for kind in ["http", "tunnel", "broker"] {
            let label = format!("{kind} {t} ");
            let line = out
                .lines()
                .find(|l| l.starts_with(&label))
                .unwrap_or_else(|| panic!("no line {label:?}:\n{}", show(&o)));
            let refused = match kind {
                "http" => line.contains("HTTP 403"),
                "tunnel" => line.contains("DENIED refused HTTP/1.1 403"),
                _ => line.contains("DENIED"),
            };
            assert!(refused, "{line}\n{}", show(&o));
        }
    }
    // The refusal says which rule and which field would allow it.
    let named = out
        .lines()
        .find(|l| l.starts_with("http public.test "))
        .unwrap_or_default();
    assert!(
        named.contains("address of this host")
            && named.contains("network.allow entry is that address itself"),
        "{named}"
    );

    // The broker's allow (a name the static rules do not grant) does not
    // open it either.
    let policy = broker_allow_policy(lab.dir.path());
    let o = lab.run(&[
        "--policy",
        policy.to_str().unwrap(),
        "--allow-net=unrelated.test",
        script,
        &port,
        "broker-only:other.test",
        &format!("broker-only:{}", iface.v4),
    ]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", show(&o));
    assert!(!out.contains(&secret), "{}", show(&o));
    for t in ["other.test".to_string(), iface.v4.clone()] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("broker {t} ")))
            .unwrap_or_else(|| panic!("no broker line for {t}:\n{}", show(&o)));
        assert!(line.contains("DENIED"), "{line}");
    }
    assert_eq!(
        service.seen(),
        0,
        "the host service saw connections from {:?}",
        service.peers.lock().unwrap()
    );

    // Control: an entry that is the address itself opens it, so the
    // refusals above are the rule's doing, not a broken path.
    let exact = format!("--allow-net={}:{port}", iface.v4);
    let o = lab.run(&[&exact, script, &port, &iface.v4]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", show(&o));
    let reached = out
        .lines()
        .find(|l| l.starts_with(&format!("http {} ", iface.v4)))
        .unwrap_or_default();
    assert!(
        reached.contains("REACHED") && reached.contains(&secret),
        "{}",
        show(&o)
    );
    assert!(service.seen() >= 1);
}
