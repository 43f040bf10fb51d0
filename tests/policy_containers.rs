//! Issue 3: real containers through `buntime-runc`, proving that the kernel
//! enforces the container's policy: network namespace and seccomp socket
//! rules, Landlock read/write/exec rules, read-only root, cgroup memory and
//! pids limits, the same confinement for `exec`'d processes, and the policy
//! annotations (hash, origin, refusals). Needs root and a kernel with
//! Landlock.

mod common;

use std::fs;
use std::io::{ErrorKind, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use common::{read, wait_until, Env};

/// A narrow policy: busybox in /bin may be read and run, /proc read, only
/// /tmp and /dev/null written, no network. `extra` is merged in at the top
/// level (an object replaces the default of that key).
fn narrow_policy(extra: Value) -> Value {
    let mut p = json!({
        "version": 1,
        "description": "policy_containers test policy",
        "filesystem": {
            "read": ["/bin", "/proc"],
            "write": ["/tmp", "/dev/null"],
            "exec": ["/bin"]
        },
        "network": { "mode": "none" }
    });
    if let (Some(obj), Value::Object(extra)) = (p.as_object_mut(), extra) {
        for (k, v) in extra {
            obj.insert(k, v);
        }
    }
    p
}

/// Edits the bundle's config.json with `f`.
fn edit_config(bundle: &Path, f: impl FnOnce(&mut Value)) {
    let file = bundle.join("config.json");
    let mut cfg: Value = serde_json::from_str(&read(&file)).expect("bundle config.json is JSON");
    f(&mut cfg);
    fs::write(
        &file,
        serde_json::to_vec_pretty(&cfg).expect("encode config"),
    )
    .expect("write");
}

/// Sets the bundle's annotations (replacing any).
fn annotate(bundle: &Path, pairs: &[(&str, &str)]) {
    let map: serde_json::Map<String, Value> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    edit_config(bundle, |c| {
        c["annotations"] = Value::Object(map);
    });
}

/// Annotates the bundle with `policy` as inline JSON (`buntime.dev/policy`).
fn inline_policy(bundle: &Path, policy: &Value) {
    annotate(bundle, &[("buntime.dev/policy", &policy.to_string())]);
}

/// Adds a read-write bind mount of host `source` at `dest` to the bundle
/// (creating the mount point in the rootfs).
fn add_bind(bundle: &Path, source: &Path, dest: &str) {
    let mp = bundle.join("rootfs").join(dest.trim_start_matches('/'));
    fs::create_dir_all(&mp).expect("mount point");
    let source = source.to_string_lossy().into_owned();
    edit_config(bundle, |c| {
        if let Some(m) = c["mounts"].as_array_mut() {
            m.push(json!({
                "destination": dest,
                "type": "bind",
                "source": source,
                "options": ["rbind", "rw"]
            }));
        }
    });
}

/// Writes `body` to `rel` inside the bundle's rootfs (before create: the
/// container's root is read-only).
fn put_file(bundle: &Path, rel: &str, body: &[u8]) -> PathBuf {
    let p = bundle.join("rootfs").join(rel.trim_start_matches('/'));
    fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    fs::write(&p, body).expect("write rootfs file");
    p
}

/// Copies the bundle's static busybox to `rel` in its rootfs (a program
/// that is not below /bin, so Landlock judges it on its own path).
fn put_busybox(bundle: &Path, rel: &str) {
    let body = fs::read(bundle.join("rootfs/bin/busybox")).expect("busybox");
    let p = put_file(bundle, rel, &body);
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `buntime-runc run` of the bundle in the foreground.
fn run(env: &Env, bundle: &Path, id: &str) -> Output {
    env.runc(&["run", "--bundle", path_str(bundle), id])
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// stdout and stderr of a run, for assertions and failure messages.
fn both(o: &Output) -> String {
    format!(
        "[exit {:?}]\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    )
}

/// A TCP listener on every host address that answers each connection with
/// a greeting and counts connections, until dropped (bounded at 60 s).
struct HostListener {
    port: u16,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const GREETING: &str = "hello-from-the-host";

impl HostListener {
    fn start() -> Self {
        let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind host listener");
        l.set_nonblocking(true).expect("nonblocking");
        let port = l.local_addr().expect("local addr").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (accepted.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !s.load(Ordering::SeqCst) && Instant::now() < deadline {
                match l.accept() {
                    Ok((mut c, _)) => {
                        a.fetch_add(1, Ordering::SeqCst);
                        let _ = c.set_nonblocking(false);
                        let _ = c.write_all(format!("{GREETING}\n").as_bytes());
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => break,
                }
            }
        });
        Self {
            port,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for HostListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The host's own outgoing IPv4 address (no packet is sent: connecting a
/// UDP socket only picks a route), or None without a route.
fn host_ipv4() -> Option<Ipv4Addr> {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    s.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).ok()?;
    match s.local_addr().ok()? {
        SocketAddr::V4(a) if !a.ip().is_unspecified() && !a.ip().is_loopback() => Some(*a.ip()),
        _ => None,
    }
}

/// The state annotations, asserting Landlock was applied.
fn annotations(env: &Env, id: &str) -> serde_json::Map<String, Value> {
    let st = env.state(id);
    let ann = st["annotations"].as_object().cloned().unwrap_or_default();
    let ll = ann
        .get("buntime.dev/landlock")
        .and_then(Value::as_str)
        .unwrap_or_default();
    assert!(
        ll.starts_with("abi-"),
        "Landlock must be applied for these tests (needs a kernel with Landlock): {st}"
    );
    ann
}

/// The lines after `marker` up to the next line starting with `--`.
fn section(out: &str, marker: &str) -> Vec<String> {
    out.lines()
        .skip_while(|l| *l != marker)
        .skip(1)
        .take_while(|l| !l.starts_with("--"))
        .map(str::to_string)
        .collect()
}

// 1. no-network: only loopback, and TCP to the host is refused.

#[test]
fn no_network_policy_has_only_loopback_and_no_tcp() {
    let env = Env::new();
    let listener = HostListener::start();
    let port = listener.port.to_string();
    let host_ip = host_ipv4().map_or_else(|| "127.0.0.1".to_string(), |a| a.to_string());
    let script = format!(
        "echo --ifaces; ls /sys/class/net; echo --netdev; tail -n +3 /proc/net/dev | cut -d: -f1; \
         echo --end; nc -w 2 127.0.0.1 {port}; echo nc-loopback=$?; \
         nc -w 2 {host_ip} {port}; echo nc-host=$?"
    );
    let bundle = env.bundle("b", &["sh", "-c", &script], &[]);
    annotate(&bundle, &[("buntime.dev/policy-name", "no-network")]);
    let out = run(&env, &bundle, "nonet");
    let all = both(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let stdout = text(&out.stdout);
    assert_eq!(section(&stdout, "--ifaces"), ["lo"], "{all}");
    let netdev: Vec<String> = section(&stdout, "--netdev")
        .iter()
        .map(|l| l.trim().to_string())
        .collect();
    assert_eq!(netdev, ["lo"], "{all}");
    // Neither the container's own loopback nor the host's address is
    // reachable, and it is seccomp (AF_INET refused in `none` mode) that
    // refuses, before any routing.
    assert!(!stdout.contains(GREETING), "{all}");
    assert!(!stdout.contains("nc-loopback=0"), "{all}");
    assert!(!stdout.contains("nc-host=0"), "{all}");
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.matches("socket: Operation not permitted").count(),
        2,
        "both connects must be refused at socket(AF_INET): {all}"
    );
    assert_eq!(listener.accepted(), 0, "the host listener was reached");
    env.assert_gone("nonet");
}

/// The probe of the test above can succeed: a bundle that itself shares
/// the host's network, under a `host` policy, reaches the host listener.
/// And a `host` policy cannot take away a bundle's network namespace.
#[test]
fn host_mode_annotation_keeps_the_bundles_network_namespace() {
    let env = Env::new();
    let listener = HostListener::start();
    let port = listener.port.to_string();
    let script = format!(
        "echo --ifaces; ls /sys/class/net; echo --end; nc -w 5 127.0.0.1 {port}; echo nc=$?"
    );
    let mut policy = narrow_policy(json!({ "network": { "mode": "host" } }));
    policy["filesystem"]["read"] = json!(["/bin", "/proc", "/sys"]);

    // The bundle has a network namespace: it stays.
    let isolated = env.bundle("isolated", &["sh", "-c", &script], &[]);
    inline_policy(&isolated, &policy);
    let out = run(&env, &isolated, "hostpol-ns");
    let all = both(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let stdout = text(&out.stdout);
    assert_eq!(section(&stdout, "--ifaces"), ["lo"], "{all}");
    assert!(!stdout.contains(GREETING), "{all}");
    assert!(stdout.contains("nc=1"), "{all}");
    assert_eq!(listener.accepted(), 0);
    env.assert_gone("hostpol-ns");

    // Control: the bundle shares the host's network itself.
    let shared = env.bundle("shared", &["sh", "-c", &script], &[]);
    edit_config(&shared, |c| {
        if let Some(ns) = c["linux"]["namespaces"].as_array_mut() {
            ns.retain(|n| n["type"] != "network");
        }
    });
    inline_policy(&shared, &policy);
    let out = run(&env, &shared, "hostpol-shared");
    let all = both(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(text(&out.stdout).contains(GREETING), "{all}");
    assert!(listener.accepted() >= 1);
    env.assert_gone("hostpol-shared");
}

// 2. Landlock read rules.

#[test]
fn landlock_denies_reading_paths_outside_the_read_list() {
    let env = Env::new();
    let host_dir = env.dir.path().join("hostdata");
    fs::create_dir_all(&host_dir).expect("host dir");
    fs::write(host_dir.join("h.txt"), "host-secret\n").expect("host file");
    let script = "cat /allowed/ok.txt; echo allowed=$?; \
                  [ -e /secret/s.txt ] && echo secret-exists; \
                  cat /secret/s.txt; echo secret=$?; \
                  ls /secret; echo ls-secret=$?; \
                  cat /data/h.txt; echo data=$?; \
                  cat /etc/passwd; echo passwd=$?; \
                  head -c 4 /bin/busybox | od -c | head -1";
    let bundle = env.bundle("b", &["sh", "-c", script], &[]);
    put_file(&bundle, "allowed/ok.txt", b"allowed-content\n");
    put_file(&bundle, "secret/s.txt", b"rootfs-secret\n");
    add_bind(&bundle, &host_dir, "/data");
    let mut policy = narrow_policy(json!({}));
    policy["filesystem"]["read"] = json!(["/bin", "/proc", "/allowed"]);
    inline_policy(&bundle, &policy);

    let out = run(&env, &bundle, "ll-read");
    let all = both(&out);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(stdout.contains("allowed-content\nallowed=0"), "{all}");
    assert!(stdout.contains("E   L   F"), "reading /bin works: {all}");
    // The files are there (stat is not a Landlock right), but not readable.
    assert!(stdout.contains("secret-exists"), "{all}");
    for (name, path) in [
        ("secret", "/secret/s.txt"),
        ("data", "/data/h.txt"),
        ("passwd", "/etc/passwd"),
    ] {
        assert!(stdout.contains(&format!("{name}=1")), "{name}: {all}");
        assert!(
            stderr.contains(&format!("can't open '{path}': Permission denied")),
            "{path} must fail with EACCES: {all}"
        );
    }
    assert!(stdout.contains("ls-secret=1"), "{all}");
    assert!(
        stderr.contains("can't open '/secret': Permission denied"),
        "listing /secret must fail with EACCES: {all}"
    );
    assert!(!stdout.contains("rootfs-secret"), "{all}");
    assert!(!stdout.contains("host-secret"), "{all}");
    assert_eq!(out.status.code(), Some(0), "{all}");
    env.assert_gone("ll-read");
}

/// Landlock cannot carve a hole in an allowed tree, so `filesystem.deny`
/// inside a readable tree is masked in the mount namespace.
#[test]
fn deny_paths_inside_a_readable_tree_are_masked() {
    let env = Env::new();
    let script = "cat /etc/ok; echo ok=$?; \
                  cat /etc/secret.conf; echo secret=$?; \
                  echo --private; ls /etc/private; echo --end; \
                  cat /etc/private/key; echo key=$?";
    let bundle = env.bundle("b", &["sh", "-c", script], &[]);
    put_file(&bundle, "etc/ok", b"fine\n");
    put_file(&bundle, "etc/secret.conf", b"TOP-SECRET\n");
    put_file(&bundle, "etc/private/key", b"PRIVATE-KEY\n");
    let mut policy = narrow_policy(json!({}));
    policy["filesystem"]["read"] = json!(["/bin", "/proc", "/etc"]);
    policy["filesystem"]["deny"] = json!(["/etc/secret.conf", "/etc/private"]);
    inline_policy(&bundle, &policy);

    let out = run(&env, &bundle, "deny");
    let all = both(&out);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("fine\nok=0"), "{all}");
    assert!(!stdout.contains("TOP-SECRET"), "{all}");
    // A denied file cannot be read at all (not an empty stand-in).
    assert!(stdout.contains("secret=1"), "{all}");
    assert!(
        all.contains("can't open '/etc/secret.conf': Permission denied"),
        "{all}"
    );
    assert!(!stdout.contains("PRIVATE-KEY"), "{all}");
    assert!(stdout.contains("key=1"), "{all}");
    assert!(section(&stdout, "--private").is_empty(), "{all}");
    assert_eq!(out.status.code(), Some(0), "{all}");
    env.assert_gone("deny");
}

// 3. Writes.

#[test]
fn writes_outside_the_write_list_fail_and_tmp_works() {
    let env = Env::new();
    let host_dir = env.dir.path().join("hostdata");
    fs::create_dir_all(&host_dir).expect("host dir");
    let script = "echo in-tmp > /tmp/f && cat /tmp/f; echo tmp=$?; \
                  mkdir /tmp/d && echo nested > /tmp/d/g && cat /tmp/d/g; echo tmpdir=$?; \
                  echo x > /rootfile; echo root=$?; \
                  echo x > /dev/shm/f; echo shm=$?; \
                  echo x > /data/f; echo data=$?";
    let bundle = env.bundle("b", &["sh", "-c", script], &[]);
    add_bind(&bundle, &host_dir, "/data");
    inline_policy(&bundle, &narrow_policy(json!({})));

    let out = run(&env, &bundle, "writes");
    let all = both(&out);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(stdout.contains("in-tmp\ntmp=0"), "{all}");
    assert!(stdout.contains("nested\ntmpdir=0"), "{all}");
    // The root is read-only.
    assert!(stdout.contains("root=1"), "{all}");
    assert!(
        stderr.contains("can't create /rootfile: Read-only file system"),
        "{all}"
    );
    // /dev/shm is a writable tmpfs, but not in the write list: Landlock.
    assert!(stdout.contains("shm=1"), "{all}");
    assert!(
        stderr.contains("can't create /dev/shm/f: Permission denied"),
        "{all}"
    );
    // The bundle's rw bind mount outside the write paths became read-only.
    assert!(stdout.contains("data=1"), "{all}");
    assert!(
        stderr.contains("can't create /data/f: Read-only file system"),
        "{all}"
    );
    assert!(
        !host_dir.join("f").exists(),
        "the write reached the host directory"
    );
    env.assert_gone("writes");
}

// 4. Exec rules.

#[test]
fn exec_outside_the_exec_list_is_refused() {
    let env = Env::new();
    let script = "/bin/echo allowed-ran; echo bin=$?; \
                  /opt/busybox-copy echo opt-ran; echo opt=$?; \
                  /opt/busybox-listed echo listed-ran; echo listed=$?";
    let bundle = env.bundle("b", &["sh", "-c", script], &[]);
    // Named busybox*, so busybox runs its first argument as the applet.
    put_busybox(&bundle, "opt/busybox-copy");
    put_busybox(&bundle, "opt/busybox-listed");
    let mut policy = narrow_policy(json!({ "exec": { "allow": ["/opt/busybox-listed"] } }));
    policy["filesystem"]["read"] = json!(["/bin", "/proc", "/opt"]);
    inline_policy(&bundle, &policy);

    let out = run(&env, &bundle, "execs");
    let all = both(&out);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("allowed-ran\nbin=0"), "{all}");
    assert!(!stdout.contains("opt-ran"), "{all}");
    assert!(stdout.contains("opt=126"), "{all}");
    assert!(
        text(&out.stderr).contains("/opt/busybox-copy: Permission denied"),
        "exec outside the list must fail with EACCES: {all}"
    );
    // An absolute exec.allow entry makes that one program runnable.
    assert!(stdout.contains("listed-ran\nlisted=0"), "{all}");
    env.assert_gone("execs");
}

// 5. Memory limit.

fn memory_cgroup(id: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup/memory/buntime").join(id)
}

#[test]
fn memory_limit_oom_kills_a_hog() {
    let env = Env::new();
    // awk doubles a string until it is far beyond the limit (anonymous
    // memory, really allocated and touched).
    let hog = r#"BEGIN { s = "x"; while (1) s = s s }"#;
    let bundle = env.bundle("b", &["awk", hog], &[]);
    inline_policy(
        &bundle,
        &narrow_policy(json!({ "resources": { "memory": "32M" } })),
    );
    let out = env.runc(&["run", "--keep", "--bundle", path_str(&bundle), "hog"]);
    let all = both(&out);
    assert_eq!(out.status.code(), Some(137), "killed by SIGKILL: {all}");
    let cg = memory_cgroup("hog");
    let limit = read(&cg.join("memory.limit_in_bytes"));
    assert_eq!(limit.trim(), (32u64 << 20).to_string(), "{all}");
    let oom = read(&cg.join("memory.oom_control"));
    let kills: u64 = oom
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(kills >= 1, "the cgroup's OOM killer fired: {oom}");
    env.ok(&["delete", "hog"]);
    env.assert_gone("hog");
}

// 6. Pids limit.

#[test]
fn pids_limit_stops_a_fork_bomb_and_the_container_survives() {
    let env = Env::new();
    let bundle = env.bundle("b", &["sleep", "1000"], &[]);
    inline_policy(
        &bundle,
        &narrow_policy(json!({ "resources": { "pids": 20 } })),
    );
    let log = env.dir.path().join("init.log");
    env.create_logged("bomb", &bundle, &log);
    env.ok(&["start", "bomb"]);
    env.wait_status("bomb", "running");
    let pids = Path::new("/sys/fs/cgroup/pids/buntime/bomb");
    assert_eq!(read(&pids.join("pids.max")).trim(), "20");

    // The bomb runs as an exec'd process (a shell that cannot fork gives
    // up, and it must not be init here: the container is to survive).
    let bomb = "i=0; while [ $i -lt 60 ]; do sleep 1000 & i=$((i+1)); echo started $i; done";
    let out = env.runc(&["exec", "bomb", "sh", "-c", bomb]);
    let all = both(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        text(&out.stderr).contains("can't fork: Resource temporarily unavailable"),
        "{all}"
    );
    let started = text(&out.stdout).matches("started ").count();
    assert!((1..20).contains(&started), "{all}");
    // The sleeps that did start are still there, within the limit.
    let current: usize = read(&pids.join("pids.current")).trim().parse().unwrap_or(0);
    assert!(
        current > started && current <= 20,
        "pids.current {current}: {all}"
    );
    let events = read(&pids.join("pids.events"));
    let refused: u64 = events
        .trim()
        .strip_prefix("max ")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(refused >= 1, "pids.events: {events}");

    assert_eq!(env.status("bomb"), "running");
    env.ok(&["delete", "--force", "bomb"]);
    env.assert_gone("bomb");
}

// 7. exec'd processes are confined like init.

const PROBE: &str = "cat /etc/passwd; echo passwd=$?; /opt/busybox-copy true; echo opt=$?; \
                     grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; \
                     nc -w 1 127.0.0.1 1; echo nc=$?; echo x > /rootfile; echo root=$?";

fn assert_confined(who: &str, stdout: &str, stderr: &str) {
    let all = format!("{who}\n--- stdout\n{stdout}--- stderr\n{stderr}");
    assert!(stdout.contains("passwd=1"), "{all}");
    assert!(
        stderr.contains("can't open '/etc/passwd': Permission denied"),
        "Landlock read: {all}"
    );
    assert!(stdout.contains("opt=126"), "{all}");
    assert!(
        stderr.contains("/opt/busybox-copy: Permission denied"),
        "Landlock exec: {all}"
    );
    assert!(stdout.contains("Seccomp:\t2"), "seccomp filter mode: {all}");
    assert!(stdout.contains("NoNewPrivs:\t1"), "{all}");
    assert!(
        stderr.contains("socket: Operation not permitted"),
        "seccomp socket rule: {all}"
    );
    assert!(stdout.contains("root=1"), "{all}");
}

#[test]
fn exec_processes_are_confined_like_init() {
    let env = Env::new();
    let init = format!("{PROBE}; echo init-ready; exec sleep 1000");
    let bundle = env.bundle("b", &["sh", "-c", &init], &[]);
    put_busybox(&bundle, "opt/busybox-copy");
    let mut policy = narrow_policy(json!({}));
    policy["filesystem"]["read"] = json!(["/bin", "/proc", "/opt"]);
    inline_policy(&bundle, &policy);
    let log = env.dir.path().join("init.log");
    env.create_logged("conf", &bundle, &log);
    env.ok(&["start", "conf"]);
    assert!(
        wait_until(Duration::from_secs(10), || read(&log)
            .contains("init-ready")),
        "init never got ready: {}",
        read(&log)
    );
    let init_log = read(&log);
    assert_confined("init", &init_log, &init_log);
    assert!(annotations(&env, "conf").contains_key("buntime.dev/policy-sha256"));

    let out = env.runc(&["exec", "conf", "sh", "-c", PROBE]);
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    assert_confined("exec", &text(&out.stdout), &text(&out.stderr));

    // A detached exec too.
    let dlog = "/tmp/exec.log";
    let detached = format!("({PROBE}) > {dlog} 2>&1; echo done >> {dlog}");
    env.ok(&["exec", "-d", "conf", "sh", "-c", &detached]);
    let mut seen = String::new();
    let done = wait_until(Duration::from_secs(10), || {
        let o = env.runc(&["exec", "conf", "cat", dlog]);
        seen = text(&o.stdout);
        seen.contains("done")
    });
    assert!(done, "detached exec never finished: {seen}");
    assert_confined("detached exec", &seen, &seen);

    env.ok(&["delete", "--force", "conf"]);
    env.assert_gone("conf");
}

// 8. Annotations.

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn state_shows_the_hash_of_the_applied_policy() {
    let env = Env::new();
    // The policy as written, not as the test node's ceiling would narrow
    // it (common::open_node): this node has no ceiling.
    fs::remove_file(env.etc().join("config.json")).expect("no ceiling");
    let bundle = env.bundle("b", &["true"], &[]);
    let policy = narrow_policy(json!({ "resources": { "memory": "32M", "pids": 50 } }));
    inline_policy(&bundle, &policy);
    env.ok(&["create", "--bundle", path_str(&bundle), "hash1"]);
    let ann = annotations(&env, "hash1");
    let sha = ann["buntime.dev/policy-sha256"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let stored = fs::read(env.root.join(".buntime/hash1/policy.json")).expect("policy.json");
    assert_eq!(sha, sha256_hex(&stored), "hash of the stored policy.json");
    let canon: Value = serde_json::from_slice(&stored).expect("policy.json is JSON");
    // Sizes are stored in one canonical spelling ("32M" and 33554432 are
    // the same policy, and hash the same: checked below).
    assert_eq!(canon["resources"]["memory"], json!("32M"), "{canon}");
    assert_eq!(canon["resources"]["pids"], json!(50), "{canon}");
    assert_eq!(
        canon["filesystem"]["read"],
        json!(["/bin", "/proc"]),
        "{canon}"
    );
    assert_eq!(
        ann["buntime.dev/policy-origin"],
        json!("annotation buntime.dev/policy")
    );

    // The same policy written differently hashes the same...
    let same = env.bundle("same", &["true"], &[]);
    let mut reformatted = policy.clone();
    reformatted["resources"]["memory"] = json!(32u64 << 20);
    let pretty = serde_json::to_string_pretty(&reformatted).expect("encode");
    annotate(&same, &[("buntime.dev/policy", &pretty)]);
    env.ok(&["create", "--bundle", path_str(&same), "hash2"]);
    assert_eq!(
        annotations(&env, "hash2")["buntime.dev/policy-sha256"],
        json!(sha)
    );
    // ...and a different one does not.
    let other = env.bundle("other", &["true"], &[]);
    let mut changed = policy.clone();
    changed["resources"]["pids"] = json!(51);
    inline_policy(&other, &changed);
    env.ok(&["create", "--bundle", path_str(&other), "hash3"]);
    let sha3 = annotations(&env, "hash3")["buntime.dev/policy-sha256"].clone();
    assert_ne!(sha3, json!(sha));

    // A named policy names its origin; the hash still matches the file.
    let named = env.bundle("named", &["true"], &[]);
    annotate(&named, &[("buntime.dev/policy-name", "no-network")]);
    env.ok(&["create", "--bundle", path_str(&named), "hash4"]);
    let ann = annotations(&env, "hash4");
    let origin = ann["buntime.dev/policy-origin"]
        .as_str()
        .unwrap_or_default();
    assert!(
        origin.starts_with("annotation buntime.dev/policy-name=no-network"),
        "{origin}"
    );
    let stored = fs::read(env.root.join(".buntime/hash4/policy.json")).expect("policy.json");
    assert_eq!(ann["buntime.dev/policy-sha256"], json!(sha256_hex(&stored)));

    for id in ["hash1", "hash2", "hash3", "hash4"] {
        env.ok(&["delete", "--force", id]);
        env.assert_gone(id);
    }
}

/// Creates the bundle as `id`, asserts it fails, nothing is left, and
/// returns stderr.
fn create_refused(env: &Env, bundle: &Path, id: &str) -> String {
    let err = env.fails(&["create", "--bundle", path_str(bundle), id]);
    env.assert_gone(id);
    assert!(
        !env.runc(&["state", id]).status.success(),
        "state of {id} after a failed create"
    );
    err
}

#[test]
fn inline_policy_that_does_not_parse_is_refused() {
    let env = Env::new();
    let bundle = env.bundle("b", &["true"], &[]);

    inline_policy(
        &bundle,
        &json!({ "version": 1, "network": { "mode": "open" } }),
    );
    let err = create_refused(&env, &bundle, "bad1");
    assert!(err.contains("annotation buntime.dev/policy"), "{err}");
    assert!(err.contains("/network/mode"), "{err}");
    assert!(err.contains("open"), "{err}");

    inline_policy(
        &bundle,
        &json!({ "version": 1, "filesystem": { "raed": ["/bin"] } }),
    );
    let err = create_refused(&env, &bundle, "bad2");
    assert!(err.contains("/filesystem/raed"), "{err}");

    annotate(&bundle, &[("buntime.dev/policy", "{\"version\": 1,")]);
    let err = create_refused(&env, &bundle, "bad3");
    assert!(err.contains("annotation buntime.dev/policy"), "{err}");

    inline_policy(&bundle, &json!({ "version": 2 }));
    let err = create_refused(&env, &bundle, "bad4");
    assert!(err.contains("/version"), "{err}");

    inline_policy(
        &bundle,
        &json!({ "version": 1, "resources": { "memory": "lots" } }),
    );
    let err = create_refused(&env, &bundle, "bad5");
    assert!(err.contains("/resources/memory"), "{err}");

    // The bundle works once its policy parses.
    inline_policy(&bundle, &narrow_policy(json!({})));
    let out = run(&env, &bundle, "good");
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    env.assert_gone("good");
}

#[test]
fn unknown_or_conflicting_policy_names_are_refused() {
    let env = Env::new();
    let bundle = env.bundle("b", &["true"], &[]);

    annotate(&bundle, &[("buntime.dev/policy-name", "no-such-policy")]);
    let err = create_refused(&env, &bundle, "name1");
    assert!(err.contains("no-such-policy"), "{err}");
    assert!(err.contains("no such policy"), "{err}");

    annotate(&bundle, &[("buntime.dev/policy-name", "../../etc/passwd")]);
    let err = create_refused(&env, &bundle, "name2");
    assert!(err.contains("not a path"), "{err}");

    annotate(
        &bundle,
        &[
            ("buntime.dev/policy-name", "strict"),
            ("buntime.dev/policy", "{\"version\":1}"),
        ],
    );
    let err = create_refused(&env, &bundle, "name3");
    assert!(err.contains("set only one"), "{err}");
}

/// A bundle that brings its own seccomp profile (as podman and containerd
/// do) keeps it, and the policy's profile is stacked on top: the process
/// gets what both allow, in init and in exec'd processes.
#[test]
fn a_bundle_seccomp_profile_is_stacked_with_the_policys() {
    let env = Env::new();
    // The bundle's profile allows everything but mkdir.
    let bundle = env.bundle(
        "b",
        &[
            "sh",
            "-c",
            "grep Seccomp_filters /proc/self/status; nc -w1 127.0.0.1 9; mkdir /tmp/d; echo end",
        ],
        &[("SECCOMP", "1")],
    );
    let out = env.runc(&[
        "run",
        "--bundle",
        bundle.to_str().unwrap_or_default(),
        "stack1",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("Seccomp_filters:\t2"), "{stdout}");
    // The policy's rule (no inet sockets in `none` mode) and the bundle's
    // rule (no mkdir) both hold.
    assert!(
        stderr.contains("nc: socket: Operation not permitted"),
        "{stderr}"
    );
    assert!(stderr.contains("can't create directory"), "{stderr}");
    env.assert_gone("stack1");

    let bundle = env.bundle("b2", &["sleep", "1000"], &[("SECCOMP", "1")]);
    env.run_detached("stack2", &bundle);
    let out = env.runc(&[
        "exec",
        "stack2",
        "sh",
        "-c",
        "grep Seccomp_filters /proc/self/status; nc -w1 127.0.0.1 9",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Seccomp_filters:\t2"), "{stdout}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("socket: Operation not permitted"),
        "{:?}",
        out
    );
    env.ok(&["delete", "--force", "stack2"]);
    env.assert_gone("stack2");
}

/// A symlink the container plants on a rule path cannot widen the rules of
/// processes started later with `exec`: rule paths are made canonical at
/// create and followed without symlinks afterwards.
#[test]
fn planted_symlinks_do_not_widen_landlock_for_exec() {
    let env = Env::new();
    let bundle = env.bundle(
        "b",
        &["sh", "-c", "ln -s / /tmp/cfg && echo planted; sleep 1000"],
        &[],
    );
    inline_policy(
        &bundle,
        &narrow_policy(json!({
            "filesystem": {
                "read": ["/bin", "/proc", "/tmp/cfg"],
                "write": ["/tmp", "/dev/null"],
                "exec": ["/bin"]
            }
        })),
    );
    let log = env.dir.path().join("init.log");
    env.create_logged("plant", &bundle, &log);
    env.ok(&["start", "plant"]);
    assert!(wait_until(Duration::from_secs(10), || read(&log).contains("planted")));
    // The listing of / stays refused, directly and through the link.
    for target in ["/", "/tmp/cfg/"] {
        let out = env.runc(&["exec", "plant", "ls", target]);
        assert!(
            !out.status.success(),
            "ls {target} allowed: {}",
            text(&out.stdout)
        );
        assert!(
            text(&out.stderr).contains("Permission denied"),
            "ls {target}: {}",
            text(&out.stderr)
        );
    }
    env.ok(&["delete", "--force", "plant"]);
    env.assert_gone("plant");
}
