//! Failures of the OCI runtime-tools suite that were buntime-runc's own
//! (docs/conformance.md), each through the built `buntime-runc` with a real
//! container. Needs root.

mod common;

use std::fs;
use std::path::Path;

use common::{read, Env};

/// Edits a bundle's config.json.
fn edit(bundle: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let cfg = bundle.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_str(&read(&cfg)).expect("spec");
    f(&mut spec);
    fs::write(&cfg, serde_json::to_string_pretty(&spec).expect("json")).expect("write");
}

/// The node default `make conformance` gives buntime-runc: grant
/// everything, so the bundle's own settings (no noNewPrivileges, its
/// seccomp profile alone) reach libcontainer.
fn grant_everything(env: &Env) {
    fs::write(
        env.etc().join("default.json"),
        r#"{"version":1,"filesystem":{"read":["/"],"write":["/"],"exec":["/"]},
"network":{"mode":"bundle"},"env":{"pass":["*"]},"landlock":"off"}"#,
    )
    .expect("write default.json");
}

fn oom_kill_disable(id: &str) -> String {
    let f = Path::new("/sys/fs/cgroup/memory/buntime")
        .join(id)
        .join("memory.oom_control");
    read(&f)
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill_disable ").map(str::to_string))
        .unwrap_or_else(|| panic!("no oom_kill_disable in {}", f.display()))
}

/// runtime-tools linux_cgroups_memory: `memory.disableOOMKiller` was
/// dropped (libcontainer passes `false` whatever the spec says), and an
/// `update` that does not mention it must not turn the OOM killer back on.
#[test]
fn disable_oom_killer_reaches_the_memory_cgroup() {
    if !Path::new("/sys/fs/cgroup/memory/memory.oom_control").exists() {
        // memory.oom_control is cgroup v1's; v2 has no such switch.
        assert!(
            std::env::var_os("BUNTIME_TEST_STRICT").is_none(),
            "no cgroup v1 memory hierarchy"
        );
        eprintln!("skipped: no cgroup v1 memory hierarchy");
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("b", &["sleep", "1000"], &[]);
    edit(&bundle, |s| {
        s["linux"]["resources"]["memory"] =
            serde_json::json!({"limit": 64u64 << 20, "disableOOMKiller": true});
    });
    env.run_detached("oom", &bundle);
    assert_eq!(oom_kill_disable("oom"), "1", "disableOOMKiller: true");
    env.ok(&["update", "--memory", "32m", "oom"]);
    assert_eq!(oom_kill_disable("oom"), "1", "kept across an update");
    env.ok(&["delete", "--force", "oom"]);
    env.assert_gone("oom");

    // Without the field the kernel's default stays: the OOM killer is on.
    let plain = env.bundle("p", &["sleep", "1000"], &[]);
    edit(&plain, |s| {
        s["linux"]["resources"]["memory"] = serde_json::json!({"limit": 64u64 << 20});
    });
    env.run_detached("plain", &plain);
    assert_eq!(oom_kill_disable("plain"), "0");
    env.ok(&["delete", "--force", "plain"]);
    env.assert_gone("plain");
}

/// runtime-tools linux_process_apparmor_profile on a host without AppArmor:
/// the error named neither the field nor the reason ("io error: No such
/// file or directory").
#[test]
fn an_apparmor_profile_without_apparmor_names_the_field() {
    let enabled = fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.starts_with('Y'));
    if enabled {
        // Then the profile is applied (or refused by AppArmor itself).
        eprintln!("skipped: AppArmor is enabled on this host");
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("b", &["true"], &[]);
    edit(&bundle, |s| {
        s["process"]["apparmorProfile"] = serde_json::json!("acme_default");
    });
    let b = bundle.to_str().unwrap_or_default();
    let err = env.fails(&["create", "--bundle", b, "aa"]);
    assert!(
        err.contains("/process/apparmorProfile")
            && err.contains("\"acme_default\"")
            && err.contains("AppArmor is not enabled on this host"),
        "{err}"
    );
    env.assert_gone("aa");
}

/// A kubelet's pause container asks for `oomScoreAdj: -998`; a runtime
/// without CAP_SYS_RESOURCE (this host) cannot lower it, and the error
/// said only "io error".
#[test]
fn an_oom_score_adj_below_ours_without_sys_resource_names_the_field() {
    let privileged = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_string()))
        })
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .is_some_and(|bits| bits & (1 << 24) != 0);
    if privileged {
        eprintln!("skipped: this runtime has CAP_SYS_RESOURCE");
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("b", &["true"], &[]);
    edit(&bundle, |s| {
        s["process"]["oomScoreAdj"] = serde_json::json!(-998);
    });
    let b = bundle.to_str().unwrap_or_default();
    let err = env.fails(&["create", "--bundle", b, "oom"]);
    assert!(
        err.contains("/process/oomScoreAdj")
            && err.contains("-998")
            && err.contains("CAP_SYS_RESOURCE"),
        "{err}"
    );
    env.assert_gone("oom");
}

/// A hook script at `dir/name` running `body`.
fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("script");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
    p
}

/// runtime-tools poststart_fail: a failing poststart hook failed `start`
/// and skipped the hooks after it; the spec says warn and go on as if it
/// had succeeded.
#[test]
fn a_failing_poststart_hook_warns_and_the_start_goes_on() {
    let env = Env::new();
    let out = env.dir.path().join("after.out");
    let fail = script(env.dir.path(), "fail.sh", "echo failing >&2\nexit 3");
    let after = script(
        env.dir.path(),
        "after.sh",
        &format!("echo ran >> {}", out.display()),
    );
    let bundle = env.bundle("b", &["sleep", "30"], &[]);
    edit(&bundle, |s| {
        s["hooks"] = serde_json::json!({"poststart": [{"path": fail}, {"path": after}]});
    });
    env.create_logged("pst", &bundle, &env.dir.path().join("pst.log"));
    let start = env.runc(&["start", "pst"]);
    assert!(start.status.success(), "{}", common::show(&start));
    let err = common::text(&start.stderr);
    assert!(
        err.contains("level=warning") && err.contains("poststart hook failed"),
        "{err}"
    );
    assert_eq!(env.status("pst"), "running");
    assert_eq!(read(&out), "ran\n", "the hook after the failing one");
    env.ok(&["delete", "--force", "pst"]);
    env.assert_gone("pst");
}

/// runtime-tools linux_seccomp: a profile that denies getcwd, without
/// noNewPrivileges (the filter is loaded before the capabilities are
/// dropped), failed the create: libcontainer checked its own cwd after
/// loading the container's filter.
#[test]
fn a_profile_denying_getcwd_without_no_new_privileges_runs() {
    let env = Env::new();
    grant_everything(&env);
    let bundle = env.bundle("b", &["sh", "-c", "pwd; echo end"], &[]);
    edit(&bundle, |s| {
        s["process"]["noNewPrivileges"] = serde_json::json!(false);
        s["linux"]["seccomp"] = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
            "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
        });
    });
    let b = bundle.to_str().unwrap_or_default();
    let run = env.runc(&["run", "--bundle", b, "gc"]);
    assert!(run.status.success(), "{}", common::show(&run));
    // The filter is the container's: its own getcwd is denied, so pwd
    // prints an empty line (it prints "/" without the filter).
    assert_eq!(
        common::text(&run.stdout),
        "\nend\n",
        "{}",
        common::show(&run)
    );
    env.assert_gone("gc");
}
