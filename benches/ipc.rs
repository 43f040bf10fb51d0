//! Two-process IPC benchmark: the shared-memory ring against a Unix stream
//! socketpair and a pipe, in one run (see docs/ipc.md, "Benchmark").
//!
//! * request/response round trip, 64-byte request, 8-byte ALLOW reply, p50
//!   and p99, hot (back to back: the supervisor is still spinning) and cold
//!   (one request every 200 µs: the supervisor has gone to sleep);
//! * the same over the ring from Python (ctypes) and Bun (bun:ffi) clients
//!   through libbuntime_ipc.so;
//! * STDOUT streaming throughput, 64 KiB messages, 1 MiB ring;
//! * the CPU the supervisor's spin costs in the cold regime.
//!
//! The supervisor side runs in this process; every client is a separate
//! process (this binary re-executed with BENCH_ROLE set, or python/bun).
//! `BUNTIME_IPC_BENCH_QUICK=1` shortens every phase.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use buntime::ipc::{
    kind, Client, ControlListener, Message, PeerPolicy, Received, Segment, SupervisorChannel,
    SupervisorConfig,
};

const REQ_LEN: usize = 64; // payload bytes of a request (8 header + 56 path)
const REPLY_LEN: usize = 8; // an ALLOW with no body
const COLD_INTERVAL_US: u64 = 200;
const STREAM_MSG: usize = 64 * 1024;
const STREAM_RING: u32 = 1 << 20;
const ROLE: &str = "BENCH_ROLE";

struct Sizes {
    hot: usize,
    hot_sock: usize,
    cold: usize,
    stream_bytes: u64,
}

fn sizes() -> Sizes {
    if std::env::var_os("BUNTIME_IPC_BENCH_QUICK").is_some() {
        Sizes {
            hot: 20_000,
            hot_sock: 2_000,
            cold: 500,
            stream_bytes: 256 << 20,
        }
    } else {
        Sizes {
            hot: 200_000,
            hot_sock: 20_000,
            cold: 4_000,
            stream_bytes: 4 << 30,
        }
    }
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn request_body() -> Vec<u8> {
    let mut p = b"/data/".to_vec();
    p.resize(REQ_LEN - 8, b'x');
    p
}

// ---------------------------------------------------------------- clients

/// Percentiles of a latency sample, printed by every client as one line:
/// `p50_ns p99_ns count`.
fn report(mut v: Vec<u64>) {
    v.sort_unstable();
    let p = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    println!("{} {} {}", p(0.50), p(0.99), v.len());
}

/// Run `n` timed round trips after a warm-up; in cold mode sleep between.
fn rtt_loop(n: usize, cold: bool, mut rt: impl FnMut()) {
    for _ in 0..n.min(2000) {
        rt();
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        if cold {
            std::thread::sleep(Duration::from_micros(COLD_INTERVAL_US));
        }
        let t = Instant::now();
        rt();
        v.push(t.elapsed().as_nanos() as u64);
    }
    report(v);
}

fn env_usize(k: &str) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

fn child_main(role: &str) {
    let n = env_usize("N");
    let cold = std::env::var("MODE").as_deref() == Ok("cold");
    match role {
        "ring-rtt" => {
            let mut c = Client::connect_env().expect("connect");
            let body = request_body();
            rtt_loop(n, cold, || {
                c.request(kind::FS_READ, &body).expect("request");
            });
            c.exit(0).expect("exit");
        }
        "sock-rtt" | "pipe-rtt" => {
            // SAFETY: fds 3 (replies in) and 4 (requests out) were set up by
            // the parent; for a socket both are the same socket.
            let (mut rx, mut tx) = unsafe { (File::from_raw_fd(3), File::from_raw_fd(4)) };
            let req = [7u8; REQ_LEN];
            let mut rep = [0u8; REPLY_LEN];
            rtt_loop(n, cold, || {
                tx.write_all(&req).expect("write");
                rx.read_exact(&mut rep).expect("read");
            });
        }
        "ring-stream" => {
            let mut c = Client::connect_env().expect("connect");
            let total: u64 = std::env::var("BYTES").unwrap().parse().unwrap();
            let body = vec![0xabu8; STREAM_MSG - 8];
            let mut sent = 0u64;
            while sent < total {
                c.send(kind::STDOUT, &body).expect("send");
                sent += STREAM_MSG as u64;
            }
            c.exit(0).expect("exit");
        }
        "fd-stream" => {
            let total: u64 = std::env::var("BYTES").unwrap().parse().unwrap();
            // SAFETY: fd 4 is the write end set up by the parent.
            let mut tx = unsafe { File::from_raw_fd(4) };
            let buf = vec![0xabu8; STREAM_MSG];
            let mut sent = 0u64;
            while sent < total {
                tx.write_all(&buf).expect("write");
                sent += STREAM_MSG as u64;
            }
        }
        other => panic!("unknown role {other}"),
    }
}

// ------------------------------------------------------------- the parent

/// Hand `fds` to the child as 3, 4, ... (dup2 clears close-on-exec).
fn pass_fds(cmd: &mut Command, fds: Vec<RawFd>) {
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut tmp = Vec::new();
            for &fd in &fds {
                let t = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100);
                if t < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                tmp.push(t);
            }
            for (i, t) in tmp.into_iter().enumerate() {
                if libc::dup2(t, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

fn self_cmd(role: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.env(ROLE, role)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    cmd
}

/// Read the client's `p50 p99 n` line and reap it.
fn collect(mut child: Child) -> Option<(u64, u64)> {
    let out = child.stdout.take()?;
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).ok()?;
    let ok = child.wait().map(|s| s.success()).unwrap_or(false);
    let mut it = line.split_whitespace().map(|x| x.parse::<u64>().ok());
    match (ok, it.next().flatten(), it.next().flatten()) {
        (true, Some(a), Some(b)) => Some((a, b)),
        _ => None,
    }
}

struct Server {
    listener: ControlListener,
    dir: tempfile::TempDir,
}

impl Server {
    fn new() -> Server {
        // The segment must live on tmpfs, as the supervisor's will: on a disk
        // file system, writeback write-protects the pages every few seconds.
        let dir = tempfile::Builder::new()
            .prefix("buntime-ipc-bench")
            .tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .expect("tempdir");
        let listener = ControlListener::bind(&dir.path().join("control.sock")).expect("bind");
        Server { listener, dir }
    }
    fn ctl(&self) -> &Path {
        self.listener.path()
    }
    fn accept(&self, s2w: u32, w2s: u32) -> Option<SupervisorChannel> {
        let seg = Segment::create(&self.dir.path().join("ipc"), s2w, w2s).expect("segment");
        let cfg = SupervisorConfig {
            peer: PeerPolicy::same_uid(),
            handshake_timeout: Duration::from_secs(30),
            ..Default::default()
        };
        SupervisorChannel::accept(&self.listener, seg, cfg)
            .map_err(|e| eprintln!("  client did not connect: {e}"))
            .ok()
    }
}

/// Supervisor loop for round trips: ALLOW every request until EXIT.
/// Returns (thread CPU time, wall time).
fn serve_requests(mut chan: SupervisorChannel) -> (Duration, Duration) {
    let (cpu0, t0) = (thread_cpu(), Instant::now());
    loop {
        match chan.recv_timeout(Duration::from_secs(5)) {
            Ok(Some(Message::Request { id, .. })) => chan.allow(id, &[]).expect("reply"),
            Ok(Some(Message::Exit(_))) | Ok(None) => break,
            Ok(Some(_)) => {}
            Err(e) => panic!("supervisor: {e}"),
        }
    }
    (thread_cpu() - cpu0, t0.elapsed())
}

struct Rtt {
    p50: u64,
    p99: u64,
    cpu: Option<f64>,
}

/// Ring round trips with `client` (a command that connects to $BUNTIME_CONTROL).
fn ring_rtt(server: &Server, mut client: Command, n: usize, cold: bool) -> Option<Rtt> {
    client
        .env("BUNTIME_CONTROL", server.ctl())
        .env("N", n.to_string())
        .env("MODE", if cold { "cold" } else { "hot" })
        .stdout(Stdio::piped());
    let child = match client.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("  cannot start client: {e}");
            return None;
        }
    };
    let Some(chan) = server.accept(64 * 1024, 64 * 1024) else {
        let _ = client_kill(child);
        return None;
    };
    let srv = std::thread::spawn(move || serve_requests(chan));
    let res = collect(child);
    let (cpu, wall) = srv.join().expect("server thread");
    res.map(|(p50, p99)| Rtt {
        p50,
        p99,
        cpu: Some(cpu.as_secs_f64() / wall.as_secs_f64()),
    })
}

/// Socketpair or pipe round trips: a blocking echo server thread.
fn fd_rtt(pipe: bool, n: usize, cold: bool) -> Option<Rtt> {
    let (srv_rx, srv_tx, cli_rx, cli_tx): (OwnedFd, OwnedFd, OwnedFd, OwnedFd) = if pipe {
        let (req_r, req_w) = nix::unistd::pipe().ok()?;
        let (rep_r, rep_w) = nix::unistd::pipe().ok()?;
        (req_r, rep_w, rep_r, req_w)
    } else {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .ok()?;
        let (a2, b2) = (a.try_clone().ok()?, b.try_clone().ok()?);
        (a, a2, b, b2)
    };
    let mut cmd = self_cmd(if pipe { "pipe-rtt" } else { "sock-rtt" });
    cmd.env("N", n.to_string())
        .env("MODE", if cold { "cold" } else { "hot" });
    pass_fds(&mut cmd, vec![cli_rx.as_raw_fd(), cli_tx.as_raw_fd()]);
    let child = cmd.spawn().ok()?;
    drop((cli_rx, cli_tx));
    let srv = std::thread::spawn(move || {
        let (mut rx, mut tx) = (File::from(srv_rx), File::from(srv_tx));
        let mut req = [0u8; REQ_LEN];
        let rep = [0u8; REPLY_LEN];
        while rx.read_exact(&mut req).is_ok() {
            if tx.write_all(&rep).is_err() {
                break;
            }
        }
    });
    let res = collect(child);
    let _ = srv.join();
    res.map(|(p50, p99)| Rtt {
        p50,
        p99,
        cpu: None,
    })
}

/// Streaming throughput in GB/s.
fn ring_stream(server: &Server, bytes: u64) -> Option<f64> {
    let mut cmd = self_cmd("ring-stream");
    cmd.env("BUNTIME_CONTROL", server.ctl())
        .env("BYTES", bytes.to_string())
        .stdout(Stdio::null());
    let mut child = cmd.spawn().ok()?;
    let Some(mut chan) = server.accept(4096, STREAM_RING) else {
        let _ = client_kill(child);
        return None;
    };
    let mut got = 0u64;
    let mut t0 = None;
    loop {
        match chan.try_recv_borrowed() {
            Ok(Some(Received::Output { data, .. })) => {
                t0.get_or_insert_with(Instant::now);
                got += (data.len() + 8) as u64;
            }
            Ok(Some(Received::Message(Message::Exit(_)))) => break,
            Ok(Some(_)) => {}
            // Spin, then sleep on the futex (bounded in case the client died).
            Ok(None) => {
                if !chan.wait_readable(Duration::from_secs(5)) {
                    break;
                }
            }
            Err(e) => panic!("stream: {e}"),
        }
    }
    let secs = t0?.elapsed().as_secs_f64();
    child.wait().ok()?;
    // The first message started the clock: don't count it.
    Some((got.saturating_sub(STREAM_MSG as u64)) as f64 / secs / 1e9)
}

fn fd_stream(pipe: bool, bytes: u64) -> Option<f64> {
    let (rx, tx): (OwnedFd, OwnedFd) = if pipe {
        let (r, w) = nix::unistd::pipe().ok()?;
        // Same buffering as the ring.
        // SAFETY: fcntl on a pipe fd we own.
        unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, STREAM_RING as i32) };
        (r, w)
    } else {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .ok()?
    };
    let mut cmd = self_cmd("fd-stream");
    cmd.env("BYTES", bytes.to_string()).stdout(Stdio::null());
    // fd 3 unused, fd 4 = write end.
    pass_fds(&mut cmd, vec![tx.as_raw_fd(), tx.as_raw_fd()]);
    let mut child = cmd.spawn().ok()?;
    drop(tx);
    let mut rx = File::from(rx);
    let mut buf = vec![0u8; STREAM_MSG];
    let mut got = 0u64;
    let mut t0 = None;
    loop {
        match rx.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                t0.get_or_insert_with(Instant::now);
                got += n as u64;
            }
        }
    }
    let secs = t0?.elapsed().as_secs_f64();
    child.wait().ok()?;
    Some((got.saturating_sub(STREAM_MSG as u64)) as f64 / secs / 1e9)
}

fn client_kill(mut child: Child) -> std::io::Result<()> {
    child.kill()?;
    child.wait().map(|_| ())
}

fn us(ns: u64) -> String {
    format!("{:.2}", ns as f64 / 1000.0)
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// libbuntime_ipc.so: $BUNTIME_IPC_LIB, or next to this binary's profile.
fn find_cdylib() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BUNTIME_IPC_LIB") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let mut cands = Vec::new();
    if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
        cands.push(profile_dir.join("libbuntime_ipc.so"));
    }
    for p in ["release", "debug"] {
        cands.push(repo_root().join("target").join(p).join("libbuntime_ipc.so"));
    }
    cands.into_iter().find(|p| p.exists())
}

fn find_bun() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BUN") {
        return Some(PathBuf::from(p));
    }
    let p = repo_root().join(".build/bun/node_modules/@oven/bun-linux-x64/bin/bun");
    p.exists().then_some(p)
}

fn row(name: &str, hot: &Option<Rtt>, cold: &Option<Rtt>, sock_hot_p50: Option<u64>) {
    let cell = |r: &Option<Rtt>| match r {
        Some(r) => format!("{:>9} {:>9}", us(r.p50), us(r.p99)),
        None => format!("{:>9} {:>9}", "-", "-"),
    };
    let speedup = match (hot, sock_hot_p50) {
        (Some(h), Some(s)) if h.p50 > 0 => format!("{:.0}x", s as f64 / h.p50 as f64),
        _ => "-".into(),
    };
    let cpu = cold
        .as_ref()
        .and_then(|c| c.cpu)
        .map_or("-".into(), |c| format!("{:.0}%", c * 100.0));
    println!(
        "{name:<22} {} | {} | {speedup:>7} | {cpu:>8}",
        cell(hot),
        cell(cold)
    );
}

fn main() {
    // Register for membarrier while single-threaded (a process with threads
    // does not, and would measure the SeqCst protocol instead).
    let _ = buntime::ipc::wait::membarrier_ok();
    if let Ok(role) = std::env::var(ROLE) {
        child_main(&role);
        return;
    }
    // `cargo bench -- <filter>`: run only if the filter (if any) matches.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if !args.is_empty() && !args.iter().any(|a| "ipc".contains(a.as_str())) {
        return;
    }
    let sz = sizes();
    let server = Server::new();
    println!("\nbuntime IPC benchmark: round trip of a {REQ_LEN}-byte request and a {REPLY_LEN}-byte ALLOW (µs);");
    println!(
        "hot = back to back, cold = one request every {COLD_INTERVAL_US} µs; spin budget {:?}\n",
        buntime::ipc::wait::DEFAULT_SPIN
    );
    println!(
        "{:<22} {:>9} {:>9} | {:>9} {:>9} | {:>7} | {:>8}",
        "transport", "hot p50", "hot p99", "cold p50", "cold p99", "vs sock", "sup. CPU"
    );
    println!("{}", "-".repeat(84));

    let only = std::env::var("BUNTIME_IPC_BENCH_ONLY").unwrap_or_default();
    if only == "stream" {
        stream_table(&server, &sz);
        return;
    }
    if only == "ring" {
        let h = ring_rtt(&server, self_cmd("ring-rtt"), sz.hot, false);
        let c = ring_rtt(&server, self_cmd("ring-rtt"), sz.cold, true);
        row("ring (Rust)", &h, &c, None);
        return;
    }
    let sock_hot = fd_rtt(false, sz.hot_sock, false);
    let sock_cold = fd_rtt(false, sz.cold, true);
    let sock_p50 = sock_hot.as_ref().map(|r| r.p50);
    let ring_hot = ring_rtt(&server, self_cmd("ring-rtt"), sz.hot, false);
    let ring_cold = ring_rtt(&server, self_cmd("ring-rtt"), sz.cold, true);
    row("ring (Rust)", &ring_hot, &ring_cold, sock_p50);
    row("socketpair (Rust)", &sock_hot, &sock_cold, sock_p50);
    let pipe_hot = fd_rtt(true, sz.hot_sock, false);
    let pipe_cold = fd_rtt(true, sz.cold, true);
    row("pipe (Rust)", &pipe_hot, &pipe_cold, sock_p50);

    match find_cdylib() {
        None => println!("ring (Python, Bun): skipped, libbuntime_ipc.so not found (cargo build --release -p buntime-ipc, or set BUNTIME_IPC_LIB)"),
        Some(lib) => {
            let py = |cold: bool, n: usize| {
                let mut c = Command::new("/usr/bin/python3");
                c.arg(repo_root().join("bench/ipc/client.py")).env("BUNTIME_IPC_LIB", &lib);
                ring_rtt(&server, c, n, cold)
            };
            let (h, c) = (py(false, sz.hot / 4), py(true, sz.cold));
            row("ring (Python ctypes)", &h, &c, sock_p50);
            match find_bun() {
                None => println!("ring (Bun): skipped, Bun not installed (bash hack/install-bun.sh)"),
                Some(bun) => {
                    let b = |cold: bool, n: usize| {
                        let mut c = Command::new(&bun);
                        c.arg(repo_root().join("bench/ipc/client.ts")).env("BUNTIME_IPC_LIB", &lib);
                        ring_rtt(&server, c, n, cold)
                    };
                    let (h, c) = (b(false, sz.hot), b(true, sz.cold));
                    row("ring (Bun bun:ffi)", &h, &c, sock_p50);
                }
            }
        }
    }

    stream_table(&server, &sz);
    println!("\nsup. CPU: supervisor thread CPU time / wall time during the cold run (its spin before sleeping).");
}

fn stream_table(server: &Server, sz: &Sizes) {
    println!(
        "\nSTDOUT streaming, {} KiB messages, {} MiB ring / pipe buffer (GB/s):",
        STREAM_MSG / 1024,
        STREAM_RING >> 20
    );
    let ring = ring_stream(server, sz.stream_bytes);
    let sock = fd_stream(false, sz.stream_bytes / 4);
    let pipe = fd_stream(true, sz.stream_bytes / 4);
    let f = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.1}"));
    let ratio = match (ring, sock) {
        (Some(r), Some(s)) if s > 0.0 => format!(" ({:.1}x the socketpair)", r / s),
        _ => String::new(),
    };
    println!(
        "  ring {}{ratio}, socketpair {}, pipe {}",
        f(ring),
        f(sock),
        f(pipe)
    );
}
