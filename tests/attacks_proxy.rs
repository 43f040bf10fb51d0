//! Request smuggling through the egress proxy (issue 19, finding 6): a
//! sandbox allowed to reach one upstream (`buntime run --allow-net`) sends
//! a request with both Content-Length and Transfer-Encoding, one with
//! Transfer-Encoding twice, and a pipelined second request with another
//! Host, in the same write and after the first went upstream. The
//! upstream (a listener on the host's loopback that records every byte)
//! must receive exactly one request, never the second Host; the sandbox
//! gets 400 for the ambiguous ones.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BUNTIME: &str = env!("CARGO_BIN_EXE_buntime");

/// A host listener on 127.0.0.2 that records what each connection sends
/// (until the peer closes, or a second of silence) and answers the first
/// request head it sees.
fn recording_upstream() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = std::net::TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let port = l.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rec = Arc::clone(&seen);
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let rec = Arc::clone(&rec);
            std::thread::spawn(move || {
                let mut s = s;
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut got = Vec::new();
                let mut b = [0u8; 4096];
                let mut answered = false;
                loop {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&b[..n]),
                    }
                    if !answered && got.windows(4).any(|w| w == b"\r\n\r\n") {
                        answered = true;
                        let _ = s.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nupstream",
                        );
                    }
                }
                rec.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(String::from_utf8_lossy(&got).into_owned());
            });
        }
    });
    (port, seen)
}

/// Runs inside the sandbox: each case on its own connection to the proxy,
/// printing the case and the proxy's status line.
const SMUGGLER_PY: &str = r#"import socket, sys, time
up = "127.0.0.2:" + sys.argv[1]
first = f"POST http://{up}/first HTTP/1.1\r\nHost: {up}\r\n"
second = f"GET http://{up}/second HTTP/1.1\r\nHost: internal.example\r\n\r\n".encode()
cases = [
    ("clte", [f"{first}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".encode() + second]),
    ("dupte", [f"{first}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".encode() + second]),
    ("pipelined", [f"{first}Content-Length: 4\r\n\r\nbody".encode() + second]),
    ("late", [f"{first}Transfer-Encoding: chunked\r\n\r\n4\r\nlate\r\n0\r\n\r\n".encode(), second]),
]
for name, parts in cases:
    s = socket.create_connection(("127.0.0.1", 3128), timeout=20)
    for p in parts:
        s.sendall(p)
        time.sleep(0.3)
    answer = b""
    while True:
        try:
            b = s.recv(65536)
        except OSError as e:
            answer += f" [{e}]".encode()
            break
        if not b:
            break
        answer += b
    s.close()
    print(name, answer.split(b"\r\n")[0].decode(), "|", answer.split(b"\r\n\r\n")[-1].decode().strip(), flush=True)
"#;

#[test]
fn the_upstream_receives_exactly_one_request() {
    let dir = tempfile::Builder::new()
        .prefix("buntime-test-smuggle-")
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    // The run's uid must read the script.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let script = dir.path().join("smuggle.py");
    fs::write(&script, SMUGGLER_PY).expect("script");
    let (port, seen) = recording_upstream();
    let out = Command::new(BUNTIME)
        .arg("--root")
        .arg(dir.path().join("state"))
        .arg("run")
        .arg(format!("--allow-net=127.0.0.2:{port}"))
        .arg(&script)
        .arg(port.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run buntime");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let show = format!(
        "{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{show}");
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} line: {show}"))
            .to_string()
    };
    for (case, why) in [
        ("clte", "both Content-Length and Transfer-Encoding"),
        ("dupte", "Transfer-Encoding given more than once"),
        ("pipelined", "bytes after the request's body"),
    ] {
        let l = line(case);
        assert!(
            l.starts_with(&format!("{case} HTTP/1.1 400 Bad Request |")) && l.contains(why),
            "{l}\n{show}"
        );
    }
    // The late second request is never forwarded; the first is answered.
    assert_eq!(line("late"), "late HTTP/1.1 200 OK | upstream", "{show}");
    // Let the upstream's reader see the end of its connection.
    std::thread::sleep(Duration::from_millis(1500));
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(seen.len(), 1, "upstream connections: {seen:?}");
    let got = &seen[0];
    assert_eq!(got.matches(" HTTP/1.1\r\n").count(), 1, "{got:?}");
    assert!(got.starts_with("POST /first HTTP/1.1\r\n"), "{got:?}");
    assert!(got.ends_with("\r\n\r\n4\r\nlate\r\n0\r\n\r\n"), "{got:?}");
    assert!(!got.contains("internal.example"), "{got:?}");
    // The run's summary (from the audit log): the three 400s are refusals.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("buntime: 3 requests denied"), "{show}");
}
