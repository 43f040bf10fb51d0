//! Real containers through buntime-runc: lifecycle, output, exit codes,
//! signals, exec, ps, pause/resume, update, console socket. Needs root.

mod common;

use std::fs;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{read, wait_until, Env, RUNC};

const TRAP_LOOP: &str = "trap 'echo got-usr1' USR1; trap 'echo got-term; exit 7' TERM; \
                         echo ready; while true; do sleep 0.05; done";

#[test]
fn lifecycle_states_and_pid_file() {
    let env = Env::new();
    let bundle = env.bundle("b", &["sleep", "1000"], &[]);
    let pid_file = env.dir.path().join("init.pid");
    env.ok(&[
        "create",
        "--bundle",
        bundle.to_str().unwrap_or_default(),
        "--pid-file",
        pid_file.to_str().unwrap_or_default(),
        "life",
    ]);
    let st = env.state("life");
    assert_eq!(st["status"], "created");
    assert_eq!(st["id"], "life");
    assert_eq!(st["bundle"], bundle.to_str().unwrap_or_default());
    assert!(st["created"].as_str().is_some(), "state has created: {st}");
    let pid = st["pid"].as_i64().unwrap_or(0);
    assert!(pid > 0);
    assert_eq!(read(&pid_file).trim(), pid.to_string());

    // The policy that was applied, and the spec libcontainer really runs.
    let sha = st["annotations"]["buntime.dev/policy-sha256"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(sha.len(), 64, "state: {st}");
    let explained = env.ok(&["spec", "--explain", "life"]);
    assert!(explained.contains(&sha), "{explained}");
    assert!(explained.contains("effective spec:"), "{explained}");
    assert!(explained.contains("\"readonly\": true"), "{explained}");

    env.ok(&["start", "life"]);
    assert_eq!(env.status("life"), "running");
    let listed = env.ok(&["list", "-q"]);
    assert_eq!(listed.trim(), "life");
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["list", "--format", "json"])).expect("list json");
    assert_eq!(json[0]["status"], "running");

    env.ok(&["kill", "life", "KILL"]);
    env.wait_status("life", "stopped");
    assert_eq!(env.pid("life"), 0);
    env.ok(&["delete", "life"]);
    env.assert_gone("life");
    assert!(env.ok(&["list", "-q"]).trim().is_empty());
}

#[test]
fn run_returns_exit_code_and_output() {
    let env = Env::new();
    let bundle = env.bundle(
        "b",
        &["sh", "-c", "echo out-line; echo err-line >&2; exit 3"],
        &[],
    );
    let out = env.runc(&["run", "--bundle", bundle.to_str().unwrap_or_default(), "r1"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out-line\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err-line"));
    env.assert_gone("r1");
}

#[test]
fn run_killed_reports_128_plus_signal_and_keep_keeps() {
    let env = Env::new();
    let bundle = env.bundle("b", &["sleep", "1000"], &[]);
    let mut child = env
        .cmd()
        .args([
            "run",
            "--keep",
            "--bundle",
            bundle.to_str().unwrap_or_default(),
            "r2",
        ])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn run");
    assert!(wait_until(Duration::from_secs(10), || env
        .runc(&["state", "r2"])
        .status
        .success()
        && env.status("r2") == "running"));
    env.ok(&["kill", "r2", "9"]);
    let status = child.wait().expect("wait run");
    assert_eq!(status.code(), Some(137));
    // --keep: the stopped container is still there to inspect.
    assert_eq!(env.status("r2"), "stopped");
    env.ok(&["delete", "r2"]);
    env.assert_gone("r2");
}

#[test]
fn run_forwards_signals_to_the_container() {
    let env = Env::new();
    let bundle = env.bundle("b", &["sh", "-c", TRAP_LOOP], &[]);
    let mut child = env
        .cmd()
        .args([
            "run",
            "--bundle",
            bundle.to_str().unwrap_or_default(),
            "fwd",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn run");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 6];
    stdout.read_exact(&mut first).expect("container says ready");
    assert_eq!(&first, b"ready\n");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("signal run");
    let status = child.wait().expect("wait");
    let mut rest = String::new();
    let _ = stdout.read_to_string(&mut rest);
    assert!(rest.contains("got-term"), "output: {rest}");
    assert_eq!(status.code(), Some(7));
    env.assert_gone("fwd");
}

#[test]
fn kill_by_name_number_and_all() {
    let env = Env::new();
    let bundle = env.bundle("b", &["sh", "-c", TRAP_LOOP], &[]);
    let log = env.dir.path().join("out.log");
    env.create_logged("k1", &bundle, &log);
    env.ok(&["start", "k1"]);
    assert!(wait_until(Duration::from_secs(10), || read(&log).contains("ready")));
    env.ok(&["kill", "k1", "USR1"]);
    assert!(
        wait_until(Duration::from_secs(10), || read(&log).contains("got-usr1")),
        "log: {}",
        read(&log)
    );
    // A signal the process survives leaves it running.
    assert_eq!(env.status("k1"), "running");
    env.ok(&["kill", "k1", "15"]);
    env.wait_status("k1", "stopped");
    assert!(read(&log).contains("got-term"));
    env.ok(&["delete", "k1"]);

    // --all reaches every process, not only init.
    let bundle = env.bundle(
        "b2",
        &["sh", "-c", "sleep 1000 & sleep 1000 & sleep 1000"],
        &[],
    );
    env.run_detached("k2", &bundle);
    assert!(wait_until(Duration::from_secs(10), || {
        let pids: Vec<i32> =
            serde_json::from_str(&env.ok(&["ps", "--format", "json", "k2"])).unwrap_or_default();
        pids.len() >= 3
    }));
    env.ok(&["kill", "--all", "k2", "SIGKILL"]);
    assert!(wait_until(Duration::from_secs(10), || {
        let out = env.runc(&["ps", "--format", "json", "k2"]);
        let pids: Vec<i32> = serde_json::from_slice(&out.stdout).unwrap_or(vec![1]);
        pids.is_empty()
    }));
    env.wait_status("k2", "stopped");
    env.ok(&["delete", "k2"]);
    env.assert_gone("k2");
}

fn ns_links(pid: &str) -> Vec<String> {
    ["pid", "mnt", "net", "ipc", "uts"]
        .iter()
        .map(|ns| {
            fs::read_link(format!("/proc/{pid}/ns/{ns}"))
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn exec_joins_namespaces_and_seccomp_of_init() {
    let env = Env::new();
    let bundle = env.bundle("b", &["sleep", "1000"], &[("SECCOMP", "1")]);
    env.run_detached("ex", &bundle);
    let init = env.pid("ex").to_string();
    // `start` returns once init is released; the filter is installed just
    // before its execve, so look only once init has become `sleep`.
    assert!(
        wait_until(Duration::from_secs(10), || {
            read(Path::new(&format!("/proc/{init}/comm"))).trim() == "sleep"
        }),
        "init never exec'd"
    );
    let init_status = read(Path::new(&format!("/proc/{init}/status")));
    assert!(init_status.contains("Seccomp:\t2"), "init not filtered");

    // Run a process via exec and compare what it sees with init.
    let out = env.ok(&[
        "exec",
        "ex",
        "sh",
        "-c",
        "grep '^Seccomp:' /proc/self/status; for n in pid mnt net ipc uts; do readlink /proc/self/ns/$n; done",
    ]);
    let mut lines = out.lines();
    assert_eq!(
        lines.next().map(str::trim),
        Some("Seccomp:\t2"),
        "exec output: {out}"
    );
    let inside: Vec<String> = lines.map(str::to_string).collect();
    assert_eq!(
        inside,
        ns_links(&init),
        "exec'd process in other namespaces"
    );

    // And the container's cgroups, in every hierarchy.
    let out = env.ok(&[
        "exec",
        "ex",
        "sh",
        "-c",
        "cat /proc/1/cgroup; echo --; cat /proc/self/cgroup",
    ]);
    let (init_cg, exec_cg) = out.split_once("--\n").expect("two cgroup lists");
    assert!(init_cg.lines().count() >= 1, "{out}");
    assert_eq!(init_cg, exec_cg, "exec'd process in other cgroups");

    // The profile really binds it: mkdir is refused with EPERM.
    let out = env.runc(&["exec", "ex", "mkdir", "/tmp/x"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not permitted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Exit codes come through.
    let out = env.runc(&["exec", "ex", "sh", "-c", "exit 42"]);
    assert_eq!(out.status.code(), Some(42));

    // Environment (a variable the default policy passes: others are
    // refused, see attacks_exec.rs) and cwd flags.
    let out = env.ok(&[
        "exec",
        "--env",
        "LANG=bar",
        "--cwd",
        "/tmp",
        "ex",
        "sh",
        "-c",
        "echo $LANG $(pwd)",
    ]);
    assert_eq!(out.trim(), "bar /tmp");
    env.ok(&["delete", "--force", "ex"]);
    env.assert_gone("ex");
}

#[test]
fn ps_lists_container_pids_and_pause_really_freezes() {
    let env = Env::new();
    let bundle = env.bundle(
        "b",
        &[
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.02; done",
        ],
        &[],
    );
    env.run_detached("pz", &bundle);
    let init = env.pid("pz");
    let pids: Vec<i32> =
        serde_json::from_str(&env.ok(&["ps", "--format", "json", "pz"])).expect("pids");
    assert!(pids.contains(&init), "{pids:?} lacks init {init}");
    let table = env.ok(&["ps", "pz"]);
    assert!(table.lines().next().unwrap_or_default().contains("PID"));
    assert!(table.contains(&init.to_string()));

    // An exec'd process shows up in ps too.
    env.ok(&["exec", "-d", "pz", "sleep", "1000"]);
    assert!(wait_until(Duration::from_secs(10), || {
        let out = env.ok(&["ps", "pz", "-o", "pid,args"]);
        out.contains("sleep 1000")
    }));

    let counter = format!("/proc/{init}/root/tmp/count");
    let count = || read(Path::new(&counter)).trim().parse::<u64>().unwrap_or(0);
    assert!(wait_until(Duration::from_secs(10), || count() > 2));
    env.ok(&["pause", "pz"]);
    assert_eq!(env.status("pz"), "paused");
    if pure_v2() {
        let freeze = read(Path::new("/sys/fs/cgroup/buntime/pz/cgroup.freeze"));
        assert_eq!(freeze.trim(), "1");
    } else {
        let freezer = "/sys/fs/cgroup/freezer/buntime/pz/freezer.state";
        assert_eq!(read(Path::new(freezer)).trim(), "FROZEN");
    }
    let frozen_at = count();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(), frozen_at, "counter moved while paused");
    env.ok(&["resume", "pz"]);
    assert_eq!(env.status("pz"), "running");
    assert!(wait_until(Duration::from_secs(10), || count() > frozen_at));
    env.ok(&["delete", "--force", "pz"]);
    env.assert_gone("pz");
}

#[test]
fn update_changes_the_cgroup_limits() {
    let env = Env::new();
    let bundle = env.bundle("b", &["sleep", "1000"], &[]);
    env.run_detached("up", &bundle);
    env.ok(&["update", "--memory", "64m", "--pids-limit", "50", "up"]);
    // cgroup v1 (this host) or pure v2 (the node guest, `make test-node`).
    let (mem_file, pids_file) = if pure_v2() {
        (
            "/sys/fs/cgroup/buntime/up/memory.max",
            "/sys/fs/cgroup/buntime/up/pids.max",
        )
    } else {
        (
            "/sys/fs/cgroup/memory/buntime/up/memory.limit_in_bytes",
            "/sys/fs/cgroup/pids/buntime/up/pids.max",
        )
    };
    let mem = read(Path::new(mem_file));
    assert_eq!(mem.trim(), (64u64 << 20).to_string());
    let pids = read(Path::new(pids_file));
    assert_eq!(pids.trim(), "50");
    // The same through a resources file.
    let res = env.dir.path().join("res.json");
    fs::write(&res, r#"{"memory":{"limit":33554432}}"#).expect("write");
    env.ok(&[
        "update",
        "--resources",
        res.to_str().unwrap_or_default(),
        "up",
    ]);
    let mem = read(Path::new(mem_file));
    assert_eq!(mem.trim(), "33554432");
    let err = env.fails(&["update", "--memory", "lots", "up"]);
    assert!(err.contains("--memory"), "{err}");
    // The container joined its own cgroup in the main v1 hierarchies the
    // host mounts (resolved from one read of mountinfo: third_party/README.md).
    let pid = env.state("up")["pid"].as_i64().expect("pid");
    let own = read(Path::new(&format!("/proc/{pid}/cgroup")));
    if pure_v2() {
        assert_eq!(own.trim(), "0::/buntime/up");
        env.ok(&["delete", "--force", "up"]);
        env.assert_gone("up");
        return;
    }
    let mut joined = Vec::new();
    for c in [
        "cpu", "cpuacct", "cpuset", "devices", "memory", "pids", "blkio", "freezer",
    ] {
        if !Path::new("/sys/fs/cgroup").join(c).exists() {
            continue;
        }
        let line = own
            .lines()
            .find(|l| {
                l.split(':')
                    .nth(1)
                    .is_some_and(|cs| cs.split(',').any(|x| x == c))
            })
            .unwrap_or_else(|| panic!("no {c} line in {own}"));
        assert!(line.ends_with(":/buntime/up"), "{c}: {line}");
        joined.push(c);
    }
    assert!(
        joined.contains(&"memory") && joined.contains(&"pids"),
        "{own}"
    );
    env.ok(&["delete", "--force", "up"]);
    env.assert_gone("up");
}

/// Pure cgroup v2 (the node guest of `make test-node`), not v1/hybrid.
fn pure_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// Receives one fd sent with SCM_RIGHTS on an accepted connection.
fn recv_fd(listener: &UnixListener) -> OwnedFd {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::io::IoSliceMut;
    use std::os::fd::AsRawFd;
    let (conn, _) = listener.accept().expect("accept console socket");
    let mut buf = [0u8; 256];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .expect("recvmsg");
    for cmsg in msg.cmsgs().expect("cmsgs") {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(fd) = fds.first() {
                // SAFETY: the fd was just received and is owned by nobody else.
                return unsafe { OwnedFd::from_raw_fd(*fd) };
            }
        }
    }
    panic!("no fd received on the console socket");
}

#[test]
fn console_socket_receives_the_pty_master() {
    let env = Env::new();
    let bundle = env.bundle(
        "b",
        &["sh", "-c", "tty; echo hello-tty; sleep 1000"],
        &[("TERMINAL", "1")],
    );
    let sock = env.dir.path().join("console.sock");
    let listener = UnixListener::bind(&sock).expect("bind");
    let handle = std::thread::spawn(move || recv_fd(&listener));
    env.ok(&[
        "create",
        "--bundle",
        bundle.to_str().unwrap_or_default(),
        "--console-socket",
        sock.to_str().unwrap_or_default(),
        "tty1",
    ]);
    let master = handle.join().expect("receiver thread");
    env.ok(&["start", "tty1"]);
    let mut file = fs::File::from(master);
    let mut seen = String::new();
    let mut buf = [0u8; 512];
    while !seen.contains("hello-tty") {
        let n = file.read(&mut buf).expect("read pty");
        if n == 0 {
            break;
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains("/dev/pts/"), "tty output: {seen:?}");
    assert!(seen.contains("hello-tty"), "tty output: {seen:?}");
    env.ok(&["delete", "--force", "tty1"]);
    env.assert_gone("tty1");
}

#[test]
fn features_and_spec_output_parse() {
    let out = Command::new(RUNC)
        .arg("features")
        .output()
        .expect("features");
    assert!(out.status.success());
    let f: libcontainer::oci_spec::runtime::Features =
        serde_json::from_slice(&out.stdout).expect("features JSON");
    let seccomp = f
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .expect("seccomp");
    assert!(seccomp
        .actions()
        .as_ref()
        .is_some_and(|a| a.iter().any(|x| format!("{x:?}").contains("Notify"))));

    let env = Env::new();
    let dir = env.dir.path().join("spec");
    fs::create_dir(&dir).expect("mkdir");
    env.ok(&["spec", "--bundle", dir.to_str().unwrap_or_default()]);
    let spec: libcontainer::oci_spec::runtime::Spec =
        serde_json::from_str(&read(&dir.join("config.json"))).expect("spec JSON");
    assert_eq!(
        spec.root().as_ref().map(|r| r.path().clone()),
        Some("rootfs".into())
    );
    // runc refuses to overwrite.
    let err = env.fails(&["spec", "--bundle", dir.to_str().unwrap_or_default()]);
    assert!(err.contains("exists"), "{err}");
    let rl = env.dir.path().join("rootless");
    fs::create_dir(&rl).expect("mkdir");
    env.ok(&[
        "spec",
        "--rootless",
        "--bundle",
        rl.to_str().unwrap_or_default(),
    ]);
    assert!(read(&rl.join("config.json")).contains("uidMappings"));
}

/// Runs `buntime-runc ARGS ID` for every id at once; true if all succeeded.
fn all_at_once(env: &Env, ids: &[String], args: &[&str]) -> bool {
    let handles: Vec<_> = ids
        .iter()
        .map(|id| {
            let mut c = env.cmd();
            c.args(args)
                .arg(id)
                .stdin(Stdio::null())
                .stdout(Stdio::null());
            std::thread::spawn(move || c.status().map(|s| s.success()).unwrap_or(false))
        })
        .collect();
    // Join every thread before judging, so none is left running.
    let results: Vec<bool> = handles
        .into_iter()
        .map(|h| h.join().unwrap_or(false))
        .collect();
    results.into_iter().all(|ok| ok)
}

#[test]
fn twenty_concurrent_containers_leave_nothing() {
    let env = Env::new();
    let bundle = env.bundle("b", &["sh", "-c", "echo $(hostname)"], &[]);
    let b = bundle.to_str().unwrap_or_default();
    let ids: Vec<String> = (0..20).map(|i| format!("par-{i}")).collect();
    assert!(
        all_at_once(&env, &ids, &["create", "--bundle", b]),
        "a concurrent create failed"
    );
    assert_eq!(env.ok(&["list", "-q"]).lines().count(), 20);
    assert!(
        all_at_once(&env, &ids, &["start"]),
        "a concurrent start failed"
    );
    for id in &ids {
        env.wait_status(id, "stopped");
    }
    assert!(
        all_at_once(&env, &ids, &["delete"]),
        "a concurrent delete failed"
    );
    for id in &ids {
        env.assert_gone(id);
    }
    assert!(env.ok(&["list", "-q"]).trim().is_empty());
}

#[test]
fn loopback_is_up_in_a_new_network_namespace() {
    let env = Env::new();
    let bundle = env.bundle("b", &["sleep", "1000"], &[]);
    env.run_detached("lo1", &bundle);
    let pid = env.pid("lo1");
    let out = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["ip", "-o", "link", "show"])
        .output()
        .expect("nsenter ip link");
    let links = String::from_utf8_lossy(&out.stdout);
    assert_eq!(links.lines().count(), 1, "only lo: {links}");
    assert!(
        links.contains("lo:") && links.contains(",UP"),
        "lo not up: {links}"
    );
    // The container's own namespace, not the host's.
    assert_ne!(
        fs::read_link(format!("/proc/{pid}/ns/net")).ok(),
        fs::read_link("/proc/self/ns/net").ok()
    );
    env.ok(&["delete", "--force", "lo1"]);
    env.assert_gone("lo1");
}

#[test]
fn stdout_on_dev_null_stays_writable() {
    let env = Env::new();
    let bundle = env.bundle(
        "b",
        &[
            "sh",
            "-c",
            "echo to-null || echo stdout-broken >&2; echo done >&2",
        ],
        &[],
    );
    let err_log = env.dir.path().join("err.log");
    let status = env
        .cmd()
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg("null1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err_log).expect("log"))
        .status()
        .expect("run");
    assert!(status.success());
    let err = read(&err_log);
    assert!(err.contains("done"), "{err}");
    assert!(
        !err.contains("stdout-broken") && !err.contains("Bad file"),
        "{err}"
    );
    env.assert_gone("null1");
}

#[test]
fn events_stats_are_runc_shaped() {
    let env = Env::new();
    let bundle = env.bundle("b", &["sleep", "1000"], &[]);
    env.run_detached("ev", &bundle);
    let out = env.ok(&["events", "--stats", "ev"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON event");
    assert_eq!(v["type"], "stats");
    assert_eq!(v["id"], "ev");
    assert!(
        v["data"]["pids"]["current"].as_u64().unwrap_or(0) >= 1,
        "{v}"
    );
    env.ok(&["delete", "--force", "ev"]);
    env.assert_gone("ev");
}
