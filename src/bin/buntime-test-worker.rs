//! A test worker: runs inside a container, talks to the supervisor through
//! the IPC client and prints one line per command, for the tests in
//! tests/supervisor_*.rs.
//!
//! Commands (one per argument): `read:PATH`, `write:PATH:DATA` (data in the
//! request), `wfd:PATH:DATA` (asks for a writable fd, writes through it),
//! `list:PATH`, `net:HOST:PORT:MSG` (sends MSG, prints the first line
//! back), `exec:PROG`, `stdout:TEXT`, `sleep:MS`, `garbage-ring` (scribbles
//! over its own segment's ring header), `garbage-ctl` (sends a nonsense
//! control message instead of HELLO), `ctl-exit:CODE` (a connection of its
//! own that reports CODE with the control message EXIT, twice),
//! `burst-stop:N` (a doorbell connection of its own: N STDOUT messages and
//! EXIT 9 in the ring, then STOP at once), `hold:N` (N connections of its
//! own at once: how many the supervisor took, why it refused the rest, and
//! whether a new one is taken once one of them is closed), `bench-read:PATH:N`
//! and `bench-deny:PATH:N` (round trips for benches/broker.rs).
//! Output: `CMD SUBJECT ALLOW|DENY|ERROR detail`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::time::Duration;

use buntime::ipc::control::{self, ctl};
use buntime::ipc::{Client, ControlSocket, Reply, Request, Response};

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn escape(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .replace('\n', "\\n")
        .replace('\0', ",")
}

struct Worker {
    client: Option<Client>,
}

impl Worker {
    fn client(&mut self) -> Result<&mut Client, String> {
        if self.client.is_none() {
            let mut c = Client::connect_env().map_err(|e| e.to_string())?;
            c.set_timeout(Some(Duration::from_secs(60)));
            self.client = Some(c);
        }
        self.client.as_mut().ok_or_else(|| "no client".to_string())
    }

    /// Sends a request; a dead supervisor counts as a denial.
    fn request(&mut self, req: &Request) -> Result<Response, String> {
        let r = self.client()?.request_typed(req);
        r.map_err(|e| {
            self.client = None;
            format!("supervisor unavailable: {e}")
        })
    }
}

fn report(cmd: &str, subject: &str, r: &Result<Response, String>) -> bool {
    match r {
        Ok(Response {
            reply: Reply::Deny { reason },
            ..
        }) => {
            say(&format!("{cmd} {subject} DENY {reason}"));
            false
        }
        Ok(_) => true,
        Err(e) => {
            say(&format!("{cmd} {subject} DENY {e}"));
            false
        }
    }
}

fn run(w: &mut Worker, arg: &str) {
    let (cmd, rest) = arg.split_once(':').unwrap_or((arg, ""));
    match cmd {
        "read" => {
            let r = w.request(&Request::FsRead {
                path: rest.as_bytes().to_vec(),
            });
            if report(cmd, rest, &r) {
                let mut s = Vec::new();
                let fd = r.ok().and_then(|r| r.fd);
                match fd.map(|fd| File::from(fd).read_to_end(&mut s)) {
                    Some(Ok(_)) => say(&format!("read {rest} ALLOW {}", escape(&s))),
                    Some(Err(e)) => say(&format!("read {rest} ERROR {e}")),
                    None => say(&format!("read {rest} ERROR no fd")),
                }
            }
        }
        "write" | "wfd" => {
            let (path, data) = rest.split_once(':').unwrap_or((rest, ""));
            let inline = if cmd == "write" { data } else { "" };
            let r = w.request(&Request::FsWrite {
                path: path.as_bytes().to_vec(),
                data: inline.as_bytes().to_vec(),
            });
            if report(cmd, path, &r) {
                let fd = r.ok().and_then(|r| r.fd);
                match (cmd, fd) {
                    ("wfd", Some(fd)) => match File::from(fd).write_all(data.as_bytes()) {
                        Ok(()) => say(&format!("wfd {path} ALLOW wrote")),
                        Err(e) => say(&format!("wfd {path} ERROR {e}")),
                    },
                    ("wfd", None) => say(&format!("wfd {path} ERROR no fd")),
                    _ => say(&format!("write {path} ALLOW wrote")),
                }
            }
        }
        "list" => {
            let r = w.request(&Request::ListDir {
                path: rest.as_bytes().to_vec(),
            });
            if report(cmd, rest, &r) {
                if let Ok(Response {
                    reply: Reply::Allow { data, .. },
                    ..
                }) = r
                {
                    say(&format!("list {rest} ALLOW {}", escape(&data)));
                }
            }
        }
        "net" => {
            let mut parts = rest.splitn(3, ':');
            let host = parts.next().unwrap_or("");
            let port = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let msg = parts.next().unwrap_or("");
            let subject = format!("{host}:{port}");
            let r = w.request(&Request::NetConnect {
                host: host.into(),
                port,
            });
            if report(cmd, &subject, &r) {
                match r.ok().and_then(|r| r.fd) {
                    Some(fd) => {
                        let mut s = std::net::TcpStream::from(fd);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                        let _ = s.write_all(format!("{msg}\n").as_bytes());
                        let mut line = String::new();
                        let _ = BufReader::new(s).read_line(&mut line);
                        say(&format!("net {subject} ALLOW {}", line.trim()));
                    }
                    None => say(&format!("net {subject} ERROR no fd")),
                }
            }
        }
        "exec" => {
            let r = w.request(&Request::Exec {
                argv: vec![rest.as_bytes().to_vec()],
            });
            if report(cmd, rest, &r) {
                if let Ok(Response {
                    reply: Reply::Allow { data, .. },
                    ..
                }) = r
                {
                    say(&format!("exec {rest} ALLOW {}", escape(&data)));
                }
            }
        }
        "stdout" => match w.client().and_then(|c| {
            c.write_stdout(format!("{rest}\n").as_bytes())
                .map_err(|e| e.to_string())
        }) {
            Ok(()) => say(&format!("stdout {rest} ALLOW sent")),
            Err(e) => say(&format!("stdout {rest} DENY {e}")),
        },
        "sleep" => std::thread::sleep(Duration::from_millis(rest.parse().unwrap_or(0))),
        "bench-read" => bench_read(w, rest),
        "bench-deny" => bench_deny(w, rest),
        "garbage-ctl" => match garbage_ctl() {
            Ok(s) => say(&format!("garbage-ctl - DONE {s}")),
            Err(e) => say(&format!("garbage-ctl - ERROR {e}")),
        },
        "ctl-exit" => match ctl_exit(rest) {
            Ok(()) => say(&format!("ctl-exit {rest} DONE")),
            Err(e) => say(&format!("ctl-exit {rest} ERROR {e}")),
        },
        "burst-stop" => match burst_stop(rest) {
            Ok(()) => say(&format!("burst-stop {rest} DONE")),
            Err(e) => say(&format!("burst-stop {rest} ERROR {e}")),
        },
        "hold" => match hold(rest) {
            Ok(s) => say(&format!("hold {rest} DONE {s}")),
            Err(e) => say(&format!("hold {rest} ERROR {e}")),
        },
        "garbage-ring" => match garbage_ring() {
            Ok(s) => say(&format!("garbage-ring - DONE {s}")),
            Err(e) => say(&format!("garbage-ring - ERROR {e}")),
        },
        _ => say(&format!("{cmd} {rest} ERROR unknown command")),
    }
}

/// `bench-read:PATH:N`: N allowed FS_READ round trips through the broker
/// (request, decision, fd passed, file read), then N direct opens and
/// reads of the same file; prints p50/p99 of each in microseconds.
fn bench_read(w: &mut Worker, rest: &str) {
    let (path, n) = rest.rsplit_once(':').unwrap_or((rest, "1000"));
    let n: usize = n.parse().unwrap_or(1000).max(1);
    let mut broker = Vec::with_capacity(n);
    let mut buf = Vec::new();
    for _ in 0..n {
        let start = std::time::Instant::now();
        let r = w.request(&Request::FsRead {
            path: path.as_bytes().to_vec(),
        });
        let fd = match r {
            Ok(Response {
                reply: Reply::Deny { reason },
                ..
            }) => {
                return say(&format!("bench-read {path} DENY {reason}"));
            }
            Ok(resp) => resp.fd,
            Err(e) => return say(&format!("bench-read {path} DENY {e}")),
        };
        buf.clear();
        if let Some(fd) = fd {
            let _ = File::from(fd).read_to_end(&mut buf);
        }
        broker.push(start.elapsed());
    }
    let mut direct = Vec::with_capacity(n);
    for _ in 0..n {
        let start = std::time::Instant::now();
        buf.clear();
        if let Ok(mut f) = File::open(path) {
            let _ = f.read_to_end(&mut buf);
        }
        direct.push(start.elapsed());
    }
    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        let i = ((v.len() - 1) as f64 * p).round() as usize;
        v[i.min(v.len() - 1)].as_secs_f64() * 1e6
    };
    say(&format!(
        "bench-read {path} RESULT broker_p50_us={:.1} broker_p99_us={:.1} direct_p50_us={:.1} direct_p99_us={:.1} n={n}",
        pct(&mut broker, 0.5),
        pct(&mut broker, 0.99),
        pct(&mut direct, 0.5),
        pct(&mut direct, 0.99)
    ));
}

/// `bench-deny:PATH:N`: N FS_READ round trips the supervisor refuses
/// (request, decision, audit line, DENY reply); prints p50/p99 in
/// microseconds.
fn bench_deny(w: &mut Worker, rest: &str) {
    let (path, n) = rest.rsplit_once(':').unwrap_or((rest, "1000"));
    let n: usize = n.parse().unwrap_or(1000).max(1);
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let start = std::time::Instant::now();
        match w.request(&Request::FsRead {
            path: path.as_bytes().to_vec(),
        }) {
            Ok(Response {
                reply: Reply::Deny { .. },
                ..
            }) => took.push(start.elapsed()),
            Ok(_) => return say(&format!("bench-deny {path} ERROR granted")),
            Err(e) => return say(&format!("bench-deny {path} ERROR {e}")),
        }
    }
    took.sort();
    let at = |p: f64| {
        let i = ((took.len() - 1) as f64 * p).round() as usize;
        took[i.min(took.len() - 1)].as_secs_f64() * 1e6
    };
    say(&format!(
        "bench-deny {path} RESULT deny_p50_us={:.2} deny_p99_us={:.2} n={n}",
        at(0.5),
        at(0.99)
    ));
}

fn control_path() -> String {
    std::env::var(buntime::ipc::ENV_CONTROL).unwrap_or_default()
}

/// A control message that is not HELLO, then garbage bytes.
fn garbage_ctl() -> Result<String, String> {
    let s = ControlSocket::connect(Path::new(&control_path())).map_err(|e| e.to_string())?;
    s.send(0x77, 0xdead_beef, b"\xff\xfe garbage", None)
        .map_err(|e| e.to_string())?;
    match s.recv(Some(Duration::from_secs(5))) {
        Ok(Some(m)) => Ok(format!("kind=0x{:02x}", m.kind)),
        Ok(None) => Ok("no answer".into()),
        Err(e) => Ok(format!("closed: {e}")),
    }
}

/// HELLO with doorbell wake-ups (as the pure-Python worker sends it) on a
/// connection of our own; the socket and the WELCOME.
fn doorbell_handshake() -> Result<(ControlSocket, control::ControlMsg), String> {
    let s = ControlSocket::connect(Path::new(&control_path())).map_err(|e| e.to_string())?;
    let mut hello = control::hello_body();
    hello[8..12].copy_from_slice(&control::FLAG_DOORBELL_WAKE.to_le_bytes());
    s.send(ctl::HELLO, 0, &hello, None)
        .map_err(|e| e.to_string())?;
    let m = s
        .recv(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?
        .ok_or("no WELCOME")?;
    if m.kind != ctl::WELCOME {
        return Err(format!("got 0x{:02x} instead of WELCOME", m.kind));
    }
    Ok((s, m))
}

/// Handshake by hand as the pure-Python worker does (doorbell wake-ups),
/// then report the exit status `code` on the control socket, twice (only
/// the first may be audited), and STOP.
fn ctl_exit(code: &str) -> Result<(), String> {
    let code: i32 = code.parse().map_err(|e| format!("exit code: {e}"))?;
    let (s, _) = doorbell_handshake()?;
    for kind in [ctl::READY, ctl::EXIT, ctl::EXIT, ctl::STOP] {
        s.send(kind, code as u32, &[], None)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `hold:N`: see the module comment.
fn hold(n: &str) -> Result<String, String> {
    let n: usize = n.parse().map_err(|e| format!("count: {e}"))?;
    let mut held = Vec::new();
    let mut why = String::new();
    for _ in 0..n {
        match Client::connect_env() {
            Ok(c) => held.push(c),
            Err(e) if why.is_empty() => why = e.to_string(),
            Err(_) => {}
        }
    }
    let taken = held.len();
    if let Some(c) = held.pop() {
        c.close().map_err(|e| e.to_string())?;
    }
    // The supervisor gives the slot back once it has seen the close.
    let mut again = "refused";
    for _ in 0..200 {
        if let Ok(c) = Client::connect_env() {
            held.push(c);
            again = "taken";
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(format!(
        "taken={taken} refused={} again={again} why={why}",
        n - taken
    ))
}

/// Handshake by hand with doorbell wake-ups (as the Python worker does),
/// adopt the connection, leave `n` STDOUT messages and an EXIT in the ring
/// and STOP right away: the supervisor must still read all of them.
fn burst_stop(n: &str) -> Result<(), String> {
    let n: usize = n.parse().map_err(|e| format!("count: {e}"))?;
    let (s, m) = doorbell_handshake()?;
    let fd = m.fd.ok_or("WELCOME without a segment")?;
    let version = u16::try_from(m.arg).map_err(|e| format!("version: {e}"))?;
    let flags = control::welcome_flags(&m.body);
    s.send(ctl::READY, 0, &[], None)
        .map_err(|e| e.to_string())?;
    let mut c = Client::adopt(s, fd, version, flags).map_err(|e| e.to_string())?;
    for i in 0..n {
        c.write_stdout(format!("burst line {i}\n").as_bytes())
            .map_err(|e| e.to_string())?;
    }
    c.exit(9).map_err(|e| e.to_string())?;
    c.close().map_err(|e| e.to_string())
}

/// Handshake by hand, then write nonsense indexes into the ring the
/// supervisor reads, ring the doorbell and wait for its STOP.
fn garbage_ring() -> Result<String, String> {
    let s = ControlSocket::connect(Path::new(&control_path())).map_err(|e| e.to_string())?;
    s.send(ctl::HELLO, 0, &control::hello_body(), None)
        .map_err(|e| e.to_string())?;
    let m = s
        .recv(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?
        .ok_or("no WELCOME")?;
    let fd = m.fd.ok_or("WELCOME without a segment")?;
    let file = File::from(fd);
    // SAFETY: a shared mapping of the segment; only raw bytes are written.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.map_err(|e| e.to_string())?;
    s.send(ctl::READY, 0, &[], None)
        .map_err(|e| e.to_string())?;
    let w2s = u32::from_le_bytes([map[0x18], map[0x19], map[0x1a], map[0x1b]]) as usize;
    // head far beyond tail + capacity: a corrupt ring.
    map[w2s..w2s + 4].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
    for b in &mut map[w2s + 64..w2s + 64 + 256] {
        *b = 0xAB;
    }
    let _ = s.send(ctl::DATA, 0, &[], None);
    match s.recv(Some(Duration::from_secs(5))) {
        Ok(Some(m)) if m.kind == ctl::STOP => Ok(format!("stop code={}", m.arg)),
        Ok(Some(m)) => Ok(format!("kind=0x{:02x}", m.kind)),
        Ok(None) => Ok("no answer".into()),
        Err(e) => Ok(format!("closed: {e}")),
    }
}

fn main() {
    let mut w = Worker { client: None };
    for arg in std::env::args().skip(1) {
        run(&mut w, &arg);
    }
    if let Some(c) = w.client.take() {
        let _ = c.close();
    }
}
