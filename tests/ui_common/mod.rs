//! Shared by the debug UI tests: a plain HTTP/1.1 client (with chunked
//! bodies and a server-sent events reader), a worker bundle whose
//! requests the UI shows, and `buntime ui` started as a process.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{install_worker, read, Env};

pub const BUNTIME: &str = env!("CARGO_BIN_EXE_buntime");

/// Policy of the test sandboxes: `/data` readable except `/data/secret`;
/// anything else read goes to the approver (`ask`), listings are refused.
pub const POLICY: &str = r#"{
  "version": 1,
  "filesystem": {
    "read": ["/bin", "/lib", "/lib64", "/data"],
    "write": ["/tmp"],
    "exec": ["/bin", "/lib", "/lib64"],
    "deny": ["/data/secret"]
  },
  "network": { "mode": "none" },
  "broker": { "fs_read": "ask", "fs_write": "deny", "list_dir": "deny", "net_connect": "deny", "exec": "deny" }
}"#;

/// A busybox bundle running the test worker with `args` under [`POLICY`],
/// `ask` answered within `ask_timeout` or denied.
pub fn worker_bundle(env: &Env, name: &str, args: &[&str], ask_timeout: &str) -> PathBuf {
    worker_bundle_with(env, name, args, ask_timeout, &[])
}

/// [`worker_bundle`] with more annotations (`buntime.dev/learn`).
pub fn worker_bundle_with(
    env: &Env,
    name: &str,
    args: &[&str],
    ask_timeout: &str,
    more: &[(&str, &str)],
) -> PathBuf {
    let mut full = vec!["/bin/worker"];
    full.extend_from_slice(args);
    let b = env.bundle(name, &full, &[]);
    let rootfs = b.join("rootfs");
    install_worker(&rootfs);
    fs::create_dir_all(rootfs.join("data")).unwrap();
    fs::create_dir_all(rootfs.join("opt")).unwrap();
    fs::write(rootfs.join("data/ok.txt"), "hello data").unwrap();
    fs::write(rootfs.join("data/secret"), "data secret").unwrap();
    for f in ["allow-me", "deny-me", "always-me"] {
        fs::write(rootfs.join("opt").join(f), format!("content of {f}")).unwrap();
    }
    let cfg = b.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_str(&read(&cfg)).unwrap();
    spec["annotations"] = serde_json::json!({
        "buntime.dev/policy": POLICY,
        "buntime.dev/ask-timeout": ask_timeout,
    });
    for (k, v) in more {
        spec["annotations"][*k] = serde_json::json!(v);
    }
    fs::write(&cfg, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
    b
}

/// One HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Writes a request; `headers` replace the defaults (Host = `addr`).
fn send_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect to the UI");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("Connection: close\r\n\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    s.write_all(req.as_bytes()).unwrap();
    s
}

fn read_head(r: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    (status, headers)
}

/// Reads one chunk of a chunked body; None at the end.
fn read_chunk(r: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut size = String::new();
    if r.read_line(&mut size).ok()? == 0 {
        return None;
    }
    let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
    let mut data = vec![0u8; n + 2];
    r.read_exact(&mut data).ok()?;
    data.truncate(n);
    (n > 0).then_some(data)
}

/// A whole request and response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Resp {
    let s = send_request(addr, method, path, headers, body);
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r);
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        while let Some(c) = read_chunk(&mut r) {
            body.extend_from_slice(&c);
        }
    } else {
        let _ = r.read_to_end(&mut body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

pub fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, &[], None)
}

/// A same-origin JSON POST, as the page sends it.
pub fn post(addr: SocketAddr, path: &str, body: &str) -> Resp {
    let origin = format!("http://{addr}");
    request(
        addr,
        "POST",
        path,
        &[("Origin", &origin), ("Content-Type", "application/json")],
        Some(body),
    )
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: String,
    pub id: Option<String>,
    pub data: String,
}

impl Event {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {}", self.data))
    }
}

/// A server-sent events stream (chunked, as browsers get it).
pub struct Events {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    r: BufReader<TcpStream>,
    pending: String,
    pub ended: bool,
}

impl Events {
    pub fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Events {
        let s = send_request(addr, "GET", path, headers, None);
        let mut r = BufReader::new(s);
        let (status, headers) = read_head(&mut r);
        Events {
            status,
            headers,
            r,
            pending: String::new(),
            ended: false,
        }
    }

    /// The next event (comments skipped); None when the stream ends.
    pub fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let mut e = Event {
                    name: "message".into(),
                    id: None,
                    data: String::new(),
                };
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        e.name = v.to_string();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        e.id = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        if !e.data.is_empty() {
                            e.data.push('\n');
                        }
                        e.data.push_str(v);
                        any = true;
                    }
                }
                if any {
                    return Some(e);
                }
                continue;
            }
            if self.ended {
                return None;
            }
            match read_chunk(&mut self.r) {
                Some(c) => self.pending.push_str(&String::from_utf8_lossy(&c)),
                None => self.ended = true,
            }
        }
    }

    /// Events until `f` holds for one (returned), within `limit`.
    pub fn until(&mut self, limit: Duration, mut f: impl FnMut(&Event) -> bool) -> Vec<Event> {
        let start = Instant::now();
        let mut seen = Vec::new();
        while start.elapsed() < limit {
            let Some(e) = self.next() else { break };
            let done = f(&e);
            seen.push(e);
            if done {
                return seen;
            }
        }
        panic!("no matching event within {limit:?}; saw {seen:#?}");
    }
}

/// `buntime ui` as a process; killed on drop.
pub struct UiProcess {
    pub child: Child,
    pub url: String,
    pub addr: SocketAddr,
    /// Lines it printed after the address.
    pub extra: Vec<String>,
}

impl UiProcess {
    /// Starts `buntime --root ROOT ui ARGS…` and reads its address.
    pub fn start(roots: &[&Path], args: &[&str]) -> UiProcess {
        Self::start_cmd(Command::new(BUNTIME), roots, args)
    }

    /// The same, as user and group `uid` (through `setpriv`), from the
    /// binary `exe` (which that user must be able to run).
    pub fn start_as(uid: u32, exe: &Path, roots: &[&Path], args: &[&str]) -> UiProcess {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "--",
        ])
        .arg(exe);
        Self::start_cmd(cmd, roots, args)
    }

    fn start_cmd(mut cmd: Command, roots: &[&Path], args: &[&str]) -> UiProcess {
        for r in roots {
            cmd.arg("--root").arg(r);
        }
        let mut child = cmd
            .arg("ui")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start buntime ui");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("read the address");
        let url = line
            .trim()
            .strip_prefix("buntime ui: ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        let hostport = url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default();
        let addr: SocketAddr = hostport.parse().expect("address in the URL");
        let mut extra = Vec::new();
        if url.contains("token=") {
            let mut l = String::new();
            out.read_line(&mut l).unwrap();
            extra.push(l.trim().to_string());
        }
        UiProcess {
            child,
            url,
            addr,
            extra,
        }
    }
}

impl Drop for UiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
