//! `buntime pool fill|drain` and `buntime run --pool`, as root: real
//! pooled sandboxes (Python warm, commands cold) claimed by real clients;
//! single use, key matching, drain, idle expiry, signals, limits from the
//! claim — and that nothing is left behind.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{show, text, wait_until};

const BUNTIME: &str = env!("CARGO_BIN_EXE_buntime");

const HELLO_PY: &str =
    "import sys\nprint('hello', sys.argv[1:])\nprint('to stderr', file=sys.stderr)\nsys.exit(3)\n";
const CAT_PY: &str = "import sys\nprint(sys.stdin.read().upper(), end='')\n";
const MARK_PY: &str = "import os\nprint('seen' if os.path.exists('/tmp/marker') else 'fresh')\nopen('/tmp/marker', 'w').write('x')\n";
const SLEEPER_PY: &str = "import time\ntry:\n    print('ready', flush=True)\n    time.sleep(60)\nfinally:\n    print('cleanup ran', flush=True)\n";

/// A private state root and a scripts directory (outside /tmp: the
/// sandbox gets its own /tmp).
struct Pool {
    dir: tempfile::TempDir,
}

impl Pool {
    fn new() -> Pool {
        let dir = tempfile::Builder::new()
            .prefix("buntime-test-pool-")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir_all(dir.path().join("scripts")).unwrap();
        Pool { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn scripts(&self) -> PathBuf {
        self.dir.path().join("scripts")
    }

    fn script(&self, name: &str, body: &str) {
        fs::write(self.scripts().join(name), body).unwrap();
    }

    /// `buntime --root R ARGS…` from the scripts directory, stdin null.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BUNTIME);
        c.arg("--root").arg(self.root()).args(args);
        c.current_dir(self.scripts()).stdin(Stdio::null());
        c
    }

    fn fill(&self, args: &[&str]) -> Output {
        let mut a = vec!["pool", "fill"];
        a.extend_from_slice(args);
        self.cmd(&a).output().expect("pool fill")
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut a = vec!["run", "--pool"];
        a.extend_from_slice(args);
        self.cmd(&a).output().expect("run --pool")
    }

    /// The pooled runs' sockets, all keys (their tokens left out).
    fn sockets(&self) -> Vec<PathBuf> {
        let Ok(keys) = fs::read_dir(self.root().join("pool")) else {
            return Vec::new();
        };
        keys.flatten()
            .filter_map(|k| fs::read_dir(k.path()).ok())
            .flat_map(|d| d.flatten().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x != "token"))
            .collect()
    }

    fn drain(&self) {
        let o = self.cmd(&["pool", "drain"]).output().unwrap();
        assert!(o.status.success(), "{}", show(&o));
    }

    /// Nothing of any sandbox remains: state, bundle, cgroups, mounts,
    /// sockets, pooled runs, supervisors.
    fn assert_clean(&self) {
        let root = self.root();
        // A pooled run ends right after its sandbox is gone (an idle one
        // unlinks its socket first): wait for the processes, then look.
        let ours = || processes_of(&root.to_string_lossy());
        wait_until(Duration::from_secs(10), || ours().is_empty());
        let left: Vec<_> = fs::read_dir(root.join(".buntime"))
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name())
                    .filter(|n| n != ".seccomp-cache")
                    .collect()
            })
            .unwrap_or_default();
        assert!(left.is_empty(), "state left: {left:?}");
        assert!(!root.join("bundles").exists(), "bundles/ left");
        assert!(
            !root.join("pool").exists(),
            "pool/ left: {:?}",
            self.sockets()
        );
        let containers: Vec<_> = fs::read_dir(&root)
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("run-"))
                    .collect()
            })
            .unwrap_or_default();
        assert!(containers.is_empty(), "containers left: {containers:?}");
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(&*self.dir.path().to_string_lossy()),
            "mounts left"
        );
        assert!(ours().is_empty(), "processes left: {:?}", ours());
    }
}

/// The command lines of the processes that name `root`.
fn processes_of(root: &str) -> Vec<String> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
        .map(|c| text(&c).replace('\0', " "))
        .filter(|c| c.contains(root))
        .collect()
}

#[test]
fn pooled_runs_serve_scripts_once_each() {
    let p = Pool::new();
    p.script("hello.py", HELLO_PY);
    let o = p.fill(&["-n", "2", "hello.py", "a b"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(p.sockets().len(), 2, "two pooled runs listen");
    for left in [1, 0] {
        let o = p.run(&["hello.py", "a b"]);
        assert_eq!(o.status.code(), Some(3), "{}", show(&o));
        assert_eq!(text(&o.stdout), "hello ['a b']\n");
        assert_eq!(text(&o.stderr), "to stderr\n");
        // Served by the pool: one socket fewer each time.
        assert_eq!(p.sockets().len(), left);
    }
    // The pool is empty: a fresh run, just as good.
    let o = p.run(&["hello.py", "a b"]);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    assert_eq!(text(&o.stdout), "hello ['a b']\n");
    p.assert_clean();
}

#[test]
fn stdin_reaches_a_pooled_script_and_commands_are_pooled_cold() {
    let p = Pool::new();
    p.script("cat.py", CAT_PY);
    let o = p.fill(&["cat.py"]);
    assert!(o.status.success(), "{}", show(&o));
    let mut child = p
        .cmd(&["run", "--pool", "cat.py"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hi there\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(text(&o.stdout), "HI THERE\n", "{}", show(&o));
    assert!(p.sockets().is_empty(), "served by the pool");

    let o = p.fill(&["--", "/bin/sh", "-c", "echo cmd $0; exit 7", "x"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(p.sockets().len(), 1);
    let o = p.run(&["--", "/bin/sh", "-c", "echo cmd $0; exit 7", "x"]);
    assert_eq!(o.status.code(), Some(7), "{}", show(&o));
    assert_eq!(text(&o.stdout), "cmd x\n");
    assert!(p.sockets().is_empty(), "served by the pool");
    p.assert_clean();
}

/// Bun is pooled warm too; both workers keep their broker connection,
/// made at fill time, across the wait.
#[test]
fn warm_workers_keep_their_broker_connection() {
    let p = Pool::new();
    let bun = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/workers/bun_hello.ts");
    let bun = bun.to_str().unwrap();
    let o = p.fill(&[bun, "3", "two", "words"]);
    assert!(o.status.success(), "{}", show(&o));
    let o = p.run(&[bun, "3", "two", "words"]);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    assert_eq!(
        text(&o.stdout),
        "hello from bun\nargs: two words\nbroker: available\n"
    );
    assert!(p.sockets().is_empty(), "served by the pool");

    p.script(
        "broker.py",
        "import buntime\nprint('broker', buntime.available())\nprint(buntime.read_file('/etc/hostname') is not None)\n",
    );
    let o = p.fill(&["--allow-read=/etc/hostname", "broker.py"]);
    assert!(o.status.success(), "{}", show(&o));
    let o = p.run(&["--allow-read=/etc/hostname", "broker.py"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(text(&o.stdout), "broker True\nTrue\n");
    assert!(p.sockets().is_empty(), "served by the pool");
    p.assert_clean();
}

#[test]
fn no_state_passes_between_pooled_runs() {
    let p = Pool::new();
    p.script("mark.py", MARK_PY);
    let o = p.fill(&["-n", "2", "--allow-write=/tmp", "mark.py"]);
    assert!(o.status.success(), "{}", show(&o));
    let sockets = p.sockets();
    for _ in 0..2 {
        let o = p.run(&["--allow-write=/tmp", "mark.py"]);
        assert!(o.status.success(), "{}", show(&o));
        assert_eq!(text(&o.stdout), "fresh\n", "each sandbox is new");
    }
    // Each socket was unlinked at its claim: none can be claimed again.
    for s in sockets {
        assert!(!s.exists(), "{} still there", s.display());
        assert!(std::os::unix::net::UnixStream::connect(&s).is_err());
    }
    p.assert_clean();
}

/// Clients racing for one pooled run: one gets it, the others a fresh
/// sandbox each; every one runs its script once.
#[test]
fn racing_claims_each_run_once() {
    let p = Pool::new();
    p.script("hello.py", HELLO_PY);
    let o = p.fill(&["hello.py"]);
    assert!(o.status.success(), "{}", show(&o));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            p.cmd(&["run", "--pool", "hello.py"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in clients {
        let o = c.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(3), "{}", show(&o));
        assert_eq!(text(&o.stdout), "hello []\n", "{}", show(&o));
    }
    assert!(p.sockets().is_empty());
    p.assert_clean();
}

#[test]
fn another_key_gets_a_fresh_run() {
    let p = Pool::new();
    p.script("hello.py", HELLO_PY);
    // No pool at all.
    let o = p.run(&["hello.py"]);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    let o = p.fill(&["hello.py", "one"]);
    assert!(o.status.success(), "{}", show(&o));
    // Other arguments, another directory, other flags: not this pool.
    let o = p.run(&["hello.py", "two"]);
    assert_eq!(text(&o.stdout), "hello ['two']\n", "{}", show(&o));
    let script = p.scripts().join("hello.py");
    let o = p
        .cmd(&["run", "--pool", script.to_str().unwrap(), "one"])
        .current_dir(p.dir.path())
        .output()
        .unwrap();
    assert_eq!(text(&o.stdout), "hello ['one']\n", "{}", show(&o));
    let o = p.run(&["--memory=256M", "hello.py", "one"]);
    assert_eq!(text(&o.stdout), "hello ['one']\n", "{}", show(&o));
    assert_eq!(p.sockets().len(), 1, "the pooled run is still there");
    p.drain();
    p.assert_clean();
}

#[test]
fn drain_and_idle_expiry_leave_nothing_behind() {
    let p = Pool::new();
    p.script("hello.py", HELLO_PY);
    let o = p.fill(&["-n", "2", "hello.py"]);
    assert!(o.status.success(), "{}", show(&o));
    let o = p.fill(&["--", "/bin/true"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(p.sockets().len(), 3);
    p.drain();
    // Gone once drain returns, not some time later.
    let left = processes_of(&p.root().to_string_lossy());
    assert!(left.is_empty(), "{left:?}");
    p.assert_clean();

    let o = p.fill(&["--idle=1s", "hello.py"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(p.sockets().len(), 1);
    assert!(
        wait_until(Duration::from_secs(30), || !p.root().join("pool").exists()),
        "the idle pooled run ended"
    );
    assert!(wait_until(Duration::from_secs(10), || {
        !fs::read_dir(p.root())
            .map(|r| {
                r.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("run-"))
            })
            .unwrap_or(false)
    }));
    p.assert_clean();
}

#[test]
fn signals_reach_a_pooled_script_and_its_timeout_counts_from_the_claim() {
    let p = Pool::new();
    p.script("sleeper.py", SLEEPER_PY);
    let o = p.fill(&["sleeper.py"]);
    assert!(o.status.success(), "{}", show(&o));
    let mut child = p
        .cmd(&["run", "--pool", "sleeper.py"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    lines.read_line(&mut first).unwrap();
    assert_eq!(first, "ready\n");
    assert!(p.sockets().is_empty(), "served by the pool");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    let mut rest = String::new();
    lines.read_to_string(&mut rest).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(143), "{rest}");
    assert_eq!(rest, "cleanup ran\n");

    // Idle past its timeout, the pooled sandbox still runs its script...
    p.script("quick.py", "print('in time')\n");
    let o = p.fill(&["--timeout=1s", "quick.py"]);
    assert!(o.status.success(), "{}", show(&o));
    std::thread::sleep(Duration::from_millis(2500));
    let o = p.run(&["--timeout=1s", "quick.py"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(text(&o.stdout), "in time\n");
    assert!(p.sockets().is_empty(), "served by the pool");
    // ...and the limit still holds from the claim.
    let o = p.fill(&["--timeout=1s", "sleeper.py"]);
    assert!(o.status.success(), "{}", show(&o));
    let o = p.run(&["--timeout=1s", "sleeper.py"]);
    assert_eq!(o.status.code(), Some(124), "{}", show(&o));
    assert!(
        text(&o.stderr).contains("buntime: killed: the time limit (1s) was reached"),
        "{}",
        show(&o)
    );
    p.assert_clean();
}

#[test]
fn bad_fills_fail_clearly_and_leave_nothing() {
    let p = Pool::new();
    let o = p.fill(&["--no-such-flag", "x.py"]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("--no-such-flag"), "{}", show(&o));
    let o = p.fill(&["missing.py"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(text(&o.stderr).contains("missing.py"), "{}", show(&o));
    let o = p.fill(&["--learn", "missing.py"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(text(&o.stderr).contains("--learn"), "{}", show(&o));
    let o = p.run(&["--debug-ui", "missing.py"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(text(&o.stderr).contains("--debug-ui"), "{}", show(&o));
    let o = p.fill(&["--idle=soon", "missing.py"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(text(&o.stderr).contains("--idle"), "{}", show(&o));
    p.assert_clean();
}

/// A client by hand (a test harness, not `buntime`): connects to a pooled
/// run's socket, sends CLAIM with its stdio, and then either stops after
/// the ACK (`abort`) or commits and waits for the code (`commit`). Prints
/// `refused`, `acked` or `ran CODE`; mode `drain` sends DRAIN instead,
/// `wrongkey` claims with a key not the pooled run's, `late` commits
/// 2.5 s after the ACK (past the pooled run's 2 s) and prints
/// `late refused` when its commit fails (a real client falls back). It
/// sends the pooled run's token (read from its file) unless the mode is
/// `notoken` (a claim) or `notoken-drain`.
const CLAIMER_PY: &str = r#"
import os, socket, sys
path, mode = sys.argv[1], sys.argv[2]
key = os.path.basename(os.path.dirname(path)).encode()
try:
    token = open(path[:-len('.sock')] + '.token', 'rb').read()
except OSError:
    token = b''
if mode.startswith('notoken'):
    token = b''
    mode = mode[len('notoken-'):] or 'commit'
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(path)
if mode == 'wrongkey':
    key = key[::-1]
if mode == 'drain':
    try:
        s.sendall(b'D' + token)
        s.recv(1)
    except OSError:
        pass
    print('drain sent')
    sys.exit(0)
null = os.open('/dev/null', os.O_RDWR)
s.settimeout(10)
try:
    socket.send_fds(s, [b'C' + key[:KEYLEN] + token], [null, null, null])
    a = s.recv(1)
except OSError:
    a = b''
if a != b'A':
    print('refused')
    sys.exit(0)
if mode == 'abort':
    print('acked')
    sys.exit(0)
if mode == 'late':
    import time
    time.sleep(2.5)
try:
    s.sendall(b'K')
except OSError:
    print('late refused')
    sys.exit(0)
code = b''
while len(code) < 4:
    c = s.recv(4 - len(code))
    if not c:
        break
    code += c
print('ran', int.from_bytes(code, 'little') if len(code) == 4 else None)
"#;

impl Pool {
    /// Runs [`CLAIMER_PY`] on `socket`, under `wrap` (e.g. `unshare -U`).
    fn claim_by_hand(&self, wrap: &[&str], socket: &Path, mode: &str) -> String {
        let harness = self.dir.path().join("claimer.py");
        fs::write(&harness, CLAIMER_PY.replace("KEYLEN", "32")).unwrap();
        let mut argv: Vec<String> = wrap.iter().map(|s| s.to_string()).collect();
        argv.extend(
            [
                "/usr/bin/python3",
                harness.to_str().unwrap(),
                socket.to_str().unwrap(),
                mode,
            ]
            .map(String::from),
        );
        let o = Command::new(&argv[0]).args(&argv[1..]).output().unwrap();
        assert!(o.status.success(), "{}", show(&o));
        text(&o.stdout).trim().to_string()
    }

    /// A directory the sandbox may write to (any uid), for markers.
    fn out_dir(&self) -> PathBuf {
        let out = self.dir.path().join("out");
        fs::create_dir_all(&out).unwrap();
        fs::set_permissions(&out, fs::Permissions::from_mode(0o777)).unwrap();
        out
    }
}

/// A script that appends a line to `out/count`: how many times it ran.
fn counter_py(out: &Path) -> String {
    format!(
        "open('{}/count', 'a').write('ran\\n')\nprint('counted')\n",
        out.display()
    )
}

/// A client that goes away after the ACK, before its commit: the pooled
/// run stays unclaimed and serves the next claim; the script runs once.
#[test]
fn a_claim_never_committed_leaves_the_pooled_run_unclaimed() {
    let p = Pool::new();
    let out = p.out_dir();
    p.script("count.py", &counter_py(&out));
    let allow = format!("--allow-write={}", out.display());
    let o = p.fill(&[&allow, "count.py"]);
    assert!(o.status.success(), "{}", show(&o));
    let sockets = p.sockets();
    assert_eq!(sockets.len(), 1);
    assert_eq!(p.claim_by_hand(&[], &sockets[0], "abort"), "acked");
    assert!(
        sockets[0].exists(),
        "still listening after the aborted claim"
    );
    let o = p.run(&[&allow, "count.py"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(text(&o.stdout), "counted\n");
    assert!(p.sockets().is_empty(), "served by the pool");
    p.assert_clean();
    assert_eq!(fs::read_to_string(out.join("count")).unwrap(), "ran\n");
}

/// A client descheduled between the ACK and its commit: the pooled run
/// either serves it or stays unclaimed (the client's commit fails and it
/// falls back to a fresh run); either way the script runs exactly once.
#[test]
fn a_late_commit_runs_the_script_exactly_once() {
    let p = Pool::new();
    let out = p.out_dir();
    p.script("count.py", &counter_py(&out));
    let allow = format!("--allow-write={}", out.display());
    let o = p.fill(&[&allow, "count.py"]);
    assert!(o.status.success(), "{}", show(&o));
    let sockets = p.sockets();
    assert_eq!(sockets.len(), 1);
    match p.claim_by_hand(&[], &sockets[0], "late").as_str() {
        "ran 0" => assert!(p.sockets().is_empty(), "served: gone"),
        "late refused" => {
            assert!(sockets[0].exists(), "unclaimed: still listening");
            assert!(!out.join("count").exists(), "nothing ran yet");
            // The fallback (here the next client): the pool serves it.
            let o = p.run(&[&allow, "count.py"]);
            assert!(o.status.success(), "{}", show(&o));
            assert!(p.sockets().is_empty(), "served by the pool");
        }
        other => panic!("late claim: {other}"),
    }
    p.assert_clean();
    assert_eq!(fs::read_to_string(out.join("count")).unwrap(), "ran\n");
}

/// Our uid is not enough: a process of our uid in another user or mount
/// namespace (a rootless sandbox's script, here `unshare` as a harness)
/// is refused, and the pooled run still serves its own.
#[test]
fn a_peer_in_other_namespaces_is_refused() {
    let p = Pool::new();
    let out = p.out_dir();
    p.script("count.py", &counter_py(&out));
    let allow = format!("--allow-write={}", out.display());
    let o = p.fill(&[&allow, "count.py"]);
    assert!(o.status.success(), "{}", show(&o));
    let sockets = p.sockets();
    assert_eq!(sockets.len(), 1);
    for wrap in [&["unshare", "-U"][..], &["unshare", "-m"]] {
        assert_eq!(
            p.claim_by_hand(wrap, &sockets[0], "commit"),
            "refused",
            "{wrap:?}"
        );
        assert!(sockets[0].exists(), "still listening");
        assert_eq!(p.claim_by_hand(wrap, &sockets[0], "drain"), "drain sent");
        assert!(sockets[0].exists(), "not drained by {wrap:?}");
    }
    assert!(!out.join("count").exists(), "nothing ran");
    let o = p.run(&[&allow, "count.py"]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(p.sockets().is_empty(), "served by the pool");
    p.assert_clean();
    assert_eq!(fs::read_to_string(out.join("count")).unwrap(), "ran\n");
}

/// The key is the request resolved, not the command line as typed: a
/// policy file tightened after the fill, or a script symlink retargeted,
/// is not served the old sandbox (a fresh run instead).
#[test]
fn a_tightened_policy_file_gets_a_fresh_run() {
    let p = Pool::new();
    let policy = p.scripts().join("p.json");
    let default = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/default.json");
    fs::copy(&default, &policy).unwrap();
    p.script("hello.py", HELLO_PY);
    let o = p.fill(&["--policy", "p.json", "hello.py"]);
    assert!(o.status.success(), "{}", show(&o));
    let mut tight: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&policy).unwrap()).unwrap();
    tight["resources"]["memory"] = "64M".into();
    fs::write(&policy, tight.to_string()).unwrap();
    let o = p.run(&["--policy", "p.json", "hello.py"]);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    assert_eq!(
        p.sockets().len(),
        1,
        "not served by the old policy's sandbox"
    );
    p.drain();
    p.assert_clean();
}

#[test]
fn a_retargeted_script_symlink_gets_a_fresh_run() {
    let p = Pool::new();
    for v in ["v1", "v2"] {
        fs::create_dir_all(p.scripts().join(v)).unwrap();
        fs::write(
            p.scripts().join(v).join("main.py"),
            format!("print('{v}')\n"),
        )
        .unwrap();
    }
    let link = p.scripts().join("main.py");
    std::os::unix::fs::symlink("v1/main.py", &link).unwrap();
    let o = p.fill(&["main.py"]);
    assert!(o.status.success(), "{}", show(&o));
    fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink("v2/main.py", &link).unwrap();
    let o = p.run(&["main.py"]);
    assert_eq!(text(&o.stdout), "v2\n", "{}", show(&o));
    assert_eq!(p.sockets().len(), 1, "not served by v1's sandbox");
    p.drain();
    p.assert_clean();
}

/// A client killed mid-run takes its pooled script with it: the pooled
/// run notices the hang-up, kills the sandbox and winds down.
#[test]
fn a_client_killed_mid_run_kills_the_script() {
    let p = Pool::new();
    p.script("sleeper.py", SLEEPER_PY);
    let o = p.fill(&["sleeper.py"]);
    assert!(o.status.success(), "{}", show(&o));
    let mut child = p
        .cmd(&["run", "--pool", "sleeper.py"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    lines.read_line(&mut first).unwrap();
    assert_eq!(first, "ready\n");
    assert!(p.sockets().is_empty(), "served by the pool");
    child.kill().unwrap();
    child.wait().unwrap();
    // The script sleeps 60 s: its pooled run ends long before that only if
    // the sandbox was killed.
    let root = p.root().to_string_lossy().into_owned();
    assert!(
        wait_until(Duration::from_secs(20), || processes_of(&root).is_empty()),
        "pooled run still there: {:?}",
        processes_of(&root)
    );
    let mut rest = String::new();
    lines.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "", "no cleanup: SIGKILLed");
    p.assert_clean();
}

/// The caller's process context is in the key too (umask, resource
/// limits, ...): a client whose context differs gets a fresh run; a claim
/// with another key than the pooled run's is refused.
#[test]
fn another_process_context_or_key_gets_no_pooled_run() {
    use std::os::unix::process::CommandExt;
    let p = Pool::new();
    p.script("hello.py", HELLO_PY);
    let o = p.fill(&["hello.py"]);
    assert!(o.status.success(), "{}", show(&o));
    let sockets = p.sockets();
    assert_eq!(sockets.len(), 1);
    let mut umask = p.cmd(&["run", "--pool", "hello.py"]);
    // SAFETY: umask is async-signal-safe.
    unsafe {
        umask.pre_exec(|| {
            libc::umask(0o077);
            Ok(())
        });
    }
    let mut nofile = p.cmd(&["run", "--pool", "hello.py"]);
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        nofile.pre_exec(|| {
            let rl = libc::rlimit {
                rlim_cur: 512,
                rlim_max: 512,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
            Ok(())
        });
    }
    for mut c in [umask, nofile] {
        let o = c.output().unwrap();
        assert_eq!(text(&o.stdout), "hello []\n", "{}", show(&o));
        assert_eq!(p.sockets().len(), 1, "a fresh run, not the pooled one");
    }
    assert_eq!(p.claim_by_hand(&[], &sockets[0], "wrongkey"), "refused");
    // The key alone is not enough: the pooled run's token too.
    assert_eq!(p.claim_by_hand(&[], &sockets[0], "notoken"), "refused");
    assert!(sockets[0].exists(), "still listening");
    assert_eq!(
        p.claim_by_hand(&[], &sockets[0], "notoken-drain"),
        "drain sent"
    );
    assert!(sockets[0].exists(), "not drained without the token");
    let token = sockets[0].with_extension("token");
    let mode = fs::metadata(&token).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", token.display());
    assert!(sockets[0].exists(), "still listening");
    let o = p.run(&["hello.py"]);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    assert!(p.sockets().is_empty(), "served by the pool");
    p.assert_clean();
}

/// The init pids of the sandboxes under `root` (`buntime-runc list`).
fn sandbox_inits(root: &Path) -> Vec<i32> {
    let o = Command::new(env!("CARGO_BIN_EXE_buntime-runc"))
        .arg("--root")
        .arg(root)
        .args(["list", "-q"])
        .output()
        .expect("buntime-runc list");
    text(&o.stdout)
        .lines()
        .filter_map(|id| {
            let o = Command::new(env!("CARGO_BIN_EXE_buntime-runc"))
                .arg("--root")
                .arg(root)
                .args(["state", id])
                .output()
                .ok()?;
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
            v["pid"].as_i64().map(|p| p as i32).filter(|p| *p > 0)
        })
        .collect()
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn a_pooled_run_killed_before_its_claim_takes_its_sandbox_along() {
    let p = Pool::new();
    p.script("hello.py", HELLO_PY);
    // Warm (the worker waits for its go byte) and cold (init blocked on
    // the exec fifo).
    let o = p.fill(&["hello.py"]);
    assert!(o.status.success(), "{}", show(&o));
    let o = p.fill(&["--", "/bin/cat"]);
    assert!(o.status.success(), "{}", show(&o));
    let inits = sandbox_inits(&p.root());
    assert_eq!(inits.len(), 2, "two sandboxes: {inits:?}");
    // Their pids cgroups (v1 hybrid here; else the unified one).
    let cgroups: Vec<PathBuf> = inits
        .iter()
        .filter_map(|i| {
            let text = fs::read_to_string(format!("/proc/{i}/cgroup")).ok()?;
            let line = text
                .lines()
                .find(|l| l.split(':').nth(1) == Some("pids"))
                .map(|l| ("pids", l))
                .or_else(|| text.lines().find(|l| l.starts_with("0::")).map(|l| ("", l)))?;
            let rel = line.1.splitn(3, ':').nth(2)?.trim_start_matches('/');
            Some(Path::new("/sys/fs/cgroup").join(line.0).join(rel))
        })
        .collect();
    assert_eq!(cgroups.len(), 2, "{cgroups:?}");
    assert!(cgroups.iter().all(|c| c.exists()), "{cgroups:?}");
    let mut pooled = Vec::new();
    for s in p.sockets() {
        let pid: i32 = s
            .file_stem()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse().ok())
            .expect("<pid>.sock");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
        pooled.push(pid);
    }
    // The supervisors kill their sandboxes, then exit: nothing naming the
    // root runs any more (pooled runs, supervisors), nor any init.
    let root = p.root().to_string_lossy().into_owned();
    let gone = || processes_of(&root).is_empty() && !inits.iter().any(|&i| alive(i));
    assert!(
        wait_until(Duration::from_secs(30), gone),
        "left: {:?}, inits alive: {:?}",
        processes_of(&root),
        inits.iter().filter(|&&i| alive(i)).collect::<Vec<_>>()
    );
    // What only the pooled run would have removed (state, cgroups): the
    // next drain (or fill) deletes it.
    let o = p.cmd(&["pool", "drain"]).output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        text(&o.stderr).contains("deleted 2 sandbox(es) of killed pooled runs"),
        "{}",
        show(&o)
    );
    let left: Vec<_> = cgroups.iter().filter(|c| c.exists()).collect();
    assert!(left.is_empty(), "cgroups left: {left:?}");
    // Root's bundles are in /dev/shm, named after the pooled runs.
    for pid in &pooled {
        let b = format!("/dev/shm/buntime-bundle-run-{pid}");
        assert!(!Path::new(&b).exists(), "{b} left");
    }
    p.assert_clean();
}

/// A sweep (any fill or drain) while a pooled run lives leaves it alone:
/// the run's life lock, not its pid, says it lives.
#[test]
fn a_sweep_leaves_a_live_pooled_run_working() {
    let p = Pool::new();
    p.script("hello.py", HELLO_PY);
    let o = p.fill(&["hello.py"]);
    assert!(o.status.success(), "{}", show(&o));
    let ours = p.sockets().pop().expect("a pooled run listens");
    // Another key's fill sweeps first.
    let o = p.fill(&["--", "/bin/true"]);
    assert!(o.status.success(), "{}", show(&o));
    let o = p.run(&["hello.py"]);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    assert_eq!(text(&o.stdout), "hello []\n", "{}", show(&o));
    assert!(!ours.exists(), "not served by the pooled run");
    let o = p.cmd(&["pool", "drain"]).output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    assert!(!text(&o.stderr).contains("deleted"), "{}", show(&o));
    p.assert_clean();
}

/// The same from another pid namespace with its own /proc, where the
/// live run's pid names nothing: neither the sweep nor the new run's
/// clean-up of dead runs' bundles in /dev/shm touches it.
#[test]
fn a_sweep_from_another_pid_namespace_leaves_a_live_pooled_run_working() {
    let p = Pool::new();
    p.script("hello.py", HELLO_PY);
    let o = p.fill(&["hello.py"]);
    assert!(o.status.success(), "{}", show(&o));
    let ours = p.sockets().pop().expect("a pooled run listens");
    let o = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", BUNTIME, "--root"])
        .arg(p.root())
        .args(["pool", "fill", "--", "/bin/true"])
        .current_dir(p.scripts())
        .stdin(Stdio::null())
        .output()
        .expect("unshare");
    assert!(o.status.success(), "{}", show(&o));
    // That fill's own pooled run dies with its namespace; ours serves.
    let o = p.run(&["hello.py"]);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    assert_eq!(text(&o.stdout), "hello []\n", "{}", show(&o));
    assert!(!ours.exists(), "not served by the pooled run");
    p.drain();
    p.assert_clean();
}

#[test]
fn a_pooled_run_holds_none_of_the_fillers_fds() {
    let p = Pool::new();
    p.script(
        "fds.py",
        "import os\nprint(os.environ.get('LISTEN_FDS'), sorted(os.listdir('/proc/self/fd')))\n",
    );
    // A pipe whose write end the filler leaves open (not close-on-exec);
    // the filler also says two fds are socket-activated.
    // Close-on-exec here (other tests' children must not hold it), cleared
    // for the filler alone.
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let w = std::os::fd::AsRawFd::as_raw_fd(&write);
    let mut fill = p.cmd(&["pool", "fill", "fds.py"]);
    // SAFETY: fcntl only, between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut fill, move || {
            if libc::fcntl(w, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = fill.env("LISTEN_FDS", "2").output().expect("pool fill");
    assert!(o.status.success(), "{}", show(&o));
    drop(write);
    // Only the pooled run could still hold the write end: EOF says it does not.
    let mut pfd = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&read),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, 20_000) };
    assert_eq!(n, 1, "the pooled run holds the filler's pipe");
    let mut buf = [0u8; 1];
    let n = nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&read), &mut buf).unwrap();
    assert_eq!(n, 0, "EOF");
    let o = p
        .cmd(&["run", "--pool", "fds.py"])
        .env("LISTEN_FDS", "2")
        .output()
        .expect("run --pool");
    assert!(o.status.success(), "{}", show(&o));
    assert!(p.sockets().is_empty(), "served by the pool");
    // The fds a fresh run's script sees (no LISTEN_FDS: it would pass ours):
    // no go socket left, none of the filler's.
    let fresh = p.cmd(&["run", "fds.py"]).output().expect("run");
    assert!(fresh.status.success(), "{}", show(&fresh));
    assert!(
        text(&fresh.stdout).starts_with("None ["),
        "{}",
        show(&fresh)
    );
    assert_eq!(text(&o.stdout), text(&fresh.stdout), "{}", show(&o));
    p.assert_clean();
}

#[test]
fn fill_bounds_n_and_says_why_a_pooled_run_failed_early() {
    let p = Pool::new();
    p.script("hello.py", HELLO_PY);
    for n in ["100000", "0"] {
        let o = p.fill(&["-n", n, "hello.py"]);
        assert_eq!(o.status.code(), Some(2), "{}", show(&o));
        assert!(text(&o.stderr).contains("-n"), "{}", show(&o));
        assert!(text(&o.stderr).contains("1..=64"), "{}", show(&o));
    }
    // A pooled run failing before it is ready (here: a bad --shape, which
    // `fill` never passes) says why on its report pipe, not on its stderr
    // (/dev/null).
    // Close-on-exec (other tests' children must not hold it); the dup2 onto
    // fd 3 clears the flag for this child alone.
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let w = std::os::fd::AsRawFd::as_raw_fd(&write);
    let mut cmd = p.cmd(&[
        "pool", "serve", "--key", "k", "--shape", "bogus", "--", "hello.py",
    ]);
    // SAFETY: dup2 only, between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            if libc::dup2(w, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.stderr(Stdio::null()).spawn().expect("pool serve");
    drop(write);
    let mut said = String::new();
    fs::File::from(read).read_to_string(&mut said).unwrap();
    assert!(!child.wait().unwrap().success());
    assert_eq!(said, "error: pool serve: bad --shape\n");
    p.assert_clean();
}

#[test]
fn a_pooled_runs_pty_follows_the_clients_terminal_size() {
    let p = Pool::new();
    p.script(
        "size.py",
        "import os, signal\nsignal.signal(signal.SIGWINCH, lambda *a: None)\n\
         print(os.get_terminal_size(), flush=True)\nsignal.pause()\n\
         print(os.get_terminal_size(), flush=True)\n",
    );
    let size = |rows, cols| nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // The filler's stdout and stderr are one terminal: so are the client's.
    let term = |ws: &nix::pty::Winsize| {
        let pty = nix::pty::openpty(Some(ws), None).expect("openpty");
        let out = fs::File::from(pty.slave);
        (fs::File::from(pty.master), out)
    };
    let (_fill_master, fill_out) = term(&size(24, 80));
    let o = p
        .cmd(&["pool", "fill", "--timeout=30s", "size.py"])
        .stdout(fill_out.try_clone().unwrap())
        .stderr(fill_out)
        .output()
        .expect("pool fill");
    assert!(o.status.success(), "{}", show(&o));
    let (master, out) = term(&size(30, 100));
    let mut child = p
        .cmd(&["run", "--pool", "--timeout=30s", "size.py"])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("run --pool");
    let mut lines = BufReader::new(master.try_clone().unwrap());
    let mut first = String::new();
    lines.read_line(&mut first).unwrap();
    assert!(first.contains("columns=100, lines=30"), "{first:?}");
    assert!(p.sockets().is_empty(), "served by the pool");
    // The client's terminal resized: the sandbox's pty follows.
    // SAFETY: TIOCSWINSZ reads the winsize we pass.
    let ws = size(40, 120);
    unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&master),
            libc::TIOCSWINSZ,
            &ws,
        )
    };
    let mut second = String::new();
    lines.read_line(&mut second).unwrap();
    assert!(second.contains("columns=120, lines=40"), "{second:?}");
    assert!(child.wait().unwrap().success());
    p.assert_clean();
}

/// The worker files a warm pooled run loaded at fill are in the key: one
/// changed since (here its mtime) gets a fresh run, which loads it anew.
#[test]
fn a_changed_worker_file_gets_a_fresh_run() {
    let p = Pool::new();
    p.script("hello.py", HELLO_PY);
    // Our own copy of the worker files (BUNTIME_HOME), staged by a run.
    let o = p.cmd(&["run", "hello.py"]).output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    let staged = Path::new(BUNTIME).parent().unwrap().join("buntime-home");
    let home = p.dir.path().join("home");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(&staged)
        .arg(&home)
        .status();
    assert!(cp.unwrap().success());
    let fill = p
        .cmd(&["pool", "fill", "hello.py"])
        .env("BUNTIME_HOME", &home)
        .output()
        .unwrap();
    assert!(fill.status.success(), "{}", show(&fill));
    assert_eq!(p.sockets().len(), 1);
    let worker = home.join("python/buntime.py");
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    fs::File::options()
        .append(true)
        .open(&worker)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let run = |p: &Pool| {
        p.cmd(&["run", "--pool", "hello.py"])
            .env("BUNTIME_HOME", &home)
            .output()
            .unwrap()
    };
    let o = run(&p);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    assert_eq!(
        p.sockets().len(),
        1,
        "not served by the old workers' sandbox"
    );
    // Unchanged, the key is the same: refilled, the pool serves it.
    p.drain();
    let fill = p
        .cmd(&["pool", "fill", "hello.py"])
        .env("BUNTIME_HOME", &home)
        .output()
        .unwrap();
    assert!(fill.status.success(), "{}", show(&fill));
    let o = run(&p);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    assert!(p.sockets().is_empty(), "served by the pool");
    p.assert_clean();
}

/// A command is keyed on the file `plan` runs (the first in PATH with an
/// exec bit, not any file): that file gone after the fill, a fresh run
/// finds the next one, not the pooled run of the old one.
#[test]
fn a_command_found_elsewhere_in_path_gets_a_fresh_run() {
    let p = Pool::new();
    let bins = p.dir.path().join("bins");
    let dirs = ["first", "second", "third"].map(|d| bins.join(d));
    for (dir, mode) in dirs.iter().zip([0o644, 0o755, 0o755]) {
        fs::create_dir_all(dir).unwrap();
        let tool = dir.join("tool");
        fs::write(&tool, format!("#!/bin/sh\necho {}\n", dir.display())).unwrap();
        fs::set_permissions(&tool, fs::Permissions::from_mode(mode)).unwrap();
    }
    let path = dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>();
    let path = path.join(":") + ":/usr/bin:/bin";
    let args = [
        &format!("--allow-read={}", bins.display())[..],
        &format!("--allow-run={}", bins.display()),
        "--",
        "tool",
    ];
    let mut fill = vec!["pool", "fill"];
    fill.extend_from_slice(&args);
    let o = p.cmd(&fill).env("PATH", &path).output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(p.sockets().len(), 1);
    fs::remove_file(dirs[1].join("tool")).unwrap();
    let mut run = vec!["run", "--pool"];
    run.extend_from_slice(&args);
    let o = p.cmd(&run).env("PATH", &path).output().unwrap();
    let third = format!("{}\n", dirs[2].display());
    assert_eq!(text(&o.stdout), third, "{}", show(&o));
    assert_eq!(p.sockets().len(), 1, "a fresh run, not the pooled one");
    p.drain();
    p.assert_clean();
}

/// The deny rules' matches are in the key: a denied file, or a new match
/// of a deny pattern, created after the fill gets a fresh run, which
/// masks it (the pooled sandbox masked only what existed at its create).
#[test]
fn a_denied_file_created_after_the_fill_gets_a_fresh_run() {
    let p = Pool::new();
    let data = p.dir.path().join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("public"), "x").unwrap();
    p.script(
        "peek.py",
        &format!(
            "import sys\nfor n in sys.argv[1:]:\n    try:\n        open('{}/' + n).read()\n        \
             print(n, 'read')\n    except FileNotFoundError:\n        print(n, 'absent')\n    \
             except PermissionError:\n        print(n, 'denied')\n",
            data.display()
        ),
    );
    let allow = format!("--allow-read={}", data.display());
    let deny = format!("--deny-read={0}/.env,{0}/secrets*", data.display());
    let args = [&allow[..], &deny, "peek.py", ".env", "secrets1", "public"];
    for (file, expect) in [
        (".env", ".env denied\nsecrets1 absent\npublic read\n"),
        ("secrets1", ".env absent\nsecrets1 denied\npublic read\n"),
    ] {
        let _ = fs::remove_file(data.join(".env"));
        let o = p.fill(&args);
        assert!(o.status.success(), "{}", show(&o));
        assert_eq!(p.sockets().len(), 1);
        fs::write(data.join(file), "secret").unwrap();
        let o = p.run(&args);
        assert_eq!(text(&o.stdout), expect, "{}", show(&o));
        assert_eq!(p.sockets().len(), 1, "{file}: a fresh run, not the pool");
        p.drain();
    }
    p.assert_clean();
}
