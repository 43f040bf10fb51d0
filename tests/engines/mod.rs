//! Shared helpers of the engine tests (podman, containerd): commands with a
//! deadline, busybox root filesystems, offline images, and cleanup of what
//! an engine leaves behind (cgroups, mounts, processes).
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const RUNC: &str = env!("CARGO_BIN_EXE_buntime-runc");
pub const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// The result of a command run with [`run`].
#[derive(Debug)]
pub struct Out {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }
    pub fn ok(&self) -> bool {
        self.status.success()
    }
}

/// Whether the engine tests can run here: root, and `tool` in PATH. A
/// missing tool fails the test (`make test` installs it) unless
/// `BUNTIME_SKIP_ENGINE_TESTS=1`, which skips them.
pub fn available(tool: &str) -> bool {
    if std::env::var("BUNTIME_SKIP_ENGINE_TESTS").as_deref() == Ok("1") {
        eprintln!("engine tests skipped (BUNTIME_SKIP_ENGINE_TESTS=1)");
        return false;
    }
    if !nix::unistd::geteuid().is_root() {
        // `make test` (hack/test.sh) counts a skip as a failure.
        assert!(
            std::env::var_os("BUNTIME_TEST_STRICT").is_none(),
            "engine tests need root"
        );
        eprintln!("engine tests need root: skipped");
        return false;
    }
    let found = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/usr/bin", "/sbin"])
        .any(|d| Path::new(d).join(tool).is_file());
    assert!(
        found,
        "{tool} is not installed: run hack/install-deps.sh (or set BUNTIME_SKIP_ENGINE_TESTS=1)"
    );
    true
}

/// Runs `cmd` with stdin from /dev/null and stdout/stderr in files (an
/// engine's daemonized helpers may keep a pipe open forever). Kills it and
/// panics after `limit`.
pub fn run(cmd: &mut Command, limit: Duration) -> Out {
    let out = tempfile::tempfile().expect("stdout file");
    let err = tempfile::tempfile().expect("stderr file");
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("clone"))
        .stderr(err.try_clone().expect("clone"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {desc}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "timed out after {limit:?}: {desc}\nstdout: {}\nstderr: {}",
                read_all(out),
                read_all(err)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Out {
        status,
        stdout: read_all(out),
        stderr: read_all(err),
    }
}

fn read_all(mut f: fs::File) -> String {
    let mut buf = Vec::new();
    let _ = f.seek(SeekFrom::Start(0));
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// A name no other test run uses: `prefix-<pid>-<n>-<nanos>`.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A scratch directory named `buntime-test-…` (hack/test.sh looks for
/// mounts with that name left behind).
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("buntime-test-")
        .tempdir()
        .expect("tempdir")
}

/// Makes `dir/rootfs`, a busybox root filesystem (hack/make-bundle.sh), and
/// returns its path.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let script = Path::new(MANIFEST_DIR).join("hack/make-bundle.sh");
    let out = run(
        Command::new("bash").arg(script).arg(dir),
        Duration::from_secs(60),
    );
    assert!(out.ok(), "make-bundle failed: {}", out.stderr);
    dir.join("rootfs")
}

/// Tars `rootfs` into `tar` (the layer of an offline image).
pub fn tar_rootfs(rootfs: &Path, tar: &Path) {
    let out = run(
        Command::new("tar")
            .arg("-C")
            .arg(rootfs)
            .arg("--numeric-owner")
            .arg("-cf")
            .arg(tar)
            .arg("."),
        Duration::from_secs(60),
    );
    assert!(out.ok(), "tar failed: {}", out.stderr);
}

/// Removes a cgroup subtree `rel` (like `/buntime-test-x`) from every v1
/// controller and the unified hierarchy, deepest first. Best effort.
pub fn remove_cgroup_tree(rel: &str) {
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        return;
    }
    for top in cgroups_left(rel) {
        remove_dirs_deepest_first(&top);
    }
}

fn remove_dirs_deepest_first(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_dirs_deepest_first(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// The cgroup directories left under `rel` in any hierarchy: each v1
/// controller's and the hybrid unified one (`/sys/fs/cgroup/*/rel`), or
/// the one hierarchy of a pure cgroup v2 host (`/sys/fs/cgroup/rel`).
pub fn cgroups_left(rel: &str) -> Vec<PathBuf> {
    let rel = rel.trim_start_matches('/');
    let mut left = Vec::new();
    if pure_cgroup_v2() {
        let p = Path::new("/sys/fs/cgroup").join(rel);
        if !rel.is_empty() && p.is_dir() {
            left.push(p);
        }
        return left;
    }
    if let Ok(ctls) = fs::read_dir("/sys/fs/cgroup") {
        for ctl in ctls.flatten() {
            let p = ctl.path().join(rel);
            if p.is_dir() {
                left.push(p);
            }
        }
    }
    left
}

/// Whether /sys/fs/cgroup is the cgroup v2 hierarchy itself (no v1
/// controllers, no hybrid layout).
pub fn pure_cgroup_v2() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&needle))
        .map(str::to_string)
        .collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.len()));
    v
}

/// Lazily unmounts everything at or below `dir`.
pub fn unmount_under(dir: &Path) {
    for m in mounts_under(dir) {
        let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Pids of processes whose command line mentions `needle`.
pub fn pids_mentioning(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut pids = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if pid == me {
                continue;
            }
            let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// SIGKILLs every process whose command line mentions `needle` (a test's
/// unique scratch path: only that test's helpers match).
pub fn kill_mentioning(needle: &str) {
    for pid in pids_mentioning(needle) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Polls `f` every 50 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// A node configuration (for `BUNTIME_ETC`) whose ceiling grants what the
/// engine tests' annotation policies ask for (host networking, broker
/// `allow`, 127.0.0.1 and ::1): without one, an annotation may not ask for more than the
/// built-in default (tests/attacks_annotations.rs). Its kernel isolation is
/// the shipped policies': annotation policies meet it.
pub fn open_node(etc: &Path) {
    std::fs::create_dir_all(etc).expect("etc dir");
    let open = etc.join("open.json");
    std::fs::write(
        &open,
        r#"{"version":1,"filesystem":{"read":["/"],"write":["/"],"exec":["/"]},
"network":{"mode":"host","allow":["*","0.0.0.0/0","::/0","127.0.0.1","::1"]},"env":{"pass":["*"]},
"broker":{"fs_read":"allow","fs_write":"allow","list_dir":"allow","net_connect":"allow","exec":"allow"},
"resources":{"core":0},
"isolation":{"capabilities":{"keep":[]},"read_only_root":true,"no_new_privileges":true,
"namespaces":["pid","ipc","uts","mount"],"seccomp":"buntime","private_tmp":true,"mask_kernel_paths":true}}"#,
    )
    .expect("write open.json");
    std::fs::write(
        etc.join("config.json"),
        format!("{{\"ceiling\":{:?}}}", open.display().to_string()),
    )
    .expect("write config.json");
}

/// An executable `dir/buntime-runc` that runs the built runtime with the
/// node configuration in `etc` (engines run the runtime with their own
/// environment, so the variable is set here).
pub fn runc_with_node(dir: &Path, etc: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("buntime-runc");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nBUNTIME_ETC='{}' exec '{}' \"$@\"\n",
            etc.display(),
            RUNC
        ),
    )
    .expect("write runtime wrapper");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("chmod runtime wrapper");
    path
}

/// An inline `buntime.dev/policy` that keeps the bundle's network (`host`
/// mode: the engine's choice stays) and lets busybox run.
pub const HOST_NET_POLICY: &str = r#"{"version":1,"filesystem":{"read":["/"],"write":["/tmp"],"exec":["/bin"]},"network":{"mode":"host"}}"#;

/// The network interfaces a container's `/proc/net/dev` lists.
pub fn interfaces(proc_net_dev: &str) -> Vec<String> {
    proc_net_dev
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, rest)| {
            let name = name.trim();
            !name.is_empty()
                && !name.contains(char::is_whitespace)
                && !name.contains('|')
                && rest.trim_start().starts_with(|c: char| c.is_ascii_digit())
        })
        .map(|(name, _)| name.trim().to_string())
        .collect()
}
pub mod podman;

/// A file of an image built in a test: path in the rootfs, contents, mode.
pub type ImageFile<'a> = (&'a str, &'a str, u32);

/// Writes `files` into `rootfs` (parents made).
pub fn add_files(rootfs: &Path, files: &[ImageFile<'_>]) {
    use std::os::unix::fs::PermissionsExt;
    for (path, body, mode) in files {
        let p = rootfs.join(path.trim_start_matches('/'));
        fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
        fs::write(&p, body).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).expect("chmod");
    }
}

/// The app of the "real image" tests: a Python program in `/app` started
/// by a shell script, reading its data file next to it; a page for busybox
/// httpd in `/www`; an unprivileged user 1000.
pub const APP_FILES: &[ImageFile<'static>] = &[
    (
        "/app/main.py",
        "import json, os, sys\n\
         data = json.load(open(os.path.join(os.path.dirname(__file__), 'data.json')))\n\
         print('python-app-ok', data['greeting'], os.getcwd(), sys.version_info[0], flush=True)\n",
        0o644,
    ),
    (
        "/app/data.json",
        "{\"greeting\": \"hello-from-app\"}\n",
        0o644,
    ),
    (
        "/app/run.sh",
        "#!/bin/sh\ncd /app && exec python3 main.py \"$@\"\n",
        0o755,
    ),
    ("/www/index.html", "served-by-httpd\n", 0o644),
    (
        "/etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/app:/bin/sh\n",
        0o644,
    ),
    ("/etc/group", "root:x:0:\napp:x:1000:\n", 0o644),
];

/// The image's command: the app's script.
pub const APP_CMD: &str = "/app/run.sh";

/// Makes `dir/rootfs`: busybox, the host's python3 with the standard
/// library modules the app needs (tests/engines/python-rootfs.py, offline,
/// a few seconds) and [`APP_FILES`]; returns its path.
pub fn python_app_rootfs(dir: &Path) -> PathBuf {
    let rootfs = busybox_rootfs(dir);
    let script = Path::new(MANIFEST_DIR).join("tests/engines/python-rootfs.py");
    let out = run(
        Command::new("/usr/bin/python3")
            .arg(script)
            .arg(&rootfs)
            .args(["json", "os"]),
        Duration::from_secs(120),
    );
    assert!(out.ok(), "python-rootfs.py failed: {}", out.stderr);
    add_files(&rootfs, APP_FILES);
    rootfs
}

/// Owner (uid, gid) of a host path.
pub fn owner(p: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.uid(), m.gid())
}

/// An inline `buntime.dev/policy` that grants the image everything but
/// kills the container after `timeout` (the wall-clock limit the shipped
/// `default` policy has, made short).
pub fn timeout_policy(timeout: &str) -> String {
    format!(
        r#"{{"version":1,"filesystem":{{"read":["/"],"write":["/"],"exec":["/"]}},"network":{{"mode":"bundle"}},"env":{{"pass":["*"]}},"resources":{{"timeout":"{timeout}"}}}}"#
    )
}

/// What the refused exec of [`APP_CMD`] says under the shipped `default`
/// policy (its `filesystem.exec` names system directories, not `/app`).
pub const APP_REFUSED_BY_DEFAULT: &str =
    "exec \"/app/run.sh\" refused by policy \"default\" (filesystem.exec does not cover /app)";
