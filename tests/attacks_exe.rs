//! Issue 18, finding 7: the runtime binary cannot be overwritten through
//! `/proc/PID/exe` (CVE-2019-5736) by a container, even under a policy that
//! grants read, write and exec of everything the container sees, including
//! a bind mount of the runtime's own directory.
//!
//! The attack runs against a copy of the built `buntime-runc` in a temp
//! directory, never the build itself. The container's image replaces a
//! program with `#!/proc/self/exe`, so `buntime-runc exec ID that-program`
//! makes the kernel run the runtime's binary inside the container. The
//! runtime is held there (its `--log` is a FIFO in the container) while the
//! host judges what the container could reach through `/proc/PID/exe`: it
//! must not be the host file, nor open for writing. A watcher in the
//! container also tries the classic reopen-for-write once the runtime has
//! exited. In the end the copy's sha256 must be what it was, and no mount
//! may be left on the host. Needs root.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use common::{read, wait_until, Env, RUNC};

fn sha256_file(p: &Path) -> String {
    let body = fs::read(p).expect("read binary copy");
    Sha256::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn edit_config(bundle: &Path, f: impl FnOnce(&mut Value)) {
    let file = bundle.join("config.json");
    let mut cfg: Value = serde_json::from_str(&read(&file)).expect("config.json");
    f(&mut cfg);
    fs::write(&file, serde_json::to_vec_pretty(&cfg).expect("encode")).expect("write");
}

/// Copies `bin`'s shared libraries (as `ldd` lists them) into the rootfs,
/// so the runtime's binary can run inside the container.
fn install_libs(bin: &Path, rootfs: &Path) {
    let out = Command::new("ldd").arg(bin).output().expect("ldd");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(lib) = line.split_whitespace().find(|w| w.starts_with('/')) {
            let lib = PathBuf::from(lib);
            let target = rootfs.join(lib.strip_prefix("/").expect("absolute"));
            fs::create_dir_all(target.parent().expect("parent")).expect("lib dir");
            fs::copy(&lib, &target).expect("copy lib");
        }
    }
}

/// The host pid whose command line has all of `needles`.
fn find_process(needles: &[&str]) -> Option<i32> {
    for e in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmd) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        if needles.iter().all(|n| args.contains(&n.as_bytes())) {
            return Some(pid);
        }
    }
    None
}

// The watcher, in the container: finds the runtime running there, holds
// its exe, waits for it to exit, then reopens it for writing. (Under
// Landlock, its ptrace scoping already keeps it from opening the exe of
// a process outside its own domain.)
const WATCHER: &str = r#"
watch() {
while :; do
  for p in /proc/[0-9]*; do
    case "$(tr '\0' ' ' < $p/cmdline 2>/dev/null)" in
      "/proc/self/exe "*features*)
        # A subshell: a failed `exec 3<` ends the shell it runs in.
        ( exec 3< $p/exe
          echo "watcher: holding exe of ${p#/proc/}"
          while [ -e $p ]; do sleep 0.05; done
          if printf PWNED > /proc/self/fd/3; then echo watcher: WRITE-OK; else echo watcher: write failed; fi
        ) || echo "watcher: cannot open exe"
        return;;
    esac
  done
  sleep 0.02
done
}
watch
# The init stays: its exit would end the container under the attack.
exec sleep 1000
"#;

/// Runs `bundle` detached as `id` with the runtime `copy`, under a policy
/// that reads and runs everything and writes `write`, with the runtime's
/// directory bound at /opt/rt (`bind`: "ro" or "rw"). The init's pid and
/// its log.
fn run_with_runtime_dir(
    env: &Env,
    copy: &Path,
    rt_dir: &Path,
    bundle: &Path,
    id: &str,
    write: &[&str],
    bind: &str,
) -> (i32, PathBuf) {
    let policy = json!({
        "version": 1,
        "description": "the runtime's directory in the container",
        "filesystem": { "read": ["/", "/opt/rt"], "write": write, "exec": ["/", "/opt/rt"] },
        "network": { "mode": "none" }
    });
    let rt = rt_dir.to_string_lossy().into_owned();
    edit_config(bundle, |c| {
        c["annotations"] = json!({ "buntime.dev/policy": policy.to_string() });
        if let Some(m) = c["mounts"].as_array_mut() {
            m.push(json!({
                "destination": "/opt/rt", "type": "bind", "source": rt,
                "options": ["rbind", bind]
            }));
        }
    });
    let log = env.dir.path().join(format!("{id}.log"));
    let f = fs::File::create(&log).expect("log");
    let ok = Command::new(copy)
        .arg("--root")
        .arg(&env.root)
        .args(["run", "-d", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(f.try_clone().expect("clone"))
        .stderr(f)
        .status()
        .expect("run")
        .success();
    assert!(ok, "run failed: {}", read(&log));
    (env.pid(id), log)
}

#[test]
fn runtime_binary_cannot_be_overwritten_through_proc_exe() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let env = Env::new();
    // The copy under attack, in a directory of its own.
    let rt_dir = env.dir.path().join("rt");
    fs::create_dir_all(&rt_dir).expect("rt dir");
    let copy = rt_dir.join("buntime-runc");
    // ATTACK_RUNTIME: another build to attack (e.g. an older one, to see
    // this test fail there).
    let source = std::env::var_os("ATTACK_RUNTIME").map_or(PathBuf::from(RUNC), PathBuf::from);
    fs::copy(&source, &copy).expect("copy runtime");
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).expect("chmod");
    let before = sha256_file(&copy);
    let copy_ino = fs::metadata(&copy).expect("stat copy").ino();

    let bundle = env.bundle("b", &["sh", "-c", WATCHER], &[]);
    let rootfs = bundle.join("rootfs");
    install_libs(&copy, &rootfs);
    fs::write(rootfs.join("bin/evil"), "#!/proc/self/exe --root\n").expect("evil");
    fs::set_permissions(rootfs.join("bin/evil"), fs::Permissions::from_mode(0o755))
        .expect("chmod evil");
    fs::create_dir_all(rootfs.join("opt/rt")).expect("mount point");
    // Grant everything, the runtime's directory (mounted read-only) too.
    let (init, log) = run_with_runtime_dir(
        &env,
        &copy,
        &rt_dir,
        &bundle,
        "exe",
        &["/", "/opt/rt"],
        "ro",
    );
    let runtime = |args: &[&str]| {
        let mut c = Command::new(&copy);
        c.arg("--root").arg(&env.root).args(args);
        c
    };
    let fifo = format!("/proc/{init}/root/tmp/fifo");
    nix::unistd::mkfifo(
        Path::new(&fifo),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("mkfifo in the container's /tmp");

    // The host's operator runs what the image calls a program.
    let out = env.dir.path().join("evil.log");
    let of = fs::File::create(&out).expect("out");
    let mut evil = runtime(&["exec", "exe", "/bin/evil", "--log", "/tmp/fifo", "features"])
        .stdin(Stdio::null())
        .stdout(of.try_clone().expect("clone"))
        .stderr(of)
        .spawn()
        .expect("exec");

    // Either the kernel refuses to run the (sealed) binary in the
    // container, or it runs there, blocked on the FIFO: judge its exe.
    let mut inside = None;
    let ran = wait_until(Duration::from_secs(10), || {
        inside = find_process(&["/proc/self/exe", "/bin/evil", "features"]);
        inside.is_some() || evil.try_wait().ok().flatten().is_some()
    });
    assert!(ran, "the exec neither ran nor failed");
    if let Some(pid) = inside {
        let exe = format!("/proc/{pid}/exe");
        let meta = fs::metadata(&exe).expect("stat the runtime's exe");
        assert!(
            meta.ino() != copy_ino || meta.dev() != fs::metadata(&copy).expect("stat").dev(),
            "the runtime in the container runs the host's binary itself"
        );
        // What the attack needs: writing through the magic link, once the
        // process is gone (while it runs, the kernel says ETXTBSY). So the
        // file itself must refuse writes: a memfd with every write seal, or
        // a file on a read-only mount.
        let f = fs::File::open(&exe).expect("open the runtime's exe");
        // SAFETY: F_GET_SEALS on a descriptor we own.
        let seals = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&f), libc::F_GET_SEALS) };
        let all = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        let ro = nix::sys::statvfs::fstatvfs(&f)
            .is_ok_and(|v| v.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
        assert!(
            (seals >= 0 && seals & all == all) || ro,
            "the runtime's exe, as the container reaches it, is neither sealed nor read-only (seals {seals:#x})"
        );
        // And the write itself (the byte written back is the one there, an
        // ELF's 0x7f, so a failure of this test changes nothing).
        let e = match fs::OpenOptions::new().write(true).open(&exe) {
            Err(e) => e.raw_os_error(),
            Ok(w) => {
                use std::os::unix::fs::FileExt;
                w.write_at(b"\x7f", 0).err().and_then(|e| e.raw_os_error())
            }
        };
        assert!(
            matches!(e, Some(libc::EROFS | libc::EPERM | libc::ETXTBSY)),
            "the runtime's exe, as the container reaches it, is writable ({e:?})"
        );
        // Let it go: open the FIFO's read end.
        let _reader = fs::File::open(&fifo).expect("open fifo");
        let _ = evil.wait();
    } else {
        eprintln!(
            "the container could not run the binary ({:?}): {}",
            evil.try_wait(),
            read(&out)
        );
    }
    let _ = evil.wait();
    // The watcher has had its chance once the runtime is gone.
    wait_until(Duration::from_secs(3), || read(&log).contains("watcher:"));
    let _ = runtime(&["delete", "--force", "exe"]).status();
    let watcher = read(&log);
    assert!(!watcher.contains("WRITE-OK"), "watcher wrote: {watcher}");
    assert_eq!(
        sha256_file(&copy),
        before,
        "the runtime binary was changed from inside the container; watcher: {watcher}; exec: {}",
        read(&out)
    );
    // Sealing leaves nothing on the host: no mount of the runtime's
    // directory, from this test or any other run.
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let rt = rt_dir.to_string_lossy().into_owned();
    assert!(
        !info
            .lines()
            .any(|l| l.contains(&rt) || l.contains("exeseal")),
        "mounts left behind: {info}"
    );
}

/// The other side of the decision: a policy that lets the container read
/// and run the runtime's directory, bound read-write even, but write only
/// elsewhere. Landlock refuses the write on the directory's inode, the one
/// a write through `/proc/PID/exe` is checked on too, so nothing is
/// re-executed: the runtime runs in the container from the host's file.
#[test]
fn without_a_write_rule_over_its_directory_landlock_refuses_the_write() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let env = Env::new();
    let rt_dir = env.dir.path().join("rt");
    fs::create_dir_all(&rt_dir).expect("rt dir");
    let copy = rt_dir.join("buntime-runc");
    fs::copy(RUNC, &copy).expect("copy runtime");
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).expect("chmod");
    let before = sha256_file(&copy);
    let script = "if printf PWNED >> /opt/rt/buntime-runc; then echo APPEND-OK; \
                  else echo append refused; fi; exec sleep 1000";
    let bundle = env.bundle("b", &["sh", "-c", script], &[]);
    let rootfs = bundle.join("rootfs");
    install_libs(&copy, &rootfs);
    fs::write(rootfs.join("bin/evil-rw"), "#!/proc/self/exe --root\n").expect("evil");
    fs::set_permissions(
        rootfs.join("bin/evil-rw"),
        fs::Permissions::from_mode(0o755),
    )
    .expect("chmod evil");
    fs::create_dir_all(rootfs.join("opt/rt")).expect("mount point");
    // Everything but writing the runtime (its directory bound read-write).
    let (init, log) = run_with_runtime_dir(&env, &copy, &rt_dir, &bundle, "rw", &["/tmp"], "rw");
    let runtime = |args: &[&str]| {
        let mut c = Command::new(&copy);
        c.arg("--root").arg(&env.root).args(args);
        c
    };
    wait_until(Duration::from_secs(5), || read(&log).contains("append"));
    let fifo = format!("/proc/{init}/root/tmp/fifo");
    nix::unistd::mkfifo(
        Path::new(&fifo),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("mkfifo in the container's /tmp");
    // Its own name: the other test's runtime runs at the same time.
    let out = env.dir.path().join("evil.log");
    let of = fs::File::create(&out).expect("out");
    let mut evil = runtime(&[
        "exec",
        "rw",
        "/bin/evil-rw",
        "--log",
        "/tmp/fifo",
        "features",
    ])
    .stdin(Stdio::null())
    .stdout(of.try_clone().expect("clone"))
    .stderr(of)
    .spawn()
    .expect("exec");
    let mut inside = None;
    let ran = wait_until(Duration::from_secs(10), || {
        inside = find_process(&["/proc/self/exe", "/bin/evil-rw", "features"]);
        inside.is_some() || evil.try_wait().ok().flatten().is_some()
    });
    let exe = inside.map(|pid| fs::metadata(format!("/proc/{pid}/exe")));
    if inside.is_some() {
        let _reader = fs::File::open(&fifo).expect("open fifo");
        let _ = evil.wait();
    }
    let _ = evil.wait();
    let _ = runtime(&["delete", "--force", "rw"]).status();
    assert!(
        ran && inside.is_some(),
        "the runtime did not run in the container: {}",
        read(&out)
    );
    let exe = exe.expect("found").expect("stat the runtime's exe");
    let host = fs::metadata(&copy).expect("stat copy");
    assert_eq!(
        (exe.dev(), exe.ino()),
        (host.dev(), host.ino()),
        "no write rule covers the runtime: it should not have been re-executed"
    );
    let init_log = read(&log);
    assert!(
        init_log.contains("append refused") && !init_log.contains("APPEND-OK"),
        "the container wrote the runtime's directory: {init_log}"
    );
    assert_eq!(sha256_file(&copy), before, "the runtime binary was changed");
}
