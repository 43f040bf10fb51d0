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
fn podman_rootfs_run_output_exit_code_and_default_policy() {
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
        "echo hello-from-buntime; touch /newfile 2>&1; cat /proc/net/dev; \
         test -S /run/buntime/control.sock && echo has-control-socket; exit 3",
    ]);
    assert_eq!(out.code(), 3, "exit code passes through: {out:?}");
    assert!(out.stdout.contains("hello-from-buntime"), "{out:?}");
    // buntime's default policy: read-only root.
    assert!(out.stdout.contains("Read-only file system"), "{out:?}");
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
