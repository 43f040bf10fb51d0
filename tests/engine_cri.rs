//! Kubernetes through CRI, the path a kubelet takes: each test starts a
//! private containerd with its CRI plugin (tests/engines/cri.rs: own root,
//! state, socket, CNI bridge network and cgroup parent, offline images; the
//! node's cgroup driver: cgroupfs here, systemd in `make test-node`'s
//! guest) and
//! drives the CRI v1 API over gRPC with pods whose runtime handler is
//! `buntime` (integration/containerd/config.toml), so the pause container
//! and every container run under the built buntime-runc. Needs root,
//! Debian's containerd and containernetworking-plugins
//! (hack/install-deps.sh).

mod engines;

#[path = "engines/cri.rs"]
mod cri;

use std::fs;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use cri::Cri;
use k8s_cri::v1::ContainerState;

/// The test node's default policy (containers whose pod names none): like
/// the engine default (policies/engine.json), the pod's network kept
/// (`bundle`), the image's filesystem as the bundle mounts it, the
/// dangerous capabilities dropped.
const NODE_DEFAULT: &str = r#"{"version":1,
"description":"test node default: the pod's network, the bundle's filesystem",
"filesystem":{"read":["/"],"write":["/"],"exec":["/"]},
"network":{"mode":"bundle"},"env":{"pass":["*"]},"landlock":"off",
"resources":{"core":0},
"isolation":{"capabilities":{"drop":["SYS_ADMIN","SYS_MODULE","SYS_PTRACE","SYS_RAWIO",
"SYS_BOOT","SYS_TIME","NET_ADMIN","SYSLOG","DAC_READ_SEARCH","LINUX_IMMUTABLE"]},
"no_new_privileges":true,"namespaces":["pid","ipc","uts","mount"],"seccomp":"buntime",
"mask_kernel_paths":true}}"#;

fn node(etc: &Path) {
    fs::write(etc.join("default.json"), NODE_DEFAULT).expect("write default.json");
}

fn start() -> Option<Cri> {
    Cri::start(node)
}

/// Asserts container (or pause container) `id` of `pod` runs in the cgroup
/// the node's driver gives it: `<pod parent>/<id>`, or on a systemd node
/// the active scope `cri-containerd-<id>.scope` in the pod's slice, under
/// the test's slice. Its init's pid.
fn assert_in_its_cgroup(c: &Cri, pod: &cri::Pod, id: &str) -> i32 {
    let pid = c.runc_state(id)["pid"].as_i64().expect("init pid") as i32;
    let (cg, _) = cri::cgroup_of(pid).expect("the init's cgroup");
    assert_eq!(
        cg,
        c.container_cgroup(pod, id),
        "{id}'s cgroup ({:?} driver)",
        c.driver
    );
    if c.driver == cri::Driver::Systemd {
        let scope = cri::scope_unit(id);
        assert!(
            cg.starts_with(&format!("{}/", c.cgroup_root)) && cg.ends_with(&format!("/{scope}")),
            "a systemd scope under the test's slice: {cg}"
        );
        assert_eq!(cri::unit_state(&scope), "active", "systemd runs {scope}");
    }
    pid
}

#[test]
fn cri_pod_under_buntime_localhost_logs_exec_stats_and_cleanup() {
    let Some(c) = start() else { return };
    let pod = c.run_pod("web", &[]);

    // The pause container runs under buntime-runc, with the node default.
    assert!(
        c.runc_ids().contains(&pod.id),
        "buntime-runc's state lists the sandbox {}: {:?}",
        pod.id,
        c.runc_ids()
    );
    let state = c.runc_state(&pod.id);
    assert_eq!(state["status"], "running", "{state}");
    let origin = state["annotations"]["buntime.dev/policy-origin"]
        .as_str()
        .unwrap_or_default();
    assert!(origin.contains("default.json"), "{state}");
    assert_in_its_cgroup(&c, &pod, &pod.id);
    let status = c.pod_status(&pod);
    let ip = status
        .network
        .as_ref()
        .map(|n| n.ip.clone())
        .unwrap_or_default();
    assert!(
        ip.starts_with("10.213."),
        "the pod's CNI address: {status:?}"
    );

    // Two containers of the pod over localhost: a server and a client.
    let server = c.run_container(
        &pod,
        "server",
        &[
            "sh",
            "-c",
            "while :; do echo pong-from-server | nc -l -p 8080; done",
        ],
    );
    let client = c.run_container(
        &pod,
        "client",
        &[
            "sh",
            "-c",
            "for i in $(seq 50); do nc -w 2 127.0.0.1 8080 </dev/null && break; sleep 0.2; done; \
             echo client-done; echo to-stderr >&2; sleep inf",
        ],
    );
    // The client's output reaches its CRI log (what `kubectl logs` reads),
    // stdout and stderr tagged.
    let log = c.wait_log(&client, "client-done");
    assert_in_its_cgroup(&c, &pod, &client);
    assert!(log.contains("stdout F pong-from-server"), "{log}");
    assert!(log.contains("stderr F to-stderr"), "{log}");

    // ExecSync (exec probes, `crictl exec -s`): output and exit code, in
    // the pod's network, under the node default.
    let r = c.exec_sync(
        &client,
        &[
            "sh",
            "-c",
            "for i in $(seq 20); do nc -w 2 127.0.0.1 8080 </dev/null && break; sleep 0.2; done; \
             hostname; echo err >&2; exit 3",
        ],
    );
    let out = String::from_utf8_lossy(&r.stdout);
    assert_eq!(r.exit_code, 3, "{r:?}");
    assert!(out.contains("pong-from-server"), "{out}");
    assert!(out.contains("web"), "the pod's hostname: {out}");
    assert_eq!(String::from_utf8_lossy(&r.stderr), "err\n");
    let r = c.exec_sync(&server, &["cat", "/proc/self/status"]);
    let caps = String::from_utf8_lossy(&r.stdout);
    let eff = caps
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(str::trim)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .expect("CapEff");
    assert_eq!(
        eff & (1 << 21),
        0,
        "SYS_ADMIN dropped by the policy: {caps}"
    );
    assert_ne!(eff, 0, "the engine's other capabilities kept: {caps}");

    // A streaming exec (`kubectl exec -i`): stdin in, stdout and stderr
    // out, the exit code in the status.
    let url = c.exec_url(
        &client,
        &["sh", "-c", "read l; echo got-$l; echo e-$l >&2; exit 5"],
        true,
    );
    let s = cri::stream_exec(&url, b"hello\n");
    assert_eq!(s.stdout, "got-hello\n", "{s:?}");
    assert_eq!(s.stderr, "e-hello\n", "{s:?}");
    assert_eq!(s.exit_code, Some(5), "{s:?}");
    let url = c.exec_url(&server, &["echo", "streamed"], false);
    let s = cri::stream_exec(&url, b"");
    assert_eq!((s.stdout.as_str(), s.exit_code), ("streamed\n", Some(0)));

    // ContainerStats: the container's cgroup, as the kubelet sees it.
    let stats = c.stats(&server);
    let cpu = stats
        .cpu
        .as_ref()
        .and_then(|c| c.usage_core_nano_seconds.as_ref())
        .map(|v| v.value)
        .unwrap_or(0);
    let mem = stats
        .memory
        .as_ref()
        .and_then(|m| m.working_set_bytes.as_ref())
        .map(|v| v.value)
        .unwrap_or(0);
    assert!(cpu > 0 && mem > 0, "{stats:?}");
    let pid = assert_in_its_cgroup(&c, &pod, &server);
    let (cg, usage) = cri::cpu_usage(pid).expect("the container's cgroup CPU usage");
    assert!(
        usage >= cpu,
        "the stats come from the container's cgroup {cg}: {usage} < {cpu}"
    );

    // Stop (SIGTERM, then SIGKILL after the grace period) and remove.
    for id in [&server, &client] {
        c.stop_container(id, 2);
        let st = c.container_status(id);
        assert_eq!(
            st.state,
            ContainerState::ContainerExited as i32,
            "{id} stopped: {st:?}"
        );
        c.remove_container(id);
    }
    let (pod_cg, pause_cg) = (c.pod_cgroup(&pod), c.container_cgroup(&pod, &pod.id));
    c.remove_pod(&pod).expect("remove pod");
    for cg in [&pod_cg, &pause_cg] {
        let left = engines::cgroups_left(cg);
        assert!(left.is_empty(), "the pod's cgroups gone: {left:?}");
    }
    if c.driver == cri::Driver::Systemd {
        for id in [&pod.id, &server, &client] {
            let scope = cri::scope_unit(id);
            assert_ne!(cri::unit_state(&scope), "active", "{scope} stopped");
        }
    }
    c.assert_clean();
}

/// A listener on the host's bridge address; whether anyone connected.
fn host_listener(c: &Cri) -> TcpListener {
    let l = TcpListener::bind((c.host_addr, 0)).expect("listen on the bridge address");
    l.set_nonblocking(true).expect("nonblocking");
    l
}

fn saw_connection(l: &TcpListener) -> bool {
    // A completed handshake waits in the backlog even when the client has
    // gone: accept finds it.
    match l.accept() {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) => panic!("accept: {e}"),
    }
}

fn dial_host(c: &Cri, pod: &cri::Pod, l: &TcpListener) -> (String, String) {
    let port = l.local_addr().expect("addr").port();
    let cmd = format!(
        "if nc -w 3 {} {port} -e true; then echo DIALED; else echo NOT-DIALED; fi",
        c.host_addr
    );
    let id = c.run_container(pod, "dialer", &["sh", "-c", &cmd]);
    c.wait_exited(&id);
    let log = c.log_of(&id);
    (id, log)
}

#[test]
fn cri_pod_policy_annotation_refuses_the_host() {
    let Some(c) = start() else { return };
    // Control: under the node default the pod reaches the host.
    let open = c.run_pod("open", &[]);
    let l = host_listener(&c);
    let (id, log) = dial_host(&c, &open, &l);
    assert!(
        log.contains("DIALED") && !log.contains("NOT-DIALED"),
        "{log}"
    );
    assert!(saw_connection(&l), "the host saw the pod's connection");
    c.remove_container(&id);
    c.remove_pod(&open).expect("remove pod");

    // A pod annotation choosing the no-network policy (the handler's
    // pod_annotations pass it to every container of the pod, the pause
    // container's too): the same connection never reaches the host.
    let closed = c.run_pod("closed", &[("buntime.dev/policy-name", "no-network")]);
    let state = c.runc_state(&closed.id);
    assert_eq!(
        state["annotations"]["buntime.dev/policy-name"], "no-network",
        "{state}"
    );
    let l = host_listener(&c);
    let (id, log) = dial_host(&c, &closed, &l);
    assert!(log.contains("NOT-DIALED"), "{log}");
    assert!(!saw_connection(&l), "the host saw nothing");
    c.remove_container(&id);
    c.remove_pod(&closed).expect("remove pod");
    c.assert_clean();
}

#[test]
fn cri_bad_policy_annotation_fails_the_container_with_the_field_named() {
    let Some(c) = start() else { return };
    let pod = c.run_pod("bad", &[]);
    let bad = r#"{"version":1,"network":{"mode":"sideways"}}"#;
    // containerd's CRI makes the runtime's container at StartContainer (the
    // kubelet's "StartError"); CreateContainer only records it.
    let id = c
        .create(&pod, "bad", &["true"], &[("buntime.dev/policy", bad)])
        .expect("CreateContainer records the container");
    let err = c
        .start_container(&id)
        .expect_err("a bad policy annotation fails the container");
    let msg = err.message();
    assert!(
        msg.contains("annotation buntime.dev/policy")
            && msg.contains("/network/mode")
            && msg.contains("sideways"),
        "the gRPC error names the annotation, the field and the value: {msg}"
    );
    // What `kubectl describe pod` shows: the container's status.
    let st = c.container_status(&id);
    assert!(
        st.reason == "StartError" && st.message.contains("/network/mode"),
        "the container status carries the error: {st:?}"
    );
    c.remove_container(&id);
    // The pod is unharmed: a good container still runs.
    let ok = c.run_container(&pod, "good", &["echo", "still-fine"]);
    assert_eq!(c.wait_exited(&ok), 0);
    assert!(c.log_of(&ok).contains("still-fine"));
    c.remove_container(&ok);
    c.remove_pod(&pod).expect("remove pod");
    c.assert_clean();
}

#[test]
fn cri_pod_proxy_policy_lets_through_only_the_listed_host() {
    // A node whose ceiling lets annotation policies name private addresses
    // (engines::open_node), with the test's node default.
    let Some(c) = Cri::start(|etc| {
        engines::open_node(etc);
        node(etc);
    }) else {
        return;
    };
    // The destination: a web server in another pod (node default: the
    // pod's network), which logs each request it serves.
    let target = c.run_pod("target", &[]);
    let ip = c
        .pod_status(&target)
        .network
        .map(|n| n.ip)
        .unwrap_or_default();
    let server = c.run_container(
        &target,
        "server",
        &[
            "sh",
            "-c",
            "while :; do printf 'HTTP/1.0 200 OK\\r\\n\\r\\npong\\n' | nc -l -p 8080 && echo served; done",
        ],
    );
    let served = || c.log_of(&server).matches("served").count();
    let policy = |allow: &str| {
        format!(
            r#"{{"version":1,"filesystem":{{"read":["/"],"write":["/tmp"],"exec":["/bin"]}},
"network":{{"mode":"proxy","allow":["{allow}"]}}}}"#
        )
    };
    let fetch = |pod: &cri::Pod| {
        let cmd = format!("wget -q -O- http://{ip}:8080/ 2>&1; echo wget-rc=$?");
        let id = c.run_container(pod, "fetch", &["sh", "-c", &cmd]);
        c.wait_exited(&id);
        let log = c.log_of(&id);
        c.remove_container(&id);
        log
    };
    // The pod's address is listed: the proxy takes the request there.
    let pod = c.run_pod("listed", &[("buntime.dev/policy", &policy(&ip))]);
    let log = fetch(&pod);
    assert!(log.contains("pong") && log.contains("wget-rc=0"), "{log}");
    assert!(
        engines::wait_until(Duration::from_secs(10), || served() == 1),
        "the listed destination served the request"
    );
    c.remove_pod(&pod).expect("remove pod");
    // Another address is listed: the proxy refuses, the server sees nothing.
    let pod = c.run_pod(
        "unlisted",
        &[("buntime.dev/policy", &policy("10.213.255.254"))],
    );
    let log = fetch(&pod);
    assert!(
        log.contains("403") && !log.contains("wget-rc=0") && !log.contains("pong"),
        "the proxy refuses: {log}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(served(), 1, "the unlisted destination saw nothing: {log}");
    c.remove_pod(&pod).expect("remove pod");
    c.stop_container(&server, 1);
    c.remove_container(&server);
    c.remove_pod(&target).expect("remove pod");
    c.assert_clean();
}

/// The built-in engine default (no default.json on the node; policies/
/// engine.json, network mode `pod`): the pod keeps its network, a sibling
/// is reached over localhost through the container's proxy (which
/// connects inside the pod's namespace), a direct connection to an
/// undeclared port is refused by Landlock, and the host (an unlisted
/// external destination) sees nothing either way. Then an annotation
/// policy in `pod` mode naming another pod's address and port: reached
/// through the proxy and directly (its port declared), while the host is
/// still refused. On a kernel without Landlock TCP rules (ABI < 4) the
/// pod is refused instead, the refusal naming why.
#[test]
fn cri_engine_default_pod_network_localhost_through_the_proxy_host_refused() {
    // The ceiling (engines::open_node) lets annotations name private
    // addresses; the node default stays the built-in one.
    let Some(c) = Cri::start(engines::open_node) else {
        return;
    };
    if buntime::landlock::kernel_abi().unwrap_or(0) < 4 {
        // A kernel before 6.7 (Debian 12's 6.1, as in `make test-node`'s
        // guest) has no Landlock TCP rules, which `pod` mode holds egress
        // with: the pod is refused, not run with open egress.
        let config = c.pod_config("podnet", &[]);
        let err = c
            .try_run_pod(&config)
            .expect_err("the engine default refused without Landlock TCP rules");
        let msg = err.message();
        assert!(
            msg.contains("network.mode \"pod\"") && msg.contains("Landlock"),
            "the refusal names the mode and Landlock: {msg}"
        );
        let pod = cri::Pod {
            id: String::new(),
            config,
        };
        c.remove_pod_cgroup(&pod).expect("the pod's cgroup");
        c.assert_clean();
        return;
    }
    let pod = c.run_pod("podnet", &[]);
    let state = c.runc_state(&pod.id);
    assert_eq!(
        state["annotations"]["buntime.dev/policy-origin"], "built-in default",
        "{state}"
    );
    let server = c.run_container(
        &pod,
        "server",
        &[
            "sh",
            "-c",
            "while :; do printf 'HTTP/1.0 200 OK\\r\\n\\r\\npong-local\\n' | nc -l -p 8080 && echo served; done",
        ],
    );
    let l = host_listener(&c);
    let hport = l.local_addr().expect("addr").port();
    let host = c.host_addr;
    let script = format!(
        "echo proxy=$HTTP_PROXY; \
         ok=1; for i in $(seq 50); do if wget -q -O- http://127.0.0.1:8080/; then ok=0; break; fi; sleep 0.2; done; \
         echo wget-local=$ok; \
         nc -w 2 127.0.0.1 8080 </dev/null; echo nc-local=$?; \
         nc -w 3 {host} {hport} -e true; echo nc-host=$?; \
         wget -q -O- http://{host}:{hport}/ 2>&1; echo wget-host=$?; \
         echo client-done; sleep inf"
    );
    let client = c.run_container(&pod, "client", &["sh", "-c", &script]);
    let log = c.wait_log(&client, "client-done");
    assert!(
        log.contains("pong-local") && log.contains("wget-local=0"),
        "the sibling over localhost, through the proxy: {log}"
    );
    assert!(
        log.contains("nc-local=1"),
        "a direct connection to an undeclared port is refused: {log}"
    );
    assert!(
        log.contains("nc-host=1"),
        "direct to the host refused: {log}"
    );
    assert!(
        log.contains("403") && log.contains("wget-host=1"),
        "the proxy refuses the host: {log}"
    );
    assert!(!saw_connection(&l), "the host saw nothing");
    // Each container has its own proxy on the pod's shared loopback.
    let proxy = |id: &str| {
        c.runc_state(id)["annotations"]["buntime.dev/proxy"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let (ps, pc) = (proxy(&server), proxy(&client));
    assert!(
        ps.starts_with("127.0.0.1:") && pc.starts_with("127.0.0.1:"),
        "{ps} {pc}"
    );
    assert_ne!(
        ps, pc,
        "the pod's containers' proxies on ports of their own"
    );
    assert!(log.contains(&format!("proxy=http://{pc}")), "{log}");

    // Another pod whose annotation policy names this pod's address and
    // port: through its proxy and directly (Landlock opens 8080), the
    // host still refused.
    let ip = c.pod_status(&pod).network.map(|n| n.ip).unwrap_or_default();
    let policy = format!(
        r#"{{"version":1,"filesystem":{{"read":["/"],"write":["/tmp"],"exec":["/bin"]}},
"network":{{"mode":"pod","allow":["{ip}:8080"]}}}}"#
    );
    let other = c.run_pod("podnet-other", &[("buntime.dev/policy", &policy)]);
    let script = format!(
        "wget -q -O- http://{ip}:8080/; echo wget-pod=$?; \
         ok=1; for i in $(seq 20); do if nc -w 2 {ip} 8080 </dev/null; then ok=0; break; fi; sleep 0.2; done; \
         echo nc-pod=$ok; \
         nc -w 3 {host} {hport} -e true; echo nc-host=$?; echo other-done"
    );
    let id = c.run_container(&other, "fetch", &["sh", "-c", &script]);
    c.wait_exited(&id);
    let log = c.log_of(&id);
    assert!(
        log.contains("pong-local") && log.contains("wget-pod=0"),
        "{log}"
    );
    assert!(
        log.contains("nc-pod=0"),
        "the declared port, directly: {log}"
    );
    assert!(log.contains("nc-host=1"), "{log}");
    assert!(!saw_connection(&l), "the host saw nothing");
    c.remove_container(&id);
    c.remove_pod(&other).expect("remove pod");
    for id in [&server, &client] {
        c.stop_container(id, 1);
        c.remove_container(id);
    }
    c.remove_pod(&pod).expect("remove pod");
    c.assert_clean();
}

/// A pod's DNS server, as a kubelet gives one through CRI's `dns_config`
/// (cluster DNS): answers `A` queries for `name` with `ip` on the bridge
/// address, port 53, and records every name it was asked for.
struct PodDns {
    asked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl PodDns {
    fn start(addr: std::net::Ipv4Addr, name: &'static str, ip: std::net::Ipv4Addr) -> Self {
        use simple_dns::rdata::{RData, A};
        use simple_dns::{Name, Packet, ResourceRecord, CLASS};
        use std::sync::atomic::Ordering;
        let sock = std::net::UdpSocket::bind((addr, 53)).expect("bind the pod's DNS server");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (a, s) = (asked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(q) = Packet::parse(&buf[..n]) else {
                    continue;
                };
                let mut reply = q.clone().into_reply();
                for question in &q.questions {
                    let qname = question.qname.to_string();
                    a.lock().expect("lock").push(qname.clone());
                    if qname.trim_end_matches('.') == name {
                        reply.answers.push(ResourceRecord::new(
                            Name::new_unchecked(name),
                            CLASS::IN,
                            30,
                            RData::A(A::from(ip)),
                        ));
                    }
                }
                if let Ok(bytes) = reply.build_bytes_vec() {
                    let _ = sock.send_to(&bytes, from);
                }
            }
        });
        PodDns { asked, stop }
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().expect("lock").clone()
    }
}

impl Drop for PodDns {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// `pod` mode looks names up inside the pod: the proxy asks the DNS server
/// the pod's resolv.conf names (CRI `dns_config`, the kubelet's cluster
/// DNS), so a Service-style name reaches the in-cluster address it stands
/// for (a private address: the policy names its range too, as for any
/// special address); a name the pod's DNS does not know reaches nothing.
#[test]
fn cri_pod_mode_resolves_names_through_the_pods_dns() {
    if buntime::landlock::kernel_abi().unwrap_or(0) < 4 {
        // `pod` mode is refused there (the engine-default test checks how).
        eprintln!("skipped: pod mode needs Landlock ABI 4");
        return;
    }
    let Some(c) = Cri::start(|etc| {
        engines::open_node(etc);
        node(etc);
    }) else {
        return;
    };
    let target = c.run_pod("svc", &[]);
    let ip: std::net::Ipv4Addr = c
        .pod_status(&target)
        .network
        .map(|n| n.ip)
        .unwrap_or_default()
        .parse()
        .expect("the target pod's IPv4 address");
    let server = c.run_container(
        &target,
        "server",
        &[
            "sh",
            "-c",
            "while :; do printf 'HTTP/1.0 200 OK\\r\\n\\r\\npong\\n' | nc -l -p 8080 && echo served; done",
        ],
    );
    let dns = PodDns::start(c.host_addr, "web.cluster.test", ip);
    let policy = r#"{"version":1,"filesystem":{"read":["/"],"write":["/tmp"],"exec":["/bin"]},
"network":{"mode":"pod","allow":["web.cluster.test:8080","10.213.0.0/16:8080"]}}"#;
    let mut config = c.pod_config("client", &[("buntime.dev/policy", policy)]);
    config.dns_config = Some(k8s_cri::v1::DnsConfig {
        servers: vec![c.host_addr.to_string()],
        searches: vec![],
        options: vec![],
    });
    let pod = cri::Pod {
        id: c
            .try_run_pod(&config)
            .expect("RunPodSandbox with cluster DNS"),
        config,
    };
    let fetch = |name: &str, url: &str| {
        let cmd = format!("wget -q -O- {url} 2>&1; echo wget-rc=$?");
        let id = c.run_container(&pod, name, &["sh", "-c", &cmd]);
        c.wait_exited(&id);
        let log = c.log_of(&id);
        c.remove_container(&id);
        log
    };
    let log = fetch("fetch-web", "http://web.cluster.test:8080/");
    assert!(log.contains("pong") && log.contains("wget-rc=0"), "{log}");
    assert!(
        dns.asked()
            .iter()
            .any(|n| n.starts_with("web.cluster.test")),
        "the pod's DNS server was asked: {:?}",
        dns.asked()
    );
    // A name the pod's DNS does not know reaches nothing.
    let log = fetch("fetch-other", "http://other.cluster.test:8080/");
    assert!(!log.contains("pong") && !log.contains("wget-rc=0"), "{log}");
    c.remove_pod(&pod).expect("remove pod");
    c.stop_container(&server, 1);
    c.remove_container(&server);
    c.remove_pod(&target).expect("remove pod");
    c.assert_clean();
}

/// A container of a pod with `buntime.dev/learn: "true"`: containerd
/// deletes the runtime's container once it is removed (as the kubelet
/// does), and `buntime-runc policy learned ID` still prints what it used
/// (docs/learn.md, the kept record); under that policy the same command
/// runs again, not learning (its state's annotation says so), with its
/// output complete: that is the evidence. Its own audit log, read from the
/// runtime's root while the rerun idles after its command (containerd
/// deletes the runtime's container once it exits), holds only the broker's
/// and the proxy's decisions; this command makes none, and the kernel's
/// Landlock refusals are not audited, so its being free of denials shows
/// little.
#[test]
fn cri_learning_container_policy_outlives_its_removal() {
    let Some(c) = start() else { return };
    let pod = c.run_pod("learn", &[]);
    // The rerun sleeps after its command so that its state is there to
    // read; the learning run's `sleep 0` runs the same programs.
    let cmd = |secs: u32| {
        format!(
            "cat /etc/passwd >/dev/null && echo read-ok; ls /etc >/dev/null && echo ls-ok; \
             /bin/busybox true && echo exec-ok; echo cmd-done; sleep {secs}"
        )
    };
    let learning = r#"{"version":1,"filesystem":{"read":["/"],"write":["/tmp","/dev/null"],"exec":["/bin"]},"network":{"mode":"none"}}"#;
    let start = |name: &str, policy: &str, learn: bool| -> String {
        let sh = cmd(if learn { 0 } else { 600 });
        let learn = if learn { "true" } else { "false" };
        let id = c
            .create(
                &pod,
                name,
                &["sh", "-c", &sh],
                &[("buntime.dev/learn", learn), ("buntime.dev/policy", policy)],
            )
            .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}\n{}", c.log()));
        c.start_container(&id)
            .unwrap_or_else(|e| panic!("StartContainer {name}: {e}\n{}", c.log()));
        id
    };
    let run = |name: &str, policy: &str| -> (String, String) {
        let id = start(name, policy, true);
        assert_eq!(c.wait_exited(&id), 0, "{}", c.log_of(&id));
        let log = c.log_of(&id);
        c.remove_container(&id);
        (id, log)
    };
    let learned_of = |id: &str| {
        engines::run(
            std::process::Command::new(engines::RUNC)
                .arg("--root")
                .arg(c.runc_root())
                .args(["policy", "learned", id]),
            cri::LIMIT,
        )
    };
    let (id, log) = run("learner", learning);
    for word in ["read-ok", "ls-ok", "exec-ok"] {
        assert!(log.contains(word), "{word}: {log}");
    }
    assert!(!c.runc_ids().contains(&id), "containerd deleted it");
    let out = learned_of(&id);
    assert!(out.ok(), "{out:?}");
    assert!(out.stderr.contains("the container was deleted"), "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("a policy");
    let read = v["filesystem"]["read"].to_string();
    assert!(
        read.contains("\"/etc") && !read.contains("\"/\""),
        "{}",
        out.stdout
    );

    let id2 = start("rerun", out.stdout.trim(), false);
    let log = c.wait_log(&id2, "cmd-done");
    for word in ["read-ok", "ls-ok", "exec-ok", "cmd-done"] {
        assert!(log.contains(word), "{word}: {log}");
    }
    assert!(
        !log.contains("denied") && !log.contains("refused by policy"),
        "{log}"
    );
    // Only the broker's and proxy's decisions are audited (none here).
    let audit = engines::run(
        std::process::Command::new(engines::RUNC)
            .arg("--root")
            .arg(c.runc_root())
            .args(["audit", &id2]),
        cri::LIMIT,
    );
    assert!(audit.ok(), "{audit:?}");
    let denials: Vec<&str> = audit
        .stdout
        .lines()
        .filter(|l| l.contains("\"decision\":\"deny\""))
        .collect();
    assert_eq!(denials, Vec::<&str>::new());
    let state = engines::run(
        std::process::Command::new(engines::RUNC)
            .arg("--root")
            .arg(c.runc_root())
            .args(["state", &id2]),
        cri::LIMIT,
    );
    assert!(state.ok(), "{state:?}");
    let v: serde_json::Value = serde_json::from_str(&state.stdout).expect("state is JSON");
    assert_ne!(v["annotations"]["buntime.dev/learn"], "observing", "{v}");
    c.stop_container(&id2, 0);
    c.remove_container(&id2);
    c.remove_pod(&pod).expect("remove pod");
    c.assert_clean();
}
