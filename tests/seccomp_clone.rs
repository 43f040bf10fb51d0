//! The default seccomp profile's `clone` rule must refuse namespace flags in
//! init and in exec'd processes. libcontainer reads masked-equality
//! arguments in the opposite order from runc; unconverted, the rule matched
//! any flags and `clone(CLONE_NEWUSER)` succeeded. Needs root and gcc.

mod common;

use std::path::Path;
use std::process::Command;

use common::Env;

/// Builds the static test program into the bundle's /bin.
fn add_cloner(bundle: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cloner.c");
    let out = bundle.join("rootfs/bin/cloner");
    let status = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("run cc");
    assert!(status.success(), "cc -static failed (libc6-dev installed?)");
}

#[test]
fn clone_with_namespace_flags_is_refused_in_init_and_exec() {
    let env = Env::new();
    let bundle = env.bundle("b", &["/bin/cloner"], &[]);
    add_cloner(&bundle);
    let out = env.runc(&[
        "run",
        "--bundle",
        bundle.to_str().unwrap_or_default(),
        "cl1",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("clone-newuser: Operation not permitted"),
        "init: {text}"
    );
    assert!(text.contains("clone-plain: allowed"), "init: {text}");

    let bundle = env.bundle("b2", &["sleep", "1000"], &[]);
    add_cloner(&bundle);
    env.run_detached("cl2", &bundle);
    let text = env.ok(&["exec", "cl2", "/bin/cloner"]);
    assert!(
        text.contains("clone-newuser: Operation not permitted"),
        "exec: {text}"
    );
    assert!(text.contains("clone-plain: allowed"), "exec: {text}");
    env.ok(&["delete", "--force", "cl2"]);
    env.assert_gone("cl1");
    env.assert_gone("cl2");
}

/// Only the native ABI passes the filter: a 32-bit `int $0x80` call from
/// inside the sandbox is killed (SIGSYS), as is any foreign-ABI way
/// around the rules.
#[test]
#[cfg(target_arch = "x86_64")]
fn foreign_abi_system_calls_are_killed() {
    let env = Env::new();
    let bundle = env.bundle("b", &["/bin/int80"], &[]);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/int80.c");
    let status = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(bundle.join("rootfs/bin/int80"))
        .arg(&src)
        .status()
        .expect("run cc");
    assert!(status.success(), "cc -static failed");
    let out = env.runc(&[
        "run",
        "--bundle",
        bundle.to_str().unwrap_or_default(),
        "i80",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("before"), "{text}");
    assert!(!text.contains("int80: allowed"), "{text}");
    // 128 + SIGSYS (31).
    assert_eq!(out.status.code(), Some(159), "{text}");
    env.assert_gone("i80");
}

/// The profile runs as a precompiled program (the `state` annotation says
/// so), and `exec` refuses to start a process when a program is missing
/// rather than run it less confined.
#[test]
fn exec_needs_every_precompiled_program() {
    let env = Env::new();
    let bundle = env.bundle("b", &["sleep", "1000"], &[]);
    env.run_detached("sp1", &bundle);
    let state: serde_json::Value = serde_json::from_str(&env.ok(&["state", "sp1"])).unwrap();
    assert_eq!(
        state["annotations"]["buntime.dev/seccomp"], "bpf: seccomp.bpf",
        "{state}"
    );
    assert_eq!(env.ok(&["exec", "sp1", "echo", "ok"]), "ok\n");
    let program = env.root.join(".buntime/sp1/seccomp.bpf");
    std::fs::remove_file(&program).unwrap();
    let err = env.fails(&["exec", "sp1", "echo", "ok"]);
    assert!(err.contains("seccomp.bpf"), "{err}");
    env.ok(&["delete", "--force", "sp1"]);
    env.assert_gone("sp1");
}
