//! Shared helpers of the container tests: busybox bundles, a private state
//! root per test, and running the built `buntime-runc`.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const RUNC: &str = env!("CARGO_BIN_EXE_buntime-runc");

/// The test worker (crates/test-worker). Another package's binary, so no
/// `CARGO_BIN_EXE_*`: it is looked for in the target dir this test or bench
/// runs from (target/<profile>/deps/NAME-HASH -> target/<profile>/).
pub fn worker() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("test binary has a directory");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("deps/ has a parent");
    }
    let worker = dir.join("buntime-test-worker");
    assert!(
        worker.is_file(),
        "{} not found: run `cargo build -p buntime-test-worker` (with --release for benches) first",
        worker.display()
    );
    worker
}

/// Copies the (dynamically linked) test worker to `rootfs/bin/worker`, with
/// the shared libraries `ldd` lists, at the same paths.
pub fn install_worker(rootfs: &Path) {
    let worker = worker();
    fs::copy(&worker, rootfs.join("bin/worker")).expect("copy worker");
    let out = Command::new("ldd").arg(&worker).output().expect("ldd");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"
        if let Some(lib) = line.split_whitespace().find(|w| w.starts_with('/')) {
            let lib = PathBuf::from(lib);
            let target = rootfs.join(lib.strip_prefix("/").expect("absolute"));
            fs::create_dir_all(target.parent().expect("parent")).expect("lib dir");
            fs::copy(&lib, &target).expect("copy lib");
        }
    }
}

/// A test's private state root and scratch space, cleaned up on drop
/// (containers force-deleted first, so a failing test leaves nothing).
pub struct Env {
    pub dir: TempDir,
    pub root: PathBuf,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("buntime-test-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().join("root");
        open_node(&dir.path().join("etc"));
        Self { dir, root }
    }

    /// The test's node configuration (`BUNTIME_ETC`): by default
    /// [`open_node`]; a test of the node's own limits rewrites it.
    pub fn etc(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    /// Makes a busybox bundle running `args`; `env` are extra variables for
    /// hack/make-bundle.sh (SECCOMP=1, TERMINAL=1).
    pub fn bundle(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> PathBuf {
        let dir = self.dir.path().join(name);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/make-bundle.sh");
        let out = Command::new("bash")
            .arg(script)
            .arg(&dir)
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("run make-bundle.sh");
        assert!(
            out.status.success(),
            "make-bundle failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    }

    pub fn cmd(&self) -> Command {
        self.cmd_of(Path::new(RUNC))
    }

    /// `runtime` (another build of buntime-runc) on this environment's root.
    pub fn cmd_of(&self, runtime: &Path) -> Command {
        let mut c = Command::new(runtime);
        c.env("BUNTIME_ETC", self.etc())
            .arg("--root")
            .arg(&self.root);
        c
    }

    /// Runs buntime-runc with args; stdin from /dev/null. Output goes
    /// through files, not pipes: a created container inherits the runtime's
    /// stdio, so a pipe would not see EOF until the container exits.
    pub fn runc(&self, args: &[&str]) -> Output {
        let out = tempfile::tempfile().expect("stdout file");
        let err = tempfile::tempfile().expect("stderr file");
        let status = self
            .cmd()
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone"))
            .stderr(err.try_clone().expect("clone"))
            .status()
            .expect("run buntime-runc");
        Output {
            status,
            stdout: read_all(out),
            stderr: read_all(err),
        }
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.runc(args);
        assert!(
            out.status.success(),
            "buntime-runc {args:?} failed ({:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs and asserts failure; returns stderr, with the quoting of the
    /// error line (`level=error msg="container \"x\" …"`, as runc's) undone,
    /// so that assertions read like the message.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.runc(args);
        assert!(
            !out.status.success(),
            "buntime-runc {args:?} should have failed; stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).replace("\\\"", "\"")
    }

    /// `run -d`: creates and starts `id` from `bundle`, asserting success.
    pub fn run_detached(&self, id: &str, bundle: &Path) {
        let b = bundle.to_str().unwrap_or_default();
        self.ok(&["run", "-d", "--bundle", b, id]);
    }

    /// Creates a container whose stdout and stderr go to `log`.
    pub fn create_logged(&self, id: &str, bundle: &Path, log: &Path) {
        self.create_logged_with(Path::new(RUNC), id, bundle, log)
    }

    /// `create_logged` with `runtime` (another build of buntime-runc).
    pub fn create_logged_with(&self, runtime: &Path, id: &str, bundle: &Path, log: &Path) {
        let f = fs::File::create(log).expect("log file");
        let status = self
            .cmd_of(runtime)
            .args(["create", "--bundle"])
            .arg(bundle)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("clone"))
            .stderr(f)
            .status()
            .expect("create");
        assert!(status.success(), "create {id} failed: {}", read(log));
    }

    pub fn state(&self, id: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["state", id])).expect("state is JSON")
    }

    pub fn status(&self, id: &str) -> String {
        self.state(id)["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn pid(&self, id: &str) -> i32 {
        self.state(id)["pid"].as_i64().unwrap_or(0) as i32
    }

    /// Waits until `id` reaches `status` (bounded: a hang fails the test).
    pub fn wait_status(&self, id: &str, status: &str) {
        let ok = wait_until(Duration::from_secs(10), || self.status(id) == status);
        assert!(ok, "{id} never became {status}; is {}", self.status(id));
    }

    /// Asserts nothing of `id` is left: state dirs, cgroups, mounts.
    pub fn assert_gone(&self, id: &str) {
        assert!(
            !self.root.join(id).exists(),
            "state dir of {id} left behind"
        );
        assert!(
            !self.root.join(".buntime").join(id).exists(),
            "buntime dir of {id} left behind"
        );
        for ctl in ["memory", "pids", "cpu", "freezer", "devices", "blkio"] {
            let p = Path::new("/sys/fs/cgroup")
                .join(ctl)
                .join("buntime")
                .join(id);
            assert!(!p.exists(), "cgroup {} left behind", p.display());
        }
        // cgroup v2: hybrid (unified/) and pure.
        for base in ["/sys/fs/cgroup/unified/buntime", "/sys/fs/cgroup/buntime"] {
            let p = Path::new(base).join(id);
            assert!(!p.exists(), "cgroup {} left behind", p.display());
        }
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let needle = self.dir.path().to_string_lossy().into_owned();
        assert!(
            !mounts.contains(&needle),
            "mounts under {needle} left behind"
        );
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Ok(entries) = fs::read_dir(&self.root) {
            for e in entries.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                if !id.starts_with('.') {
                    let _ = self.runc(&["delete", "--force", &id]);
                }
            }
        }
    }
}

/// A node configuration whose ceiling grants what the container tests'
/// annotation policies ask for (host networking, special and own
/// addresses, broker `allow`; the host's own addresses only where named
/// one by one: 127.0.0.1 and ::1), so they test the proxy and the broker rather
/// than the node's limits on annotations (tests/attacks_annotations.rs).
/// Its kernel isolation is the shipped policies' (no capabilities, read-only
/// root, no_new_privs, buntime's seccomp, ...): annotation policies meet it,
/// so theirs stays confined whatever they leave out.
/// Bundles without an annotation get the strict shipped `default` policy
/// as the node default (these tests are about confinement; the built-in
/// engine default, `policies/engine.json`, is tested with real engines in
/// tests/engine_*.rs).
pub fn open_node(etc: &Path) {
    fs::create_dir_all(etc).expect("etc dir");
    fs::write(
        etc.join("default.json"),
        include_str!("../../policies/default.json"),
    )
    .expect("write default.json");
    let open = etc.join("open.json");
    fs::write(
        &open,
        r#"{"version":1,"description":"test node: annotations may ask for anything",
"filesystem":{"read":["/"],"write":["/"],"exec":["/"]},
"network":{"mode":"host","allow":["*","0.0.0.0/0","::/0","127.0.0.1","::1"]},
"env":{"pass":["*"]},
"broker":{"fs_read":"allow","fs_write":"allow","list_dir":"allow","net_connect":"allow","exec":"allow"},
"resources":{"core":0},
"isolation":{"capabilities":{"keep":[]},"read_only_root":true,"no_new_privileges":true,
"namespaces":["pid","ipc","uts","mount"],"seccomp":"buntime","private_tmp":true,"mask_kernel_paths":true}}"#,
    )
    .expect("write open.json");
    fs::write(
        etc.join("config.json"),
        format!("{{\"ceiling\":{:?}}}", open.display().to_string()),
    )
    .expect("write config.json");
}

fn read_all(mut f: fs::File) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut buf = Vec::new();
    let _ = f.seek(SeekFrom::Start(0));
    let _ = f.read_to_end(&mut buf);
    buf
}

pub fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_default()
}

/// Polls `f` every 20 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// A random hex token (planted in host files and names an attack must not
/// reach).
pub fn token() -> String {
    use std::io::Read;
    let mut b = [0u8; 12];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("urandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Whether the test runs as root; a test that needs root and is skipped
/// fails instead under `BUNTIME_TEST_STRICT` (`make test`), so a skip
/// cannot pass for a pass there.
pub fn is_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    assert!(
        root || std::env::var_os("BUNTIME_TEST_STRICT").is_none(),
        "this test needs root"
    );
    root
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A command's exit and output, for assertion messages (stdout clipped:
/// flood tests print megabytes).
pub fn show(o: &Output) -> String {
    format!(
        "[exit {:?}]\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        text(&o.stdout[..o.stdout.len().min(8192)]),
        text(&o.stderr)
    )
}
