//! Loads the built libbuntime_ipc.so from Python (ctypes, through
//! bench/ipc/buntime_ipc.py) in a second process and talks to a Rust
//! supervisor: STDOUT, a request answered with data and an fd, a denied
//! request, EXIT.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use buntime_ipc::{
    ControlListener, Message, PeerPolicy, Request, Segment, SupervisorChannel, SupervisorConfig,
};

const PYTHON: &str = "/usr/bin/python3";

const SCRIPT: &str = r#"
import os, buntime_ipc as b
c = b.Client()
c.send(b.STDOUT, b"hi from python")
kind, data, fd = c.request(b.FS_READ, b"/data/file")
assert kind == b.ALLOW, kind
assert data == b"inline", data
assert fd >= 0, fd
assert os.read(fd, 100) == b"file via fd", "fd content"
os.close(fd)
kind, reason, fd = c.request(b.NET_CONNECT, (80).to_bytes(2, "little") + b"example.org")
assert kind == b.DENY and reason == b"no network" and fd == -1, (kind, reason, fd)
c.send(b.EXIT, (7).to_bytes(4, "little", signed=True))
c.close()
print("python-ok")
"#;

/// The .so cargo built for this test run: target/<profile>/deps/ (where
/// this test binary is), or target/<profile>/ after a `cargo build`.
fn cdylib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let here = deps.join("libbuntime_ipc.so");
    if here.exists() {
        return here;
    }
    deps.parent().unwrap().join("libbuntime_ipc.so")
}

#[test]
fn python_client_through_the_cdylib() {
    let lib = cdylib();
    assert!(lib.exists(), "{} not built", lib.display());
    assert!(
        Path::new(PYTHON).exists(),
        "{PYTHON} missing (apt-get install python3)"
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().unwrap();
    let ctl = dir.path().join("control.sock");
    let listener = ControlListener::bind(&ctl).unwrap();
    let seg = Segment::create(&dir.path().join("ipc"), 4096, 65536).unwrap();
    let file_path = dir.path().join("file");
    File::create(&file_path)
        .unwrap()
        .write_all(b"file via fd")
        .unwrap();

    let child = Command::new(PYTHON)
        .args(["-c", SCRIPT])
        .env("BUNTIME_CONTROL", &ctl)
        .env("BUNTIME_IPC_LIB", &lib)
        .env("PYTHONPATH", repo.join("bench/ipc"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let cfg = SupervisorConfig {
        peer: PeerPolicy {
            pid: Some(child.id() as i32),
            ..PeerPolicy::same_uid()
        },
        ..Default::default()
    };
    let mut chan = SupervisorChannel::accept(&listener, seg, cfg).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stdout = Vec::new();
    let code = loop {
        assert!(Instant::now() < deadline, "python client did not finish");
        let Some(m) = chan.recv_timeout(Duration::from_millis(100)).unwrap() else {
            continue;
        };
        match m {
            Message::Stdout(b) => stdout.extend(b),
            Message::Request {
                id,
                request: Request::FsRead { path },
            } => {
                assert_eq!(path, b"/data/file");
                let f = File::open(&file_path).unwrap();
                chan.allow_with_fd(id, f.as_fd(), b"inline").unwrap();
            }
            Message::Request {
                id,
                request: Request::NetConnect { host, port },
            } => {
                assert_eq!((host.as_str(), port), ("example.org", 80));
                chan.deny(id, "no network").unwrap();
            }
            Message::Exit(code) => break code,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(code, 7);
    assert_eq!(stdout, b"hi from python");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python failed: {:?}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "python-ok");
}
