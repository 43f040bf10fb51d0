//! podman with buntime-runc as its OCI runtime (integration/podman/): each
//! test has its own storage root, run root, containers.conf (the shipped
//! snippet, pointing at the built binary) and cgroup parent, and leaves
//! nothing behind. Needs root and Debian's podman (hack/install-deps.sh).
//!
//! This host has no systemd and cgroup v1: `--cgroup-manager=cgroupfs`,
//! `--events-backend=file`; the vfs storage driver needs no mounts; the
//! network is `none` or `host` (no CNI bridge, no iptables rules).

mod engines;

use std::fs;
use std::time::Duration;

use engines::podman::{Podman, LIMIT};

/// Asserts the test's podman left no container, process, mount or cgroup.
fn assert_clean(p: &Podman) {
    let ids = p.ok(&["ps", "--all", "--quiet"]);
    assert!(ids.trim().is_empty(), "containers left: {ids}");
    let scratch = p.dir.path().to_string_lossy().into_owned();
    let procs = engines::pids_mentioning(&scratch);
    assert!(
        engines::wait_until(Duration::from_secs(5), || engines::pids_mentioning(
            &scratch
        )
        .is_empty()),
        "processes left: {procs:?}"
    );
    let mounts = engines::mounts_under(p.dir.path());
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    // Container cgroups are gone; podman's cgroup parent itself stays
    // (podman never removes it): only empty parent dirs may remain.
    for d in engines::cgroups_left(&p.cgroup_parent) {
        let children: Vec<_> = fs::read_dir(&d)
            .map(|r| {
                r.flatten()
                    .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                    .filter(|e| e.file_name() != "conmon")
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        assert!(children.is_empty(), "cgroups left: {children:?}");
    }
}

#[test]
fn podman_rootfs_run_output_exit_code_and_engine_default() {
    let Some(p) = Podman::new(engines::open_node) else {
        return;
    };
    let out = p.run(&[
        "--rm",
        "--network",
        "none",
        "--rootfs",
        p.rootfs(),
        "sh",
        "-c",
        "echo hello-from-buntime; touch /newfile 2>&1 && echo root-writable; cat /proc/net/dev; \
         test -S /run/buntime/control.sock && echo has-control-socket; exit 3",
    ]);
    assert_eq!(out.code(), 3, "exit code passes through: {out:?}");
    assert!(out.stdout.contains("hello-from-buntime"), "{out:?}");
    // The engine default: the root is as podman made it (writable).
    assert!(out.stdout.contains("root-writable"), "{out:?}");
    assert_eq!(engines::interfaces(&out.stdout), ["lo"], "{out:?}");
    // The supervisor's control socket is in the container.
    assert!(out.stdout.contains("has-control-socket"), "{out:?}");
    assert_clean(&p);
}

#[test]
fn podman_image_exec_stop_rm() {
    let Some(p) = Podman::new(engines::open_node) else {
        return;
    };
    let image = p.import_image(&engines::unique("buntime-test-bb"));

    // Runs from the image; exit codes pass through.
    let out = p.run(&["--rm", "--network", "none", &image, "sh", "-c", "exit 5"]);
    assert_eq!(out.code(), 5, "{out:?}");
    let out = p.run(&["--rm", "--network", "none", &image]);
    assert_eq!(out.code(), 0, "the image's CMD runs: {out:?}");

    // A detached container that exits 7 on SIGTERM.
    let name = engines::unique("buntime-test-term");
    let out = p.run(&[
        "-d",
        "--name",
        &name,
        "--network",
        "none",
        &image,
        "sh",
        "-c",
        "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.1; done",
    ]);
    assert!(out.ok(), "{out:?}");
    assert!(engines::wait_until(Duration::from_secs(10), || p
        .ok(&["logs", &name])
        .contains("ready")));

    // exec: output, exit code, same container (sees init as pid 1).
    let out = p.podman(&["exec", &name, "sh", "-c", "echo in-exec; exit 4"]);
    assert_eq!(out.code(), 4, "{out:?}");
    assert!(out.stdout.contains("in-exec"), "{out:?}");
    let ps = p.ok(&["exec", &name, "ps", "-o", "pid,args"]);
    assert!(ps.contains("trap"), "exec sees the container's init: {ps}");
    let top = p.ok(&["top", &name]);
    assert!(top.contains("sleep") || top.contains("trap"), "{top}");

    // stop: SIGTERM first; the trap exits 7 (a SIGKILL after the grace
    // period would show 137).
    p.ok(&["stop", "--time", "10", &name]);
    let code = p.ok(&["inspect", "--format", "{{.State.ExitCode}}", &name]);
    assert_eq!(code.trim(), "7");
    assert!(p.ok(&["logs", &name]).contains("got-term"));
    p.ok(&["rm", &name]);

    // stop of a container that ignores SIGTERM: SIGKILL after the timeout.
    let name = engines::unique("buntime-test-kill");
    let out = p.run(&[
        "-d",
        "--name",
        &name,
        "--network",
        "none",
        &image,
        "sh",
        "-c",
        "trap '' TERM; echo ready; while :; do sleep 0.1; done",
    ]);
    assert!(out.ok(), "{out:?}");
    assert!(engines::wait_until(Duration::from_secs(10), || p
        .ok(&["logs", &name])
        .contains("ready")));
    p.ok(&["stop", "--time", "1", &name]);
    let code = p.ok(&["inspect", "--format", "{{.State.ExitCode}}", &name]);
    assert_eq!(code.trim(), "137", "killed by SIGKILL");
    p.ok(&["rm", &name]);

    // rm --force of a running container.
    let name = engines::unique("buntime-test-rmf");
    assert!(p
        .run(&[
            "-d",
            "--name",
            &name,
            "--network",
            "none",
            &image,
            "sleep",
            "1000"
        ])
        .ok());
    p.ok(&["rm", "--force", "--time", "0", &name]);
    assert_clean(&p);
}

#[test]
fn podman_failed_create_shows_buntime_error() {
    let Some(p) = Podman::new(engines::open_node) else {
        return;
    };
    let out = p.run(&[
        "--rm",
        "--network",
        "none",
        "--rootfs",
        p.rootfs(),
        "/no/such/program",
    ]);
    assert_eq!(
        out.code(),
        127,
        "podman's code for a missing program: {out:?}"
    );
    // podman reads the message from buntime-runc's JSON log
    // (`runtime_supports_json` in integration/podman/containers.conf) and
    // names the runtime; no logrus line around it.
    assert!(
        out.stderr
            .contains("OCI runtime error: buntime: create container")
            && out.stderr.contains("/no/such/program")
            && !out.stderr.contains("level=error"),
        "the runtime's error reaches the user: {}",
        out.stderr
    );
    assert_clean(&p);
}

#[test]
fn podman_policy_annotation_removes_the_network() {
    let Some(p) = Podman::new(engines::open_node) else {
        return;
    };
    let net = "cat /proc/net/dev";
    // Control: podman's host network, a policy that keeps it: the host's
    // interfaces are there. (podman parses --annotation as CSV: quote it.)
    let host_policy = format!(
        "\"buntime.dev/policy={}\"",
        engines::HOST_NET_POLICY.replace('"', "\"\"")
    );
    let out = p.run(&[
        "--rm",
        "--network",
        "host",
        "--annotation",
        &host_policy,
        "--rootfs",
        p.rootfs(),
        "sh",
        "-c",
        net,
    ]);
    assert!(out.ok(), "{out:?}");
    let host_ifaces = engines::interfaces(&out.stdout);
    assert!(
        host_ifaces.iter().any(|i| i != "lo"),
        "host network visible under a host-mode policy: {host_ifaces:?}"
    );
    // The same container with buntime.dev/policy-name=no-network: only lo,
    // and no way out.
    let out = p.run(&[
        "--rm",
        "--network",
        "host",
        "--annotation",
        "buntime.dev/policy-name=no-network",
        "--rootfs",
        p.rootfs(),
        "sh",
        "-c",
        "cat /proc/net/dev; nc -w 2 1.1.1.1 53 </dev/null && echo CONNECTED || echo no-connect",
    ]);
    assert!(out.ok(), "{out:?}");
    assert_eq!(engines::interfaces(&out.stdout), ["lo"], "{out:?}");
    assert!(out.stdout.contains("no-connect"), "{out:?}");
    assert_clean(&p);
}

#[test]
fn podman_rlimits_above_hard_limits_are_capped() {
    // podman asks for RLIMIT_NOFILE 1048576 by default, above this host's
    // hard limit: buntime caps rlimits at the host's hard limits (runc
    // fails with "error setting rlimit type 7: operation not permitted").
    let Some(p) = Podman::new(engines::open_node) else {
        return;
    };
    let mut c = p.cmd();
    c.args(["run", "--rm", "--network", "none", "--cgroup-parent"])
        .arg(&p.cgroup_parent)
        .args(["--ulimit", "nofile=1048576:1048576", "--rootfs"])
        .arg(&p.rootfs)
        .args(["sh", "-c", "ulimit -Hn"]);
    let out = engines::run(&mut c, LIMIT);
    assert!(out.ok(), "{out:?}");
    let hard: u64 = out.stdout.trim().parse().expect("a number");
    let host = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, h)| h)
        .unwrap_or(u64::MAX);
    assert!(hard <= host, "{hard} > host hard limit {host}");
    assert_clean(&p);
}

// Real images under the engine default (no annotation, no node default
// file: the built-in policies/engine.json).

#[test]
fn podman_engine_default_runs_a_python_app_a_setuid_server_a_chown_and_secrets() {
    let Some(p) = Podman::new(engines::open_node) else {
        return;
    };
    let image = p.import_app();

    // (a) The app in /app, started by its script, reads its data.
    let out = p.run(&["--rm", "--network", "none", &image]);
    assert!(out.ok(), "{out:?}");
    assert!(
        out.stdout.contains("python-app-ok hello-from-app /app 3"),
        "{out:?}"
    );

    // Secrets an engine mounts read-only stay readable by the app.
    let token = p.path("token");
    fs::write(&token, "s3cret-token\n").expect("token");
    let token_mount = format!(
        "{}:/var/run/secrets/kubernetes.io/serviceaccount/token:ro",
        token.display()
    );
    let out = p.run(&[
        "--rm",
        "--network",
        "none",
        "-v",
        &token_mount,
        &image,
        "sh",
        "-c",
        "cat /var/run/secrets/kubernetes.io/serviceaccount/token; \
         echo x >> /var/run/secrets/kubernetes.io/serviceaccount/token || echo not-writable",
    ]);
    assert!(out.ok(), "{out:?}");
    assert!(out.stdout.contains("s3cret-token"), "{out:?}");
    assert!(out.stdout.contains("not-writable"), "{out:?}");

    // (c) The entrypoint chowns its volume; the host sees the new owner.
    let vol = p.path("vol");
    fs::create_dir_all(vol.join("sub")).expect("vol");
    fs::write(vol.join("sub/f"), "x").expect("vol file");
    let vol_mount = format!("{}:/data", vol.display());
    let out = p.run(&[
        "--rm",
        "--network",
        "none",
        "-v",
        &vol_mount,
        &image,
        "sh",
        "-c",
        "chown -R 1234:2345 /data && echo chowned",
    ]);
    assert!(out.ok() && out.stdout.contains("chowned"), "{out:?}");
    assert_eq!(engines::owner(&vol), (1234, 2345));
    assert_eq!(engines::owner(&vol.join("sub/f")), (1234, 2345));

    // (b) A server binds port 80 as root, then drops to uid/gid 1000
    // (setgid/setuid); reached from an exec inside.
    let name = engines::unique("buntime-test-httpd");
    let out = p.run(&[
        "-d",
        "--name",
        &name,
        "--network",
        "none",
        &image,
        "httpd",
        "-f",
        "-v",
        "-p",
        "80",
        "-u",
        "1000:1000",
        "-h",
        "/www",
    ]);
    assert!(out.ok(), "{out:?}");
    let mut page = String::new();
    let served = engines::wait_until(Duration::from_secs(20), || {
        let out = p.podman(&[
            "exec",
            &name,
            "wget",
            "-q",
            "-O",
            "-",
            "http://127.0.0.1:80/index.html",
        ]);
        page = format!("{out:?}");
        out.ok() && out.stdout.contains("served-by-httpd")
    });
    assert!(served, "{page}\nlogs: {}", p.ok(&["logs", &name]));
    let ids = p.ok(&[
        "exec",
        &name,
        "sh",
        "-c",
        "grep -E '^(Uid|Gid):' /proc/$(pidof httpd)/status",
    ]);
    for line in ids.lines() {
        let fields: Vec<&str> = line.split_whitespace().skip(1).collect();
        assert_eq!(fields, ["1000"; 4], "httpd runs as 1000: {ids}");
    }
    assert_eq!(p.inspect(&name, "{{.State.Status}}"), "running");
    p.ok(&["rm", "--force", "--time", "0", &name]);
    assert_clean(&p);
}

#[test]
fn podman_long_running_service_outlives_a_timeout_only_when_the_policy_has_one() {
    let Some(p) = Podman::new(engines::open_node) else {
        return;
    };
    let image = p.import_app();
    let service = ["sh", "-c", "echo up; while :; do sleep 1; done"];
    // A policy with a short wall-clock limit: the service is killed.
    let limited = engines::unique("buntime-test-limited");
    let annotation = format!(
        "\"buntime.dev/policy={}\"",
        engines::timeout_policy("3s").replace('"', "\"\"")
    );
    let mut args = vec![
        "-d",
        "--name",
        &limited,
        "--network",
        "none",
        "--annotation",
        &annotation,
        &image,
    ];
    args.extend(service);
    let out = p.run(&args);
    assert!(out.ok(), "{out:?}");
    // The engine default (no timeout): still running after that.
    let free = engines::unique("buntime-test-free");
    let mut args = vec!["-d", "--name", &free, "--network", "none", &image];
    args.extend(service);
    let out = p.run(&args);
    assert!(out.ok(), "{out:?}");
    assert!(
        engines::wait_until(Duration::from_secs(30), || p
            .inspect(&limited, "{{.State.Status}}")
            == "exited"),
        "the 3s policy never killed it: {}",
        p.inspect(&limited, "{{.State.Status}}")
    );
    assert_eq!(p.inspect(&limited, "{{.State.ExitCode}}"), "137");
    // Well past the other's limit (it started after the first one).
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(p.inspect(&free, "{{.State.Status}}"), "running");
    assert!(p.ok(&["logs", &free]).contains("up"));
    p.ok(&["rm", "--force", "--time", "0", &limited, &free]);
    assert_clean(&p);
}

#[test]
fn podman_exec_refused_by_the_policy_names_the_policy_path_and_field() {
    let Some(p) = Podman::new(engines::open_node) else {
        return;
    };
    let image = p.import_app();
    // The shipped default lets /bin and /usr/bin run, not /app.
    let out = p.run(&[
        "--rm",
        "--network",
        "none",
        "--annotation",
        "buntime.dev/policy-name=default",
        &image,
    ]);
    assert!(!out.ok(), "{out:?}");
    assert!(
        out.stderr.contains(engines::APP_REFUSED_BY_DEFAULT),
        "the user sees which rule refused: {out:?}"
    );
    // The same through `podman exec` (buntime-runc exec).
    let name = engines::unique("buntime-test-refused");
    let out = p.run(&[
        "-d",
        "--name",
        &name,
        "--network",
        "none",
        "--annotation",
        "buntime.dev/policy-name=default",
        &image,
        "sleep",
        "1000",
    ]);
    assert!(out.ok(), "{out:?}");
    let out = p.podman(&["exec", &name, engines::APP_CMD]);
    assert!(!out.ok(), "{out:?}");
    assert!(
        out.stderr.contains(engines::APP_REFUSED_BY_DEFAULT),
        "{out:?}"
    );
    // A script the policy lets run but whose file it may not read: a note
    // names the rule before python's own error.
    let out = p.podman(&["exec", &name, "python3", "/app/main.py"]);
    assert!(!out.ok(), "{out:?}");
    assert!(
        out.stderr.contains(
            "read \"/app/main.py\" refused by policy \"default\" (filesystem.read does not cover /app)"
        ),
        "{out:?}"
    );
    p.ok(&["rm", "--force", "--time", "0", &name]);
    assert_clean(&p);
}

/// `podman run --uidmap`: the container's root is host uid 100000, which
/// must reach the supervisor's socket (`/run/buntime-userns`, the gate).
#[test]
fn podman_user_namespace_container_has_its_supervisor() {
    let Some(p) = Podman::new(engines::open_node) else {
        return;
    };
    // The mapped root must reach the image's storage, as on a real node
    // (the test's scratch directory is 0700 otherwise).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p.path(""), std::fs::Permissions::from_mode(0o755))
        .expect("chmod scratch");
    let image = p.import_image(&engines::unique("buntime-test-userns"));
    let out = p.run(&[
        "--rm",
        "--network",
        "none",
        "--uidmap",
        "0:100000:65536",
        "--gidmap",
        "0:100000:65536",
        &image,
        "sh",
        "-c",
        "cat /proc/self/uid_map; test -S /run/buntime/control.sock && echo has-control-socket",
    ]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(out.stdout.contains("100000"), "a mapped root: {out:?}");
    assert!(out.stdout.contains("has-control-socket"), "{out:?}");
    assert_clean(&p);
}

/// `buntime-runc policy learned ID` of a container podman ran (podman uses
/// the runtime's default root); stdout, stderr.
fn learned_of(id: &str) -> (String, String) {
    let out = engines::run(
        std::process::Command::new(engines::RUNC).args(["policy", "learned", id]),
        LIMIT,
    );
    assert!(out.ok(), "policy learned {id}: {out:?}");
    (out.stdout, out.stderr)
}

/// Whether a live container is learning: its state's
/// `buntime.dev/learn` annotation (the runtime's default root).
fn observing(id: &str) -> bool {
    let out = engines::run(
        std::process::Command::new(engines::RUNC).args(["state", id]),
        LIMIT,
    );
    assert!(out.ok(), "state {id}: {out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("state is JSON");
    v["annotations"]["buntime.dev/learn"] == "observing"
}

/// The denials in a live container's own audit log (`buntime-runc audit
/// ID`, the runtime's default root, where podman runs it).
fn live_denials(id: &str) -> Vec<String> {
    let out = engines::run(
        std::process::Command::new(engines::RUNC).args(["audit", id]),
        LIMIT,
    );
    assert!(out.ok(), "audit {id}: {out:?}");
    out.stdout
        .lines()
        .filter(|l| l.contains("\"decision\":\"deny\""))
        .map(str::to_string)
        .collect()
}

/// `podman run --rm` with `buntime.dev/learn=true`: podman deletes the
/// container as soon as it exits, and `policy learned ID` still prints what
/// it used (docs/learn.md, the kept record); under that policy the same
/// command runs again, not learning (its state's annotation says so), with
/// its output complete: that is the evidence. Its own audit log, read from
/// the runtime while the rerun idles after its command (podman deletes the
/// runtime's container as soon as it exits, --rm or not), holds only the
/// broker's and the proxy's decisions; this command makes none (no
/// network, no broker request), and the kernel's Landlock refusals are
/// not audited, so its being free of denials shows little.
#[test]
fn podman_run_rm_learned_policy_outlives_the_container() {
    let Some(p) = Podman::new(engines::open_node) else {
        return;
    };
    // The rerun sleeps after its command so that its state is there to
    // read; the learning run's `sleep 0` runs the same programs.
    let cmd = |secs: u32| {
        format!(
            "cat /etc/passwd >/dev/null && echo read-ok; ls /etc >/dev/null && echo ls-ok; \
             /bin/busybox true && echo exec-ok; echo cmd-done; sleep {secs}"
        )
    };
    let learning = r#"{"version":1,"filesystem":{"read":["/"],"write":["/tmp","/dev/null"],"exec":["/bin"]},"network":{"mode":"none"}}"#;
    let run = |policy: &str, cidfile: &std::path::Path, learn: bool| {
        let annotation = format!("\"buntime.dev/policy={}\"", policy.replace('"', "\"\""));
        let cid = cidfile.to_str().expect("utf-8 path");
        let (mode, learn, sh) = match learn {
            true => ("--rm", "buntime.dev/learn=true", cmd(0)),
            false => ("-d", "buntime.dev/learn=false", cmd(600)),
        };
        let out = p.run(&[
            mode,
            "--cidfile",
            cid,
            "--network",
            "none",
            "--annotation",
            learn,
            "--annotation",
            &annotation,
            "--rootfs",
            p.rootfs(),
            "sh",
            "-c",
            &sh,
        ]);
        let id = fs::read_to_string(cidfile).expect("cidfile");
        (out, id.trim().to_string())
    };
    /// The kept records this test made go, even when it fails (they are
    /// in the runtime's default root, shared).
    struct Kept(Vec<String>);
    impl Drop for Kept {
        fn drop(&mut self) {
            let base = std::path::Path::new(buntime::runtime::DEFAULT_ROOT)
                .join(buntime::runtime::kept::KEPT_DIR);
            for id in self.0.iter().filter(|i| !i.is_empty() && !i.contains('/')) {
                let forgot = std::process::Command::new(engines::RUNC)
                    .args(["policy", "learned", "--forget", id])
                    .output();
                if !forgot.is_ok_and(|o| o.status.success()) {
                    let _ = fs::remove_dir_all(base.join(id));
                }
            }
        }
    }
    /// The rerun (`-d`, sleeping) is removed even when the test fails, so
    /// later tests' `assert_clean` do not see it.
    struct Rerun<'a>(&'a Podman, String);
    impl Drop for Rerun<'_> {
        fn drop(&mut self) {
            if !self.1.is_empty() {
                let _ = self.0.podman(&["rm", "-f", "-t", "0", &self.1]);
            }
        }
    }
    let mut kept = Kept(Vec::new());
    let (out, id) = run(learning, &p.path("learn.cid"), true);
    kept.0.push(id.clone());
    assert!(out.ok(), "{out:?}");
    assert!(
        out.stdout.contains("read-ok") && out.stdout.contains("exec-ok"),
        "{out:?}"
    );
    // Gone: podman deleted it (its state directory with it).
    let root = std::path::Path::new(buntime::runtime::DEFAULT_ROOT);
    assert!(!root.join(".buntime").join(&id).exists());
    let (policy, summary) = learned_of(&id);
    assert!(summary.contains("the container was deleted"), "{summary}");
    let v: serde_json::Value = serde_json::from_str(&policy).expect("a policy");
    let read = v["filesystem"]["read"].to_string();
    assert!(
        read.contains("\"/etc") && !read.contains("\"/\""),
        "{policy}"
    );

    let (out, id2) = run(policy.trim(), &p.path("rerun.cid"), false);
    let rerun = Rerun(&p, id2.clone());
    assert!(out.ok(), "{out:?}");
    let done = engines::wait_until(LIMIT, || {
        p.podman(&["logs", &id2]).stdout.contains("cmd-done")
    });
    let logs = p.podman(&["logs", &id2]);
    assert!(done, "{logs:?}");
    for word in ["read-ok", "ls-ok", "exec-ok"] {
        assert!(logs.stdout.contains(word), "{word}: {logs:?}");
    }
    assert!(!logs.stderr.contains("denied"), "{logs:?}");
    assert!(!logs.stderr.contains("refused by policy"), "{logs:?}");
    assert!(!observing(&id2), "the rerun is learning");
    // Only the broker's and proxy's decisions are audited (none here).
    assert_eq!(live_denials(&id2), Vec::<String>::new());
    drop(rerun);
    drop(kept);
    assert_clean(&p);
}
