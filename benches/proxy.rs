//! The egress proxy's cost, measured against a direct loopback connection
//! in the same run: throughput of a 1 GiB download (CONNECT tunnel, the
//! relay in `buntime::proxy`) and connection set-up to first byte (p50,
//! p99). The proxy runs in this process, with a gate that decides as the
//! supervisor's does (rules, a lookup, an audit line), so what is measured
//! is the proxy, not the container. Beside both, a bare relay (`floor`):
//! two plain copy loops between the same client and server with the
//! proxy's buffer sizes, no gate, audit, limits or accounting: the least
//! a relay over a second loopback connection costs. For set-up, the floor
//! is the least an HTTP CONNECT relay does (`connect_floor_for`): read the
//! head, connect, answer, relay the ping, on one thread.

#[path = "shared/summary.rs"]
mod summary;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use buntime::audit::AuditLog;
use buntime::policy::{
    decide, HostAddrs, NetMode, NetRule, Network, Policy, Request, Resolved, RuleRef, Verdict,
};
use buntime::proxy::{self, Attempt, Gate, Granted, Limits, Refused};
use nix::sys::resource::{getrusage, UsageWho};

const DOWNLOAD: u64 = 1 << 30;
const SETUP_ROUNDS: usize = 2000;
/// Downloads each way, alternated: the machine drifts by tens of percent
/// between seconds, so a median of few is noise.
const ROUNDS: usize = 9;

/// What the supervisor's gate does for a name its rules allow, from the
/// library's own parts: `policy::decide` by name, a lookup (getaddrinfo:
/// `localhost` from /etc/hosts), `policy::decide` with every address, and
/// one audit line written per connection. (The supervisor's gate needs a
/// running container; the approver is not involved for a name the rules
/// allow.)
///
/// For attributing the set-up's cost only (not the supervisor's
/// behaviour): `PROXY_BENCH_NO_LOOKUP=1` grants 127.0.0.1 after the
/// decision by name, without the lookup and the decision on addresses;
/// `PROXY_BENCH_NO_AUDIT=1` writes no audit line.
struct RulesGate {
    policy: Policy,
    audit: AuditLog,
    skip_lookup: bool,
    skip_audit: bool,
}

impl RulesGate {
    fn new(port: u16, dir: &Path) -> RulesGate {
        let rule = |s: String| NetRule::parse(&s).expect("bench rule");
        let network = Network {
            mode: NetMode::Proxy,
            allow: vec![rule(format!("127.0.0.1:{port}"))],
            deny: vec![rule("169.254.169.254".into())],
        };
        RulesGate {
            policy: Policy {
                network,
                ..Policy::default()
            },
            audit: AuditLog::open(&dir.join("audit.log")).expect("audit log"),
            skip_lookup: std::env::var_os("PROXY_BENCH_NO_LOOKUP").is_some_and(|v| v == "1"),
            skip_audit: std::env::var_os("PROXY_BENCH_NO_AUDIT").is_some_and(|v| v == "1"),
        }
    }
}

impl Gate for RulesGate {
    fn check(&self, host: &str, port: u16) -> Result<Granted, Refused> {
        let no = |rule: RuleRef, reason: String| Refused {
            rule,
            reason,
            addr: None,
        };
        let req = Request::Net { host, port };
        let by_name = decide(&self.policy, &req, None);
        if let Verdict::Deny(why) = by_name.verdict {
            return Err(no(by_name.rule, why.to_string()));
        }
        if self.skip_lookup {
            let addrs = vec![SocketAddr::from(([127, 0, 0, 1], port))];
            return Ok(Granted {
                addrs,
                rule: by_name.rule,
            });
        }
        // IPv4 only: the bench server listens on 127.0.0.1, and hosts
        // files that also map localhost to ::1 would add a refused connect.
        let addrs: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|e| no(RuleRef::Default, e.to_string()))?
            .filter(SocketAddr::is_ipv4)
            .collect();
        let ips: Vec<IpAddr> = addrs.iter().map(|a| a.ip()).collect();
        // Asked per decision, as the supervisor's gate does.
        let own = HostAddrs::live();
        let res = Resolved {
            addrs: &ips,
            own: &own,
        };
        let d = decide(&self.policy, &req, Some(&res));
        match d.verdict {
            Verdict::Allow => Ok(Granted {
                addrs,
                rule: d.rule,
            }),
            Verdict::Deny(why) => Err(no(d.rule, why.to_string())),
            _ => Err(no(d.rule, "not granted".into())),
        }
    }

    fn record(&self, a: &Attempt) {
        if self.skip_audit {
            return;
        }
        self.audit.record(&a.audit_record("bench"));
    }
}

/// Serves: first byte `b'D'` → 1 GiB, `b'P'` → one byte back.
fn server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut cmd = [0u8; 1];
                if s.read_exact(&mut cmd).is_err() {
                    return;
                }
                if cmd[0] == b'D' {
                    let buf = vec![7u8; 1 << 20];
                    let mut left = DOWNLOAD;
                    while left > 0 {
                        let n = left.min(buf.len() as u64) as usize;
                        if s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                        left -= n as u64;
                    }
                } else {
                    let _ = s.write_all(b"p");
                }
            });
        }
    });
    addr
}

/// The bare relay: per connection, a connection to `target` and two
/// threads each copying one way, with the proxy's largest buffer and its
/// send buffer size (src/proxy/relay.rs), nothing else.
fn floor_for(target: SocketAddr) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind floor");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            let Ok(u) = TcpStream::connect(target) else {
                continue;
            };
            for s in [&c, &u] {
                let _ = s.set_nodelay(true);
                let _ = nix::sys::socket::setsockopt(
                    s,
                    nix::sys::socket::sockopt::SndBuf,
                    &SEND_BUFFER,
                );
            }
            let (c2, u2) = (c.try_clone().expect("clone"), u.try_clone().expect("clone"));
            std::thread::spawn(move || copy(c2, u2));
            std::thread::spawn(move || copy(u, c));
        }
    });
    addr
}

/// The least an HTTP CONNECT relay costs to set up: on the accepting
/// thread, one connection at a time (the set-up rounds are sequential),
/// read the head, connect, answer 200, then relay both ways with `poll`;
/// no gate, lookup, audit, limits, thread hand-off or thread start.
fn connect_floor_for(target: SocketAddr) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind connect floor");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let _ = relay_one(c, target);
        }
    });
    addr
}

fn relay_one(mut c: TcpStream, target: SocketAddr) -> std::io::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    c.set_nodelay(true)?;
    let mut head = Vec::new();
    let mut b = [0u8; 512];
    while !head.ends_with(b"\r\n\r\n") {
        let n = c.read(&mut b)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&b[..n]);
    }
    let u = TcpStream::connect(target)?;
    u.set_nodelay(true)?;
    c.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let (c_in, u_in) = {
            let mut fds = [
                PollFd::new(c.as_fd(), PollFlags::POLLIN),
                PollFd::new(u.as_fd(), PollFlags::POLLIN),
            ];
            poll(&mut fds, PollTimeout::NONE)?;
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]))
        };
        for (go, mut from, mut to) in [(c_in, &c, &u), (u_in, &u, &c)] {
            if go {
                let n = from.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                to.write_all(&buf[..n])?;
            }
        }
    }
}

/// The relay's largest buffer and its send buffer (src/proxy/relay.rs).
const BUFFER: usize = 4 << 20;
const SEND_BUFFER: usize = 4 << 20;

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; BUFFER];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

fn proxy_for(target: SocketAddr, dir: &Path) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let addr = l.local_addr().expect("addr");
    let gate: Arc<dyn Gate> = Arc::new(RulesGate::new(target.port(), dir));
    std::thread::spawn(move || proxy::serve(l, gate, Limits::default(), Arc::default()));
    addr
}

/// How the client reaches the server.
#[derive(Clone, Copy)]
enum Via {
    Direct,
    Proxy(SocketAddr),
    /// The bare relay, which needs no request.
    Floor(SocketAddr),
    /// The bare CONNECT relay (set-up only): asked as the proxy is.
    ConnectFloor(SocketAddr),
}

/// How the client names the server: the set-up rows measure both, each
/// against a direct client that names it the same way.
#[derive(Clone, Copy, PartialEq)]
enum Naming {
    /// `localhost`: the proxy's gate resolves it (getaddrinfo, /etc/hosts);
    /// a direct client resolves it itself, as curl does.
    Name,
    /// `127.0.0.1`: no lookup on either side.
    Address,
}

impl Naming {
    fn host(self) -> &'static str {
        match self {
            Naming::Name => "localhost",
            Naming::Address => "127.0.0.1",
        }
    }
}

/// Opens a connection to the server, directly or through a relay, naming
/// it by address (the downloads).
fn open(server: SocketAddr, via: Via) -> TcpStream {
    open_named(server, via, Naming::Address)
}

/// A direct client that was given a name: resolve it (IPv4, as the
/// gate's lookup keeps), connect to the first address.
fn connect_by_name(server: SocketAddr) -> TcpStream {
    let addr = ("localhost", server.port())
        .to_socket_addrs()
        .expect("resolve localhost")
        .find(SocketAddr::is_ipv4)
        .expect("localhost has an IPv4 address");
    TcpStream::connect(addr).expect("connect")
}

fn open_named(server: SocketAddr, via: Via, naming: Naming) -> TcpStream {
    match via {
        Via::Direct if naming == Naming::Name => connect_by_name(server),
        Via::Direct => TcpStream::connect(server).expect("connect"),
        Via::Floor(f) => TcpStream::connect(f).expect("connect floor"),
        Via::Proxy(p) | Via::ConnectFloor(p) => {
            let mut s = TcpStream::connect(p).expect("connect proxy");
            let host = naming.host();
            let head = format!("CONNECT {host}:{} HTTP/1.1\r\n\r\n", server.port());
            if split_head() {
                // As the bench sent it before: `write!` on the socket, a
                // write per piece of the format.
                write!(s, "CONNECT {host}:{} HTTP/1.1\r\n\r\n", server.port()).expect("send");
            } else {
                // The head in one write, as HTTP clients send it.
                s.write_all(head.as_bytes()).expect("send");
            }
            // Read as a client does, not a byte a call: the server sends
            // nothing before the client's first byte, so whatever arrives
            // now is the proxy's answer alone.
            let mut head = Vec::new();
            let mut b = [0u8; 256];
            while !head.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut b).expect("proxy answer");
                assert!(n > 0, "proxy closed");
                head.extend_from_slice(&b[..n]);
            }
            assert!(head.starts_with(b"HTTP/1.1 200"), "proxy refused");
            s
        }
    }
}

/// `PROXY_BENCH_SPLIT_HEAD=1`: the CONNECT head in three writes, as bench
/// binaries before this option sent it (to compare against them).
fn split_head() -> bool {
    static SPLIT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SPLIT.get_or_init(|| std::env::var_os("PROXY_BENCH_SPLIT_HEAD").is_some_and(|v| v == "1"))
}

/// One download: GB/s, and the CPU time of this whole process (server,
/// client and proxy threads): per GiB moved (what the relay adds) and per
/// second (how many CPUs were busy).
struct Run {
    gbps: f64,
    cpu_per_gib: f64,
    busy: f64,
}

fn cpu_time() -> f64 {
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    secs(u.user_time()) + secs(u.system_time())
}

fn download(server: SocketAddr, via: Via) -> Run {
    let mut s = open(server, via);
    let cpu = cpu_time();
    let start = Instant::now();
    s.write_all(b"D").expect("ask");
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    while got < DOWNLOAD {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n as u64,
            Err(e) => panic!("download: {e}"),
        }
    }
    assert_eq!(got, DOWNLOAD);
    let (secs, cpu) = (start.elapsed().as_secs_f64(), cpu_time() - cpu);
    Run {
        gbps: got as f64 / secs / 1e9,
        cpu_per_gib: cpu / (got as f64 / f64::from(1u32 << 30)),
        busy: cpu / secs,
    }
}

/// p50 and p99 of [`SETUP_ROUNDS`] set-ups per path, the paths
/// interleaved a connection at a time (`setup_order`), so the
/// host's drift and the scheduler's regime (both threads on one vCPU or
/// not) hit every path alike.
fn setup<const N: usize>(
    server: SocketAddr,
    paths: [Via; N],
    naming: Naming,
) -> [(Duration, Duration); N] {
    let mut times: [Vec<Duration>; N] = std::array::from_fn(|_| Vec::with_capacity(SETUP_ROUNDS));
    let sequential = std::env::var_os("PROXY_BENCH_SEQUENTIAL").is_some_and(|v| v == "1");
    for i in setup_order::<N>(sequential) {
        let start = Instant::now();
        let mut s = open_named(server, paths[i], naming);
        s.write_all(b"P").expect("ping");
        let mut b = [0u8; 1];
        s.read_exact(&mut b).expect("pong");
        times[i].push(start.elapsed());
    }
    times.map(|mut t| {
        t.sort();
        (t[t.len() / 2], t[t.len() * 99 / 100])
    })
}

/// The order of the set-ups, as path indices. Interleaved, each round takes
/// every path once, rotated, and every other group of rounds reversed, so
/// that each path follows each other path equally often (the previous
/// connection's teardown overlaps the next set-up: it must fall on all
/// alike). `PROXY_BENCH_SEQUENTIAL=1`: every path's rounds one after the
/// other, as the bench measured before 2026-12-07.
fn setup_order<const N: usize>(sequential: bool) -> Vec<usize> {
    if sequential {
        return (0..N)
            .flat_map(|i| std::iter::repeat_n(i, SETUP_ROUNDS))
            .collect();
    }
    (0..SETUP_ROUNDS)
        .flat_map(|round| {
            let mut order: Vec<usize> = (0..N).map(|k| (round + k) % N).collect();
            if (round / N) % 2 == 1 {
                order.reverse();
            }
            order
        })
        .collect()
}

fn main() {
    // `cargo bench` passes --bench; a filter that excludes us skips.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if args.iter().any(|f| !"proxy".contains(f.as_str())) {
        return;
    }
    let server = server();
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Via::Proxy(proxy_for(server, dir.path()));
    // PROXY_BENCH_SETUP_ONLY=1: the set-up rows alone, without the
    // downloads (for profiling or tracing the set-up).
    let setup_only = std::env::var_os("PROXY_BENCH_SETUP_ONLY").is_some_and(|v| v == "1");
    if !setup_only {
        relay_rows(server, proxy);
    }
    setup_rows(server, proxy);
}

/// The downloads' rows: throughput and CPU per GiB, direct, through the
/// proxy and through the bare relay.
fn relay_rows(server: SocketAddr, proxy: Via) {
    let floor = Via::Floor(floor_for(server));
    let [direct, proxied, bare] = downloads(server, [Via::Direct, proxy, floor]);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("proxy: 1 GiB download over loopback (median of {ROUNDS}, {cpus} CPUs)");
    direct.print("direct       ", None);
    proxied.print("through proxy", Some(&direct));
    bare.print("bare relay   ", Some(&direct));
    println!(
        "  proxy / bare relay: CPU/GiB {:.2}, throughput {:.2}",
        proxied.cpu_per_gib / bare.cpu_per_gib,
        proxied.gbps / bare.gbps
    );
    summary::record_with_floor(
        &summary::Row {
            what: "proxy CPU per GiB relayed",
            value: proxied.cpu_per_gib * 1e3,
            baseline: Some(("direct", direct.cpu_per_gib * 1e3)),
            unit: "ms",
            relative: true,
            goal: summary::Goal::AtMost,
            target: 1.1,
        },
        Some(("bare relay", bare.cpu_per_gib * 1e3)),
    );
}

/// The set-up rows: to the first byte, direct, through the proxy and
/// through the bare CONNECT relay, interleaved; once with the server named by address
/// (no lookup anywhere) and once by name (the gate resolves it; the direct
/// client resolves it itself, as any client given a name does). Each
/// naming is a row of its own against its own direct client.
fn setup_rows(server: SocketAddr, proxy: Via) {
    let floor = Via::ConnectFloor(connect_floor_for(server));
    println!("proxy: connection set-up to first byte ({SETUP_ROUNDS} rounds)");
    for (naming, what) in [
        (
            Naming::Address,
            "proxy connection set-up p50, host by address",
        ),
        (Naming::Name, "proxy connection set-up p50, host by name"),
    ] {
        let [(d50, d99), (p50, p99), (f50, f99)] =
            setup(server, [Via::Direct, proxy, floor], naming);
        println!("  {}:", naming.host());
        println!(
            "    direct        p50 {:7.1} us   p99 {:7.1} us",
            us(d50),
            us(d99)
        );
        println!(
            "    through proxy p50 {:7.1} us   p99 {:7.1} us   (proxy / direct {:.2})",
            us(p50),
            us(p99),
            us(p50) / us(d50)
        );
        println!(
            "    bare CONNECT  p50 {:7.1} us   p99 {:7.1} us   (proxy / bare {:.2})",
            us(f50),
            us(f99),
            us(p50) / us(f50)
        );
        summary::record_with_floor(
            &summary::Row {
                what,
                value: us(p50),
                baseline: Some(("direct", us(d50))),
                unit: "us",
                relative: true,
                goal: summary::Goal::AtMost,
                target: 2.0,
            },
            Some(("bare CONNECT relay", us(f50))),
        );
    }
}

/// Every path's medians over [`ROUNDS`] downloads, the paths alternated
/// so drift hits all alike (after one warm-up each).
fn downloads<const N: usize>(server: SocketAddr, paths: [Via; N]) -> [Run; N] {
    for via in paths {
        download(server, via);
    }
    let mut runs: Vec<Vec<Run>> = paths.iter().map(|_| Vec::new()).collect();
    for _ in 0..ROUNDS {
        for (via, r) in paths.iter().zip(&mut runs) {
            r.push(download(server, *via));
        }
    }
    let med = |runs: &[Run], f: fn(&Run) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    std::array::from_fn(|i| Run {
        gbps: med(&runs[i], |r| r.gbps),
        cpu_per_gib: med(&runs[i], |r| r.cpu_per_gib),
        busy: med(&runs[i], |r| r.busy),
    })
}

impl Run {
    fn print(&self, name: &str, against: Option<&Run>) {
        let ratio = against.map_or(String::new(), |d| {
            format!(
                "   ratio {:.2} (CPU {:.2})",
                self.gbps / d.gbps,
                self.cpu_per_gib / d.cpu_per_gib
            )
        });
        println!(
            "  {name} {:6.2} GB/s   {:4.0} ms CPU/GiB   {:.2} CPUs busy{ratio}",
            self.gbps,
            self.cpu_per_gib * 1e3,
            self.busy
        );
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
