//! `make install` / `make uninstall` into a DESTDIR: what goes where, modes,
//! that the node's default policy is never overwritten (and survives
//! uninstall when changed), and that uninstall removes the rest. Uses the
//! binaries cargo built for the tests (NO_BUILD=1, TARGET_DIR), so no
//! release build is needed.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

fn have_make() -> bool {
    Command::new("make")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn make(target: &str, target_dir: &Path, destdir: &Path) -> String {
    let out = Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(MANIFEST_DIR)
        .arg(target)
        .arg("NO_BUILD=1")
        .arg(format!("TARGET_DIR={}", target_dir.display()))
        .arg(format!("DESTDIR={}", destdir.display()))
        .output()
        .expect("run make");
    assert!(
        out.status.success(),
        "make {target} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// A target dir with the test build's binaries and the C ABI library (the
/// real one when cargo built it, else a stand-in: only the copy is tested).
fn fake_target(dir: &Path) -> PathBuf {
    let t = dir.join("target");
    fs::create_dir_all(&t).expect("mkdir");
    fs::copy(env!("CARGO_BIN_EXE_buntime-runc"), t.join("buntime-runc")).expect("copy");
    fs::copy(env!("CARGO_BIN_EXE_buntime"), t.join("buntime")).expect("copy");
    fs::copy(
        env!("CARGO_BIN_EXE_buntime-supervisor"),
        t.join("buntime-supervisor"),
    )
    .expect("copy");
    let so = Path::new(env!("CARGO_BIN_EXE_buntime"))
        .parent()
        .map(|d| d.join("libbuntime_ipc.so"))
        .filter(|p| p.exists());
    match so {
        Some(so) => fs::copy(so, t.join("libbuntime_ipc.so")).map(|_| ()),
        None => fs::write(t.join("libbuntime_ipc.so"), b"stand-in"),
    }
    .expect("libbuntime_ipc.so");
    t
}

#[test]
fn make_install_and_uninstall_into_destdir() {
    if !have_make() {
        // `make test` (hack/test.sh) counts a skip as a failure.
        assert!(
            std::env::var_os("BUNTIME_TEST_STRICT").is_none(),
            "make not installed"
        );
        eprintln!("make not installed: skipped");
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("buntime-install-")
        .tempdir()
        .expect("tempdir");
    let target = fake_target(tmp.path());
    let dest = tmp.path().join("dest");
    make("install", &target, &dest);

    let bin = dest.join("usr/local/bin");
    for b in ["buntime-runc", "buntime", "buntime-supervisor"] {
        assert_eq!(mode(&bin.join(b)), 0o755, "{b}");
    }
    assert_eq!(mode(&dest.join("usr/local/lib/libbuntime_ipc.so")), 0o755);
    assert_eq!(
        fs::read(dest.join("usr/local/include/buntime_ipc.h")).expect("header"),
        fs::read(Path::new(MANIFEST_DIR).join("crates/buntime-ipc/include/buntime_ipc.h"))
            .expect("header"),
    );
    let etc = dest.join("etc/buntime");
    for p in ["default", "engine", "no-network", "strict", "python-dev"] {
        let installed = etc.join("policies").join(format!("{p}.json"));
        assert_eq!(mode(&installed), 0o644, "{p}");
    }
    assert!(
        !etc.join("policies/schema.json").exists(),
        "the schema is not a policy"
    );
    assert!(dest
        .join("usr/local/share/buntime/policy-schema.json")
        .exists());
    assert!(dest
        .join("usr/local/share/buntime/integration/podman/containers.conf")
        .exists());
    // The node default is the engine policy (buntime run keeps its own
    // strict default, built in).
    let shipped_engine =
        fs::read(Path::new(MANIFEST_DIR).join("policies/engine.json")).expect("engine");
    assert_eq!(
        fs::read(etc.join("default.json")).expect("default.json"),
        shipped_engine
    );

    // The installed binary runs.
    let v = Command::new(bin.join("buntime-runc"))
        .arg("--version")
        .output()
        .expect("run installed buntime-runc");
    assert!(v.status.success());

    // An admin's default.json survives a reinstall.
    let custom = b"{\"version\":1,\"description\":\"the admin's\"}\n";
    fs::write(etc.join("default.json"), custom).expect("write");
    let out = make("install", &target, &dest);
    assert!(out.contains("keeping existing"), "{out}");
    assert_eq!(fs::read(etc.join("default.json")).expect("read"), custom);

    // Uninstall: everything goes but the changed default.json.
    let out = make("uninstall", &target, &dest);
    assert!(out.contains("keeping modified"), "{out}");
    assert_eq!(fs::read(etc.join("default.json")).expect("read"), custom);
    assert!(!etc.join("policies").exists());
    for gone in [
        "usr/local/bin/buntime-runc",
        "usr/local/bin/buntime",
        "usr/local/bin/buntime-supervisor",
        "usr/local/lib/libbuntime_ipc.so",
        "usr/local/include/buntime_ipc.h",
        "usr/local/share/buntime",
    ] {
        assert!(!dest.join(gone).exists(), "{gone} left by uninstall");
    }

    // An unchanged default.json is removed by uninstall, and /etc/buntime
    // with it.
    fs::remove_file(etc.join("default.json")).expect("rm");
    make("install", &target, &dest);
    make("uninstall", &target, &dest);
    assert!(!etc.exists(), "/etc/buntime left behind");

    // A node that kept the strict default from an older install is told
    // where the engine default is; its file is not replaced.
    fs::create_dir_all(&etc).expect("mkdir etc");
    let strict = fs::read(Path::new(MANIFEST_DIR).join("policies/default.json")).expect("default");
    fs::write(etc.join("default.json"), &strict).expect("write");
    let out = make("install", &target, &dest);
    assert!(out.contains("policies/engine.json"), "{out}");
    assert_eq!(fs::read(etc.join("default.json")).expect("read"), strict);
}
