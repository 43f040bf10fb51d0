//! libbuntime_ipc.so is loaded into untrusted workers: it must carry the IPC
//! client and nothing of the runtime. Checked three ways: the crate's
//! dependency tree, the libraries the .so needs at load time, and the bytes
//! of the .so itself (Rust crates link statically, so their symbol names and
//! panic paths would show up there).

use std::path::PathBuf;
use std::process::Command;

/// Crates that belong to the runtime, never to the worker's client.
const FORBIDDEN: &[&str] = &["libcontainer", "libcgroups", "libseccomp", "tiny_http"];

/// The .so cargo built for this test run: target/<profile>/deps/ (where
/// this test binary is), or target/<profile>/ after a `cargo build`.
fn cdylib() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary has a directory");
    let here = deps.join("libbuntime_ipc.so");
    if here.exists() {
        return here;
    }
    deps.parent()
        .expect("deps/ has a parent")
        .join("libbuntime_ipc.so")
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn dependency_tree_has_no_runtime_crates() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--prefix",
            "none",
            "-e",
            "normal,build",
        ])
        .args(["-p", "buntime-ipc"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        tree.contains("buntime-ipc"),
        "unexpected cargo tree output:\n{tree}"
    );
    for line in tree.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        assert!(
            !FORBIDDEN.contains(&name) && name != "buntime",
            "buntime-ipc depends on {name}:\n{tree}"
        );
    }
}

#[test]
fn shared_library_needs_no_libseccomp() {
    let lib = cdylib();
    assert!(lib.exists(), "{} not built", lib.display());
    let out = Command::new("ldd").arg(&lib).output().expect("run ldd");
    assert!(out.status.success(), "ldd {} failed", lib.display());
    let needed = String::from_utf8_lossy(&out.stdout);
    assert!(
        needed.contains("libc.so"),
        "unexpected ldd output:\n{needed}"
    );
    assert!(
        !needed.contains("libseccomp"),
        "{} loads libseccomp:\n{needed}",
        lib.display()
    );
}

#[test]
fn shared_library_carries_no_runtime_code() {
    let lib = cdylib();
    let bytes = std::fs::read(&lib).unwrap_or_else(|e| panic!("read {}: {e}", lib.display()));
    // The check can see a crate at all: the client's own code is there.
    assert!(
        contains(&bytes, "bi_connect"),
        "no bi_connect in {}",
        lib.display()
    );
    assert!(
        contains(&bytes, "buntime_ipc"),
        "no buntime_ipc in {}",
        lib.display()
    );
    for name in FORBIDDEN {
        assert!(!contains(&bytes, name), "{} contains {name}", lib.display());
    }
}
