//! The default policy's seccomp profile and Landlock plan, applied to a real
//! shell in the order the runtime applies them (seccomp by libcontainer,
//! then Landlock in our executor): ordinary work succeeds, the rest is
//! refused by the kernel. Needs root (to load seccomp) and Landlock; skips
//! otherwise. Container-level tests come with the runtime.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use buntime::landlock::{kernel_abi, LandlockPlan};
use buntime::policy::builtin_run_default;
use buntime::spec::{effective_spec, HostLimits, SpecContext, SpecMode};
use libcontainer::oci_spec::runtime::Spec;

fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || kernel_abi().is_none() {
        // `make test` (hack/test.sh) counts a skip as a failure.
        assert!(
            std::env::var_os("BUNTIME_TEST_STRICT").is_none(),
            "needs root and a kernel with Landlock"
        );
        eprintln!("skipping: needs root and a kernel with Landlock");
        return false;
    }
    true
}

#[test]
fn default_policy_confines_a_shell() {
    if !can_run() {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("buntime-enforce")
        .tempdir_in("/tmp")
        .unwrap();
    let mut policy = builtin_run_default();
    policy.resolve_relative(Path::new("/"));
    let ctx = SpecContext {
        mode: SpecMode::Oci,
        host_limits: HostLimits::current(),
        proxy_port: None,
        host_env: None,
    };
    let spec = effective_spec(&policy, &Spec::default(), &ctx).unwrap();
    let seccomp = spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().clone())
        .expect("default profile");
    let plan = LandlockPlan::from_policy(&policy, &spec, None);
    let script = r#"
        echo hi > "$D/written" || exit 10
        cat /etc/passwd > /dev/null || exit 11
        ls /usr/bin > /dev/null || exit 12
        touch /usr/buntime-must-not-exist 2>/dev/null && exit 13
        ls /root > /dev/null 2>&1 && exit 14
        unshare -n true 2>/dev/null && exit 15
        if [ -x /usr/bin/python3 ]; then
            /usr/bin/python3 -c 'import socket; socket.socket(socket.AF_INET)' 2>/dev/null && exit 16
            /usr/bin/python3 -c 'import socket; socket.socket(socket.AF_UNIX)' || exit 17
        fi
        exit 0
    "#;
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(script).env("D", dir.path());
    // SAFETY: the closure runs in the forked child before exec and only
    // loads the filters.
    unsafe {
        cmd.pre_exec(move || {
            libcontainer::seccomp::initialize_seccomp(&seccomp)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            plan.apply()
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            Ok(())
        });
    }
    let status = cmd.status().expect("run the confined shell");
    assert_eq!(status.code(), Some(0), "confined shell failed a check");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("written")).unwrap(),
        "hi\n"
    );
    assert!(!Path::new("/usr/buntime-must-not-exist").exists());
}
