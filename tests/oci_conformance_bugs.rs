//! Bugs the OCI conformance suites found (issue 20), each through the built
//! `buntime-runc` with real containers: user namespaces, the state hooks
//! receive, failing poststop hooks, a closed stdout, runc's error lines.
//! Needs root.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{install_worker, read, show, text, Env};

/// Edits a bundle's config.json.
fn edit(bundle: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let cfg = bundle.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_str(&read(&cfg)).expect("spec");
    f(&mut spec);
    fs::write(&cfg, serde_json::to_string_pretty(&spec).expect("json")).expect("write");
}

/// A hook script that appends its stdin (the state), then `<- NAME`.
fn recording_hook(env: &Env, out: &Path) -> PathBuf {
    let hook = env.dir.path().join("record.sh");
    fs::write(
        &hook,
        format!(
            "#!/bin/sh\ncat >> {out}\necho \" <- $1\" >> {out}\n",
            out = out.display()
        ),
    )
    .expect("hook");
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).expect("chmod");
    hook
}

fn hook(path: &Path, name: &str) -> serde_json::Value {
    serde_json::json!({"path": path, "args": ["record.sh", name]})
}

/// The states the recording hook saw, by hook name.
fn recorded(out: &Path) -> Vec<(String, serde_json::Value)> {
    read(out)
        .lines()
        .filter_map(|l| l.rsplit_once(" <- "))
        .map(|(state, name)| {
            let v = serde_json::from_str(state).unwrap_or_else(|e| panic!("{state}: {e}"));
            (name.to_string(), v)
        })
        .collect()
}

#[test]
fn hooks_get_the_users_bundle_and_annotations() {
    let env = Env::new();
    let bundle = env.bundle("b", &["sleep", "30"], &[]);
    let out = env.dir.path().join("hooks.out");
    let rec = recording_hook(&env, &out);
    edit(&bundle, |s| {
        s["annotations"] = serde_json::json!({"org.example/team": "blue"});
        s["hooks"] = serde_json::json!({
            "prestart": [hook(&rec, "prestart")],
            "createRuntime": [hook(&rec, "createRuntime")],
            "createContainer": [hook(&rec, "createContainer")],
            "poststart": [hook(&rec, "poststart")],
            "poststop": [hook(&rec, "poststop")],
        });
    });
    env.create_logged("hk", &bundle, &env.dir.path().join("hk.log"));
    env.ok(&["start", "hk"]);
    env.ok(&["kill", "hk", "KILL"]);
    env.wait_status("hk", "stopped");
    env.ok(&["delete", "hk"]);
    let seen = recorded(&out);
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "poststart",
            "poststop"
        ],
        "{}",
        read(&out)
    );
    let want_bundle = fs::canonicalize(&bundle).expect("bundle");
    for (name, state) in &seen {
        assert_eq!(state["id"], "hk", "{name}: {state}");
        assert_eq!(
            state["bundle"].as_str().map(PathBuf::from),
            Some(want_bundle.clone()),
            "{name}: the bundle given to create, not buntime's directory: {state}"
        );
        assert_eq!(
            state["annotations"],
            serde_json::json!({"org.example/team": "blue"}),
            "{name}: the bundle's annotations only: {state}"
        );
        // The runtime spec's state: `created` once the environment exists
        // (the create operation's hooks), `running` after start, `stopped`.
        let want = match name.as_str() {
            "prestart" | "createRuntime" | "createContainer" => "created",
            "poststart" => "running",
            _ => "stopped",
        };
        assert_eq!(state["status"], want, "{name}: {state}");
    }
    env.assert_gone("hk");
}

#[test]
fn a_failing_poststop_hook_warns_and_the_delete_goes_on() {
    let env = Env::new();
    let out = env.dir.path().join("hooks.out");
    let rec = recording_hook(&env, &out);
    let fail = env.dir.path().join("fail.sh");
    fs::write(&fail, "#!/bin/sh\necho poststop failing >&2\nexit 3\n").expect("hook");
    fs::set_permissions(&fail, fs::Permissions::from_mode(0o755)).expect("chmod");
    let bundle = env.bundle("b", &["sleep", "30"], &[]);
    edit(&bundle, |s| {
        s["hooks"] = serde_json::json!({
            "poststop": [{"path": fail}, hook(&rec, "after-the-failing-one")],
        });
    });
    // A stopped container: plain delete.
    env.run_detached("ps1", &bundle);
    env.ok(&["kill", "ps1", "KILL"]);
    env.wait_status("ps1", "stopped");
    let del = env.runc(&["delete", "ps1"]);
    assert!(del.status.success(), "{}", show(&del));
    let err = text(&del.stderr);
    assert!(
        err.contains("level=warning") && err.contains("poststop hook failed"),
        "{err}"
    );
    env.assert_gone("ps1");
    // A running one: delete --force.
    env.run_detached("ps2", &bundle);
    let del = env.runc(&["delete", "--force", "ps2"]);
    assert!(del.status.success(), "{}", show(&del));
    env.assert_gone("ps2");
    let ran: Vec<String> = recorded(&out).into_iter().map(|(n, _)| n).collect();
    assert_eq!(ran, ["after-the-failing-one", "after-the-failing-one"]);
}

/// Runs buntime-runc with stdout a pipe whose reader is already gone.
fn into_closed_pipe(env: &Env, args: &[&str]) -> std::process::Output {
    let (reader, writer) = nix::unistd::pipe().expect("pipe");
    drop(reader);
    let child = env
        .cmd()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.wait_with_output().expect("wait")
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let env = Env::new();
    let bundle = env.bundle("b", &["sleep", "30"], &[]);
    env.run_detached("pipe", &bundle);
    for args in [
        vec!["state", "pipe"],
        vec!["list"],
        vec!["ps", "pipe"],
        vec!["ps", "--format", "json", "pipe"],
        vec!["events", "--stats", "pipe"],
        vec!["spec", "--explain", "pipe"],
        vec!["features"],
    ] {
        let out = into_closed_pipe(&env, &args);
        // As runc: killed by SIGPIPE, nothing said (no panic).
        assert_eq!(out.status.signal(), Some(13), "{args:?}: {}", show(&out));
        assert!(out.stderr.is_empty(), "{args:?}: {}", show(&out));
    }
    env.ok(&["delete", "--force", "pipe"]);
    // The people-facing binary too.
    let (reader, writer) = nix::unistd::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_buntime"))
        .args(["policy", "schema"])
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .expect("buntime");
    assert_eq!(out.status.signal(), Some(13), "{}", show(&out));
    assert!(out.stderr.is_empty(), "{}", show(&out));
}

#[test]
fn errors_are_runc_style_log_lines() {
    let env = Env::new();
    // Text mode without --log: logrus' line on stderr, as runc prints it.
    let out = env.runc(&["state", "ghost"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("time=\""), "{err}");
    assert!(
        err.contains(r#" level=error msg="container \"ghost\" does not exist""#),
        "{err}"
    );
    // JSON without --log: one JSON object on stderr.
    let out = env.runc(&["--log-format", "json", "state", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    let line: serde_json::Value =
        serde_json::from_slice(&out.stderr).unwrap_or_else(|e| panic!("{e}: {}", show(&out)));
    assert_eq!(line["level"], "error");
    assert_eq!(line["msg"], "container \"ghost\" does not exist");
    // --log FILE --log-format json (containerd): the file has the line,
    // stderr the bare message.
    let log = env.dir.path().join("log.json");
    let l = log.to_str().expect("utf-8");
    let out = env.runc(&["--log", l, "--log-format", "json", "delete", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    let last = read(&log).lines().last().unwrap_or_default().to_string();
    let line: serde_json::Value = serde_json::from_str(&last).expect("json log line");
    assert_eq!(line["level"], "error");
    assert_eq!(line["msg"], "container \"ghost\" does not exist");
    assert_eq!(
        text(&out.stderr).trim(),
        "container \"ghost\" does not exist"
    );
    // A bad --log-format is an error line too.
    let err = text(&env.runc(&["--log-format", "xml", "list"]).stderr);
    assert!(
        err.contains("level=error msg=\"invalid --log-format"),
        "{err}"
    );
}

/// The host uid and gid a user-namespace container's root maps to.
const MAPPED: u32 = 100_000;

/// Runs `args` as host `uid:gid` with no supplementary groups.
fn as_user(uid: u32, args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
        ])
        .args(args)
        .output()
        .expect("setpriv")
}

#[test]
fn a_user_namespace_container_runs_with_its_supervisor() {
    let env = Env::new();
    // The image must be readable by its mapped root, as an engine makes it.
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let bundle = env.bundle(
        "b",
        &[
            "sh",
            "-c",
            "cat /etc/shadow; exec /bin/worker read:/data/ok.txt sleep:3000",
        ],
        &[],
    );
    let rootfs = bundle.join("rootfs");
    install_worker(&rootfs);
    fs::create_dir_all(rootfs.join("data")).expect("data");
    fs::write(rootfs.join("data/ok.txt"), "hello from the image").expect("file");
    // A deny mask over a file: bound from buntime's unreadable file.
    fs::write(rootfs.join("etc/shadow"), "root:secret-hash:1::::::").expect("shadow");
    edit(&bundle, |s| {
        let ns = s["linux"]["namespaces"].as_array_mut().expect("namespaces");
        ns.push(serde_json::json!({"type": "user"}));
        let map = serde_json::json!([{"containerID": 0, "hostID": MAPPED, "size": 65536}]);
        s["linux"]["uidMappings"] = map.clone();
        s["linux"]["gidMappings"] = map;
        s["annotations"] = serde_json::json!({"buntime.dev/policy": r#"{"version":1,
            "filesystem":{"read":["/"],"exec":["/"],"deny":["/etc/shadow"]},"network":{"mode":"none"},
            "broker":{"fs_read":"deny"}}"#});
    });
    let log = env.dir.path().join("u.log");
    env.create_logged("uns", &bundle, &log);
    env.ok(&["start", "uns"]);
    let said = common::wait_until(std::time::Duration::from_secs(10), || {
        read(&log).contains("read /data/ok.txt")
    });
    assert!(said, "{}", read(&log));
    assert!(
        read(&log).contains("read /data/ok.txt ALLOW hello from the image"),
        "the supervisor answered the mapped root: {}",
        read(&log)
    );
    assert!(
        read(&log).contains("can't open '/etc/shadow': Permission denied"),
        "{}",
        read(&log)
    );
    assert!(!read(&log).contains("secret-hash"), "{}", read(&log));
    let st = env.state("uns");
    assert!(
        st["annotations"]["buntime.dev/supervisor"]
            .as_str()
            .is_some_and(|s| s.starts_with("running")),
        "{st}"
    );
    // The control socket's directory on the host: the mapped uid passes
    // the gate, another unprivileged user does not.
    let mountinfo = read(&PathBuf::from(format!(
        "/proc/{}/mountinfo",
        env.pid("uns")
    )));
    let gate_run = fs::read_link(env.root.join(".buntime/uns/run")).expect("run link");
    let sock = gate_run.join("control.sock");
    let s = sock.to_str().expect("utf-8");
    let ok = as_user(MAPPED, &["test", "-S", s]);
    assert!(ok.status.success(), "mapped root: {}", show(&ok));
    let other = as_user(1000, &["test", "-S", s]);
    assert!(!other.status.success(), "uid 1000 reached {s}");
    let nobody = as_user(MAPPED + 65536, &["test", "-S", s]);
    assert!(
        !nobody.status.success(),
        "uid {} reached {s}",
        MAPPED + 65536
    );
    assert!(mountinfo.contains(" /run/buntime "), "{mountinfo}");
    env.ok(&["delete", "--force", "uns"]);
    env.assert_gone("uns");
    assert!(!gate_run.exists(), "{} left behind", gate_run.display());
}

#[test]
fn checkpoint_and_restore_are_refused_with_the_reason() {
    let env = Env::new();
    let bundle = env.bundle("b", &["sleep", "30"], &[]);
    env.run_detached("ck", &bundle);
    let images = env.dir.path().join("images");
    let i = images.to_str().expect("utf-8");
    // runc's arguments, as an engine passes them.
    let err = env.fails(&[
        "checkpoint",
        "--image-path",
        i,
        "--leave-running",
        "--tcp-established",
        "ck",
    ]);
    assert!(err.contains("level=error"), "{err}");
    assert!(
        err.contains("checkpoint is not supported by buntime-runc: nothing could restore it"),
        "{err}"
    );
    assert!(!images.exists(), "checkpoint left {}", images.display());
    assert_eq!(env.status("ck"), "running");
    let b = bundle.to_str().expect("utf-8");
    let err = env.fails(&["restore", "--image-path", i, "-d", "-b", b, "ck2"]);
    assert!(err.contains("restore is not supported"), "{err}");
    env.assert_gone("ck2");
    // And `features` says so, in runc's annotation.
    let f: serde_json::Value = serde_json::from_str(&env.ok(&["features"])).expect("features");
    assert_eq!(
        f["annotations"]["org.opencontainers.runc.checkpoint.enabled"],
        "false"
    );
    env.ok(&["delete", "--force", "ck"]);
}
