//! Issue 19, findings 5 and 7, as attacks from inside busybox containers
//! through `buntime-runc`, judged from the host.
//!
//! * Mounts keep their options: under a policy that grants writes to `/`,
//!   the container's `/proc/self/mountinfo` is compared with the effective
//!   spec libcontainer got (read-only root, each mount's `ro`/`rw` and the
//!   `nosuid`/`nodev`/`noexec` it asks for, the read-only paths, and the
//!   `ro` cgroup mount with every hierarchy under it); the container tries
//!   to raise its own `memory.limit_in_bytes` and `pids.max`, and the
//!   host's cgroup files must be unchanged.
//! * A deny mask is never placed through a symlink in the image: with
//!   `/etc/sudoers.d -> /run/buntime` (and `/etc/ssh` pointing at a path
//!   on the host) `create` fails naming the deny entry and the link, and
//!   nothing is mounted anywhere; the same image without that entry runs
//!   with its control socket in place.
//!
//! Needs root and cgroup v1 (the memory and pids hierarchies).

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use common::{read, wait_until, Env};

/// Edits the bundle's config.json with `f`.
fn edit_config(bundle: &Path, f: impl FnOnce(&mut Value)) {
    let file = bundle.join("config.json");
    let mut cfg: Value = serde_json::from_str(&read(&file)).expect("config.json is JSON");
    f(&mut cfg);
    fs::write(&file, serde_json::to_vec_pretty(&cfg).expect("encode")).expect("write config");
}

/// Sets `policy` as the bundle's inline annotation policy.
fn inline_policy(bundle: &Path, policy: &Value) {
    edit_config(bundle, |c| {
        c["annotations"] = json!({ "buntime.dev/policy": policy.to_string() });
    });
}

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone)]
struct MountLine {
    id: u64,
    parent: u64,
    point: String,
    /// Per-mount options (`ro`, `nosuid`, …), not the superblock's.
    opts: Vec<String>,
    fstype: String,
}

fn parse_mountinfo(text: &str) -> Vec<MountLine> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            Some(MountLine {
                id: f.first()?.parse().ok()?,
                parent: f.get(1)?.parse().ok()?,
                point: f.get(4)?.replace("\\040", " "),
                opts: f.get(5)?.split(',').map(str::to_string).collect(),
                fstype: right.split(' ').next()?.to_string(),
            })
        })
        .collect()
}

/// The mount a process sees at `point`: from the root down, at each
/// ancestor the mount attached to the one seen so far, then whatever is
/// mounted over it. Shadowed mounts (an over-mounted original) are never
/// returned.
fn visible<'a>(mounts: &'a [MountLine], point: &str) -> Option<&'a MountLine> {
    let ids: Vec<u64> = mounts.iter().map(|m| m.id).collect();
    let over = |cur: &'a MountLine, at: &str| -> &'a MountLine {
        let mut cur = cur;
        while let Some(m) = mounts
            .iter()
            .find(|m| m.point == at && m.parent == cur.id && m.id != cur.id)
        {
            cur = m;
        }
        cur
    };
    let root = mounts
        .iter()
        .find(|m| m.point == "/" && !ids.contains(&m.parent))?;
    let mut cur = over(root, "/");
    let mut at = PathBuf::from("/");
    for c in Path::new(point).components().skip(1) {
        at.push(c);
        let at = at.to_string_lossy();
        if let Some(m) = mounts.iter().find(|m| m.point == at && m.parent == cur.id) {
            cur = over(m, &at);
        }
    }
    (cur.point == point).then_some(cur)
}

fn spec_options(m: &Value) -> Vec<String> {
    m["options"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|o| o.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The last of `ro`/`rw` wins, as in mount(8).
fn spec_readonly(opts: &[String]) -> bool {
    opts.iter()
        .rev()
        .find(|o| *o == "ro" || *o == "rw")
        .is_some_and(|o| o == "ro")
}

/// The host's cgroup file `file` of hierarchy `ctl` for process `pid`.
fn host_cgroup_file(pid: i32, ctl: &str, file: &str) -> PathBuf {
    let text = read(Path::new(&format!("/proc/{pid}/cgroup")));
    let path = text
        .lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctls, path) = (f.next()?, f.next()?, f.next()?);
            ctls.split(',').any(|c| c == ctl).then(|| path.to_string())
        })
        .unwrap_or_else(|| panic!("no {ctl} cgroup for pid {pid} in:\n{text}"));
    Path::new("/sys/fs/cgroup")
        .join(ctl)
        .join(path.trim_start_matches('/'))
        .join(file)
}

const ATTACK: &str = r#"
echo BEGIN-MOUNTINFO
cat /proc/self/mountinfo
echo END-MOUNTINFO
try() { if sh -c "$2" 2>/tmp/err; then echo "WROTE $1"; else echo "REFUSED $1: $(cat /tmp/err)"; fi; }
try pids 'echo max > /sys/fs/cgroup/pids/pids.max'
try memory 'echo 8589934592 > /sys/fs/cgroup/memory/memory.limit_in_bytes'
try memsw 'echo 8589934592 > /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes'
try tmpfs 'echo x > /sys/fs/cgroup/planted'
try mkdir 'mkdir /sys/fs/cgroup/pids/escape'
echo DONE
sleep 60
"#;

#[test]
fn the_cgroup_mount_stays_read_only_and_every_mount_keeps_its_options() {
    if !Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
        eprintln!("skipped: needs cgroup v1 with the memory hierarchy");
        return;
    }
    let env = Env::new();
    // Cgroups are named after the id: unique, so no other run collides.
    let id = format!("mnt-cg-{}", std::process::id());
    let id = id.as_str();
    let bundle = env.bundle("cg", &["sh", "-c", ATTACK], &[]);
    // What `buntime-runc spec`, podman and containerd put in a bundle.
    edit_config(&bundle, |c| {
        if let Some(m) = c["mounts"].as_array_mut() {
            m.push(json!({
                "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]
            }));
        }
    });
    // An annotation policy may grant writes to everything: only the mount
    // options then stand between the container and its cgroup files.
    inline_policy(
        &bundle,
        &json!({
            "version": 1,
            "filesystem": { "read": ["/"], "write": ["/"], "exec": ["/bin"] },
            "network": { "mode": "none" },
            "resources": { "memory": "64MiB", "pids": 64 }
        }),
    );
    let log = env.dir.path().join("cg.log");
    env.create_logged(id, &bundle, &log);
    let pid = env.pid(id);
    let files = [
        host_cgroup_file(pid, "pids", "pids.max"),
        host_cgroup_file(pid, "memory", "memory.limit_in_bytes"),
    ];
    let before: Vec<String> = files.iter().map(|f| read(f)).collect();
    assert_eq!(before[0].trim(), "64", "{}", files[0].display());
    assert_eq!(before[1].trim(), (64u64 << 20).to_string());
    env.ok(&["start", id]);
    let done = wait_until(Duration::from_secs(20), || read(&log).contains("DONE"));
    let out = read(&log);
    assert!(done, "the attack never finished:\n{out}");

    // Judged on the host: the limits are what the policy set, and no
    // child cgroup was made (removed first, so that a failure leaves none).
    let after: Vec<String> = files.iter().map(|f| read(f)).collect();
    let escape = files[0].with_file_name("escape");
    let escaped = escape.exists();
    let _ = fs::remove_dir(&escape);
    assert!(!escaped, "a child cgroup was made:\n{out}");
    assert_eq!(before, after, "cgroup files changed:\n{out}");
    for what in ["pids", "memory", "memsw", "tmpfs", "mkdir"] {
        assert!(
            !out.contains(&format!("WROTE {what}")),
            "{what} was written:\n{out}"
        );
    }
    assert!(out.contains("REFUSED pids"), "{out}");

    // Every mount of the spec libcontainer got, as the container sees it.
    let spec: Value = serde_json::from_str(&read(
        &env.root.join(".buntime").join(id).join("config.json"),
    ))
    .expect("effective config.json");
    let info = out
        .split("BEGIN-MOUNTINFO\n")
        .nth(1)
        .and_then(|s| s.split("END-MOUNTINFO").next())
        .expect("mountinfo in the log");
    let mounts = parse_mountinfo(info);
    let mut checked: HashMap<String, bool> = HashMap::new();
    let root = visible(&mounts, "/").expect("a root mount");
    assert_eq!(
        root.opts.contains(&"ro".to_string()),
        spec["root"]["readonly"] == json!(true),
        "root: {root:?}"
    );
    for m in spec["mounts"].as_array().expect("mounts") {
        let dest = m["destination"].as_str().expect("destination");
        let opts = spec_options(m);
        let seen = visible(&mounts, dest).unwrap_or_else(|| panic!("{dest} not mounted:\n{info}"));
        let want_ro = spec_readonly(&opts);
        assert_eq!(
            seen.opts.contains(&"ro".to_string()),
            want_ro,
            "{dest}: spec {opts:?}, mounted {seen:?}"
        );
        for flag in ["nosuid", "nodev", "noexec"] {
            if opts.iter().any(|o| o == flag) {
                assert!(
                    seen.opts.iter().any(|o| o == flag),
                    "{dest}: spec has {flag}, mounted {seen:?}"
                );
            }
        }
        checked.insert(dest.to_string(), want_ro);
        if m["type"] == json!("cgroup") {
            // Every hierarchy the runtime put under it, too.
            let under: Vec<&MountLine> = mounts
                .iter()
                .filter(|l| Path::new(&l.point).starts_with(dest) && l.point != dest)
                .filter_map(|l| visible(&mounts, &l.point))
                .collect();
            assert!(
                under.iter().any(|l| l.fstype == "cgroup"),
                "no hierarchy under {dest}:\n{info}"
            );
            for l in under {
                assert!(
                    l.opts.contains(&"ro".to_string()),
                    "{} is not read-only: {l:?}",
                    l.point
                );
                for flag in ["nosuid", "nodev", "noexec"] {
                    assert!(l.opts.iter().any(|o| o == flag), "{}: {l:?}", l.point);
                }
            }
        }
    }
    assert_eq!(checked.get("/sys/fs/cgroup"), Some(&true));
    assert_eq!(checked.get("/run/buntime"), Some(&true));
    for p in spec["linux"]["readonlyPaths"]
        .as_array()
        .expect("readonlyPaths")
    {
        let p = p.as_str().expect("path");
        if let Some(seen) = visible(&mounts, p) {
            assert!(seen.opts.contains(&"ro".to_string()), "{p}: {seen:?}");
        }
    }
    env.ok(&["delete", "--force", id]);
    env.assert_gone(id);
}

/// A busybox bundle whose image has `/etc/sudoers.d -> /run/buntime` and
/// `/etc/ssh -> <host_dir>` (absolute, a path that exists on the host).
fn symlinked_image(env: &Env, name: &str, host_dir: &Path, script: &str) -> PathBuf {
    let bundle = env.bundle(name, &["sh", "-c", script], &[]);
    let etc = bundle.join("rootfs/etc");
    std::os::unix::fs::symlink("/run/buntime", etc.join("sudoers.d")).expect("link");
    std::os::unix::fs::symlink(host_dir, etc.join("ssh")).expect("link");
    fs::write(etc.join("sudoers"), "root ALL=(ALL) ALL\n").expect("sudoers");
    bundle
}

fn deny_policy(deny: &[&str]) -> Value {
    json!({
        "version": 1,
        "filesystem": { "read": ["/"], "write": ["/tmp"], "exec": ["/bin"], "deny": deny },
        "network": { "mode": "none" }
    })
}

#[test]
fn a_deny_mask_is_never_placed_through_a_symlink_in_the_image() {
    let env = Env::new();
    // A host directory the absolute link names, with a marker in it.
    let host_dir = env.dir.path().join("host-ssh");
    fs::create_dir(&host_dir).expect("host dir");
    fs::write(host_dir.join("marker"), "host").expect("marker");

    // Ids are unique: other runs' cgroups never collide.
    let unique = |name: &str| format!("mnt-{name}-{}", std::process::id());
    for (name, deny) in [("sudo", "/etc/sudoers.d"), ("ssh", "/etc/ssh")] {
        let id = unique(name);
        let id = id.as_str();
        let bundle = symlinked_image(&env, name, &host_dir, "ls -l /run/buntime");
        inline_policy(&bundle, &deny_policy(&["/etc/sudoers", deny]));
        let err = env.fails(&["create", "--bundle", bundle.to_str().expect("utf-8"), id]);
        assert!(
            err.contains(&format!("filesystem.deny \"{deny}\"")),
            "{err}"
        );
        assert!(err.contains("is a symlink in the image"), "{err}");
        env.assert_gone(id);
        // Nothing was mounted on the host's directory.
        let host_mounts = read(Path::new("/proc/self/mountinfo"));
        assert!(
            !host_mounts.contains(&host_dir.to_string_lossy().into_owned()),
            "{host_mounts}"
        );
        assert_eq!(read(&host_dir.join("marker")), "host");
    }
    // A deny path below the link is refused as well (its parent is the link).
    let below = unique("below");
    let bundle = symlinked_image(&env, "below", &host_dir, "true");
    inline_policy(&bundle, &deny_policy(&["/etc/sudoers.d/extra"]));
    let err = env.fails(&[
        "create",
        "--bundle",
        bundle.to_str().expect("utf-8"),
        &below,
    ]);
    assert!(err.contains("\"/etc/sudoers.d\" is a symlink"), "{err}");
    env.assert_gone(&below);

    // A pattern's directory that is a link in the image (`/etc/ssh` here,
    // pointing at a host directory): refused, not silently skipped.
    let pattern = unique("pattern");
    let bundle = symlinked_image(&env, "pattern", &host_dir, "true");
    inline_policy(&bundle, &deny_policy(&["/etc/ssh/ssh_host_*"]));
    let err = env.fails(&[
        "create",
        "--bundle",
        bundle.to_str().expect("utf-8"),
        &pattern,
    ]);
    assert!(err.contains("\"/etc/ssh\" is a symlink"), "{err}");
    env.assert_gone(&pattern);

    // The same image, the links not denied: the control socket is where the
    // worker looks for it, and the denied file is masked.
    let script = "ls /run/buntime/; cat /etc/sudoers && echo READ-SUDOERS; echo DONE";
    let ok = unique("ok");
    let bundle = symlinked_image(&env, "ok", &host_dir, script);
    inline_policy(&bundle, &deny_policy(&["/etc/sudoers"]));
    let log = env.dir.path().join("ok.log");
    env.create_logged(&ok, &bundle, &log);
    env.ok(&["start", &ok]);
    let done = wait_until(Duration::from_secs(20), || read(&log).contains("DONE"));
    let out = read(&log);
    assert!(done, "{out}");
    assert!(out.contains("control.sock"), "{out}");
    assert!(!out.contains("READ-SUDOERS"), "{out}");
    assert!(!out.contains("ALL=(ALL)"), "{out}");
    env.ok(&["delete", "--force", &ok]);
    env.assert_gone(&ok);
}

mod engines;

/// The same two attacks through `podman --runtime buntime` (its own
/// storage, run root and cgroup parent; see tests/engine_podman.rs).
#[test]
fn through_podman_the_cgroup_stays_read_only_and_a_symlinked_deny_fails() {
    if !engines::available("podman")
        || !Path::new("/sys/fs/cgroup/pids/pids.max").exists()
            && !Path::new("/sys/fs/cgroup/pids").is_dir()
    {
        return;
    }
    let Some(p) = engines::podman::Podman::new(common::open_node) else {
        return;
    };
    let rootfs = p.rootfs.clone();
    let cgroup_parent = p.cgroup_parent.clone();
    let podman = |args: &[&str]| p.podman(args);
    let run_args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["run", "--network", "none", "--cgroup-parent"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.push(cgroup_parent.clone());
        v.extend(
            [
                "--ulimit",
                "nofile=20000:20000",
                "--ulimit",
                "nproc=32768:32768",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    // The rest (processes, mounts, cgroups) when `p` is dropped.
    let cleanup = || {
        let _ = podman(&["rm", "--all", "--force", "--time", "0"]);
    };

    // 1. podman's own ro cgroup mount, a policy that writes everywhere.
    let policy = json!({
        "version": 1,
        "filesystem": { "read": ["/"], "write": ["/"], "exec": ["/bin"] },
        "network": { "mode": "none" },
        "resources": { "pids": 64 }
    })
    .to_string();
    // podman parses --annotation as CSV: quote it.
    let annotation = format!("\"buntime.dev/policy={}\"", policy.replace('"', "\"\""));
    let name = engines::unique("buntime-test-cg");
    let script = "echo max > /sys/fs/cgroup/pids/pids.max 2>&1 && echo WROTE pids; \
                  mkdir /sys/fs/cgroup/pids/escape 2>&1 && echo WROTE mkdir; \
                  echo DONE; sleep 60";
    let mut args = run_args(&["-d", "--name", &name, "--annotation", &annotation]);
    args.extend(
        [
            "--rootfs",
            rootfs.to_str().expect("utf-8"),
            "sh",
            "-c",
            script,
        ]
        .map(String::from),
    );
    let out = podman(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.ok(), "{out:?}");
    let logs = || podman(&["logs", &name]).stdout;
    let done = wait_until(Duration::from_secs(30), || logs().contains("DONE"));
    let text = logs();
    let pid: i32 = podman(&["inspect", "--format", "{{.State.Pid}}", &name])
        .stdout
        .trim()
        .parse()
        .unwrap_or(0);
    let pids_max = (pid > 0).then(|| host_cgroup_file(pid, "pids", "pids.max"));
    let seen = pids_max.as_ref().map(|f| read(f)).unwrap_or_default();
    let escape = pids_max.as_ref().map(|f| f.with_file_name("escape"));
    let escaped = escape.as_ref().is_some_and(|e| e.exists());
    if let Some(e) = &escape {
        let _ = fs::remove_dir(e);
    }
    cleanup();
    assert!(done && pid > 0, "{text}");
    assert_eq!(seen.trim(), "64", "the host's pids.max:\n{text}");
    assert!(!escaped, "a child cgroup was made:\n{text}");
    assert!(!text.contains("WROTE"), "{text}");
    assert!(text.contains("Read-only file system"), "{text}");

    // 2. The node's default policy (the strict shipped one here) denies
    // /etc/sudoers.d; the image links it
    // to /run/buntime: create fails and podman shows why.
    std::os::unix::fs::symlink("/run/buntime", rootfs.join("etc/sudoers.d")).expect("link");
    let mut args = run_args(&["--rm"]);
    args.extend(["--rootfs", rootfs.to_str().expect("utf-8"), "true"].map(String::from));
    let out = podman(&args.iter().map(String::as_str).collect::<Vec<_>>());
    cleanup();
    assert!(!out.ok(), "{out:?}");
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains("filesystem.deny \"/etc/sudoers.d\"") && all.contains("is a symlink"),
        "{all}"
    );
}
