//! `buntime run --learn` learns hosts by name through its learning proxy
//! (docs/learn.md, "Hosts by name"), as root: a loopback server reached
//! as `localhost:PORT` through the proxy is learned as that name, and the
//! learned policy reaches it again through the normal proxy with no
//! denial; a name of an internal address is not granted (nor let through
//! by the learning proxy) unless the base allows it; cloud metadata and
//! the host's own address are refused by the learning proxy; a connection
//! to the learning proxy from the host (not the sandbox) is refused.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use common::{is_root, show, text};

const BUNTIME: &str = env!("CARGO_BIN_EXE_buntime");

/// A client that sends everything through the proxy, loopback names too
/// (NO_PROXY would send `localhost` direct), after an optional wait for
/// the file `argv[2]`.
const FETCH: &str = r#"
import os, sys, time, urllib.request
port = sys.argv[1]
for k in ("NO_PROXY", "no_proxy"):
    os.environ.pop(k, None)
print("proxy", os.environ.get("HTTP_PROXY"), flush=True)
if len(sys.argv) > 2:
    for _ in range(1200):
        if os.path.exists(sys.argv[2]):
            break
        time.sleep(0.05)
body = urllib.request.urlopen(f"http://localhost:{port}/", timeout=20).read()
print("got", body.decode(), flush=True)
"#;

struct Job {
    dir: tempfile::TempDir,
    port: u16,
    hits: Arc<AtomicUsize>,
    /// The owner uid of the last client socket the server accepted.
    owner: Arc<AtomicU32>,
}

impl Job {
    fn new() -> Job {
        let dir = tempfile::Builder::new()
            .prefix("buntime-test-names-")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.path().join("fetch.py"), FETCH).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = Arc::clone(&hits);
        let owner = Arc::new(AtomicU32::new(u32::MAX));
        let o = Arc::clone(&owner);
        std::thread::spawn(move || {
            for mut c in l.incoming().flatten() {
                if let (Ok(p), Ok(l)) = (c.peer_addr(), c.local_addr()) {
                    let uid = buntime::learn::proxy::socket_uid(p, l).unwrap_or(u32::MAX);
                    o.store(uid, Ordering::SeqCst);
                }
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf);
                h.fetch_add(1, Ordering::SeqCst);
                let _ = c.write_all(
                    b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
                );
            }
        });
        Job {
            dir,
            port,
            hits,
            owner,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn command(&self, args: &[&str], extra: &[&str]) -> Command {
        let mut c = Command::new(BUNTIME);
        c.arg("--root")
            .arg(self.path("state"))
            .arg("run")
            .args(args)
            .arg(self.path("fetch.py"))
            .arg(self.port.to_string())
            .args(extra)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args, &[]).output().expect("run buntime")
    }
}

fn allow_list(p: &Path) -> (serde_json::Value, Vec<String>) {
    let v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(p).expect("learned policy")).expect("json");
    let allow = v["network"]["allow"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect();
    (v, allow)
}

#[test]
fn a_host_reached_through_the_learning_proxy_is_learned_by_name() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let job = Job::new();
    let name = format!("localhost:{}", job.port);
    let ip = format!("127.0.0.1:{}", job.port);
    // localhost is internal: learned only when the base allows the name
    // and its address.
    let (a, b) = (format!("--allow-net={name}"), format!("--allow-net={ip}"));
    let o = job.run(&["--learn=names.json", &a, &b]);
    assert!(o.status.success(), "{}", show(&o));
    let out = text(&o.stdout);
    assert!(out.contains("got hello"), "{}", show(&o));
    assert!(out.contains("proxy http://127.0.0.1:"), "{}", show(&o));
    let err = text(&o.stderr);
    let hosts = err
        .lines()
        .find(|l| l.trim_start().starts_with("hosts reached"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(hosts.contains(&name), "{err}");
    let (v, allow) = allow_list(&job.path("names.json"));
    assert_eq!(v["network"]["mode"], "proxy", "{v}");
    assert!(allow.contains(&name), "{v}");
    // Nothing but the server: the learning proxy's own address is left out.
    assert!(
        allow.iter().all(|h| h.ends_with(&format!(":{}", job.port))),
        "{v}"
    );
    assert_eq!(job.hits.load(Ordering::SeqCst), 1);
    // The learning proxy connected as the sandbox's uid, not as root.
    let owner = job.owner.load(Ordering::SeqCst);
    assert!(
        owner >= buntime::sandbox::RUN_ID_BASE && owner != u32::MAX,
        "uid {owner}"
    );

    // Again, under the learned policy: through the normal proxy, by name,
    // nothing denied.
    let policy = job.path("names.json").to_string_lossy().into_owned();
    let o = job.run(&["--policy", &policy]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(text(&o.stdout).contains("got hello"), "{}", show(&o));
    assert!(!text(&o.stderr).contains("denied"), "{}", show(&o));
    assert_eq!(job.hits.load(Ordering::SeqCst), 2);
}

#[test]
fn a_name_of_an_internal_address_is_not_granted_unless_the_base_allows_it() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let job = Job::new();
    let name = format!("localhost:{}", job.port);
    let o = job.run(&["--learn=names.json"]);
    // The learning proxy does not let it through either: the learned
    // policy would not reach it, and the run fails at once.
    assert!(!o.status.success(), "{}", show(&o));
    assert!(!text(&o.stdout).contains("got hello"), "{}", show(&o));
    assert_eq!(job.hits.load(Ordering::SeqCst), 0);
    let err = text(&o.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("asked for, not granted"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains(&name) && line.contains("loopback"), "{err}");
    let (v, allow) = allow_list(&job.path("names.json"));
    assert!(allow.is_empty(), "{v}");
}

/// Asks the proxy of `HTTP_PROXY` for each `argv[1:]` target and prints
/// its answer's head on one line.
const PROBE: &str = r#"
import os, socket, sys
h, port = os.environ["HTTP_PROXY"].removeprefix("http://").rstrip("/").rsplit(":", 1)
for t in sys.argv[1:]:
    s = socket.create_connection((h, int(port)), timeout=30)
    s.sendall(f"GET http://{t}/ HTTP/1.1\r\nHost: {t}\r\n\r\n".encode())
    a = b""
    while True:
        d = s.recv(4096)
        if not d:
            break
        a += d
    head = a.decode(errors="replace").split("\r\n\r\n")[0]
    print(t, "->", " | ".join(head.split("\r\n")), flush=True)
"#;

/// The host's own address on its default route, if it has one.
fn own_address() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[test]
fn the_learning_proxy_refuses_metadata_and_the_hosts_own_address() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let job = Job::new();
    fs::write(job.path("probe.py"), PROBE).unwrap();
    // Listening on every address: a connect to the host's own would land.
    let l = TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    l.set_nonblocking(true).expect("nonblocking");
    let mut targets = vec!["169.254.169.254:80".to_string()];
    let own = own_address();
    if let Some(ip) = own {
        targets.push(std::net::SocketAddr::new(ip, port).to_string());
    } else {
        eprintln!("no address on a default route: the host's own address is not tried");
    }
    let o = Command::new(BUNTIME)
        .arg("--root")
        .arg(job.path("state"))
        .args(["run", "--learn=probe.json"])
        .arg(job.path("probe.py"))
        .args(&targets)
        .current_dir(job.dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run buntime");
    assert!(o.status.success(), "{}", show(&o));
    let out = text(&o.stdout);
    for t in &targets {
        let line = out
            .lines()
            .find(|x| x.starts_with(&format!("{t} ->")))
            .unwrap_or_else(|| panic!("{t}: {}", show(&o)));
        assert!(line.contains("HTTP/1.1 403"), "{line}\n{}", show(&o));
        assert!(line.contains("X-Buntime-Deny:"), "{line}");
        assert!(
            line.contains("only when the base policy allows it"),
            "{line}"
        );
    }
    let meta = out
        .lines()
        .find(|x| x.starts_with("169.254"))
        .unwrap_or_default();
    assert!(meta.contains("cloud metadata"), "{meta}");
    if own.is_some() {
        assert!(out.contains("one of the host's own addresses"), "{out}");
    }
    // Nothing reached the host's own address.
    assert!(
        l.accept().is_err(),
        "the learning proxy connected to the host's own address"
    );
    let err = text(&o.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("asked for, not granted"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains("169.254.169.254:80"), "{err}");
    let (v, allow) = allow_list(&job.path("probe.json"));
    assert!(allow.is_empty(), "{v}");
}

#[test]
fn the_learning_proxy_refuses_connections_from_the_host() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let job = Job::new();
    let go = job.path("go");
    let go_arg = go.to_string_lossy().into_owned();
    let allow = format!("--allow-net=127.0.0.1:{}", job.port);
    let mut child = job
        .command(&["--learn=names.json", &allow], &[&go_arg])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn buntime");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let proxy = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("proxy http://").map(str::to_string));
    let Some(proxy) = proxy else {
        fs::write(&go, "").unwrap();
        let o = child.wait_with_output().expect("wait");
        panic!("no proxy address printed\n{}", show(&o));
    };
    // From the host (uid 0, not the sandbox's uid): refused, unanswered
    // by the server.
    let mut s = TcpStream::connect(&proxy).expect("connect to the learning proxy");
    let req = format!(
        "GET http://localhost:{p}/ HTTP/1.1\r\nHost: localhost:{p}\r\n\r\n",
        p = job.port
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    fs::write(&go, "").unwrap();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("not the sandbox's"), "{answer}");
    // The sandbox's own request goes through.
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let o = child.wait_with_output().expect("wait");
    assert!(o.status.success(), "{rest:?}\n{}", show(&o));
    assert!(rest.iter().any(|l| l == "got hello"), "{rest:?}");
    assert_eq!(job.hits.load(Ordering::SeqCst), 1);
}
