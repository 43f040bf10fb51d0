//! Bad input to buntime-runc: each gets a clear one-line error naming what
//! is wrong, a non-zero exit, and leaves nothing behind. Needs root.

mod common;

use std::fs;

use common::{read, Env};

fn assert_empty_root(env: &Env) {
    let ids = env.ok(&["list", "-q"]);
    assert!(ids.trim().is_empty(), "containers left: {ids}");
    let extra = env.root.join(".buntime");
    let left: Vec<_> = fs::read_dir(&extra)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name())
                // The compiled-seccomp cache is kept on purpose.
                .filter(|n| n != ".seccomp-cache")
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "buntime dirs left: {left:?}");
}

#[test]
fn missing_bundle_is_named() {
    let env = Env::new();
    let err = env.fails(&["create", "--bundle", "/nonexistent/bundle", "c"]);
    assert!(err.contains("/nonexistent/bundle"), "{err}");
    assert!(err.lines().count() == 1, "one line: {err}");
    assert_empty_root(&env);
    env.assert_gone("c");
}

#[test]
fn invalid_json_and_wrong_types_name_the_field() {
    let env = Env::new();
    let bundle = env.bundle("b", &["true"], &[]);
    let cfg = bundle.join("config.json");
    let good = read(&cfg);

    fs::write(&cfg, "{ this is not json").expect("write");
    let err = env.fails(&[
        "create",
        "--bundle",
        bundle.to_str().unwrap_or_default(),
        "c1",
    ]);
    assert!(err.contains("config.json"), "{err}");
    assert!(err.contains("line 1 column"), "{err}");
    assert_empty_root(&env);

    // args must be a list of strings.
    let wrong = good.replacen("\"args\": [", "\"args\": \"true\", \"x\": [", 1);
    fs::write(&cfg, wrong).expect("write");
    let err = env.fails(&[
        "create",
        "--bundle",
        bundle.to_str().unwrap_or_default(),
        "c2",
    ]);
    assert!(err.contains("/process/args"), "{err}");
    assert_empty_root(&env);

    // An unsupported version is refused with its field.
    let v = good.replacen("\"ociVersion\": \"1.0.2\"", "\"ociVersion\": \"0.9\"", 1);
    fs::write(&cfg, v).expect("write");
    let err = env.fails(&[
        "create",
        "--bundle",
        bundle.to_str().unwrap_or_default(),
        "c3",
    ]);
    assert!(err.contains("/ociVersion"), "{err}");
    assert_empty_root(&env);

    // A rootfs that does not exist.
    fs::write(
        &cfg,
        good.replacen("\"path\": \"rootfs\"", "\"path\": \"nowhere\"", 1),
    )
    .expect("write");
    let err = env.fails(&[
        "create",
        "--bundle",
        bundle.to_str().unwrap_or_default(),
        "c4",
    ]);
    assert!(err.contains("/root/path"), "{err}");
    assert_empty_root(&env);
}

#[test]
fn bad_ids_are_refused() {
    let env = Env::new();
    let bundle = env.bundle("b", &["true"], &[]);
    for id in ["../x", "a/b", "..", ".hidden", "has space"] {
        let err = env.fails(&[
            "create",
            "--bundle",
            bundle.to_str().unwrap_or_default(),
            id,
        ]);
        assert!(err.contains("invalid container id"), "{id}: {err}");
        let err = env.fails(&["state", id]);
        assert!(err.contains("invalid container id"), "{id}: {err}");
    }
    assert!(!env.dir.path().join("x").exists());
    assert_empty_root(&env);
}

#[test]
fn unknown_container_and_force_delete() {
    let env = Env::new();
    for cmd in [
        vec!["state", "ghost"],
        vec!["start", "ghost"],
        vec!["kill", "ghost"],
        vec!["delete", "ghost"],
        vec!["pause", "ghost"],
        vec!["exec", "ghost", "true"],
        vec!["ps", "ghost"],
    ] {
        let err = env.fails(&cmd);
        assert!(
            err.contains("container \"ghost\" does not exist"),
            "{cmd:?}: {err}"
        );
    }
    // runc: --force of a missing container is fine.
    env.ok(&["delete", "--force", "ghost"]);
}

#[test]
fn double_create_and_delete_running_without_force() {
    let env = Env::new();
    let bundle = env.bundle("b", &["sleep", "1000"], &[]);
    let b = bundle.to_str().unwrap_or_default();
    env.ok(&["create", "--bundle", b, "dup"]);
    let err = env.fails(&["create", "--bundle", b, "dup"]);
    assert!(err.contains("container \"dup\" already exists"), "{err}");
    // The first one is untouched.
    assert_eq!(env.status("dup"), "created");
    env.ok(&["start", "dup"]);
    let err = env.fails(&["delete", "dup"]);
    assert!(err.contains("running") && err.contains("--force"), "{err}");
    assert_eq!(env.status("dup"), "running");
    let err = env.fails(&["start", "dup"]);
    assert!(err.contains("cannot start"), "{err}");
    env.ok(&["delete", "--force", "dup"]);
    env.assert_gone("dup");
}

#[test]
fn bad_arguments_name_the_argument() {
    let env = Env::new();
    let bundle = env.bundle("b", &["sleep", "1000"], &[]);
    env.run_detached("args", &bundle);
    let err = env.fails(&["kill", "args", "NOSUCHSIG"]);
    assert!(err.contains("invalid signal \"NOSUCHSIG\""), "{err}");
    let err = env.fails(&["exec", "--user", "nobody", "args", "true"]);
    assert!(err.contains("--user"), "{err}");
    let err = env.fails(&["ps", "--format", "xml", "args"]);
    assert!(err.contains("--format"), "{err}");
    let err = env.fails(&["--log-format", "xml", "list"]);
    assert!(err.contains("--log-format"), "{err}");
    env.ok(&["delete", "--force", "args"]);
    env.assert_gone("args");
}

#[test]
fn json_log_carries_the_error_for_containerd() {
    let env = Env::new();
    let log = env.dir.path().join("log.json");
    let out = env
        .cmd()
        .args(["--log"])
        .arg(&log)
        .args([
            "--log-format",
            "json",
            "create",
            "--bundle",
            "/missing/bundle",
            "j1",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let text = read(&log);
    let last = text.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(last).expect("json log line");
    assert_eq!(v["level"], "error");
    assert!(
        v["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("/missing/bundle"),
        "{v}"
    );
    assert!(v["time"].as_str().is_some());
    // And stderr has the same message for a person.
    assert!(String::from_utf8_lossy(&out.stderr).contains("/missing/bundle"));
}

#[test]
fn concurrent_creates_of_one_id_leave_the_winner_intact() {
    let env = Env::new();
    let bundle = env.bundle("b", &["sleep", "1000"], &[]);
    // stderr goes to files: the winner's container keeps its stdio open.
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let log = env.dir.path().join(format!("create-{i}.err"));
            let mut c = env.cmd();
            c.args(["create", "--bundle"])
                .arg(&bundle)
                .arg("same")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(fs::File::create(&log).expect("log"));
            std::thread::spawn(move || (c.status().map(|s| s.success()).unwrap_or(false), log))
        })
        .collect();
    let outs: Vec<(bool, std::path::PathBuf)> =
        handles.into_iter().filter_map(|h| h.join().ok()).collect();
    assert_eq!(outs.len(), 6);
    let wins = outs.iter().filter(|(ok, _)| *ok).count();
    assert_eq!(wins, 1, "exactly one create wins");
    for (_, log) in outs.iter().filter(|(ok, _)| !*ok) {
        let err = read(log);
        assert!(err.contains("already exists"), "{err}");
    }
    // The winner was not torn down by a loser's cleanup.
    assert_eq!(env.status("same"), "created");
    env.ok(&["start", "same"]);
    assert_eq!(env.status("same"), "running");
    env.ok(&["delete", "--force", "same"]);
    env.assert_gone("same");
}

#[test]
fn a_program_the_policy_does_not_let_run_is_named_on_stderr() {
    let env = Env::new();
    let bundle = env.bundle("b", &["/opt/prog"], &[]);
    fs::create_dir_all(bundle.join("rootfs/opt")).expect("mkdir");
    fs::copy("/bin/busybox", bundle.join("rootfs/opt/prog")).expect("copy");
    let out = env.runc(&[
        "run",
        "--bundle",
        bundle.to_str().unwrap_or_default(),
        "noexec",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/opt/prog") && err.contains("Permission denied"),
        "{err}"
    );
    env.assert_gone("noexec");
}

/// `buntime.dev/timeout-from` belongs to `buntime run --pool`: from an OCI
/// bundle it would hold `resources.timeout` back, so it is refused.
#[test]
fn the_pool_annotation_is_refused_from_a_bundle() {
    let env = Env::new();
    let bundle = env.bundle("b", &["true"], &[]);
    let cfg = bundle.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_str(&read(&cfg)).expect("json");
    spec["annotations"] = serde_json::json!({ "buntime.dev/timeout-from": "claim" });
    fs::write(&cfg, spec.to_string()).expect("write");
    let err = env.fails(&[
        "create",
        "--bundle",
        bundle.to_str().unwrap_or_default(),
        "c",
    ]);
    assert!(err.contains("buntime.dev/timeout-from"), "{err}");
    assert_empty_root(&env);
    env.assert_gone("c");
}
