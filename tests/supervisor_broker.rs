//! The per-container supervisor, end to end: real containers (as root)
//! running `buntime-test-worker`, which asks the supervisor over the IPC
//! channel and prints what it got.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{install_worker, read, wait_until, Env};

const POLICY: &str = r#"{
  "version": 1,
  "filesystem": {
    "read": ["/bin", "/lib", "/lib64", "/data", "/links"],
    "write": ["/tmp"],
    "exec": ["/bin", "/lib", "/lib64"],
    "deny": ["/data/secret"]
  },
  "network": { "mode": "proxy", "allow": ["127.0.0.1"] },
  "broker": { "fs_read": "deny", "fs_write": "deny", "list_dir": "deny", "net_connect": "deny", "exec": "deny" }
}"#;

/// A busybox bundle running the worker with `args`, under `policy`, with
/// test files in /data, /etc and /opt.
fn worker_bundle(
    env: &Env,
    name: &str,
    args: &[&str],
    policy: &str,
    ann: &[(&str, &str)],
) -> PathBuf {
    let mut full = vec!["/bin/worker"];
    full.extend_from_slice(args);
    let b = env.bundle(name, &full, &[]);
    let rootfs = b.join("rootfs");
    install_worker(&rootfs);
    fs::create_dir_all(rootfs.join("data/sub")).unwrap();
    fs::create_dir_all(rootfs.join("opt")).unwrap();
    fs::write(rootfs.join("data/ok.txt"), "hello data").unwrap();
    fs::write(rootfs.join("data/secret"), "data secret").unwrap();
    fs::write(rootfs.join("data/sub/inner.txt"), "inner").unwrap();
    fs::write(rootfs.join("etc/secret"), "etc secret").unwrap();
    for f in ["allow-me", "deny-me", "timeout-me"] {
        fs::write(rootfs.join("opt").join(f), format!("content of {f}")).unwrap();
    }
    std::os::unix::fs::symlink("/etc/secret", rootfs.join("data/abs")).unwrap();
    // /links has no deny entry inside: symlinks are followed while they
    // stay beneath it.
    fs::create_dir_all(rootfs.join("links")).unwrap();
    fs::write(rootfs.join("links/target.txt"), "link target").unwrap();
    std::os::unix::fs::symlink("/etc/secret", rootfs.join("links/abs")).unwrap();
    std::os::unix::fs::symlink("../etc/secret", rootfs.join("links/rel")).unwrap();
    std::os::unix::fs::symlink("target.txt", rootfs.join("links/in")).unwrap();
    // Directory links in the middle of a path: one stays beneath, one leaves.
    fs::create_dir_all(rootfs.join("links/sub")).unwrap();
    fs::write(rootfs.join("links/sub/deep.txt"), "deep").unwrap();
    std::os::unix::fs::symlink("sub", rootfs.join("links/dir")).unwrap();
    std::os::unix::fs::symlink("/etc", rootfs.join("links/etc")).unwrap();
    let cfg = b.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_str(&read(&cfg)).unwrap();
    let mut a = serde_json::Map::new();
    a.insert("buntime.dev/policy".into(), policy.into());
    for (k, v) in ann {
        a.insert((*k).into(), (*v).into());
    }
    spec["annotations"] = serde_json::Value::Object(a);
    fs::write(&cfg, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
    b
}

fn state_dir(env: &Env, id: &str) -> PathBuf {
    env.root.join(".buntime").join(id)
}

/// Creates and starts `id`, waits for it to stop, returns its output.
fn run_to_end(env: &Env, id: &str, bundle: &Path) -> String {
    let log = env.dir.path().join(format!("{id}.log"));
    env.create_logged(id, bundle, &log);
    env.ok(&["start", id]);
    env.wait_status(id, "stopped");
    read(&log)
}

fn line<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{out}"))
}

fn supervisor_pid(env: &Env, id: &str) -> Option<i32> {
    let st = env.state(id);
    st["annotations"]["buntime.dev/supervisor"]
        .as_str()
        .and_then(|s| s.strip_prefix("running pid "))
        .and_then(|p| p.parse().ok())
}

fn audit_lines(env: &Env, id: &str) -> Vec<serde_json::Value> {
    read(&state_dir(env, id).join("audit.log"))
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn filesystem_exec_and_stdout_requests_are_decided_by_the_policy() {
    let env = Env::new();
    let b = worker_bundle(
        &env,
        "fs",
        &[
            "read:/data/ok.txt",
            "read:/data/secret",
            "read:/etc/secret",
            "read:/data/abs",
            "read:/links/abs",
            "read:/links/rel",
            "read:/links/in",
            "read:/links/dir/deep.txt",
            "read:/links/etc/secret",
            "read:/links/../etc/secret",
            "read:/data/../etc/secret",
            "list:/data",
            "list:/etc",
            "write:/tmp/out.txt:abc",
            "read:/tmp/out.txt",
            "wfd:/tmp/w2:viafd",
            "read:/tmp/w2",
            "write:/data/x:zz",
            "exec:ls",
            "exec:/data/ok.txt",
            "stdout:hello-broker",
        ],
        POLICY,
        &[],
    );
    let out = run_to_end(&env, "fs", &b);
    assert_eq!(
        line(&out, "read /data/ok.txt"),
        "read /data/ok.txt ALLOW hello data"
    );
    assert!(line(&out, "read /data/secret").contains(" DENY "), "{out}");
    assert!(line(&out, "read /etc/secret").contains(" DENY "), "{out}");
    // A deny entry inside /data: no symlink is followed there at all.
    assert!(
        line(&out, "read /data/abs").contains("DENY path contains a symbolic link"),
        "{out}"
    );
    assert!(
        line(&out, "read /links/abs").contains("DENY path escapes"),
        "{out}"
    );
    assert!(
        line(&out, "read /links/rel").contains("DENY path escapes"),
        "{out}"
    );
    assert_eq!(
        line(&out, "read /links/in"),
        "read /links/in ALLOW link target"
    );
    assert_eq!(
        line(&out, "read /links/dir/deep.txt"),
        "read /links/dir/deep.txt ALLOW deep"
    );
    assert!(
        line(&out, "read /links/etc/secret").contains("DENY path escapes"),
        "{out}"
    );
    assert!(
        line(&out, "read /links/../etc/secret").contains(" DENY "),
        "{out}"
    );
    assert!(
        line(&out, "read /data/../etc/secret").contains(" DENY "),
        "{out}"
    );
    let list = line(&out, "list /data ");
    assert!(
        list.contains("ALLOW") && list.contains("ok.txt") && list.contains("sub/"),
        "{list}"
    );
    assert!(line(&out, "list /etc").contains(" DENY "), "{out}");
    assert_eq!(
        line(&out, "write /tmp/out.txt"),
        "write /tmp/out.txt ALLOW wrote"
    );
    assert_eq!(
        line(&out, "read /tmp/out.txt"),
        "read /tmp/out.txt ALLOW abc"
    );
    assert_eq!(line(&out, "wfd /tmp/w2"), "wfd /tmp/w2 ALLOW wrote");
    assert_eq!(line(&out, "read /tmp/w2"), "read /tmp/w2 ALLOW viafd");
    assert!(line(&out, "write /data/x").contains(" DENY "), "{out}");
    assert_eq!(line(&out, "exec ls"), "exec ls ALLOW /bin/ls");
    assert!(line(&out, "exec /data/ok.txt").contains(" DENY "), "{out}");
    assert_eq!(
        line(&out, "stdout hello-broker"),
        "stdout hello-broker ALLOW sent"
    );

    let dir = state_dir(&env, "fs");
    let output = wait_until(Duration::from_secs(5), || {
        read(&dir.join("output.log")).contains("hello-broker")
    });
    assert!(output, "output.log: {}", read(&dir.join("output.log")));
    let audit = audit_lines(&env, "fs");
    let ok = audit
        .iter()
        .find(|r| r["kind"] == "fs_read" && r["subject"] == "/data/ok.txt")
        .expect("audit of the allowed read");
    assert_eq!(ok["decision"], "allow");
    assert_eq!(ok["rule"], "filesystem.read /data");
    assert_eq!(ok["container"], "fs");
    assert!(ok["pid"].as_i64().unwrap_or(0) > 0 && ok["time"].is_string());
    assert!(ok["latency_us"].is_u64() && ok["bytes"] == 10);
    let secret = audit
        .iter()
        .find(|r| r["kind"] == "fs_read" && r["subject"] == "/data/secret")
        .expect("audit of the denied read");
    assert_eq!(secret["decision"], "deny");
    assert_eq!(secret["rule"], "filesystem.deny /data/secret");
    let etc = audit
        .iter()
        .find(|r| r["kind"] == "fs_read" && r["subject"] == "/etc/secret")
        .expect("audit of /etc/secret");
    assert_eq!(etc["rule"], "default");
    // `buntime-runc audit` prints the same log.
    let printed = env.ok(&["audit", "fs"]);
    assert_eq!(printed, read(&dir.join("audit.log")));

    // The container is stopped: the supervisor has exited and cleaned up.
    let gone = wait_until(Duration::from_secs(5), || {
        !dir.join("run/control.sock").exists() && !dir.join("run/ipc").exists()
    });
    assert!(gone, "supervisor files left in {}", dir.display());
    assert_eq!(
        env.state("fs")["annotations"]["buntime.dev/supervisor"],
        "stopped"
    );
    // After a rotation, the previous file is printed first.
    let older = "{\"rotated\":true}\n";
    fs::write(dir.join("audit.log.1"), older).unwrap();
    let printed = env.ok(&["audit", "fs"]);
    assert_eq!(printed, format!("{older}{}", read(&dir.join("audit.log"))));
    env.ok(&["delete", "fs"]);
    env.assert_gone("fs");
}

/// A name other than `localhost` that /etc/hosts maps to 127.x.
fn loopback_alias() -> Option<String> {
    read(Path::new("/etc/hosts")).lines().find_map(|l| {
        let mut w = l.split_whitespace();
        let ip = w.next()?;
        if !ip.starts_with("127.") {
            return None;
        }
        w.find(|n| !n.contains("localhost")).map(str::to_string)
    })
}

fn echo_server() -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        l.set_nonblocking(false).unwrap();
        for s in l.incoming().take(8).flatten() {
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut text = String::new();
            let _ = r.read_line(&mut text);
            let mut s = s;
            let _ = s.write_all(format!("pong {}\n", text.trim()).as_bytes());
        }
    });
    (port, h)
}

#[test]
fn net_connect_checks_resolved_addresses() {
    let env = Env::new();
    let (port, _server) = echo_server();
    let alias = loopback_alias();
    let mut args = vec![
        format!("net:127.0.0.1:{port}:ping"),
        format!("net:169.254.169.254:{port}:x"),
    ];
    if let Some(a) = &alias {
        args.push(format!("net:{a}:{port}:alias"));
    }
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    // Named: 127.0.0.1 is reachable; a name resolving to it when the name
    // is allowed too (the address must still be named).
    let named = match &alias {
        Some(a) => POLICY.replace(
            r#""allow": ["127.0.0.1"]"#,
            &format!(r#""allow": ["127.0.0.1", "{a}"]"#),
        ),
        None => POLICY.to_string(),
    };
    let b = worker_bundle(&env, "net1", &args_ref, &named, &[]);
    let out = run_to_end(&env, "net1", &b);
    assert_eq!(
        line(&out, &format!("net 127.0.0.1:{port}")),
        format!("net 127.0.0.1:{port} ALLOW pong ping")
    );
    assert!(
        line(&out, "net 169.254.169.254").contains(" DENY "),
        "{out}"
    );
    if let Some(a) = &alias {
        assert_eq!(
            line(&out, &format!("net {a}:")),
            format!("net {a}:{port} ALLOW pong alias")
        );
    }
    // Not named: `*` and a broker allow still never reach loopback.
    let open = POLICY
        .replace(r#""allow": ["127.0.0.1"]"#, r#""allow": ["*"]"#)
        .replace(r#""net_connect": "deny""#, r#""net_connect": "allow""#);
    let b = worker_bundle(&env, "net2", &args_ref, &open, &[]);
    let out = run_to_end(&env, "net2", &b);
    let l = line(&out, &format!("net 127.0.0.1:{port}"));
    assert!(l.contains("DENY loopback"), "{l}");
    if let Some(a) = &alias {
        let l = line(&out, &format!("net {a}:"));
        assert!(l.contains("DENY loopback"), "{l}");
    }
    let audit = audit_lines(&env, "net2");
    assert!(audit
        .iter()
        .any(|r| r["kind"] == "net_connect" && r["decision"] == "deny" && r["rule"] == "network"));
    for id in ["net1", "net2"] {
        env.ok(&["delete", id]);
        env.assert_gone(id);
    }
}

#[test]
fn ask_is_answered_by_the_approver_or_times_out() {
    let env = Env::new();
    let policy = POLICY.replace(r#""fs_read": "deny""#, r#""fs_read": "ask""#);
    let b = worker_bundle(
        &env,
        "ask",
        &[
            "read:/opt/allow-me",
            "read:/opt/deny-me",
            "read:/opt/timeout-me",
        ],
        &policy,
        &[("buntime.dev/ask-timeout", "1s")],
    );
    let log = env.dir.path().join("ask.log");
    env.create_logged("ask", &b, &log);
    let sock = state_dir(&env, "ask").join("approve.sock");
    let audit = state_dir(&env, "ask").join("audit.log");
    let conn = UnixStream::connect(&sock).expect("approver socket");
    let approver = std::thread::spawn(move || {
        let mut w = conn.try_clone().unwrap();
        let mut seen = Vec::new();
        // What the log held when each question came: a question can wait
        // the approver's timeout, the answers before it must be written.
        let mut logged = Vec::new();
        for l in BufReader::new(conn).lines() {
            let Ok(l) = l else { break };
            let q: serde_json::Value = serde_json::from_str(&l).unwrap();
            let subject = q["subject"].as_str().unwrap_or_default().to_string();
            logged.push(fs::read_to_string(&audit).unwrap_or_default());
            seen.push(q.clone());
            let result = if subject.ends_with("allow-me") {
                "allow"
            } else if subject.ends_with("deny-me") {
                "deny"
            } else {
                continue; // let it time out
            };
            let a = serde_json::json!({"id": q["id"], "result": result});
            let _ = w.write_all(format!("{a}\n").as_bytes());
            if seen.len() == 3 {
                break;
            }
        }
        (seen, logged)
    });
    env.ok(&["start", "ask"]);
    env.wait_status("ask", "stopped");
    let out = read(&log);
    assert_eq!(
        line(&out, "read /opt/allow-me"),
        "read /opt/allow-me ALLOW content of allow-me"
    );
    assert!(
        line(&out, "read /opt/deny-me").contains("DENY denied by the approver"),
        "{out}"
    );
    assert!(
        line(&out, "read /opt/timeout-me").contains("DENY no answer"),
        "{out}"
    );
    let (seen, logged) = approver.join().unwrap();
    assert!(
        logged[2].contains("/opt/deny-me") && logged[2].contains("\"deny\""),
        "the denial before the third question was not in audit.log when it was asked: {logged:?}"
    );
    assert_eq!(seen[0]["kind"], "fs_read");
    assert_eq!(seen[0]["container"], "ask");
    assert!(seen[0]["id"].is_u64() && seen[0]["pid"].is_i64());
    env.ok(&["delete", "ask"]);
    env.assert_gone("ask");
}

#[test]
fn a_denial_is_logged_while_the_worker_keeps_its_ring_busy() {
    // Lines may be held back while requests come back to back; output
    // frames write no line, so a worker streaming them must not keep its
    // denials out of audit.log until it stops.
    let env = Env::new();
    let b = worker_bundle(
        &env,
        "busy",
        &["read:/data/secret", "stream:4000"],
        POLICY,
        &[],
    );
    let log = env.dir.path().join("busy.log");
    env.create_logged("busy", &b, &log);
    env.ok(&["start", "busy"]);
    let logged_while_running = wait_until(Duration::from_secs(3), || {
        let denied = audit_lines(&env, "busy")
            .iter()
            .any(|r| r["subject"] == "/data/secret" && r["decision"] == "deny");
        denied && env.status("busy") == "running"
    });
    env.wait_status("busy", "stopped");
    let out = read(&log);
    assert!(line(&out, "read /data/secret").contains("DENY"), "{out}");
    assert!(line(&out, "stream 4000").contains("DONE"), "{out}");
    assert!(
        logged_while_running,
        "the denial reached audit.log only after the stream: {:?}",
        audit_lines(&env, "busy")
    );
    env.ok(&["delete", "busy"]);
    env.assert_gone("busy");
}

#[test]
fn killed_supervisor_means_denied_and_the_container_still_deletes() {
    let env = Env::new();
    let b = worker_bundle(
        &env,
        "kill",
        &["read:/data/ok.txt", "sleep:2000", "read:/data/ok.txt"],
        POLICY,
        &[],
    );
    let log = env.dir.path().join("kill.log");
    env.create_logged("kill", &b, &log);
    let pid = supervisor_pid(&env, "kill").expect("supervisor running");
    env.ok(&["start", "kill"]);
    assert!(wait_until(Duration::from_secs(10), || read(&log).contains("ALLOW")));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    let second = wait_until(Duration::from_secs(10), || read(&log).lines().count() >= 2);
    assert!(second, "{}", read(&log));
    let out = read(&log);
    let l = out.lines().nth(1).unwrap_or_default();
    assert!(l.contains("DENY supervisor unavailable"), "{out}");
    assert_eq!(
        env.state("kill")["annotations"]["buntime.dev/supervisor"],
        "stopped"
    );
    env.wait_status("kill", "stopped");
    env.ok(&["delete", "kill"]);
    env.assert_gone("kill");
}

#[test]
fn killed_container_stops_the_supervisor_and_leaves_nothing() {
    let env = Env::new();
    let b = worker_bundle(&env, "dead", &["sleep:60000"], POLICY, &[]);
    let log = env.dir.path().join("dead.log");
    env.create_logged("dead", &b, &log);
    let pid = supervisor_pid(&env, "dead").expect("supervisor running");
    // Detached: stdin/stdout on /dev/null, no pipe of the caller held (a
    // shim waiting for EOF on create's output would hang otherwise).
    for entry in fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        let target = fs::read_link(entry.path()).unwrap_or_default();
        let fd = entry.file_name().to_string_lossy().into_owned();
        assert!(
            !target.to_string_lossy().starts_with("pipe:"),
            "fd {fd}: {target:?}"
        );
        if fd == "0" || fd == "1" {
            assert_eq!(target, Path::new("/dev/null"), "fd {fd}");
        }
    }
    let sid = read(Path::new(&format!("/proc/{pid}/stat")))
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().nth(3).map(str::to_string))
        .unwrap_or_default();
    assert_eq!(sid, pid.to_string(), "supervisor leads its own session");
    env.ok(&["start", "dead"]);
    let follow = env
        .cmd()
        .args(["audit", "--follow", "dead"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    env.ok(&["kill", "dead", "KILL"]);
    let dir = state_dir(&env, "dead");
    let exited = wait_until(Duration::from_secs(5), || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    assert!(exited, "supervisor {pid} still running");
    for f in ["run/control.sock", "run/ipc", "approve.sock"] {
        assert!(!dir.join(f).exists(), "{f} left behind");
    }
    // `audit --follow` ends once the supervisor is gone.
    let mut follow = follow;
    let ended = wait_until(Duration::from_secs(5), || {
        matches!(follow.try_wait(), Ok(Some(_)))
    });
    if !ended {
        let _ = follow.kill();
        let _ = follow.wait();
    }
    assert!(ended, "audit --follow did not end");
    env.ok(&["delete", "dead"]);
    env.assert_gone("dead");

    // delete of a created container stops its supervisor too.
    let b = worker_bundle(&env, "dead2", &["sleep:60000"], POLICY, &[]);
    env.create_logged("dead2", &b, &env.dir.path().join("dead2.log"));
    let pid = supervisor_pid(&env, "dead2").expect("supervisor running");
    env.ok(&["delete", "--force", "dead2"]);
    let stopped = wait_until(Duration::from_secs(5), || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    assert!(stopped, "supervisor survived delete");
    env.assert_gone("dead2");
}

#[test]
fn garbage_from_a_worker_closes_only_its_connection() {
    let env = Env::new();
    let b = worker_bundle(
        &env,
        "junk",
        &[
            "garbage-ctl",
            "garbage-ring",
            "ctl-exit:7",
            "read:/data/ok.txt",
        ],
        POLICY,
        &[],
    );
    let out = run_to_end(&env, "junk", &b);
    // STOP (corruption), or a reset if the supervisor closed before it
    // read the doorbell (a Unix socket closed with unread data resets).
    let g = line(&out, "garbage-ring");
    assert!(g.contains("stop code=2") || g.contains("closed"), "{out}");
    assert_eq!(
        line(&out, "read /data/ok.txt"),
        "read /data/ok.txt ALLOW hello data"
    );
    let audit = audit_lines(&env, "junk");
    assert!(
        audit
            .iter()
            .any(|r| r["kind"] == "connect" && r["decision"] == "close"),
        "{audit:?}"
    );
    assert!(
        audit.iter().any(|r| r["kind"] == "protocol"
            && r["decision"] == "close"
            && r["subject"]
                .as_str()
                .unwrap_or_default()
                .contains("corrupt")),
        "{audit:?}"
    );
    // The exit status sent as a control message is audited, once.
    assert_eq!(line(&out, "ctl-exit"), "ctl-exit 7 DONE");
    let exits = |a: &[serde_json::Value]| {
        a.iter()
            .filter(|r| r["kind"] == "exit" && r["subject"] == "7")
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut audit = audit_lines(&env, "junk");
    while exits(&audit) == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        audit = audit_lines(&env, "junk");
    }
    assert_eq!(exits(&audit), 1, "{audit:?}");
    env.ok(&["delete", "junk"]);
    env.assert_gone("junk");
}

#[test]
fn connections_past_the_limit_are_refused_until_one_closes() {
    // 64 connections at once per container (each has a thread and a
    // segment in the supervisor); the one after a close is taken again.
    let env = Env::new();
    let b = worker_bundle(&env, "many", &["hold:66"], POLICY, &[]);
    let out = run_to_end(&env, "many", &b);
    let l = line(&out, "hold 66");
    assert!(
        l.starts_with("hold 66 DONE taken=64 refused=2 again=taken why="),
        "{out}"
    );
    assert!(l.contains("too many connections"), "{out}");
    env.ok(&["delete", "many"]);
    env.assert_gone("many");
}

#[test]
fn what_the_worker_wrote_before_its_stop_is_not_lost() {
    // A doorbell worker (the Python worker's kind) that writes and stops at
    // once: its last messages are still in the ring when STOP is read.
    let env = Env::new();
    let b = worker_bundle(&env, "burst", &["burst-stop:300"], POLICY, &[]);
    let out = run_to_end(&env, "burst", &b);
    assert_eq!(line(&out, "burst-stop"), "burst-stop 300 DONE");
    let dir = state_dir(&env, "burst");
    let complete = wait_until(Duration::from_secs(5), || {
        read(&dir.join("output.log")).contains("burst line 299\n")
    });
    let output = read(&dir.join("output.log"));
    assert!(complete, "output.log: {output}");
    let want: String = (0..300).map(|i| format!("burst line {i}\n")).collect();
    assert!(output.contains(&want), "output.log: {output}");
    let exit_audited = || {
        audit_lines(&env, "burst")
            .iter()
            .any(|r| r["kind"] == "exit" && r["subject"] == "9")
    };
    assert!(
        wait_until(Duration::from_secs(5), exit_audited),
        "{:?}",
        audit_lines(&env, "burst")
    );
    env.ok(&["delete", "burst"]);
    env.assert_gone("burst");
}

#[test]
fn exec_processes_use_the_broker_too() {
    let env = Env::new();
    let b = worker_bundle(&env, "ex", &["sleep:30000"], POLICY, &[]);
    env.create_logged("ex", &b, &env.dir.path().join("ex.log"));
    env.ok(&["start", "ex"]);
    let out = tempfile::tempfile().unwrap();
    let status = env
        .cmd()
        .args([
            "exec",
            "ex",
            "/bin/worker",
            "read:/data/ok.txt",
            "read:/etc/secret",
        ])
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(Stdio::inherit())
        .status()
        .unwrap();
    assert!(status.success());
    let mut text = String::new();
    use std::io::{Read, Seek};
    let mut out = out;
    out.rewind().unwrap();
    out.read_to_string(&mut text).unwrap();
    assert_eq!(
        line(&text, "read /data/ok.txt"),
        "read /data/ok.txt ALLOW hello data"
    );
    assert!(line(&text, "read /etc/secret").contains(" DENY "), "{text}");
    env.ok(&["delete", "--force", "ex"]);
    env.assert_gone("ex");
}

#[test]
fn resources_timeout_is_enforced_by_the_supervisor() {
    let env = Env::new();
    let policy = POLICY.replace(
        r#""version": 1,"#,
        r#""version": 1, "resources": { "timeout": "1s" },"#,
    );
    let b = worker_bundle(&env, "slow", &["sleep:60000"], &policy, &[]);
    env.create_logged("slow", &b, &env.dir.path().join("slow.log"));
    env.ok(&["start", "slow"]);
    // Bounded wait; the audit record below says who stopped it.
    env.wait_status("slow", "stopped");
    let audit = audit_lines(&env, "slow");
    assert!(
        audit.iter().any(|r| r["kind"] == "timeout"
            && r["decision"] == "kill"
            && r["rule"] == "resources.timeout"),
        "{audit:?}"
    );
    env.ok(&["delete", "slow"]);
    env.assert_gone("slow");
}

/// The broker opens files with the rights of the worker that asked (issue
/// 18): a container that is root on the host without a user namespace gets
/// no CAP_DAC_OVERRIDE through it, and what it writes is the worker's.
#[test]
fn the_broker_acts_with_the_workers_rights() {
    let env = Env::new();
    let b = worker_bundle(
        &env,
        "rights",
        &[
            "read:/data/others",
            "read:/data/roots",
            "write:/tmp/by-worker:x",
            "list:/data/closed",
        ],
        POLICY,
        &[],
    );
    let data = b.join("rootfs/data");
    let others = data.join("others");
    fs::write(&others, "not root's").unwrap();
    nix::unistd::chown(&others, Some(nix::unistd::Uid::from_raw(4242)), None).unwrap();
    let roots = data.join("roots");
    fs::write(&roots, "root's own").unwrap();
    let closed = data.join("closed");
    fs::create_dir(&closed).unwrap();
    nix::unistd::chown(&closed, Some(nix::unistd::Uid::from_raw(4242)), None).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for p in [&others, &roots, &closed] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o600)).unwrap();
    }
    let out = run_to_end(&env, "rights", &b);
    // Mode 0600 of another uid: refused although the policy reads /data.
    assert!(
        line(&out, "read /data/others").contains("DENY permission denied"),
        "{out}"
    );
    assert!(line(&out, "list /data/closed").contains(" DENY "), "{out}");
    // The owner (root, the worker's uid) may.
    assert_eq!(
        line(&out, "read /data/roots"),
        "read /data/roots ALLOW root's own"
    );
    assert_eq!(
        line(&out, "write /tmp/by-worker"),
        "write /tmp/by-worker ALLOW wrote"
    );
}

/// A connection's thread holds the worker's rights for its life and is the
/// supervisor only for what needs it (a NET_CONNECT's lookup and connect):
/// after that section, the worker's rights are back.
#[test]
fn the_workers_rights_come_back_after_a_net_connect() {
    let env = Env::new();
    let (port, _server) = echo_server();
    let net = format!("net:127.0.0.1:{port}:ping");
    let b = worker_bundle(
        &env,
        "rights2",
        &[
            "read:/data/others",
            &net,
            "read:/data/others",
            "read:/data/ok.txt",
        ],
        POLICY,
        &[],
    );
    let others = b.join("rootfs/data/others");
    fs::write(&others, "not root's").unwrap();
    nix::unistd::chown(&others, Some(nix::unistd::Uid::from_raw(4242)), None).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&others, fs::Permissions::from_mode(0o600)).unwrap();
    let out = run_to_end(&env, "rights2", &b);
    let reads: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("read /data/others"))
        .collect();
    assert_eq!(reads.len(), 2, "{out}");
    assert!(
        reads.iter().all(|l| l.contains("DENY permission denied")),
        "{out}"
    );
    assert_eq!(
        line(&out, &format!("net 127.0.0.1:{port}")),
        format!("net 127.0.0.1:{port} ALLOW pong ping")
    );
    assert_eq!(
        line(&out, "read /data/ok.txt"),
        "read /data/ok.txt ALLOW hello data"
    );
    env.ok(&["delete", "rights2"]);
    env.assert_gone("rights2");
}

/// Creates `id` with `runtime`, starts it, and returns the supervisor's
/// binary once it has answered the worker's first request.
fn supervisor_exe_serving(env: &Env, runtime: &Path, id: &str) -> PathBuf {
    let b = worker_bundle(env, id, &["read:/data/ok.txt", "sleep:2000"], POLICY, &[]);
    let log = env.dir.path().join(format!("{id}.log"));
    env.create_logged_with(runtime, id, &b, &log);
    let pid = supervisor_pid(env, id).expect("supervisor running");
    let exe = fs::read_link(format!("/proc/{pid}/exe")).expect("supervisor exe");
    env.ok(&["start", id]);
    let served = wait_until(Duration::from_secs(10), || read(&log).contains("ALLOW"));
    assert!(served, "{}", read(&log));
    env.ok(&["delete", "--force", id]);
    env.assert_gone(id);
    exe
}

#[test]
fn the_supervisor_runs_from_its_own_binary_or_else_the_runtime() {
    let env = Env::new();
    let runc = Path::new(common::RUNC);
    // Installed together: buntime-supervisor from beside the runtime.
    let exe = supervisor_exe_serving(&env, runc, "own");
    assert_eq!(exe, runc.with_file_name("buntime-supervisor"));
    // An older install, the runtime alone: its own `supervise`.
    let alone = env.dir.path().join("alone");
    fs::create_dir(&alone).expect("mkdir");
    fs::copy(runc, alone.join("buntime-runc")).expect("copy runtime");
    let exe = supervisor_exe_serving(&env, &alone.join("buntime-runc"), "alone");
    assert_eq!(exe, alone.join("buntime-runc"));
}

/// A container that shares a pid namespace (here another container's) may
/// see processes outside it: its supervisor is the runtime's own
/// `supervise`, run from the runtime's sealed copy, not the unsealed
/// buntime-supervisor.
#[test]
fn a_container_sharing_a_pid_namespace_gets_the_runtime_as_supervisor() {
    let env = Env::new();
    let first = env.bundle("first", &["sleep", "30"], &[]);
    env.ok(&[
        "create",
        "--bundle",
        first.to_str().expect("utf-8"),
        "first",
    ]);
    let b = env.bundle("joins", &["sleep", "30"], &[]);
    let cfg = b.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_str(&read(&cfg)).expect("spec");
    let ns = spec["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces");
    ns.retain(|n| n["type"] != "pid");
    let path = format!("/proc/{}/ns/pid", env.pid("first"));
    ns.push(serde_json::json!({"type": "pid", "path": path}));
    fs::write(&cfg, serde_json::to_string_pretty(&spec).expect("json")).expect("write");
    env.ok(&["create", "--bundle", b.to_str().expect("utf-8"), "joins"]);
    let pid = supervisor_pid(&env, "joins").expect("supervisor running");
    let exe = fs::read_link(format!("/proc/{pid}/exe")).expect("supervisor exe");
    assert_eq!(
        exe.file_name().and_then(|n| n.to_str()),
        Some("buntime-runc"),
        "{}",
        exe.display()
    );
    // The other one, with a pid namespace of its own, has the small one.
    let own = supervisor_pid(&env, "first").expect("supervisor running");
    let exe = fs::read_link(format!("/proc/{own}/exe")).expect("supervisor exe");
    assert_eq!(
        exe,
        Path::new(common::RUNC).with_file_name("buntime-supervisor")
    );
    env.ok(&["delete", "--force", "joins"]);
    env.ok(&["delete", "--force", "first"]);
    env.assert_gone("joins");
}
