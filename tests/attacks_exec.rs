//! Issue 19, findings 1-3: a process started with `exec` (argv form,
//! `--process`, podman's exec and `exec --privileged`) gets exactly what the
//! container's init gets from the policy — capability sets, uid/gid, rlimits,
//! the env filter, no_new_privs, seccomp and cgroup — judged from the host
//! through /proc/<pid>/{status,limits,environ,cgroup} of the exec'd process.
//! Needs root (and podman for the podman test).

mod common;
mod engines;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use common::text;
use common::{read, wait_until, Env};

/// A narrow policy: busybox in /bin, /proc readable, /tmp writable, no
/// network, 333 open files, a small env allow-list.
fn policy() -> Value {
    json!({
        "version": 1,
        "description": "attacks_exec test policy",
        "filesystem": {
            "read": ["/bin", "/proc", "/etc"],
            "write": ["/tmp", "/dev/null"],
            "exec": ["/bin"]
        },
        "network": { "mode": "none" },
        "env": { "pass": ["PATH", "LANG"], "set": { "TMPDIR": "/tmp" } },
        "resources": { "open_files": 333 }
    })
}

fn edit_config(bundle: &Path, f: impl FnOnce(&mut Value)) {
    let file = bundle.join("config.json");
    let mut cfg: Value = serde_json::from_str(&read(&file)).expect("config.json is JSON");
    f(&mut cfg);
    fs::write(&file, serde_json::to_vec_pretty(&cfg).expect("encode")).expect("write");
}

/// A running busybox container `id` (init sleeps) under [`policy`];
/// `edit` changes the bundle's config first.
fn container(env: &Env, id: &str, edit: impl FnOnce(&mut Value)) {
    let bundle = env.bundle(id, &["sleep", "1000"], &[]);
    edit_config(&bundle, |c| {
        c["annotations"] = json!({ "buntime.dev/policy": policy().to_string() });
        edit(c);
    });
    env.run_detached(id, &bundle);
    env.wait_status(id, "running");
}

fn both(o: &Output) -> String {
    format!(
        "[exit {:?}]\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    )
}

/// `buntime-runc exec -d --pid-file … ARGS`, run by a caller whose own
/// limits are generous (RLIMIT_NOFILE 20000, RLIMIT_CORE soft 0 hard
/// unlimited), so an exec'd process that inherits them is seen. Returns the
/// exec'd process's host pid, or the failed output.
fn exec_detached(env: &Env, args: &[&str]) -> Result<i32, Output> {
    let pid_file = env.dir.path().join(format!(
        "exec-{}.pid",
        engines::unique("p").replace('-', "")
    ));
    let err = env.dir.path().join("exec.stderr");
    let mut cmd = env.cmd();
    cmd.arg("exec")
        .arg("-d")
        .arg("--pid-file")
        .arg(&pid_file)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err).expect("stderr file"));
    // SAFETY: setrlimit is async-signal-safe; nothing else runs here.
    unsafe {
        cmd.pre_exec(|| {
            let set = |res, soft, hard| {
                let r = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                if libc::setrlimit(res, &r) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            };
            set(libc::RLIMIT_NOFILE, 20000, 20000)?;
            set(libc::RLIMIT_CORE, 0, libc::RLIM_INFINITY)
        });
    }
    let status = cmd.status().expect("run buntime-runc exec");
    let out = Output {
        status,
        stdout: Vec::new(),
        stderr: fs::read(&err).unwrap_or_default(),
    };
    if !status.success() {
        return Err(out);
    }
    let pid = read(&pid_file).trim().parse::<i32>();
    match pid {
        Ok(p) if p > 0 => Ok(p),
        _ => panic!("exec wrote no pid file: {}", both(&out)),
    }
}

fn exec_ok(env: &Env, args: &[&str]) -> i32 {
    exec_detached(env, args).unwrap_or_else(|o| panic!("exec {args:?} failed: {}", both(&o)))
}

/// A field of /proc/<pid>/status.
fn status_field(pid: i32, name: &str) -> String {
    let status = read(Path::new(&format!("/proc/{pid}/status")));
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status: {status}"))
}

const CAP_FIELDS: [&str; 5] = ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"];

/// The five capability sets of `pid`, as the kernel reports them.
fn caps(pid: i32) -> Vec<(&'static str, u64)> {
    CAP_FIELDS
        .iter()
        .map(|f| {
            let hex = status_field(pid, f);
            (
                *f,
                u64::from_str_radix(&hex, 16).expect("hex capability set"),
            )
        })
        .collect()
}

fn assert_no_caps(who: &str, pid: i32) {
    let c = caps(pid);
    assert!(
        c.iter().all(|(_, v)| *v == 0),
        "{who} (pid {pid}) has capabilities: {c:x?}"
    );
}

/// (soft, hard) of a /proc/<pid>/limits line such as "Max open files".
fn limit(pid: i32, name: &str) -> (String, String) {
    let limits = read(Path::new(&format!("/proc/{pid}/limits")));
    let line = limits
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name:?} in /proc/{pid}/limits: {limits}"));
    let mut f = line[name.len()..].split_whitespace();
    (
        f.next().unwrap_or_default().to_string(),
        f.next().unwrap_or_default().to_string(),
    )
}

fn environ(pid: i32) -> Vec<String> {
    let raw = fs::read(format!("/proc/{pid}/environ")).expect("read environ");
    raw.split(|b| *b == 0)
        .filter(|e| !e.is_empty())
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .collect()
}

/// The container's pids (init and anything exec'd), from `ps`.
fn container_pids(env: &Env, id: &str) -> Vec<i64> {
    let out = env.ok(&["ps", "--format", "json", id]);
    serde_json::from_str(&out).expect("ps json")
}

/// A refused exec leaves nothing: no process, no process file.
fn assert_nothing_left(env: &Env, id: &str) {
    assert_eq!(container_pids(env, id).len(), 1, "only init runs in {id}");
    let state = env.root.join(".buntime").join(id);
    let files: Vec<PathBuf> = fs::read_dir(&state)
        .expect("state dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("exec-"))
        })
        .collect();
    assert!(files.is_empty(), "exec files left behind: {files:?}");
}

fn write_process(env: &Env, name: &str, process: &Value) -> String {
    let p = env.dir.path().join(name);
    fs::write(&p, serde_json::to_vec(process).expect("encode")).expect("write process.json");
    p.to_string_lossy().into_owned()
}

const ATTACK_CAPS: [&str; 5] = [
    "CAP_SYS_ADMIN",
    "CAP_SYS_PTRACE",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_MKNOD",
];

// 1. Capabilities.

#[test]
fn exec_cap_is_refused_and_exec_gets_inits_capabilities() {
    let env = Env::new();
    container(&env, "caps", |_| {});
    let init = env.pid("caps");
    assert_no_caps("init", init);

    // An explicit --cap beyond init's: refused, naming policy and field.
    let out = exec_detached(
        &env,
        &[
            "--cap",
            "CAP_SYS_ADMIN",
            "--cap",
            "CAP_DAC_OVERRIDE",
            "caps",
            "sleep",
            "1001",
        ],
    )
    .expect_err("--cap CAP_SYS_ADMIN must be refused");
    let err = text(&out.stderr);
    assert!(
        err.contains("exec refused by policy annotation buntime.dev/policy")
            && err.contains("capabilities")
            && err.contains("CAP_SYS_ADMIN"),
        "{}",
        both(&out)
    );
    assert_nothing_left(&env, "caps");
    // kallsyms through CAP_SYSLOG: refused the same way.
    let out = env.runc(&[
        "exec",
        "--cap",
        "CAP_SYSLOG",
        "caps",
        "cat",
        "/proc/kallsyms",
    ]);
    assert!(!out.status.success(), "{}", both(&out));
    assert!(text(&out.stderr).contains("CAP_SYSLOG"), "{}", both(&out));

    // Without --cap: init's sets, all empty.
    let pid = exec_ok(&env, &["caps", "sleep", "1002"]);
    assert_eq!(caps(pid), caps(init), "exec'd process has init's sets");
    assert_no_caps("exec", pid);
}

#[test]
fn exec_process_capabilities_are_cut_to_inits() {
    let env = Env::new();
    container(&env, "pcaps", |_| {});
    let all: Vec<&str> = ATTACK_CAPS.to_vec();
    let process = json!({
        "terminal": false,
        "user": { "uid": 0, "gid": 0 },
        "args": ["sleep", "1003"],
        "env": ["PATH=/bin"],
        "cwd": "/",
        "capabilities": {
            "bounding": all, "effective": all, "permitted": all,
            "inheritable": all, "ambient": all
        },
        "noNewPrivileges": false
    });
    let file = write_process(&env, "caps.json", &process);
    let pid = exec_ok(&env, &["--process", &file, "pcaps"]);
    assert_no_caps("exec --process with SYS_ADMIN…", pid);
    assert_eq!(status_field(pid, "NoNewPrivs"), "1", "init's no_new_privs");

    // A process object without capabilities gets init's, not the runtime's.
    let mut bare = process.clone();
    if let Some(o) = bare.as_object_mut() {
        o.remove("capabilities");
        o.insert("args".into(), json!(["sleep", "1004"]));
    }
    let file = write_process(&env, "bare.json", &bare);
    let pid = exec_ok(&env, &["--process", &file, "pcaps"]);
    assert_no_caps("exec --process without capabilities", pid);

    // --cap next to --process is still an explicit request: refused.
    let out = exec_detached(&env, &["--cap", "CAP_MKNOD", "--process", &file, "pcaps"])
        .expect_err("--cap with --process must be refused");
    assert!(text(&out.stderr).contains("CAP_MKNOD"), "{}", both(&out));
}

/// The attack: under a policy that grants writes to `/`, an
/// exec'd process with CAP_SYS_ADMIN and CAP_MKNOD opened block devices in
/// its own devices cgroup. Judged on the host's devices.list.
#[test]
fn exec_cannot_open_devices_in_its_cgroup() {
    let env = Env::new();
    let bundle = env.bundle("dev", &["sleep", "1000"], &[]);
    let mut wide = policy();
    wide["filesystem"] = json!({ "read": ["/"], "write": ["/"], "exec": ["/bin"] });
    edit_config(&bundle, |c| {
        c["annotations"] = json!({ "buntime.dev/policy": wide.to_string() });
        if let Some(m) = c["mounts"].as_array_mut() {
            m.push(json!({ "destination": "/sys/fs/cgroup", "type": "cgroup",
                           "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "rw"] }));
        }
    });
    env.run_detached("dev", &bundle);
    env.wait_status("dev", "running");
    let list = Path::new("/sys/fs/cgroup/devices/buntime/dev/devices.list");
    let before = read(list);
    assert!(
        !before.is_empty(),
        "no devices cgroup at {}",
        list.display()
    );
    assert!(!before.contains("b 254:* rwm"), "{before}");
    let attack = "echo 'b 254:* rwm' > /sys/fs/cgroup/devices/devices.allow; echo rc=$?";

    let out = env.runc(&[
        "exec",
        "--cap",
        "CAP_SYS_ADMIN",
        "--cap",
        "CAP_MKNOD",
        "dev",
        "sh",
        "-c",
        attack,
    ]);
    assert!(
        !out.status.success(),
        "--cap must be refused: {}",
        both(&out)
    );
    let all: Vec<&str> = ATTACK_CAPS.to_vec();
    let file = write_process(
        &env,
        "dev.json",
        &json!({
            "user": { "uid": 0, "gid": 0 }, "args": ["sh", "-c", attack], "cwd": "/",
            "env": ["PATH=/bin"],
            "capabilities": { "bounding": all, "effective": all, "permitted": all,
                              "inheritable": all, "ambient": all }
        }),
    );
    let out = env.runc(&["exec", "--process", &file, "dev"]);
    let said = text(&out.stdout);
    assert!(
        said.contains("rc=") && !said.contains("rc=0"),
        "{}",
        both(&out)
    );
    assert_eq!(read(list), before, "devices.list changed: {}", both(&out));
}

// 2. User.

#[test]
fn exec_runs_as_the_spec_user() {
    let env = Env::new();
    container(&env, "user", |c| {
        c["process"]["user"] = json!({ "uid": 1000, "gid": 1000, "additionalGids": [1234] });
    });
    let init = env.pid("user");
    assert_eq!(status_field(init, "Uid"), "1000\t1000\t1000\t1000");

    let out = env.runc(&["exec", "user", "id"]);
    assert!(out.status.success(), "{}", both(&out));
    let id = text(&out.stdout);
    assert!(id.contains("uid=1000") && id.contains("gid=1000"), "{id}");
    assert!(id.contains("1234"), "the spec's additionalGids: {id}");

    let pid = exec_ok(&env, &["user", "sleep", "1005"]);
    assert_eq!(status_field(pid, "Uid"), "1000\t1000\t1000\t1000");
    assert_eq!(status_field(pid, "Gid"), "1000\t1000\t1000\t1000");
    assert_eq!(status_field(pid, "Groups"), "1234");

    // --user UID keeps the spec's gid (runc); UID:GID sets both.
    let pid = exec_ok(&env, &["--user", "1001", "user", "sleep", "1006"]);
    assert_eq!(status_field(pid, "Uid"), "1001\t1001\t1001\t1001");
    assert_eq!(status_field(pid, "Gid"), "1000\t1000\t1000\t1000");
    let pid = exec_ok(&env, &["--user", "1002:1003", "user", "sleep", "1007"]);
    assert_eq!(status_field(pid, "Gid"), "1003\t1003\t1003\t1003");
    assert_no_caps("exec --user", pid);
}

// 3. Limits, env and the rest of init's confinement.

#[test]
fn exec_gets_the_policy_rlimits_not_the_callers() {
    let env = Env::new();
    container(&env, "lim", |_| {});
    let init = env.pid("lim");
    let want_files = ("333".to_string(), "333".to_string());
    let want_core = ("0".to_string(), "0".to_string());
    assert_eq!(limit(init, "Max open files"), want_files);
    assert_eq!(limit(init, "Max core file size"), want_core);

    let pid = exec_ok(&env, &["lim", "sleep", "1008"]);
    assert_eq!(limit(pid, "Max open files"), want_files, "argv exec");
    assert_eq!(limit(pid, "Max core file size"), want_core, "argv exec");

    // A process object asking for more, and one asking for nothing.
    let asks = json!({
        "user": { "uid": 0, "gid": 0 }, "args": ["sleep", "1009"], "cwd": "/",
        "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 99999, "soft": 99999 },
                    { "type": "RLIMIT_CORE", "hard": 1000000, "soft": 1000000 }]
    });
    let file = write_process(&env, "rl.json", &asks);
    let pid = exec_ok(&env, &["--process", &file, "lim"]);
    assert_eq!(
        limit(pid, "Max open files"),
        want_files,
        "--process asking more"
    );
    assert_eq!(
        limit(pid, "Max core file size"),
        want_core,
        "--process asking more"
    );
    let silent = json!({ "user": { "uid": 0, "gid": 0 }, "args": ["sleep", "1010"], "cwd": "/" });
    let file = write_process(&env, "none.json", &silent);
    let pid = exec_ok(&env, &["--process", &file, "lim"]);
    assert_eq!(
        limit(pid, "Max open files"),
        want_files,
        "--process without rlimits"
    );
    assert_eq!(
        limit(pid, "Max core file size"),
        want_core,
        "--process without rlimits"
    );
}

#[test]
fn exec_env_goes_through_the_policy_env_rules() {
    let env = Env::new();
    container(&env, "envf", |c| {
        c["process"]["env"] = json!(["PATH=/bin", "LANG=C", "SECRET_TOKEN=from-image"]);
    });
    let init = env.pid("envf");
    assert!(!environ(init).iter().any(|e| e.starts_with("SECRET_TOKEN=")));

    // --env a variable the policy does not pass: refused, naming env.pass.
    let out = exec_detached(
        &env,
        &["--env", "LD_PRELOAD=/tmp/x.so", "envf", "sleep", "1011"],
    )
    .expect_err("--env LD_PRELOAD must be refused");
    let err = text(&out.stderr);
    assert!(
        err.contains("env.pass") && err.contains("LD_PRELOAD"),
        "{}",
        both(&out)
    );
    assert_nothing_left(&env, "envf");
    // A variable env.set fixes cannot be changed either.
    let out = exec_detached(&env, &["--env", "TMPDIR=/dev/shm", "envf", "sleep", "1012"])
        .expect_err("--env TMPDIR must be refused");
    assert!(text(&out.stderr).contains("env.set"), "{}", both(&out));

    // A passed one goes through, next to init's environment.
    let pid = exec_ok(&env, &["--env", "LANG=C.UTF-8", "envf", "sleep", "1013"]);
    let e = environ(pid);
    assert!(e.contains(&"LANG=C.UTF-8".to_string()), "{e:?}");
    assert!(e.contains(&"TMPDIR=/tmp".to_string()), "{e:?}");
    assert!(!e.iter().any(|v| v.starts_with("SECRET_TOKEN=")), "{e:?}");

    // A process object's environment is filtered like init's.
    let p = json!({
        "user": { "uid": 0, "gid": 0 }, "args": ["sleep", "1014"], "cwd": "/",
        "env": ["PATH=/bin", "LD_PRELOAD=/tmp/x.so", "LD_LIBRARY_PATH=/tmp",
                "SECRET_TOKEN=x", "LANG=C", "TMPDIR=/dev/shm"]
    });
    let file = write_process(&env, "env.json", &p);
    let pid = exec_ok(&env, &["--process", &file, "envf"]);
    let e = environ(pid);
    for bad in [
        "LD_PRELOAD=",
        "LD_LIBRARY_PATH=",
        "SECRET_TOKEN=",
        "TMPDIR=/dev/shm",
    ] {
        assert!(!e.iter().any(|v| v.starts_with(bad)), "{bad} passed: {e:?}");
    }
    assert!(e.contains(&"LANG=C".to_string()), "{e:?}");
    assert!(e.contains(&"TMPDIR=/tmp".to_string()), "{e:?}");
    // What the runtime gave init (the supervisor's sockets) exec gets too.
    let runtime_vars = |env: Vec<String>| -> Vec<String> {
        let mut v: Vec<String> = env
            .into_iter()
            .filter(|v| v.starts_with("BUNTIME_"))
            .collect();
        v.sort();
        v
    };
    let from_init = runtime_vars(environ(init));
    assert!(!from_init.is_empty(), "init has the supervisor's variables");
    assert_eq!(runtime_vars(e), from_init);
}

/// Verification rather than an attack: these already held before issue 19
/// (the executor applies them to every process); kept so they stay so.
#[test]
fn exec_has_inits_seccomp_nnp_and_cgroup() {
    let env = Env::new();
    container(&env, "conf", |_| {});
    let init = env.pid("conf");
    let cgroup = |pid: i32| read(Path::new(&format!("/proc/{pid}/cgroup")));
    let file = write_process(
        &env,
        "nnp.json",
        &json!({ "user": { "uid": 0, "gid": 0 }, "args": ["sleep", "1015"], "cwd": "/",
                 "env": ["PATH=/bin"], "noNewPrivileges": false }),
    );
    for (who, pid) in [
        ("argv", exec_ok(&env, &["conf", "sleep", "1016"])),
        ("--process", exec_ok(&env, &["--process", &file, "conf"])),
    ] {
        for f in ["NoNewPrivs", "Seccomp", "Seccomp_filters"] {
            assert_eq!(status_field(pid, f), status_field(init, f), "{who}: {f}");
        }
        assert_eq!(status_field(pid, "NoNewPrivs"), "1", "{who}");
        assert_eq!(status_field(pid, "Seccomp"), "2", "{who}");
        assert_eq!(cgroup(pid), cgroup(init), "{who}: init's cgroups");
    }
}

// podman: exec and healthchecks go through `exec --process`.

use engines::podman::{Podman, LIMIT};

/// Host pids whose command line is exactly `args`.
fn pids_running(args: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
                .filter(|pid| fs::read(format!("/proc/{pid}/cmdline")).ok() == Some(want.clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn podman_exec_and_privileged_exec_get_inits_capabilities() {
    let Some(p) = Podman::new(common::open_node) else {
        return;
    };
    let name = engines::unique("buntime-test-execcaps");
    let rootfs = p.rootfs.to_string_lossy().into_owned();
    let out = engines::run(
        p.cmd()
            .arg("run")
            .arg("-d")
            .arg("--cgroup-parent")
            .arg(&p.cgroup_parent)
            .args([
                "--ulimit",
                "nofile=20000:20000",
                "--ulimit",
                "nproc=32768:32768",
            ])
            .args(["--name", &name, "--network", "none", "--rootfs", &rootfs])
            .args(["sleep", "1000"]),
        LIMIT,
    );
    assert!(out.ok(), "podman run: {out:?}");
    let init: i32 = p
        .ok(&["inspect", "--format", "{{.State.Pid}}", &name])
        .trim()
        .parse()
        .expect("init pid");
    assert_no_caps("podman init", init);

    // Plain podman exec still works under the default policy.
    let out = p.podman(&["exec", &name, "sh", "-c", "echo exec-works; exit 3"]);
    assert_eq!(out.code(), 3, "{out:?}");
    assert!(out.stdout.contains("exec-works"), "{out:?}");

    let tag = (20000 + std::process::id() % 20000).to_string();
    for (flags, who) in [
        (&[][..], "podman exec"),
        (&["--privileged"][..], "podman exec --privileged"),
    ] {
        let secs = format!("{tag}{}", flags.len());
        let mut args = vec!["exec", "-d"];
        args.extend_from_slice(flags);
        args.extend([name.as_str(), "sleep", secs.as_str()]);
        p.ok(&args);
        let mut pids = Vec::new();
        assert!(
            wait_until(Duration::from_secs(10), || {
                pids = pids_running(&["sleep", &secs]);
                !pids.is_empty()
            }),
            "{who}: exec'd sleep {secs} never seen"
        );
        for pid in pids {
            assert_no_caps(who, pid);
            assert_eq!(status_field(pid, "NoNewPrivs"), "1", "{who}");
            assert_eq!(
                limit(pid, "Max core file size"),
                ("0".into(), "0".into()),
                "{who}"
            );
        }
    }

    // A healthcheck is an exec too: it passes only without capabilities.
    let hc = engines::unique("buntime-test-health");
    let out = engines::run(
        p.cmd()
            .arg("run")
            .arg("-d")
            .arg("--cgroup-parent")
            .arg(&p.cgroup_parent)
            .args([
                "--ulimit",
                "nofile=20000:20000",
                "--ulimit",
                "nproc=32768:32768",
            ])
            .args([
                "--health-cmd",
                "grep -q '^CapEff:.0000000000000000$' /proc/self/status",
                "--health-interval",
                "disable",
            ])
            .args(["--name", &hc, "--network", "none", "--rootfs", &rootfs])
            .args(["sleep", "1000"]),
        LIMIT,
    );
    assert!(out.ok(), "podman run with a healthcheck: {out:?}");
    let out = p.podman(&["healthcheck", "run", &hc]);
    assert!(
        out.ok(),
        "healthcheck saw capabilities (or failed): {out:?}"
    );
}
