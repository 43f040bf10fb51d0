//! The proxy's handling of one connection, over real loopback sockets:
//! the head deadline, gentle refusals, and which gateway error is given.

use super::*;
use std::io::Read;
use std::net::Shutdown;

use std::sync::{Arc, Mutex};

/// Allows `up.test` (to `addr`), denies everything else; keeps what it
/// is asked to record.
struct TestGate {
    addr: SocketAddr,
    seen: Mutex<Vec<Attempt>>,
}

impl Gate for TestGate {
    fn check(&self, host: &str, _port: u16) -> Result<Granted, Refused> {
        if host == "up.test" {
            Ok(Granted {
                addrs: vec![self.addr],
                rule: RuleRef::Other("test".into()),
            })
        } else {
            Err(Refused {
                rule: RuleRef::Other("test".into()),
                reason: "not up.test".into(),
                addr: None,
            })
        }
    }
    fn record(&self, a: &Attempt) {
        self.seen.lock().unwrap().push(a.clone());
    }
}

/// A loopback port that refuses connections while the socket is held:
/// bound, so no other test is given the port, but not listening.
fn closed_port() -> (std::os::fd::OwnedFd, SocketAddr) {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn};
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::new(127, 0, 0, 1, 0),
    )
    .unwrap();
    let bound: SockaddrIn = socket::getsockname(std::os::fd::AsRawFd::as_raw_fd(&fd)).unwrap();
    (fd, SocketAddr::V4(bound.into()))
}

/// A proxy on loopback (its own thread) whose gate allows `up`.
fn proxy(up: SocketAddr, limits: Limits) -> (SocketAddr, Arc<TestGate>) {
    proxy_tallied(up, limits, Arc::default())
}

fn proxy_tallied(up: SocketAddr, limits: Limits, tally: Arc<Tally>) -> (SocketAddr, Arc<TestGate>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let gate = Arc::new(TestGate {
        addr: up,
        seen: Mutex::new(Vec::new()),
    });
    let g: Arc<dyn Gate> = gate.clone();
    std::thread::spawn(move || serve(l, g, limits, tally));
    (addr, gate)
}

fn wait_for(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn records(gate: &TestGate, n: usize) -> Vec<Attempt> {
    for _ in 0..500 {
        let seen = gate.seen.lock().unwrap();
        if seen.len() >= n {
            return seen.clone();
        }
        drop(seen);
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("fewer than {n} attempts recorded");
}

#[test]
fn a_trickled_head_gets_408_at_the_deadline_for_the_whole_head() {
    let limits = Limits {
        head_timeout: Duration::from_millis(600),
        ..Limits::default()
    };
    let (addr, gate) = proxy("127.0.0.1:9".parse().unwrap(), limits);
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // A byte every 100 ms: each read is well within the timeout, the head
    // as a whole is not. Stops at the first write the proxy refuses.
    let head = b"CONNECT up.test:1 HTTP/1.1\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut sent = 0;
    for b in head.iter() {
        if c.write_all(&[*b]).is_err() {
            break;
        }
        sent += 1;
        let mut probe = [0u8; 1];
        c.set_nonblocking(true).unwrap();
        let answered = matches!(c.peek(&mut probe), Ok(1));
        c.set_nonblocking(false).unwrap();
        if answered {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(sent < head.len(), "the whole head went through");
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
    let a = &records(&gate, 1)[0];
    assert_eq!(a.reason, "request head not received in time");
    assert_eq!(a.decision, Verdict::Deny);
}

#[test]
fn a_refused_request_with_a_body_still_reads_its_answer() {
    let (addr, gate) = proxy("127.0.0.1:9".parse().unwrap(), Limits::default());
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(b"POST http://denied.test/up HTTP/1.1\r\nContent-Length: 49152\r\n\r\n")
        .unwrap();
    // The body goes on after the proxy has answered: like a client that
    // sends its whole request before it reads. Were the proxy to close at
    // once, these writes would meet a reset.
    let mut probe = [0u8; 1];
    assert_eq!(c.peek(&mut probe).unwrap(), 1);
    // Audited before it was answered: the sandbox may end as soon as it
    // has its answer, and its supervisor with it.
    assert_eq!(gate.seen.lock().unwrap().len(), 1);
    for _ in 0..3 {
        c.write_all(&[b'x'; 16384]).expect("body write");
    }
    c.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).expect("answer");
    assert!(answer.starts_with("HTTP/1.1 403 "), "{answer:?}");
    assert!(answer.contains("not up.test"), "{answer:?}");
    assert_eq!(records(&gate, 1)[0].reason, "not up.test");
}

#[test]
fn a_refusal_is_reported_over_a_timeout_and_504_only_when_all_timed_out() {
    // A listener whose accept queue is full drops new SYNs: connecting to
    // it times out. Nothing is accepted from it.
    // (listen again on a listening socket sets its backlog.)
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let backlog = nix::sys::socket::Backlog::new(0).unwrap();
    nix::sys::socket::listen(&listener, backlog).unwrap();
    let full = listener.local_addr().unwrap();
    let quick = Duration::from_millis(300);
    let mut queued = Vec::new();
    while let Ok(s) = TcpStream::connect_timeout(&full, quick) {
        queued.push(s);
        assert!(queued.len() < 64, "the accept queue never filled");
    }
    // A port nobody listens on: refused at once.
    let (_held, closed) = closed_port();
    let kind = |addrs: &[SocketAddr]| connect_any(addrs, quick).unwrap_err().error.kind();
    assert_eq!(kind(&[full]), std::io::ErrorKind::TimedOut);
    assert_eq!(kind(&[full, full]), std::io::ErrorKind::TimedOut);
    assert_eq!(kind(&[full, closed]), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(kind(&[closed, full]), std::io::ErrorKind::ConnectionRefused);
    // The address reported is the one whose error is reported.
    let addr = |addrs: &[SocketAddr]| connect_any(addrs, quick).unwrap_err().addr;
    assert_eq!(addr(&[full, closed]), Some(closed));
    assert_eq!(addr(&[closed, full]), Some(closed));
    assert_eq!(addr(&[full]), Some(full));
}

/// Sends a CONNECT for up.test and returns the proxy's status line.
fn tunnel(proxy: SocketAddr) -> (TcpStream, String) {
    let mut c = TcpStream::connect(proxy).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(b"CONNECT up.test:1 HTTP/1.1\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n") && c.read(&mut b).unwrap_or(0) == 1 {
        head.push(b[0]);
    }
    let line = String::from_utf8_lossy(&head).trim_end().to_string();
    (c, line)
}

#[test]
fn connections_beyond_the_limit_get_503_until_one_ends() {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let (addr, gate) = proxy(upstream.local_addr().unwrap(), limits);
    let (first, status) = tunnel(addr);
    assert_eq!(status, "HTTP/1.1 200 Connection established");
    let (first_up, _) = upstream.accept().unwrap();
    let (_second, status) = tunnel(addr);
    assert_eq!(status, "HTTP/1.1 200 Connection established");
    let (_second_up, _) = upstream.accept().unwrap();
    let (_third, status) = tunnel(addr);
    assert!(status.starts_with("HTTP/1.1 503 "), "{status}");
    // A second one turned away: counted, not a line each (one line a
    // second says how many; the two may fall in different seconds).
    let (_fourth, status) = tunnel(addr);
    assert!(status.starts_with("HTTP/1.1 503 "), "{status}");
    let counted = |seen: &[Attempt]| -> u64 {
        seen.iter()
            .filter_map(|a| {
                assert_eq!(a.decision, Verdict::Deny);
                assert_eq!(a.target, addr.to_string());
                a.reason
                    .strip_prefix("too many connections (")?
                    .strip_suffix(" turned away)")?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    assert!(wait_for(|| counted(&gate.seen.lock().unwrap()) == 2));
    // Both ends of the first go: its slot is free again.
    drop(first);
    drop(first_up);
    let mut status = String::new();
    for _ in 0..200 {
        let (_c, s) = tunnel(addr);
        status = s;
        if !status.starts_with("HTTP/1.1 503 ") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(status, "HTTP/1.1 200 Connection established");
}

#[test]
fn a_failed_upstream_is_audited_with_the_address_tried() {
    let (_held, closed) = closed_port();
    let (addr, gate) = proxy(closed, Limits::default());
    let (_c, status) = tunnel(addr);
    assert!(status.starts_with("HTTP/1.1 502 "), "{status}");
    let a = &records(&gate, 1)[0];
    assert_eq!(a.decision, Verdict::Error);
    assert_eq!(a.addr, Some(closed));
    assert!(
        a.reason.starts_with("cannot connect to up.test:1: "),
        "{}",
        a.reason
    );
}

#[test]
fn the_tally_counts_connections_until_their_line_is_written() {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let tally = Arc::new(Tally::default());
    let limits = Limits {
        max_connections: 1,
        ..Limits::default()
    };
    let (addr, gate) = proxy_tallied(upstream.local_addr().unwrap(), limits, Arc::clone(&tally));
    let (c, status) = tunnel(addr);
    assert_eq!(status, "HTTP/1.1 200 Connection established");
    let (up, _) = upstream.accept().unwrap();
    assert_eq!(tally.unrecorded(), 1);
    // Turned away: answered, counted apart, audited by a flush.
    let (_turned, status) = tunnel(addr);
    assert!(status.starts_with("HTTP/1.1 503 "), "{status}");
    assert_eq!(tally.unrecorded(), 1);
    tally.flush_turned_away(gate.as_ref());
    // What a supervisor that cannot wait longer writes for the open one.
    tally.record_unfinished(gate.as_ref());
    let unfinished = |seen: &[Attempt]| {
        seen.iter()
            .filter(|a| a.decision == Verdict::Close)
            .map(|a| a.reason.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        unfinished(&gate.seen.lock().unwrap()),
        ["connections still open when the container ended: 1"]
    );
    let limited = |seen: &[Attempt]| {
        seen.iter()
            .filter(|a| a.rule == RuleRef::ProxyLimits)
            .count()
    };
    assert_eq!(limited(&gate.seen.lock().unwrap()), 1);
    // Both ends gone: the relay ends, its line is written, and only then
    // does the count drop.
    drop(c);
    drop(up);
    assert!(wait_for(|| tally.unrecorded() == 0));
    let seen = gate.seen.lock().unwrap();
    assert!(
        seen.iter().any(|a| a.decision == Verdict::Allow),
        "{seen:?}"
    );
}

/// An upstream that records everything each connection sends (until the
/// client half-closes or 1 s of silence), answering the first request.
fn recording_upstream() -> (SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rec = Arc::clone(&seen);
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let rec = Arc::clone(&rec);
            std::thread::spawn(move || {
                let mut s = s;
                s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
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
                            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\none",
                        );
                    }
                }
                rec.lock().unwrap().push(got);
            });
        }
    });
    (addr, seen)
}

fn exchange(proxy: SocketAddr, parts: &[&[u8]]) -> String {
    let mut c = TcpStream::connect(proxy).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    for p in parts {
        c.write_all(p).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    answer
}

#[test]
fn one_well_framed_request_per_upstream_connection() {
    let (up, seen) = recording_upstream();
    let (addr, gate) = proxy(up, Limits::default());
    let first = "POST http://up.test/a HTTP/1.1\r\nHost: up.test";
    let second = "GET http://up.test/b HTTP/1.1\r\nHost: internal.test\r\n\r\n";
    // Refused before any upstream connection.
    for (req, why) in [
        (
            format!("{first}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            "both Content-Length and Transfer-Encoding",
        ),
        (
            format!("{first}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n"),
            "Transfer-Encoding given more than once",
        ),
        (
            format!("{first}\r\nContent-Length: 4\r\n\r\nbody{second}"),
            "54 bytes after the request's body (one request per connection)",
        ),
    ] {
        let answer = exchange(addr, &[req.as_bytes()]);
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer:?}");
        assert!(answer.contains(why), "{answer:?}");
        let a = records(&gate, 1).pop().unwrap();
        assert_eq!((a.decision, a.reason.as_str()), (Verdict::Deny, why));
        gate.seen.lock().unwrap().clear();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(seen.lock().unwrap().is_empty(), "upstream was reached");
    // The second request arrives after the first went upstream: never
    // forwarded; the first's answer still comes.
    let req = format!("{first}\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n");
    let answer = exchange(addr, &[req.as_bytes(), second.as_bytes()]);
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer:?}");
    assert!(answer.ends_with("one"), "{answer:?}");
    let a = records(&gate, 1).pop().unwrap();
    assert_eq!(a.decision, Verdict::Allow);
    assert_eq!(
        a.reason,
        "54 bytes after the request's body were not forwarded (one request per connection)"
    );
    assert!(wait_for(|| seen.lock().unwrap().len() == 1));
    let got = String::from_utf8(seen.lock().unwrap()[0].clone()).unwrap();
    assert!(got.ends_with("\r\n\r\n4\r\nbody\r\n0\r\n\r\n"), "{got:?}");
    assert!(!got.contains("internal.test"), "{got:?}");
}

/// Admits no client; keeps what it is asked to record.
#[derive(Default)]
struct RefuseAll(Mutex<Vec<Attempt>>);

impl Gate for RefuseAll {
    fn admit(&self, _client: &TcpStream) -> Result<(), String> {
        Err("not this one".into())
    }
    fn check(&self, _host: &str, _port: u16) -> Result<Granted, Refused> {
        unreachable!("a refused client is never asked what it wants")
    }
    fn record(&self, a: &Attempt) {
        self.0.lock().unwrap().push(a.clone());
    }
}

#[test]
fn refused_clients_take_no_slot_and_are_audited_in_aggregate() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let gate = Arc::new(RefuseAll::default());
    let tally = Arc::new(Tally::default());
    let (g, t): (Arc<dyn Gate>, _) = (gate.clone(), Arc::clone(&tally));
    let limits = Limits {
        max_connections: 1,
        ..Limits::default()
    };
    std::thread::spawn(move || serve(l, g, limits, t));
    // All open at once, none closed: with one slot, every one still gets
    // its 403 (none a 503).
    let mut clients: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(addr).unwrap()).collect();
    for c in &mut clients {
        let mut answer = String::new();
        let _ = c.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
        assert!(answer.contains("not this one"), "{answer}");
    }
    tally.flush_turned_away(gate.as_ref());
    let seen = gate.0.lock().unwrap().clone();
    let refused: u64 = seen
        .iter()
        .filter_map(|a| {
            a.reason
                .split_once(" connection(s) refused (last: not this one)")
        })
        .map(|(n, _)| n.parse::<u64>().unwrap())
        .sum();
    assert_eq!(refused, 5, "{seen:?}");
    assert!(seen.iter().all(|a| a.decision == Verdict::Deny), "{seen:?}");
}
