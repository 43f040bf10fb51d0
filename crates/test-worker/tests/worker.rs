//! The worker binary against a real supervisor channel on a Unix socket (no
//! container): its output lines are what tests/supervisor_*.rs read, so they
//! are checked here for each kind of answer. Also makes `cargo test
//! --workspace` build the binary the container tests copy into bundles.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use buntime_ipc::{
    ControlListener, Message, PeerPolicy, Request, Segment, SupervisorChannel, SupervisorConfig,
    ENV_CONTROL,
};

#[test]
fn worker_prints_the_supervisors_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctl = dir.path().join("control.sock");
    let listener = ControlListener::bind(&ctl).expect("bind");
    let seg = Segment::create(&dir.path().join("ipc"), 4096, 65536).expect("segment");
    let child = Command::new(env!("CARGO_BIN_EXE_buntime-test-worker"))
        .args(["stdout:hello", "read:/secret", "list:/data", "bogus:x"])
        .env(ENV_CONTROL, &ctl)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn worker");
    let cfg = SupervisorConfig {
        peer: PeerPolicy {
            pid: Some(child.id() as i32),
            ..PeerPolicy::same_uid()
        },
        ..Default::default()
    };
    let mut chan = SupervisorChannel::accept(&listener, seg, cfg).expect("accept");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stdout = Vec::new();
    let mut requests = 0;
    while requests < 2 {
        assert!(Instant::now() < deadline, "worker did not ask twice");
        let m = chan.recv_timeout(Duration::from_millis(100)).expect("recv");
        match m {
            None => {}
            Some(Message::Stdout(b)) => stdout.extend(b),
            Some(Message::Request {
                id,
                request: Request::FsRead { path },
            }) => {
                assert_eq!(path, b"/secret");
                chan.deny(id, "not in policy").expect("deny");
                requests += 1;
            }
            Some(Message::Request {
                id,
                request: Request::ListDir { path },
            }) => {
                assert_eq!(path, b"/data");
                chan.allow(id, b"a\0b").expect("allow");
                requests += 1;
            }
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
    let out = child.wait_with_output().expect("wait worker");
    assert!(out.status.success(), "worker failed: {:?}", out.status);
    assert_eq!(stdout, b"hello\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "stdout hello ALLOW sent\n\
         read /secret DENY not in policy\n\
         list /data ALLOW a,b\n\
         bogus x ERROR unknown command\n"
    );
}
