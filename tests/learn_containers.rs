//! Learning for containers (`buntime.dev/learn: "true"`, docs/learn.md),
//! through `buntime-runc`, as root: a container reads a file, runs a
//! program and fetches from a loopback server through its proxy while
//! observed under its own policy; `policy learned ID` gives a policy under
//! which the same command runs again with no denials, and which never
//! grants `/etc/shadow` — asked for after the learning container was
//! deleted, from the record `delete` kept. A node that denies learning refuses the
//! annotation; `policy learned` names what is wrong.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use common::{read, wait_until, Env};

/// An HTTP server on the host's loopback answering `hello-learned`.
fn serve_http() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = c.write_all(
                b"HTTP/1.0 200 OK\r\nContent-Length: 14\r\nConnection: close\r\n\r\nhello-learned\n",
            );
        }
    });
    port
}

/// The job: read a data file, run a program of its own, fetch through the
/// proxy (busybox's wget crashes in these bundles: its nc speaks HTTP),
/// try /etc/shadow.
fn script(port: u16) -> String {
    format!(
        "cat /data/input.txt; echo data=$?; \
         /opt/bin/busybox-tool echo tool-ran; \
         printf 'GET http://127.0.0.1:{port}/ HTTP/1.0\\r\\n\\r\\n' | nc 127.0.0.1 3128 | tail -1; \
         cat /etc/shadow >/dev/null 2>&1; echo shadow=$?"
    )
}

fn bundle(env: &Env, name: &str, port: u16, annotations: Value) -> std::path::PathBuf {
    let b = env.bundle(name, &["sh", "-c", &script(port)], &[]);
    let root = b.join("rootfs");
    fs::create_dir_all(root.join("data")).expect("data dir");
    fs::write(root.join("data/input.txt"), "input-row\n").expect("data");
    fs::write(root.join("etc/shadow"), "root:SECRET-HASH:1::::::\n").expect("shadow");
    fs::create_dir_all(root.join("opt/bin")).expect("opt/bin");
    let tool = root.join("opt/bin/busybox-tool");
    fs::copy(root.join("bin/busybox"), &tool).expect("copy busybox");
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).expect("chmod");
    let file = b.join("config.json");
    let mut cfg: Value = serde_json::from_str(&read(&file)).expect("config.json");
    cfg["annotations"] = annotations;
    fs::write(&file, cfg.to_string()).expect("write config.json");
    b
}

/// The learning run's policy: /data is NOT readable (the learned policy
/// must still grant it: a denial is a use), /etc is (its shadow must still
/// not be granted).
fn learning_policy(port: u16) -> String {
    json!({
        "version": 1,
        "filesystem": {
            "read": ["/bin", "/proc", "/etc", "/opt"],
            "write": ["/tmp", "/dev/null"],
            "exec": ["/bin", "/opt"]
        },
        "network": {"mode": "proxy", "allow": [format!("127.0.0.1:{port}")]}
    })
    .to_string()
}

/// Creates, starts and waits for `id` to stop and its supervisor to exit
/// (its last record written); returns the container's output.
fn run_to_end(env: &Env, id: &str, b: &Path) -> String {
    let log = env.dir.path().join(format!("{id}.log"));
    env.create_logged(id, b, &log);
    env.ok(&["start", id]);
    env.wait_status(id, "stopped");
    let done = wait_until(Duration::from_secs(10), || {
        env.state(id)["annotations"]["buntime.dev/supervisor"] == "stopped"
    });
    assert!(done, "supervisor of {id} did not exit");
    read(&log)
}

fn denials(env: &Env, id: &str) -> Vec<String> {
    env.ok(&["audit", id])
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).is_ok_and(|r| r["decision"] == "deny"))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_learned_container_policy_lets_the_same_command_run_with_no_denials() {
    let env = Env::new();
    let port = serve_http();
    let b = bundle(
        &env,
        "learner",
        port,
        json!({"buntime.dev/policy": learning_policy(port), "buntime.dev/learn": "true"}),
    );
    let out = run_to_end(&env, "learner", &b);
    // Observed under its own policy: /data was refused, the rest ran.
    assert!(out.contains("data=1"), "{out}");
    assert!(out.contains("tool-ran"), "{out}");
    assert!(out.contains("hello-learned"), "{out}");
    assert_eq!(
        env.state("learner")["annotations"]["buntime.dev/learn"],
        "observing"
    );

    // Engines delete a container as soon as it exits (podman `run --rm`,
    // containerd): what it learned outlives its state directory.
    env.ok(&["delete", "learner"]);
    env.assert_gone("learner");
    let kept = env.root.join(".buntime-learned/learner");
    let mode = fs::symlink_metadata(&kept)
        .expect("kept record")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "{}", kept.display());
    let learned = env.runc(&["policy", "learned", "learner"]);
    let (stdout, stderr) = (common::text(&learned.stdout), common::text(&learned.stderr));
    assert!(learned.status.success(), "{stderr}");
    assert!(stderr.contains("the container was deleted"), "{stderr}");
    let policy: Value = serde_json::from_str(&stdout).expect("the learned policy is JSON");
    let fs_of = |k: &str| -> Vec<String> {
        policy["filesystem"][k]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    let (r, w, x) = (fs_of("read"), fs_of("write"), fs_of("exec"));
    assert!(r.contains(&"/data/input.txt".to_string()), "{stdout}");
    // Programs by absolute path, or the rule of the policy it ran under
    // that covers them; never the runtime's /proc/self/exe.
    assert!(
        x.iter()
            .any(|p| Path::new("/opt/bin/busybox-tool").starts_with(p)),
        "{stdout}"
    );
    assert!(!x.iter().any(|p| p.starts_with("/proc")), "{stdout}");
    for p in r.iter().chain(&w).chain(&x) {
        assert!(
            !Path::new("/etc/shadow").starts_with(p)
                || fs_of("deny").iter().any(|d| d.starts_with("/etc/shadow")),
            "{p} grants /etc/shadow: {stdout}"
        );
        assert_ne!(p, "/", "{stdout}");
    }
    assert!(!r.iter().any(|p| p.starts_with("/etc/shadow")), "{stdout}");
    assert_eq!(policy["network"]["mode"], "proxy", "{stdout}");
    assert_eq!(
        policy["network"]["allow"],
        json!([format!("127.0.0.1:{port}")]),
        "{stdout}"
    );
    assert!(stderr.contains("files read"), "{stderr}");
    assert!(
        stderr.contains("asked for, not granted: /etc/shadow"),
        "{stderr}"
    );
    assert!(!stderr.contains("INCOMPLETE"), "{stderr}");
    let list = env.ok(&["policy", "learned", "--list"]);
    let line = list.lines().find(|l| l.starts_with("learner "));
    let cols: Vec<&str> = line.unwrap_or_default().split_whitespace().collect();
    assert_eq!(cols.len(), 4, "{list}");
    assert!(
        cols[1].ends_with('Z') && cols[2].parse::<u64>().is_ok_and(|n| n > 0),
        "{list}"
    );
    assert_eq!(cols[3], "yes", "{list}");

    // The same command under the learned policy: nothing refused.
    let b2 = bundle(
        &env,
        "relearned",
        port,
        json!({"buntime.dev/policy": stdout.trim()}),
    );
    let out2 = run_to_end(&env, "relearned", &b2);
    assert!(out2.contains("input-row\ndata=0"), "{out2}");
    assert!(out2.contains("tool-ran"), "{out2}");
    assert!(out2.contains("hello-learned"), "{out2}");
    assert!(!out2.contains("Permission denied"), "{out2}");
    // /etc/shadow stays refused (it was never granted).
    assert!(out2.contains("shadow=1"), "{out2}");
    assert_eq!(denials(&env, "relearned"), Vec::<String>::new());
    // Not a learning container.
    let e = common::text(&env.runc(&["policy", "learned", "relearned"]).stderr);
    assert!(e.contains("was not learning"), "{e}");
    env.ok(&["delete", "relearned"]);
    env.assert_gone("relearned");
    // Nothing kept of a container that was not learning.
    assert!(!env.root.join(".buntime-learned/relearned").exists());
    let e = env.fails(&["policy", "learned", "relearned"]);
    assert!(e.contains("container \"relearned\" does not exist"), "{e}");
    forget_kept(&env, "learner");
}

/// `policy learned --forget ID` drops one kept record and nothing else: not
/// a bad id, not through a symlink.
fn forget_kept(env: &Env, id: &str) {
    let kept = env.root.join(".buntime-learned");
    let elsewhere = env.dir.path().join("elsewhere");
    fs::create_dir_all(&elsewhere).expect("elsewhere");
    fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o700)).expect("chmod");
    fs::write(elsewhere.join("learned.json"), "{}").expect("file");
    std::os::unix::fs::symlink(&elsewhere, kept.join("planted")).expect("symlink");
    let e = env.fails(&["policy", "learned", "--forget", "planted"]);
    assert!(e.contains("no kept learned record of \"planted\""), "{e}");
    assert!(elsewhere.join("learned.json").is_file());
    for bad in ["../.buntime-learned", ".tmp-x", "a/b"] {
        let e = env.fails(&["policy", "learned", "--forget", bad]);
        assert!(e.contains("invalid container id"), "{bad}: {e}");
    }
    assert!(kept.join(id).is_dir());
    env.ok(&["policy", "learned", "--forget", id]);
    assert!(!kept.join(id).exists());
    assert!(!env.ok(&["policy", "learned", "--list"]).contains(id));
    let e = env.fails(&["policy", "learned", id]);
    assert!(
        e.contains(&format!("container \"{id}\" does not exist")),
        "{e}"
    );
    let e = env.fails(&["policy", "learned", "--forget", id]);
    assert!(e.contains("no kept learned record"), "{e}");
}

#[test]
fn a_node_that_denies_learning_refuses_the_annotation() {
    let env = Env::new();
    let cfg = env.etc().join("config.json");
    let mut node: Value = serde_json::from_str(&read(&cfg)).expect("config");
    node["learn"] = json!("deny");
    fs::write(&cfg, node.to_string()).expect("write config");
    let port = 9;
    let b = bundle(
        &env,
        "denied",
        port,
        json!({"buntime.dev/policy": learning_policy(port), "buntime.dev/learn": "true"}),
    );
    let e = env.fails(&[
        "create",
        "--bundle",
        b.to_str().unwrap_or_default(),
        "denied",
    ]);
    assert!(
        e.contains("annotation buntime.dev/learn refused")
            && e.contains("sets \"learn\": \"deny\""),
        "{e}"
    );
    env.assert_gone("denied");

    // A value that is not true/false names the annotation.
    let b = bundle(&env, "odd", port, json!({"buntime.dev/learn": "yes"}));
    let e = env.fails(&["create", "--bundle", b.to_str().unwrap_or_default(), "odd"]);
    assert!(e.contains("buntime.dev/learn=\"yes\""), "{e}");
    env.assert_gone("odd");

    let e = env.fails(&["policy", "learned", "nosuch"]);
    assert!(e.contains("container \"nosuch\" does not exist"), "{e}");
}

/// `buntime policy suggest --from-audit ID` reads a container's audit log
/// from its state root: the proxy's refusal becomes the smallest change.
#[test]
fn suggest_reads_a_containers_audit_log_by_id() {
    let env = Env::new();
    let port = serve_http();
    let b = bundle(
        &env,
        "refused",
        port,
        json!({"buntime.dev/policy": learning_policy(9)}),
    );
    let out = run_to_end(&env, "refused", &b);
    assert!(!out.contains("hello-learned"), "{out}");
    let buntime = env!("CARGO_BIN_EXE_buntime");
    let root = env.root.to_str().unwrap_or_default();
    let s = std::process::Command::new(buntime)
        .args([
            "--root",
            root,
            "policy",
            "suggest",
            "--from-audit",
            "refused",
        ])
        .output()
        .expect("run buntime");
    let (stdout, stderr) = (common::text(&s.stdout), common::text(&s.stderr));
    assert!(s.status.success(), "{stderr}");
    let p: Value = serde_json::from_str(&stdout).expect("a policy");
    let allow = p["network"]["allow"].to_string();
    assert!(allow.contains(&format!("127.0.0.1:{port}")), "{stdout}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    let s = std::process::Command::new(buntime)
        .args([
            "--root",
            root,
            "policy",
            "suggest",
            "--from-audit",
            "nosuch",
        ])
        .output()
        .expect("run buntime");
    let e = common::text(&s.stderr);
    assert!(
        !s.status.success() && e.contains("no such file, nor a container"),
        "{e}"
    );
    env.ok(&["delete", "refused"]);
}

/// A process started by `exec` in a learning container is observed as its
/// init is: a file only the exec'd process read is in the learned policy,
/// asked for after the container was deleted.
#[test]
fn an_exec_in_a_learning_container_is_observed() {
    let env = Env::new();
    let b = env.bundle("execlearn", &["sleep", "1000"], &[]);
    let root = b.join("rootfs");
    // Outside the policy's read rules: refused, and a refusal is a use.
    fs::create_dir_all(root.join("srv/only-exec")).expect("dir");
    fs::write(root.join("srv/only-exec/note.txt"), "exec-read-me\n").expect("note");
    let file = b.join("config.json");
    let mut cfg: Value = serde_json::from_str(&read(&file)).expect("config.json");
    cfg["annotations"] =
        json!({"buntime.dev/policy": learning_policy(1), "buntime.dev/learn": "true"});
    fs::write(&file, cfg.to_string()).expect("write config.json");
    env.run_detached("execlearn", &b);
    let out = env.ok(&[
        "exec",
        "execlearn",
        "sh",
        "-c",
        "echo exec-ran; cat /srv/only-exec/note.txt; true",
    ]);
    assert_eq!(out, "exec-ran\n");
    env.ok(&["kill", "execlearn", "KILL"]);
    env.wait_status("execlearn", "stopped");
    let done = wait_until(Duration::from_secs(10), || {
        env.state("execlearn")["annotations"]["buntime.dev/supervisor"] == "stopped"
    });
    assert!(done, "supervisor of execlearn did not exit");
    env.ok(&["delete", "execlearn"]);
    env.assert_gone("execlearn");
    let learned = env.runc(&["policy", "learned", "execlearn"]);
    let (stdout, stderr) = (common::text(&learned.stdout), common::text(&learned.stderr));
    assert!(learned.status.success(), "{stderr}");
    let policy: Value = serde_json::from_str(&stdout).expect("the learned policy is JSON");
    let read_rules: Vec<&str> = policy["filesystem"]["read"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        read_rules.contains(&"/srv/only-exec/note.txt"),
        "the exec'd process's read is missing: {stdout}\n{stderr}"
    );
}

/// The file `name` in the container's /tmp (through its init's root).
fn marker(pid: i64, name: &str) -> std::path::PathBuf {
    Path::new(&format!("/proc/{pid}/root/tmp")).join(name)
}

/// Freezes or thaws `pid`'s cgroup by writing the kernel's file directly
/// (not through `pause`): v1 `freezer.state`, else v2 `cgroup.freeze`.
fn freeze(pid: i64, on: bool) {
    let cgroups = read(Path::new(&format!("/proc/{pid}/cgroup")));
    let line = |pick: &dyn Fn(&str) -> bool| {
        cgroups.lines().find_map(|l| {
            let mut p = l.splitn(3, ':');
            let (_, c, path) = (p.next()?, p.next()?, p.next()?);
            pick(c).then(|| path.trim_start_matches('/').to_string())
        })
    };
    let (file, body) = match line(&|c| c.split(',').any(|c| c == "freezer")) {
        Some(path) => (
            Path::new("/sys/fs/cgroup/freezer")
                .join(path)
                .join("freezer.state"),
            if on { "FROZEN" } else { "THAWED" },
        ),
        None => (
            Path::new("/sys/fs/cgroup")
                .join(line(&str::is_empty).expect("a cgroup"))
                .join("cgroup.freeze"),
            if on { "1" } else { "0" },
        ),
    };
    fs::write(&file, body).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
}

/// `exec` into a learning container fails closed, at once, where its
/// process could not be observed: the container paused (`--ignore-paused`:
/// the process would be frozen before handing over its filter), its cgroup
/// frozen directly (not through `pause`, so its saved status still says
/// running), the learn socket gone (a cleaner of /run), the supervisor
/// killed (the OOM killer, a stray kill). The command never runs: the
/// marker file it would create is never there, not even after a resume.
#[test]
fn exec_into_a_learning_container_its_observer_cannot_see_is_refused() {
    let env = Env::new();
    let b = env.bundle("blind", &["sleep", "1000"], &[]);
    let file = b.join("config.json");
    let mut cfg: Value = serde_json::from_str(&read(&file)).expect("config.json");
    cfg["annotations"] =
        json!({"buntime.dev/policy": learning_policy(1), "buntime.dev/learn": "true"});
    fs::write(&file, cfg.to_string()).expect("write config.json");
    env.run_detached("blind", &b);
    let init = env.state("blind")["pid"].as_i64().expect("init pid");
    let touch = |n: &str| {
        [
            "exec",
            "blind",
            "sh",
            "-c",
            &format!("touch /tmp/ran-{n}; echo exec-ran"),
        ]
        .map(String::from)
    };
    let runc = |args: &[String]| env.runc(&args.iter().map(String::as_str).collect::<Vec<_>>());
    // The control: an exec that may run creates its marker.
    let out = runc(&touch("ok"));
    assert_eq!(
        common::text(&out.stdout),
        "exec-ran\n",
        "{}",
        common::text(&out.stderr)
    );
    assert!(marker(init, "ran-ok").exists());
    let refused = |args: &[String], why: &str| {
        let out = runc(args);
        let e = common::text(&out.stderr).replace("\\\"", "\"");
        assert!(!out.status.success(), "{e}");
        assert!(!common::text(&out.stdout).contains("exec-ran"));
        assert!(e.contains(why) && e.contains("exec refused"), "{e}");
    };

    env.ok(&["pause", "blind"]);
    let mut paused = touch("paused").to_vec();
    paused.insert(1, "--ignore-paused".into());
    refused(&paused, "container \"blind\" is paused and learning");
    env.ok(&["resume", "blind"]);

    freeze(init, true);
    // Thawed even if the assertion fails: `delete --force` thaws only a
    // container whose saved status is paused.
    struct Thaw(i64);
    impl Drop for Thaw {
        fn drop(&mut self) {
            freeze(self.0, false);
        }
    }
    let thaw = Thaw(init);
    refused(
        &touch("frozen"),
        "container \"blind\" is paused and learning (buntime.dev/learn; its cgroup is frozen)",
    );
    drop(thaw);
    assert_eq!(runc(&touch("thawed")).status.code(), Some(0));
    for n in ["paused", "frozen"] {
        assert!(!marker(init, &format!("ran-{n}")).exists(), "{n} ran");
    }

    // The socket there but no one listening: the handoff fails after the
    // process is made; its listener is closed, so its exec fails
    // (ENOSYS), and its command never runs.
    let state = env.root.join(".buntime/blind");
    fs::remove_file(state.join("learn.sock")).expect("remove learn.sock");
    fs::write(state.join("learn.sock"), "").expect("a dead learn.sock");
    let out = runc(&touch("deaf"));
    let e = common::text(&out.stderr);
    assert!(!out.status.success(), "{e}");
    assert!(!common::text(&out.stdout).contains("exec-ran"), "{e}");
    assert!(!marker(init, "ran-deaf").exists());
    fs::remove_file(state.join("learn.sock")).expect("remove learn.sock");
    refused(
        &touch("nosock"),
        "is learning (buntime.dev/learn) but its observer cannot be reached: no socket",
    );

    let meta: Value = serde_json::from_str(&read(&state.join("buntime.json"))).expect("meta");
    let pid = meta["supervisorPid"].as_i64().expect("supervisor pid");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let gone = wait_until(Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    assert!(gone, "supervisor {pid} still runs");
    refused(
        &touch("nosupervisor"),
        "its observer cannot be reached: its supervisor is not running",
    );
    for n in ["paused", "frozen", "deaf", "nosock", "nosupervisor"] {
        assert!(!marker(init, &format!("ran-{n}")).exists(), "{n} ran");
    }
    assert!(marker(init, "ran-thawed").exists());
    env.ok(&["delete", "--force", "blind"]);
}
