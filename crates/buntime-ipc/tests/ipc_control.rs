//! Control socket across two processes: handshake, SO_PEERCRED policy,
//! SCM_RIGHTS fd passing, requests with ids in flight, STOP.

mod ipc_common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use buntime_ipc::{
    kind, Client, ControlEvent, ControlListener, ControlSocket, IpcError, Message, PeerPolicy,
    Reply, Request, Segment, SupervisorChannel, SupervisorConfig,
};
use ipc_common::{role, spawn_child, wait_child};

/// Child for `worker_round_trip`: the worker's view of a session.
fn worker() {
    let mut c = Client::connect_env().expect("connect");
    c.set_timeout(Some(Duration::from_secs(10)));
    c.write_stdout(b"hello from worker").unwrap();

    // An fd granted by the supervisor: read the file through it.
    let r = c
        .request_typed(&Request::FsRead {
            path: b"/data/greeting".to_vec(),
        })
        .unwrap();
    assert!(matches!(
        r.reply,
        Reply::Allow {
            fd_follows: true,
            ..
        }
    ));
    let mut s = String::new();
    File::from(r.fd.expect("fd"))
        .read_to_string(&mut s)
        .unwrap();
    assert_eq!(s, "greeting-content");

    let r = c
        .request_typed(&Request::NetConnect {
            host: "example.com".into(),
            port: 443,
        })
        .unwrap();
    assert_eq!(
        r.reply,
        Reply::Deny {
            reason: "network denied by policy".into()
        }
    );

    // Three requests in flight, answered, collected in another order.
    let ids: Vec<u32> = ["/a", "/bb", "/ccc"]
        .iter()
        .map(|p| c.send_request(kind::LISTDIR, p.as_bytes()).unwrap())
        .collect();
    for (&id, want) in ids.iter().rev().zip(["/ccc", "/bb", "/a"]) {
        let r = c.wait_reply(id).unwrap();
        assert_eq!(
            r.reply,
            Reply::Allow {
                data: want.as_bytes().to_vec(),
                fd_follows: false
            }
        );
    }
    c.exit(0).unwrap();
    c.close().unwrap();
}

/// Child for `peer_credentials_are_enforced`.
fn rejected_worker() {
    match Client::connect_env() {
        Err(IpcError::PeerRejected(why)) => assert!(why.contains("uid"), "{why}"),
        Err(e) => panic!("expected a rejection, got {e}"),
        Ok(_) => panic!("connection should have been rejected"),
    }
}

#[test]
fn child_entry() {
    match role().as_deref() {
        Some("worker") => worker(),
        Some("rejected") => rejected_worker(),
        _ => {}
    }
}

fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let ctl = dir.path().join("control.sock");
    let seg = dir.path().join("ipc");
    (dir, ctl, seg)
}

#[test]
fn worker_round_trip() {
    if role().is_some() {
        return;
    }
    let (dir, ctl, seg_path) = setup();
    let listener = ControlListener::bind(&ctl).unwrap();
    let seg = Segment::create(&seg_path, 65536, 65536).unwrap();
    let mut child = spawn_child(
        "child_entry",
        "worker",
        &[
            ("BUNTIME_CONTROL", ctl.display().to_string()),
            ("BUNTIME_IPC", seg_path.display().to_string()),
        ],
    );
    // Only this very child may connect: SO_PEERCRED gives its pid.
    let cfg = SupervisorConfig {
        peer: PeerPolicy {
            uid: Some(nix::unistd::getuid().as_raw()),
            gid: None,
            pid: Some(child.id() as i32),
        },
        ..Default::default()
    };
    let mut chan = SupervisorChannel::accept(&listener, seg, cfg).unwrap();
    assert_eq!(chan.peer().pid, child.id() as i32);

    let greeting = dir.path().join("greeting");
    File::create(&greeting)
        .unwrap()
        .write_all(b"greeting-content")
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stdout = Vec::new();
    let mut listdirs = Vec::new();
    let mut exit = None;
    while exit.is_none() {
        assert!(Instant::now() < deadline, "worker session did not finish");
        let Some(m) = chan.recv_timeout(Duration::from_millis(100)).unwrap() else {
            continue;
        };
        match m {
            Message::Stdout(b) => stdout.extend(b),
            Message::Request {
                id,
                request: Request::FsRead { path },
            } => {
                assert_eq!(path, b"/data/greeting");
                let f = File::open(&greeting).unwrap();
                chan.allow_with_fd(id, f.as_fd(), &[]).unwrap();
            }
            Message::Request {
                id,
                request: Request::NetConnect { host, port },
            } => {
                assert_eq!((host.as_str(), port), ("example.com", 443));
                chan.deny(id, "network denied by policy").unwrap();
            }
            Message::Request {
                id,
                request: Request::ListDir { path },
            } => {
                listdirs.push((id, path));
                // Answer once all three are in flight, newest first.
                if listdirs.len() == 3 {
                    for (id, path) in listdirs.iter().rev() {
                        chan.allow(*id, path).unwrap();
                    }
                }
            }
            Message::Exit(code) => exit = Some(code),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(stdout, b"hello from worker");
    assert_eq!(exit, Some(0));
    assert!(
        wait_child(&mut child, Duration::from_secs(20)),
        "worker child failed"
    );
    // The worker's STOP (or its hang-up) is visible on the control socket.
    let ev = chan.poll_control().unwrap();
    assert!(
        matches!(ev, Some(ControlEvent::Stop { code: 0, .. })),
        "{ev:?}"
    );
}

#[test]
fn peer_credentials_are_enforced() {
    if role().is_some() {
        return;
    }
    let (_dir, ctl, seg_path) = setup();
    let listener = ControlListener::bind(&ctl).unwrap();
    let seg = Segment::create(&seg_path, 4096, 4096).unwrap();
    let mut child = spawn_child(
        "child_entry",
        "rejected",
        &[("BUNTIME_CONTROL", ctl.display().to_string())],
    );
    let cfg = SupervisorConfig {
        peer: PeerPolicy {
            uid: Some(nix::unistd::getuid().as_raw().wrapping_add(1)),
            ..Default::default()
        },
        ..Default::default()
    };
    let err = SupervisorChannel::accept(&listener, seg, cfg)
        .err()
        .expect("must reject");
    assert!(matches!(err, IpcError::PeerRejected(_)), "{err}");
    assert!(
        wait_child(&mut child, Duration::from_secs(20)),
        "child did not see the rejection"
    );
}

/// A supervisor channel and a library client joined by a socketpair.
fn connected_in_process() -> (SupervisorChannel, Client) {
    let (sup, wrk) = ControlSocket::pair().unwrap();
    let seg = Segment::create_anonymous(4096, 4096).unwrap();
    let worker = std::thread::spawn(move || Client::handshake(wrk, None));
    let chan = SupervisorChannel::handshake(sup, seg, SupervisorConfig::default()).unwrap();
    (chan, worker.join().unwrap().unwrap())
}

#[test]
fn doorbell_wakes_an_event_loop() {
    if role().is_some() {
        return;
    }
    let (mut chan, mut client) = connected_in_process();

    assert!(!chan.arm_doorbell().unwrap(), "ring should be empty");
    client.write_stderr(b"wake up").unwrap();
    // The write rang the control socket instead of a futex.
    let mut pfd = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&chan.control_fd()),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, 10_000) };
    assert_eq!(n, 1, "no doorbell on the control socket");
    assert_eq!(chan.poll_control().unwrap(), Some(ControlEvent::Doorbell));
    assert_eq!(
        chan.try_recv().unwrap(),
        Some(Message::Stderr(b"wake up".to_vec()))
    );
    // Not armed any more: the next write does not ring.
    client.write_stderr(b"again").unwrap();
    assert_eq!(chan.poll_control().unwrap(), None);
    assert_eq!(
        chan.try_recv().unwrap(),
        Some(Message::Stderr(b"again".to_vec()))
    );
}

/// A worker that shakes hands itself (as the Python worker does, without
/// the library) and says it cannot wake a futex: the supervisor waits for
/// it on the control socket, and the library adopts the connection later.
#[test]
fn a_doorbell_wake_worker_is_adopted_and_waited_for_on_the_socket() {
    if role().is_some() {
        return;
    }
    let (sup, wrk) = ControlSocket::pair().unwrap();
    let seg = Segment::create_anonymous(4096, 4096).unwrap();
    let sup_side = std::thread::spawn(move || {
        SupervisorChannel::handshake(sup, seg, SupervisorConfig::default())
    });
    // HELLO: magic, versions 1..=1, FLAG_DOORBELL_WAKE.
    let mut hello = b"BNTC".to_vec();
    hello.extend_from_slice(&[1, 0, 1, 0, 2, 0, 0, 0]);
    wrk.send(0x01, 0, &hello, None).unwrap();
    let welcome = wrk.recv(Some(Duration::from_secs(5))).unwrap().unwrap();
    assert_eq!((welcome.kind, welcome.arg), (0x02, 1));
    let segment_fd = welcome.fd.expect("WELCOME passes the segment");
    wrk.send(0x04, 0, &[], None).unwrap();
    let mut chan = sup_side.join().unwrap().unwrap();
    assert!(chan.peer_wants_doorbell());

    // Nothing written yet: the wait times out.
    assert!(!chan.wait_doorbell(Duration::from_millis(50)).unwrap());
    let flags = u32::from_le_bytes(welcome.body[..4].try_into().unwrap());
    let mut client = Client::adopt(wrk, segment_fd, 1, flags).unwrap();
    // The supervisor is asleep in poll when the worker writes: the doorbell
    // the write rings wakes it.
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(100));
            client.write_stderr(b"from an adopted client").unwrap();
        });
        assert!(chan.wait_doorbell(Duration::from_secs(10)).unwrap());
    });
    assert_eq!(
        chan.try_recv().unwrap(),
        Some(Message::Stderr(b"from an adopted client".to_vec()))
    );
    assert_eq!(chan.poll_control().unwrap(), Some(ControlEvent::Doorbell));
    // Requests work both ways on the adopted connection.
    let id = client.send_request(kind::FS_READ, b"/x").unwrap();
    assert!(chan.wait_doorbell(Duration::from_secs(10)).unwrap());
    let Some(Message::Request { id: got, .. }) = chan.try_recv().unwrap() else {
        panic!("no request");
    };
    assert_eq!(got, id);
    chan.deny(id, "no").unwrap();
    let r = client.wait_reply(id).unwrap();
    assert!(matches!(r.reply, Reply::Deny { .. }), "{:?}", r.reply);
    // An unsupported version is refused before anything is mapped.
    let (_a, b) = ControlSocket::pair().unwrap();
    let memfd = Segment::create_anonymous(4096, 4096).unwrap();
    let fd = memfd.fd().try_clone_to_owned().unwrap();
    assert!(matches!(
        Client::adopt(b, fd, 9, 0),
        Err(IpcError::Handshake(_))
    ));
}

#[test]
fn bad_hello_fails_the_handshake() {
    if role().is_some() {
        return;
    }
    let (sup, wrk) = ControlSocket::pair().unwrap();
    let seg = Segment::create_anonymous(4096, 4096).unwrap();
    wrk.send(0x01, 0, b"not a hello", None).unwrap();
    let err = SupervisorChannel::handshake(sup, seg, SupervisorConfig::default())
        .err()
        .unwrap();
    assert!(matches!(err, IpcError::Handshake(_)), "{err}");
    let m = wrk.recv(Some(Duration::from_secs(5))).unwrap().unwrap();
    assert_eq!(m.kind, 0x03, "worker should get REJECT");
}

/// A worker cannot shrink the anonymous segment it is handed: the size is
/// sealed, so the supervisor's mapping never loses its pages (SIGBUS).
#[test]
fn anonymous_segment_cannot_be_truncated() {
    let seg = buntime_ipc::Segment::create_anonymous(4096, 4096).expect("segment");
    let fd = seg.fd().try_clone_to_owned().expect("dup");
    let file = std::fs::File::from(fd);
    let err = file.set_len(0).expect_err("shrinking must be refused");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    assert!(file.set_len(1 << 30).is_err(), "growing must be refused");
}

/// A peer that never reads its control socket cannot block the sender:
/// fd passing gives up after the timeout instead of hanging.
#[test]
fn fd_passing_to_a_peer_that_never_reads_times_out() {
    use std::time::Duration;
    let (sender, _silent_peer) = buntime_ipc::ControlSocket::pair().expect("pair");
    let file = std::fs::File::open("/dev/null").expect("open");
    let fd = std::os::fd::AsFd::as_fd(&file);
    let mut outcome = Ok(());
    // Far more messages than a socket buffer holds.
    for i in 0..100_000u32 {
        outcome = sender.send_within(1, i, &[0u8; 64], Some(fd), Duration::from_millis(50));
        if outcome.is_err() {
            break;
        }
    }
    match outcome {
        Err(buntime_ipc::IpcError::Timeout) => {}
        other => panic!("expected a timeout once the buffer is full, got {other:?}"),
    }
}

/// The supervisor may read a worker's STOP before the messages it wrote
/// just before (it looked at the ring, found it empty, then read the
/// control socket): those messages stay readable after the STOP.
#[test]
fn messages_written_before_stop_stay_readable() {
    if role().is_some() {
        return;
    }
    let (mut chan, mut client) = connected_in_process();
    assert_eq!(chan.try_recv().unwrap(), None);
    client.write_stderr(b"last words").unwrap();
    client.exit(3).unwrap();
    client.close().unwrap();
    let ev = chan.poll_control().unwrap();
    assert!(
        matches!(ev, Some(ControlEvent::Stop { code: 0, .. })),
        "{ev:?}"
    );
    assert!(chan.is_closed());
    assert_eq!(
        chan.try_recv().unwrap(),
        Some(Message::Stderr(b"last words".to_vec()))
    );
    assert_eq!(chan.try_recv().unwrap(), Some(Message::Exit(3)));
    assert_eq!(chan.try_recv().unwrap(), None);
    // Nothing more is sent to a worker that stopped.
    assert!(chan.allow(1, b"late").is_err());
}
