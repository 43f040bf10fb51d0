//! `--systemd-cgroup`, the systemd cgroup driver. Where systemd is PID 1
//! and cgroups are pure v2 (the node guest of `make test-node`), a
//! container lives in a systemd scope through create, exec, update,
//! pause/resume, events and delete, with its supervisor charged there too.
//! Anywhere else (this host: no systemd, cgroup v1 hybrid) the flag fails
//! with the reason and leaves nothing behind.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{read, wait_until, Env};

fn systemd_v2() -> bool {
    Path::new("/run/systemd/system").is_dir()
        && Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// Skips (with a line saying so) where the driver cannot work; under
/// `BUNTIME_NODE_TEST=1` (the node guest) a skip is a failure.
fn need_systemd_v2() -> bool {
    if systemd_v2() {
        return true;
    }
    assert!(
        std::env::var_os("BUNTIME_NODE_TEST").is_none(),
        "the node guest must have systemd and pure cgroup v2"
    );
    eprintln!("skipped: needs systemd and pure cgroup v2 (make test-node)");
    false
}

fn set_cgroups_path(bundle: &Path, path: &str) {
    let file = bundle.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&read(&file)).expect("config.json");
    cfg["linux"]["cgroupsPath"] = path.into();
    fs::write(&file, cfg.to_string()).expect("write config.json");
}

fn systemctl_show(unit: &str, prop: &str) -> String {
    let out = Command::new("systemctl")
        .args(["show", "-P", prop, unit])
        .output()
        .expect("systemctl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn proc_cgroup(pid: i64) -> String {
    read(Path::new(&format!("/proc/{pid}/cgroup")))
        .trim()
        .to_string()
}

#[test]
fn systemd_cgroup_without_systemd_fails_clearly_and_leaves_nothing() {
    if systemd_v2() {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("b", &["true"], &[]);
    set_cgroups_path(&bundle, "system.slice:buntime-test:sdno");
    let b = bundle.to_str().unwrap_or_default();
    let err = env.fails(&["--systemd-cgroup", "run", "--bundle", b, "sdno"]);
    assert!(err.contains("--systemd-cgroup"), "{err}");
    let why = if Path::new("/run/systemd/system").is_dir() {
        "v1 or hybrid"
    } else {
        "systemd is not running"
    };
    assert!(err.contains(why), "{err}");
    // Not silently run through cgroupfs: no cgroup of that name anywhere.
    for d in fs::read_dir("/sys/fs/cgroup")
        .expect("cgroup root")
        .flatten()
    {
        let p = d.path().join("system.slice:buntime-test:sdno");
        assert!(!p.exists(), "{} made", p.display());
    }
    env.assert_gone("sdno");
    // Without the flag the same bundle runs (cgroupfs, as before).
    env.ok(&["run", "--bundle", b, "sdno"]);
    env.ok(&["delete", "--force", "sdno"]);
    env.assert_gone("sdno");
}

#[test]
fn systemd_cgroups_path_must_be_slice_prefix_name() {
    if !need_systemd_v2() {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("b", &["true"], &[]);
    set_cgroups_path(&bundle, "/buntime/sdpath");
    let b = bundle.to_str().unwrap_or_default();
    let err = env.fails(&["--systemd-cgroup", "create", "--bundle", b, "sdpath"]);
    assert!(err.contains("/linux/cgroupsPath"), "{err}");
    assert!(err.contains("slice:prefix:name"), "{err}");
    assert!(!Path::new("/sys/fs/cgroup/buntime/sdpath").exists());
    env.assert_gone("sdpath");
}

#[test]
fn systemd_scope_through_the_whole_lifecycle() {
    if !need_systemd_v2() {
        return;
    }
    let env = Env::new();
    let id = "sdlife";
    let unit = "buntime-test-sdlife.scope";
    let dir = PathBuf::from("/sys/fs/cgroup/system.slice").join(unit);
    let bundle = env.bundle(
        "b",
        &[
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done",
        ],
        &[],
    );
    set_cgroups_path(&bundle, "system.slice:buntime-test:sdlife");
    let b = bundle.to_str().unwrap_or_default();
    let sd = |args: &[&str]| {
        let mut all = vec!["--systemd-cgroup"];
        all.extend_from_slice(args);
        env.ok(&all)
    };

    sd(&["create", "--bundle", b, id]);
    sd(&["start", id]);
    env.wait_status(id, "running");
    let init = i64::from(env.pid(id));
    // The init is in the scope systemd made, and systemd knows the unit.
    assert_eq!(
        proc_cgroup(init),
        format!("0::/system.slice/{unit}"),
        "init's cgroup"
    );
    assert_eq!(systemctl_show(unit, "ActiveState"), "active");
    // The supervisor's work is charged to the container's scope.
    let meta = read(&env.root.join(".buntime").join(id).join("buntime.json"));
    let meta: serde_json::Value = serde_json::from_str(&meta).expect("meta");
    let sup = meta["supervisorPid"].as_i64().expect("a supervisor");
    assert_eq!(proc_cgroup(sup), proc_cgroup(init), "supervisor's cgroup");

    // exec: the new process joins the scope.
    sd(&["exec", "-d", id, "sleep", "1001"]);
    let found = wait_until(Duration::from_secs(20), || {
        let pids: Vec<i64> =
            serde_json::from_str(&sd(&["ps", "--format", "json", id])).unwrap_or_default();
        pids.iter().any(|p| {
            read(Path::new(&format!("/proc/{p}/cmdline"))).contains("1001")
                && proc_cgroup(*p) == format!("0::/system.slice/{unit}")
        })
    });
    assert!(found, "exec'd sleep not in {unit}");

    // update: the limits land in the scope's cgroup.
    sd(&["update", "--memory", "64m", "--pids-limit", "50", id]);
    assert_eq!(
        read(&dir.join("memory.max")).trim(),
        (64u64 << 20).to_string()
    );
    assert_eq!(read(&dir.join("pids.max")).trim(), "50");

    // pause/resume freeze the scope: the counter stops, then moves on.
    let counter = format!("/proc/{init}/root/tmp/count");
    let count = || read(Path::new(&counter)).trim().parse::<u64>().unwrap_or(0);
    assert!(wait_until(Duration::from_secs(20), || count() > 2));
    sd(&["pause", id]);
    assert_eq!(env.status(id), "paused");
    assert_eq!(read(&dir.join("cgroup.freeze")).trim(), "1");
    let frozen_at = count();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count(), frozen_at, "counter moved while paused");
    sd(&["resume", id]);
    assert_eq!(env.status(id), "running");
    assert!(wait_until(Duration::from_secs(20), || count() > frozen_at));

    // events: stats from the scope's cgroup.
    let out = sd(&["events", "--stats", id]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON event");
    assert_eq!(v["type"], "stats");
    assert!(
        v["data"]["pids"]["current"].as_u64().unwrap_or(0) >= 2,
        "{v}"
    );
    // The limit `update` set, read back from the scope.
    assert_eq!(v["data"]["pids"]["limit"].as_u64(), Some(50), "{v}");

    // delete: the scope is stopped and gone.
    sd(&["delete", "--force", id]);
    assert!(
        wait_until(Duration::from_secs(20), || !dir.exists()),
        "{} left behind",
        dir.display()
    );
    assert_ne!(systemctl_show(unit, "ActiveState"), "active");
    env.assert_gone(id);
}

/// A container whose init exits on its own: systemd removes its scope
/// once the last process (the supervisor's winding down included) has
/// left, and containerd's shim then still runs `kill --all ID KILL`
/// before `delete` (CRI's exit handling). Both succeed: nothing is left
/// to signal, and the scope is already gone.
#[test]
fn systemd_scope_gone_after_exit_kill_all_and_delete_succeed() {
    if !need_systemd_v2() {
        return;
    }
    let env = Env::new();
    let id = "sdexit";
    let unit = "buntime-test-sdexit.scope";
    let dir = PathBuf::from("/sys/fs/cgroup/system.slice").join(unit);
    let bundle = env.bundle("b", &["sh", "-c", "sleep 1"], &[]);
    set_cgroups_path(&bundle, "system.slice:buntime-test:sdexit");
    let b = bundle.to_str().unwrap_or_default();
    let sd = |args: &[&str]| {
        let mut all = vec!["--systemd-cgroup"];
        all.extend_from_slice(args);
        env.ok(&all)
    };
    sd(&["create", "--bundle", b, id]);
    sd(&["start", id]);
    assert!(
        wait_until(Duration::from_secs(60), || env.status(id) == "stopped"),
        "{id} never stopped: {}",
        env.status(id)
    );
    assert!(
        wait_until(Duration::from_secs(60), || !dir.exists()),
        "systemd removes the emptied scope {}",
        dir.display()
    );
    sd(&["kill", "--all", id, "KILL"]);
    sd(&["delete", id]);
    assert_ne!(systemctl_show(unit, "ActiveState"), "active");
    env.assert_gone(id);
}
