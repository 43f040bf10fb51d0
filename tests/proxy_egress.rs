//! Network mode `proxy` end to end: real sandboxes (host binaries bound
//! read-only), real HTTP and HTTPS servers in a test network namespace
//! reached over a veth pair, and the supervisor's resolver given test host
//! names through its own /etc/hosts in a private mount namespace. Nothing
//! outside this machine is contacted.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{read, wait_until, Env, RUNC};

const HTTP_PORT: u16 = 8080;
const TLS_PORT: u16 = 8443;
const PKG_PORT: u16 = 8081;

fn sh(cmd: &str) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with an HTTP and an HTTPS server at 10.213.N.2,
/// reachable from the host over a veth pair; removed on drop.
struct Lab {
    ns: String,
    /// Python servers in the namespace (HTTPS, package index).
    servers: Vec<Child>,
    net: u8,
    dir: PathBuf,
    /// Names asked of the lab's DNS server (which never answers).
    dns: Arc<std::sync::Mutex<Vec<String>>>,
    dns_stop: Arc<AtomicBool>,
}

impl Lab {
    fn new(net: u8, dir: &Path) -> Lab {
        let ns = format!("bt-px-{}-{net}", std::process::id());
        let host_if = format!("bpx{}h{net}", std::process::id() % 100_000);
        let ns_if = format!("bpx{}n{net}", std::process::id() % 100_000);
        let _ = Command::new("ip")
            .args(["netns", "del", &ns])
            .stderr(Stdio::null())
            .status();
        sh(&format!(
            "ip netns add {ns} && ip link add {host_if} type veth peer name {ns_if} && \
             ip link set {ns_if} netns {ns} && \
             ip addr add 10.213.{net}.1/24 dev {host_if} && ip link set {host_if} up && \
             ip -n {ns} addr add 10.213.{net}.2/24 dev {ns_if} && ip -n {ns} link set {ns_if} up && \
             ip -n {ns} link set lo up"
        ));
        // The HTTP server: bound by a thread that entered the namespace;
        // its connection threads inherit it.
        let ns_path = format!("/var/run/netns/{ns}");
        let addr = format!("10.213.{net}.2:{HTTP_PORT}");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let f = fs::File::open(&ns_path).expect("netns");
            nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let l = TcpListener::bind(&addr).expect("bind http");
            tx.send(()).unwrap();
            http_server(l);
        });
        rx.recv().expect("http server up");
        // The HTTPS server (self-signed), in Python's ssl.
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        sh(&format!(
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
             -subj /CN=api.svc.test -days 1 -keyout {} -out {} 2>/dev/null",
            key.display(),
            cert.display()
        ));
        let (dns, dns_stop) = dns_listener(net);
        let mut lab = Lab {
            ns,
            servers: Vec::new(),
            net,
            dir: dir.to_path_buf(),
            dns,
            dns_stop,
        };
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        lab.serve_py("tls_server.py", &[&cert, &key], TLS_PORT);
        lab
    }

    /// Runs the Python fixture `name` in the lab's namespace with `args`,
    /// then the lab's address and `port`; returns once it accepts there.
    /// Stopped when the lab is dropped.
    fn serve_py(&mut self, name: &str, args: &[&str], port: u16) {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/proxy")
            .join(name);
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "/usr/bin/python3"])
            .arg(fixture)
            .args(args)
            .arg(self.ip())
            .arg(port.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect(name);
        self.servers.push(child);
        assert!(
            wait_until(Duration::from_secs(10), || TcpStream::connect(
                self.addr(port)
            )
            .is_ok()),
            "{name} did not start"
        );
    }

    fn ip(&self) -> String {
        format!("10.213.{}.2", self.net)
    }

    fn addr(&self, port: u16) -> String {
        format!("{}:{port}", self.ip())
    }

    /// The supervisor's /etc/hosts, and beside it its /etc/resolv.conf:
    /// the lab's DNS server and a search domain (never to be used).
    fn hosts(&self) -> PathBuf {
        fs::write(
            self.dir.join("resolv.conf"),
            format!(
                "nameserver 127.0.53.{}\nsearch lab.test\noptions timeout:1 attempts:1\n",
                self.net
            ),
        )
        .unwrap();
        let p = self.dir.join("hosts");
        let ip = self.ip();
        fs::write(
            &p,
            format!(
                "127.0.0.1 localhost\n{ip} web.test\n{ip} api.svc.test\n{ip} svc.test\n\
                 {ip} bad.svc.test\n{ip} ask.test\n{ip} pkgs.svc.test\n\
                 192.168.77.7 private.svc.test\n\
                 127.0.0.1 rebind.svc.test\n169.254.169.254 meta.svc.test\n"
            ),
        )
        .unwrap();
        p
    }

    fn policy(&self, broker_net: &str) -> String {
        serde_json::json!({
            "version": 1,
            "filesystem": {
                "read": ["/usr", "/etc", "/opt", "/proc", "/dev/urandom", "/dev/random",
                         "/sys/devices/system/cpu"],
                "write": ["/tmp", "/dev/null"],
                "exec": ["/usr/bin", "/usr/lib", "/bin"]
            },
            "network": {
                "mode": "proxy",
                "allow": ["web.test:8080", "*.svc.test", format!("10.213.{}.0/24", self.net)],
                "deny": ["bad.svc.test"]
            },
            "broker": {"net_connect": broker_net},
            "env": {"pass": ["PATH", "HOME", "TERM"]},
            "resources": {"timeout": "2m", "pids": 512}
        })
        .to_string()
    }
}

/// A DNS server on 127.0.53.`net`:53 that records the names it is asked
/// and answers nothing: no query leaves the machine.
fn dns_listener(net: u8) -> (Arc<std::sync::Mutex<Vec<String>>>, Arc<AtomicBool>) {
    let sock = std::net::UdpSocket::bind(("127.0.53.".to_string() + &net.to_string(), 53))
        .expect("bind the lab's DNS port");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let names = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (n, s) = (Arc::clone(&names), Arc::clone(&stop));
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !s.load(Ordering::Relaxed) {
            let Ok(len) = sock.recv(&mut buf) else {
                continue;
            };
            // The question's name: length-prefixed labels after the header.
            let mut labels = Vec::new();
            let mut i = 12;
            while i < len && buf[i] != 0 && i + 1 + usize::from(buf[i]) <= len {
                let l = usize::from(buf[i]);
                labels.push(String::from_utf8_lossy(&buf[i + 1..i + 1 + l]).into_owned());
                i += 1 + l;
            }
            n.lock().unwrap().push(labels.join("."));
        }
    });
    (names, stop)
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.dns_stop.store(true, Ordering::Relaxed);
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
        // Deleting the namespace removes the veth pair too.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// `/hello`, `/bytes/N`, `/slow` (held until `/release`), and `/waiting`
/// (how many `/slow` requests are held): a client can prove that other
/// requests went through while one was stalled upstream. `/together/N`
/// answers `together` once N such requests are open at the same time
/// (`alone` if that takes 15 s).
fn http_server(l: TcpListener) {
    let waiting = Arc::new(AtomicUsize::new(0));
    let released = Arc::new(AtomicBool::new(false));
    let arrived = Arc::new(AtomicUsize::new(0));
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        let waiting = Arc::clone(&waiting);
        let released = Arc::clone(&released);
        let arrived = Arc::clone(&arrived);
        std::thread::spawn(move || {
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match s.read(&mut b) {
                    Ok(1) => head.push(b[0]),
                    _ => return,
                }
            }
            let line = String::from_utf8_lossy(&head)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            let path = line.split(' ').nth(1).unwrap_or_default().to_string();
            let body: Vec<u8> = match path.as_str() {
                "/slow" => {
                    waiting.fetch_add(1, Ordering::SeqCst);
                    let ok =
                        wait_until(Duration::from_secs(30), || released.load(Ordering::SeqCst));
                    waiting.fetch_sub(1, Ordering::SeqCst);
                    if ok {
                        b"released".to_vec()
                    } else {
                        b"stalled".to_vec()
                    }
                }
                "/waiting" => waiting.load(Ordering::SeqCst).to_string().into_bytes(),
                "/release" => {
                    released.store(true, Ordering::SeqCst);
                    b"ok".to_vec()
                }
                p if p.starts_with("/together/") => {
                    let n: usize = p["/together/".len()..].parse().unwrap_or(usize::MAX);
                    arrived.fetch_add(1, Ordering::SeqCst);
                    let all = wait_until(Duration::from_secs(15), || {
                        arrived.load(Ordering::SeqCst) >= n
                    });
                    if all {
                        b"together".to_vec()
                    } else {
                        b"alone".to_vec()
                    }
                }
                p => match p.strip_prefix("/bytes/") {
                    Some(n) => {
                        let n: usize = n.parse().unwrap_or(0);
                        (0..n).map(|i| b'a' + (i % 26) as u8).collect()
                    }
                    None => b"hello from web".to_vec(),
                },
            };
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(&body);
        });
    }
}

/// A sandbox of the host's binaries with the fixtures at /opt/fixtures,
/// running `args` under `policy`.
fn sandbox(env: &Env, name: &str, policy: &str, args: &[&str]) -> PathBuf {
    let b = env.bundle(name, args, &[("HOSTROOT", "1")]);
    let cfg = b.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_str(&read(&cfg)).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/proxy");
    spec["mounts"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "destination": "/opt/fixtures", "type": "bind",
            "source": fixtures, "options": ["rbind", "ro"]
        }));
    spec["annotations"] = serde_json::json!({
        "buntime.dev/policy": policy, "buntime.dev/ask-timeout": "5s"
    });
    fs::write(&cfg, spec.to_string()).unwrap();
    b
}

/// Creates `id` with the supervisor resolving names through `hosts`
/// (a private mount namespace with that file at /etc/hosts), runs it to
/// the end and returns its output.
fn run_with_hosts(env: &Env, id: &str, bundle: &Path, hosts: &Path) -> String {
    let log = create_with_hosts(env, id, bundle, hosts);
    env.ok(&["start", id]);
    wait_stopped(env, id);
    read(&log)
}

/// Creates `id` (output to a log file, returned) with the supervisor
/// resolving names through `hosts`.
fn create_with_hosts(env: &Env, id: &str, bundle: &Path, hosts: &Path) -> PathBuf {
    let log = env.dir.path().join(format!("{id}.log"));
    let f = fs::File::create(&log).unwrap();
    let status = Command::new("unshare")
        .env("BUNTIME_ETC", env.etc())
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(
            "mount --bind \"$0\" /etc/hosts && \
             mount --bind \"${0%/*}/resolv.conf\" /etc/resolv.conf && exec \"$@\"",
        )
        .arg(hosts)
        .arg(RUNC)
        .arg("--root")
        .arg(&env.root)
        .args(["create", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .status()
        .unwrap();
    assert!(status.success(), "create {id}: {}", read(&log));
    log
}

/// Bounded, but generous: a hundred clients in Python on two busy cores.
fn wait_stopped(env: &Env, id: &str) {
    let ok = wait_until(Duration::from_secs(90), || env.status(id) == "stopped");
    assert!(ok, "{id} did not stop: {}", env.status(id));
}

fn line<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("{label} ")))
        .unwrap_or_else(|| panic!("no line {label:?} in:\n{out}"))
}

fn state_dir(env: &Env, id: &str) -> PathBuf {
    env.root.join(".buntime").join(id)
}

fn audit(env: &Env, id: &str) -> Vec<serde_json::Value> {
    read(&state_dir(env, id).join("audit.log"))
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["kind"] == "proxy")
        .collect()
}

#[test]
fn allowed_hosts_pass_and_everything_else_is_refused_with_a_reason() {
    let env = Env::new();
    let lab = Lab::new(1, env.dir.path());
    let hosts = lab.hosts();
    let ip = lab.ip();
    let loopback_service = TcpListener::bind("127.0.0.1:0").unwrap();
    let lport = loopback_service.local_addr().unwrap().port().to_string();
    let args: Vec<String> = [
        "get allowed http://web.test:8080/hello",
        "get big http://web.test:8080/bytes/3000000",
        "get tls https://api.svc.test:8443/",
        "get wrong-port http://web.test:9090/hello",
        "get denied http://bad.svc.test:8080/hello",
        "get apex https://svc.test:8443/",
        "get ip-outside http://192.0.2.10/",
        "get private http://private.svc.test:8080/",
        "get rebind http://rebind.svc.test:8080/",
        "get metadata http://meta.svc.test/latest",
        "get unresolved http://gone.svc.test:8080/",
        &format!("direct direct-lab {ip} 8080"),
        &format!("direct direct-host-loopback 127.0.0.1 {lport}"),
        &format!("udp udp {ip} 53"),
        "sock tcp 6",
        "sock sctp 132",
        "sock mptcp 262",
        "sock ipip 4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut argv: Vec<&str> = vec!["/usr/bin/python3", "/opt/fixtures/client.py"];
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            argv.push("--");
        }
        argv.extend(a.split(' '));
    }
    let b = sandbox(&env, "rules", &lab.policy("deny"), &argv);
    let out = run_with_hosts(&env, "rules", &b, &hosts);

    assert_eq!(line(&out, "allowed"), "allowed 200 hello from web");
    // The whole body, byte for byte (the server's repeating alphabet).
    let body: String = (0..3_000_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let big = line(&out, "big");
    let want = format!("big 200 {body}");
    if big != want {
        let at = big
            .bytes()
            .zip(want.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        panic!(
            "big: {} bytes, not {}; first difference at {at}",
            big.len(),
            want.len()
        );
    }
    assert_eq!(line(&out, "tls"), "tls 200 hello over tls");
    assert_eq!(
        line(&out, "wrong-port"),
        "wrong-port 403 no network.allow entry matches"
    );
    assert_eq!(
        line(&out, "denied"),
        "denied 403 denied by network.deny entry \"bad.svc.test\""
    );
    // A refused CONNECT: urllib reports only the status.
    assert_eq!(line(&out, "apex"), "apex 403 tunnel refused");
    assert!(
        line(&out, "ip-outside").starts_with("ip-outside 403 "),
        "{out}"
    );
    assert!(
        line(&out, "private").contains("403 private address"),
        "{out}"
    );
    assert!(
        line(&out, "rebind").contains("403 loopback address"),
        "{out}"
    );
    assert!(line(&out, "metadata").starts_with("metadata 403 "), "{out}");
    // A name /etc/hosts lacks goes to DNS as given: never with the search
    // domain appended (the rules checked gone.svc.test, not more).
    assert!(
        line(&out, "unresolved").starts_with("unresolved 403 cannot resolve gone.svc.test"),
        "{out}"
    );
    let asked = lab.dns.lock().unwrap().clone();
    assert!(asked.iter().any(|n| n == "gone.svc.test"), "{asked:?}");
    assert!(!asked.iter().any(|n| n.ends_with("lab.test")), "{asked:?}");
    // Around the proxy: Landlock refuses the connect, seccomp the socket.
    assert_eq!(line(&out, "direct-lab"), "direct-lab EACCES");
    assert_eq!(
        line(&out, "direct-host-loopback"),
        "direct-host-loopback EACCES"
    );
    assert_eq!(line(&out, "udp"), "udp EPERM");
    // Stream sockets other than TCP: Landlock's port rules cover TCP only.
    assert_eq!(line(&out, "tcp"), "tcp created");
    assert_eq!(line(&out, "sctp"), "sctp EPERM");
    assert_eq!(line(&out, "mptcp"), "mptcp EPERM");
    // Refused before the kernel looks for a module to load on the host.
    assert_eq!(line(&out, "ipip"), "ipip EPERM");

    // One audit line per attempt, with addresses, rules and byte counts.
    let recs = audit(&env, "rules");
    let allowed = recs
        .iter()
        .find(|r| r["subject"] == "web.test:8080" && r["bytes_down"].as_u64() > Some(3_000_000))
        .unwrap_or_else(|| panic!("{recs:#?}"));
    assert_eq!(allowed["decision"], "allow");
    assert_eq!(allowed["addr"], format!("{ip}:8080"));
    assert_eq!(allowed["rule"], "network.allow web.test:8080");
    assert!(allowed["bytes_up"].as_u64() > Some(0));
    let denied = recs
        .iter()
        .find(|r| r["subject"] == "bad.svc.test:8080")
        .unwrap();
    assert_eq!(denied["decision"], "deny");
    assert_eq!(denied["rule"], "network.deny bad.svc.test");
    assert!(denied.get("addr").is_none());
    // Refused after resolution: the audit names the address (the sandbox's
    // answer does not); refusals the client saw only as a status say why.
    let about = |subject: &str| {
        recs.iter()
            .find(|r| r["subject"] == subject)
            .unwrap_or_else(|| panic!("no {subject} in {recs:#?}"))
    };
    let private = about("private.svc.test:8080");
    assert_eq!(private["addr"], "192.168.77.7:8080");
    assert_eq!(about("rebind.svc.test:8080")["addr"], "127.0.0.1:8080");
    let meta = about("meta.svc.test:80");
    assert_eq!(meta["addr"], "169.254.169.254:80");
    assert!(
        meta["reason"]
            .as_str()
            .unwrap()
            .starts_with("cloud metadata address"),
        "{meta}"
    );
    for subject in ["svc.test:8443", "192.0.2.10:80"] {
        assert_eq!(
            about(subject)["reason"],
            "no network.allow entry matches",
            "{subject}"
        );
    }
    assert!(!line(&out, "private").contains("192.168"), "{out}");
    assert_eq!(recs.iter().filter(|r| r["decision"] == "deny").count(), 8);
    let log = read(&state_dir(&env, "rules").join("supervisor.log"));
    assert!(
        log.contains("proxy refused bad.svc.test:8080: denied by network.deny"),
        "{log}"
    );
    env.ok(&["delete", "rules"]);
    env.assert_gone("rules");
}

#[test]
fn curl_and_environment_see_the_proxy() {
    let env = Env::new();
    let lab = Lab::new(2, env.dir.path());
    let hosts = lab.hosts();
    let script = "env | grep -i _proxy | sort; \
        curl -sS -w ' code=%{http_code}\\n' http://web.test:8080/hello; \
        curl -sSk -w ' code=%{http_code}\\n' https://api.svc.test:8443/; \
        curl -sS -D - -o /dev/null http://bad.svc.test:8080/ | grep -i '^x-buntime-deny'; \
        curl -sSk https://bad.svc.test:8443/ 2>&1 | head -1; \
        curl -sS --noproxy '*' http://10.213.2.2:8080/hello 2>&1 | head -1; true";
    let b = sandbox(
        &env,
        "curl",
        &lab.policy("deny"),
        &["/bin/sh", "-c", script],
    );
    let out = run_with_hosts(&env, "curl", &b, &hosts);
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        assert!(
            out.contains(&format!("{var}=http://127.0.0.1:3128\n")),
            "{out}"
        );
    }
    assert!(out.contains("NO_PROXY=localhost,127.0.0.1\n"), "{out}");
    assert!(out.contains("hello from web code=200\n"), "{out}");
    assert!(out.contains("hello over tls\n code=200\n"), "{out}");
    assert!(
        out.contains("X-Buntime-Deny: denied by network.deny entry \"bad.svc.test\""),
        "{out}"
    );
    // CONNECT refused: curl reports the proxy's 403.
    assert!(out.contains("CONNECT tunnel failed, response 403"), "{out}");
    // Around the proxy: the connect itself is refused (Landlock).
    assert!(
        out.contains("curl: (7) Failed to connect to 10.213.2.2 port 8080"),
        "{out}"
    );
    env.ok(&["delete", "curl"]);
}

#[test]
fn many_slow_and_hostile_clients_do_not_break_the_proxy() {
    let env = Env::new();
    let lab = Lab::new(3, env.dir.path());
    let hosts = lab.hosts();
    let argv = [
        "/usr/bin/python3",
        "/opt/fixtures/client.py",
        "parallel",
        "parallel",
        "http://web.test:8080/together/100",
        "100",
        "--",
        "slow",
        "slow",
        "http://web.test:8080",
        "--",
        "abuse",
        "abuse",
        "http://web.test:8080/hello",
    ];
    let b = sandbox(&env, "load", &lab.policy("deny"), &argv);
    let out = run_with_hosts(&env, "load", &b, &hosts);
    assert_eq!(line(&out, "parallel"), "parallel 100");
    assert_eq!(line(&out, "slow"), "slow 200 released fast=3");
    assert_eq!(
        line(&out, "abuse"),
        "abuse garbage='HTTP/1.1 400 Bad Request' huge='HTTP/1.1 431 Request Header Fields Too Large' half=b'' then=200 hello from web"
    );
    env.ok(&["delete", "load"]);
}

#[test]
fn hosts_outside_the_rules_can_be_put_to_the_approver() {
    let env = Env::new();
    let lab = Lab::new(4, env.dir.path());
    let hosts = lab.hosts();
    let argv = [
        "/usr/bin/python3",
        "/opt/fixtures/client.py",
        "get",
        "asked",
        "http://ask.test:8080/hello",
        "--",
        "get",
        "refused",
        "http://ask.test:8080/again",
        "--",
        "get",
        "numeric",
        "http://2130706433:8080/x",
        "--",
        "get",
        "unlooked",
        "http://nowhere.test:8080/x",
    ];
    let b = sandbox(&env, "ask", &lab.policy("ask"), &argv);
    // Create, then answer the approver before starting.
    let log = create_with_hosts(&env, "ask", &b, &hosts);
    let conn = UnixStream::connect(state_dir(&env, "ask").join("approve.sock")).unwrap();
    let approver = std::thread::spawn(move || {
        let mut w = conn.try_clone().unwrap();
        let mut seen = Vec::new();
        for l in BufReader::new(conn).lines() {
            let Ok(l) = l else { break };
            let q: serde_json::Value = serde_json::from_str(&l).unwrap();
            let result = if seen.is_empty() { "allow" } else { "deny" };
            seen.push(q.clone());
            let a = serde_json::json!({"id": q["id"], "result": result});
            let _ = w.write_all(format!("{a}\n").as_bytes());
            if seen.len() == 3 {
                break;
            }
        }
        seen
    });
    env.ok(&["start", "ask"]);
    wait_stopped(&env, "ask");
    let out = read(&log);
    assert_eq!(line(&out, "asked"), "asked 200 hello from web");
    assert_eq!(line(&out, "refused"), "refused 403 denied by the approver");
    // A name the rules do not grant is asked about before it is looked up
    // (nowhere.test resolves nowhere): a refused name causes no DNS query.
    assert_eq!(
        line(&out, "unlooked"),
        "unlooked 403 denied by the approver"
    );
    // An address spelled as a name (127.0.0.1 here) is refused as such,
    // never put to the approver as a name.
    assert!(
        line(&out, "numeric").contains("403 2130706433 is an address in a non-standard form"),
        "{out}"
    );
    let seen = approver.join().unwrap();
    assert_eq!(seen[0]["kind"], "net_connect");
    assert_eq!(seen[0]["subject"], "ask.test:8080");
    assert_eq!(seen[2]["subject"], "nowhere.test:8080");
    let asked = lab.dns.lock().unwrap().clone();
    assert!(
        !asked.iter().any(|n| n.starts_with("nowhere.test")),
        "{asked:?}"
    );
    env.ok(&["delete", "ask"]);
}

#[test]
fn pip_and_npm_install_through_the_proxy() {
    let env = Env::new();
    let mut lab = Lab::new(5, env.dir.path());
    let hosts = lab.hosts();
    // A pip index and an npm registry with one package each, in the lab.
    lab.serve_py("pkg_server.py", &[], PKG_PORT);
    // Both know nothing of buntime: they find the proxy in the environment.
    let script = format!(
        "export HOME=/tmp; \
         /usr/bin/python3 -m pip install -q --no-cache-dir --disable-pip-version-check \
           --index-url http://pkgs.svc.test:{PKG_PORT}/pypi/ --trusted-host pkgs.svc.test \
           --target /tmp/site demo-pkg 2>&1 | tail -3; \
         PYTHONPATH=/tmp/site /usr/bin/python3 -c 'import demo_pkg; print(\"pip:\", demo_pkg.VALUE)'; \
         mkdir -p /tmp/app && cd /tmp/app && \
         npm install --silent --no-audit --no-fund --no-update-notifier --cache /tmp/npm-cache \
           --registry http://pkgs.svc.test:{PKG_PORT}/npm/ demo-pkg 2>&1 | tail -3; \
         node -e 'console.log(\"npm:\", require(\"/tmp/app/node_modules/demo-pkg\"))'; true"
    );
    let b = sandbox(
        &env,
        "pkgs",
        &lab.policy("deny"),
        &["/bin/sh", "-c", &script],
    );
    let out = run_with_hosts(&env, "pkgs", &b, &hosts);
    assert!(out.contains("pip: demo from the lab\n"), "{out}");
    assert!(out.contains("npm: demo from the lab\n"), "{out}");
    // Each went through the proxy: audited, by name, allowed by the rules.
    let recs = audit(&env, "pkgs");
    let subject = format!("pkgs.svc.test:{PKG_PORT}");
    let through: Vec<_> = recs.iter().filter(|r| r["subject"] == subject).collect();
    assert!(through.len() >= 4, "{recs:#?}");
    assert!(
        through
            .iter()
            .all(|r| r["decision"] == "allow" && r["rule"] == "network.allow *.svc.test"),
        "{through:#?}"
    );
    assert!(!recs.iter().any(|r| r["decision"] == "deny"), "{recs:#?}");
    env.ok(&["delete", "pkgs"]);
}

#[test]
fn none_mode_has_no_inet_sockets_and_no_proxy() {
    let env = Env::new();
    let policy = serde_json::json!({
        "version": 1,
        "filesystem": {"read": ["/usr", "/etc", "/opt", "/proc"], "write": ["/tmp"],
                       "exec": ["/usr/bin", "/usr/lib"]},
        "network": {"mode": "none"}
    })
    .to_string();
    let argv = [
        "/usr/bin/python3",
        "/opt/fixtures/client.py",
        "direct",
        "tcp",
        "127.0.0.1",
        "3128",
        "--",
        "udp",
        "udp",
        "127.0.0.1",
        "53",
    ];
    let b = sandbox(&env, "none", &policy, &argv);
    let log = env.dir.path().join("none.log");
    env.create_logged("none", &b, &log);
    env.ok(&["start", "none"]);
    env.wait_status("none", "stopped");
    let out = read(&log);
    assert_eq!(line(&out, "tcp"), "tcp EPERM");
    assert_eq!(line(&out, "udp"), "udp EPERM");
    let spec = read(&state_dir(&env, "none").join("config.json"));
    assert!(!spec.contains("HTTP_PROXY"));
    env.ok(&["delete", "none"]);
}
