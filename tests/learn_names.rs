//! `buntime run --learn` learns hosts by name through its learning proxy
//! (docs/learn.md, "Hosts by name"), as root: a loopback server reached
//! as `localhost:PORT` through the proxy is learned as that name, and the
//! learned policy reaches it again through the normal proxy with no
//! denial; a name of an internal address is not granted unless the base
//! allows it; a connection to the learning proxy from the host (not the
//! sandbox) is refused.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

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
        std::thread::spawn(move || {
            for mut c in l.incoming().flatten() {
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf);
                h.fetch_add(1, Ordering::SeqCst);
                let _ = c.write_all(
                    b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
                );
            }
        });
        Job { dir, port, hits }
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

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    )
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

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
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
    // The learned run itself reaches it (it is not sandboxed by network
    // rules); the policy does not grant it.
    assert!(o.status.success(), "{}", show(&o));
    assert!(text(&o.stdout).contains("got hello"), "{}", show(&o));
    let err = text(&o.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("asked for, not granted"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains(&name) && line.contains("loopback"), "{err}");
    let (v, allow) = allow_list(&job.path("names.json"));
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
