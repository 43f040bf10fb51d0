//! `buntime run` end to end, as root: real sandboxes of the host's
//! binaries, the Python and Bun workers, the supervisor, and what a person
//! running a script sees (output, exit codes, signals, limits, refusals,
//! prompts) — and that nothing is left behind.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::wait_until;
use common::{show, text};

const BUNTIME: &str = env!("CARGO_BIN_EXE_buntime");

/// A private state root and a scripts directory (outside /tmp's private
/// view: the sandbox gets its own /tmp).
struct Run {
    dir: tempfile::TempDir,
}

impl Run {
    fn new() -> Run {
        let dir = tempfile::Builder::new()
            .prefix("buntime-test-run-")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        // Root's sandboxes act as an unprivileged uid of their own, for the
        // broker's host paths too: what a test grants must be reachable.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir_all(dir.path().join("scripts")).unwrap();
        Run { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn script(&self, name: &str, body: &str) -> PathBuf {
        let p = self.dir.path().join("scripts").join(name);
        fs::write(&p, body).unwrap();
        p
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BUNTIME);
        c.arg("--root").arg(self.root()).arg("run").args(args);
        c.stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run buntime")
    }

    /// Nothing of any sandbox remains: state, bundle, cgroups, mounts,
    /// supervisor processes.
    fn assert_clean(&self) {
        let root = self.root();
        let d = root.join(".buntime");
        let left = state_left(&d);
        assert!(left.is_empty(), "left in {}: {left:?}", d.display());
        // Not even the (empty) directory of bundles.
        assert!(!root.join("bundles").exists(), "bundles/ left");
        let containers: Vec<_> = fs::read_dir(&root)
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("run-"))
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            containers.is_empty(),
            "container state left: {containers:?}"
        );
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(&*self.dir.path().to_string_lossy()),
            "mounts left:\n{mounts}"
        );
    }
}

fn fixture(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
        .to_string_lossy()
        .into_owned()
}

// Scenarios run both as root and as an ordinary user: `run` builds the
// `buntime run ARGS…` command, `dir` is where the scripts go (readable by
// whoever runs them).
const ORDER_PY: &str = "import sys\nfor i in range(200):\n    s = sys.stdout if i % 2 == 0 else sys.stderr\n    print(f'line {i}', file=s, flush=True)\n";
const BIG_PY: &str = "import sys\nblock = bytes(range(256)) * 4096\nfor _ in range(100):\n    sys.stdout.buffer.write(block)\n";
const ECHO_PY: &str = "import sys\nprint(sys.stdin.read().upper(), end='')\n";
const SLEEPER_PY: &str = "import time\ntry:\n    print('ready', flush=True)\n    time.sleep(60)\nfinally:\n    print('cleanup ran', flush=True)\n";

/// What is in a state directory after the runs, apart from the
/// compiled-seccomp cache (kept on purpose).
fn state_left(dir: &Path) -> Vec<std::ffi::OsString> {
    fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name())
                .filter(|n| n != ".seccomp-cache")
                .collect()
        })
        .unwrap_or_default()
}

fn put_script(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    fs::write(&p, body).unwrap();
    p.to_str().unwrap().to_string()
}

/// stdout and stderr on one file: the interleaving is kept; 100 MiB
/// streamed without loss; stdin is the caller's.
fn check_output_and_stdin(run: &dyn Fn(&[&str]) -> Command, dir: &Path) {
    let order = put_script(dir, "order.py", ORDER_PY);
    let log = dir.join("order.log");
    let f = fs::File::create(&log).unwrap();
    let st = run(&[&order])
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .status()
        .unwrap();
    assert!(st.success());
    let want: String = (0..200).map(|i| format!("line {i}\n")).collect();
    assert_eq!(fs::read_to_string(&log).unwrap(), want);

    let big = put_script(dir, "big.py", BIG_PY);
    // Over the default policy's resources.output (16M).
    let mut child = run(&["--output=128M", &big])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let (mut n, mut sum, mut buf) = (0u64, 0u64, vec![0u8; 1 << 20]);
    loop {
        let k = out.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        sum = buf[..k].iter().fold(sum, |a, &x| a.wrapping_add(x as u64));
        n += k as u64;
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(n, 100 << 20);
    assert_eq!(sum, 100 * 4096 * (0..256u64).sum::<u64>());

    let echo = put_script(dir, "echo.py", ECHO_PY);
    let mut child = run(&[&echo])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"piped in\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(text(&o.stdout), "PIPED IN\n");
}

/// SIGTERM reaches the script (its `finally` runs; 143), and the
/// wall-clock limit gives 124 and a message.
fn check_sigterm_and_timeout(run: &dyn Fn(&[&str]) -> Command, dir: &Path) {
    let sleeper = put_script(dir, "sleeper.py", SLEEPER_PY);
    let mut child = run(&[&sleeper])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    lines.read_line(&mut first).unwrap();
    assert_eq!(first, "ready\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    let mut rest = String::new();
    lines.read_to_string(&mut rest).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(143), "{rest}");
    assert_eq!(rest, "cleanup ran\n");

    let o = run(&["--timeout=1s", &sleeper])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(124), "{}", show(&o));
    assert!(
        text(&o.stderr).contains("buntime: killed: the time limit (1s) was reached"),
        "{}",
        show(&o)
    );
}

#[test]
fn scripts_run_with_their_arguments_and_exit_codes() {
    let r = Run::new();
    let s = r.script(
        "args.py",
        "import os, sys\nprint('args', sys.argv[1:], os.getcwd())\nsys.exit(int(sys.argv[1]))\n",
    );
    let o = r.run(&[s.to_str().unwrap(), "3", "two words"]);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    let dir = s.parent().unwrap().display().to_string();
    assert_eq!(text(&o.stdout), format!("args ['3', 'two words'] {dir}\n"));
    // An uncaught exception: traceback, status 1.
    let boom = r.script("boom.py", "raise RuntimeError('boom')\n");
    let o = r.run(&[boom.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        text(&o.stderr).contains("RuntimeError: boom"),
        "{}",
        show(&o)
    );
    // The worker ends the way python3 would (tests/fixtures/workers/py_exit.py).
    for (mode, code, out, err) in [
        ("300", 44, "", ""),
        ("none", 0, "", ""),
        ("message", 1, "", "bye"),
        ("kbd", 130, "", "KeyboardInterrupt"),
        ("atexit", 0, "atexit ran", ""),
        ("thread", 0, "thread done", ""),
    ] {
        let o = r.run(&[&fixture("workers/py_exit.py"), mode]);
        assert_eq!(o.status.code(), Some(code), "{mode}: {}", show(&o));
        let stdout = text(&o.stdout);
        assert!(
            stdout.starts_with(&format!("mode: {mode}\n")),
            "{}",
            show(&o)
        );
        assert!(
            stdout.contains(out) && text(&o.stderr).contains(err),
            "{mode}: {}",
            show(&o)
        );
    }
    // A command after --.
    let o = r.run(&["--", "sh", "-c", "echo from sh; exit 7"]);
    assert_eq!(o.status.code(), Some(7), "{}", show(&o));
    assert_eq!(text(&o.stdout), "from sh\n");
    // Bad input: a clear error, a non-zero exit.
    let o = r.run(&["/nonexistent/x.py"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("/nonexistent/x.py: No such file"),
        "{}",
        show(&o)
    );
    let o = r.run(&["--memory=lots", s.to_str().unwrap()]);
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o.stderr).contains("--memory"), "{}", show(&o));
    r.assert_clean();
}

#[test]
fn bun_scripts_run_under_the_bun_worker() {
    let r = Run::new();
    let s = r.script(
        "hello.ts",
        "const n: number = Number(process.argv[2]);\nconsole.log(`bun says ${n * 2}`);\nprocess.exit(n);\n",
    );
    let o = r.run(&[s.to_str().unwrap(), "21"]);
    assert_eq!(o.status.code(), Some(21), "{}", show(&o));
    assert_eq!(text(&o.stdout), "bun says 42\n");
    let o = r.run(&[&fixture("workers/bun_broker.ts"), "5"]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(5), "{}", show(&o));
    assert!(out.contains("available: yes\n"), "{}", show(&o));
    assert!(out.contains("allowed: ok\n"), "{}", show(&o));
    assert!(out.contains("shadow: denied\n"), "{}", show(&o));
    assert!(out.contains("shadow-direct: denied"), "{}", show(&o));
    // process.exitCode and the worker's broker connection.
    let o = r.run(&[&fixture("workers/bun_hello.ts"), "3", "two", "words"]);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    assert_eq!(
        text(&o.stdout),
        "hello from bun\nargs: two words\nbroker: available\n",
        "{}",
        show(&o)
    );
    r.assert_clean();
}

#[test]
fn output_order_large_output_and_stdin() {
    let r = Run::new();
    check_output_and_stdin(&|args| r.cmd(args), r.dir.path());
    r.assert_clean();
}

#[test]
fn signals_timeout_and_memory_limit() {
    let r = Run::new();
    check_sigterm_and_timeout(&|args| r.cmd(args), r.dir.path());

    // The memory limit: the kernel kills it, 137 and a message.
    let hog = r.script(
        "hog.py",
        "chunks = []\nwhile True:\n    chunks.append(bytearray(8 << 20))\n",
    );
    let o = r.run(&["--memory=64M", hog.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(137), "{}", show(&o));
    assert!(
        text(&o.stderr).contains("the memory limit (64M) was reached"),
        "{}",
        show(&o)
    );
    r.assert_clean();
}

#[test]
fn escape_attempts_fail_the_way_the_policy_says() {
    let r = Run::new();
    let o = r.run(&[&fixture("run/escape.py")]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}", show(&o));
    assert!(!out.contains("ESCAPED"), "{}", show(&o));
    for (name, errno) in [
        ("read-shadow", "EACCES"),
        ("write-outside", "EROFS"),
        ("connect-out", "EPERM"),
        ("ptrace", "EPERM"),
        ("mount", "EPERM"),
        ("unshare", "EPERM"),
        ("fork-bomb", "EAGAIN"),
    ] {
        assert!(
            out.contains(&format!("{name}: blocked ({errno})")),
            "{name}: {}",
            show(&o)
        );
    }
    // The default policy's pids limit (256) stopped the fork bomb.
    let forks: u32 = out
        .lines()
        .find_map(|l| l.strip_prefix("fork-count: "))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(forks < 256, "{forks}");
    // The refused file was put to the broker (default: deny) and summed up.
    assert!(
        text(&o.stderr).contains("buntime: 1 request denied: read /etc/shadow"),
        "{}",
        show(&o)
    );
    r.assert_clean();
}

#[test]
fn ask_is_answered_allowed_denied_or_times_out() {
    let r = Run::new();
    let data = r.dir.path().join("data");
    fs::create_dir_all(&data).unwrap();
    for f in ["yes.txt", "no.txt", "late.txt"] {
        fs::write(data.join(f), format!("content of {f}\n")).unwrap();
    }
    let policy = r.dir.path().join("ask.json");
    fs::write(
        &policy,
        r#"{"version":1,"filesystem":{"read":["/usr","/etc","/lib","/lib64","/bin","/proc"],
            "write":["/tmp"],"exec":["/usr/bin","/usr/lib","/bin"]},
            "broker":{"fs_read":"ask"},"env":{"pass":["PATH","TERM"]}}"#,
    )
    .unwrap();
    let script = r.script(
        "ask.py",
        &format!(
            "for f in ['yes.txt', 'no.txt', 'late.txt']:\n    try:\n        print(open('{}/' + f).read().strip())\n    except OSError as e:\n        print(f, 'refused:', e.strerror)\n",
            data.display()
        ),
    );
    let child = r
        .cmd(&[
            "--policy",
            policy.to_str().unwrap(),
            "--ask-timeout=1s",
            script.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sock = r
        .root()
        .join(".buntime")
        .join(format!("run-{}", child.id()))
        .join("approve.sock");
    assert!(
        wait_until(Duration::from_secs(20), || sock.exists()),
        "no approver socket"
    );
    let conn = UnixStream::connect(&sock).unwrap();
    let mut w = conn.try_clone().unwrap();
    let mut asked = Vec::new();
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { break };
        let q: serde_json::Value = serde_json::from_str(&line).unwrap();
        let subject = q["subject"].as_str().unwrap().to_string();
        asked.push(subject.clone());
        let result = if subject.ends_with("yes.txt") {
            "allow"
        } else if subject.ends_with("no.txt") {
            "deny"
        } else {
            break; // late.txt: no answer
        };
        writeln!(
            w,
            "{}",
            serde_json::json!({"id": q["id"], "result": result})
        )
        .unwrap();
    }
    let o = child.wait_with_output().unwrap();
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}", show(&o));
    assert!(out.contains("content of yes.txt\n"), "{}", show(&o));
    assert!(
        out.contains("no.txt refused: No such file or directory (buntime: denied by the approver)"),
        "{}",
        show(&o)
    );
    assert!(out.contains("late.txt refused: No such file or directory (buntime: no answer from an approver within 1000 ms)"), "{}", show(&o));
    assert_eq!(asked.len(), 3, "{asked:?}");
    assert!(
        text(&o.stderr).contains("buntime: 2 requests denied: read"),
        "{}",
        show(&o)
    );
    r.assert_clean();
}

/// The Python worker's transparent fallbacks in a real sandbox: ordinary
/// calls on host paths the policy does not bind (ENOENT in the sandbox)
/// are completed with what the broker grants.
#[test]
fn python_fallbacks_complete_ordinary_calls() {
    let r = Run::new();
    let data = r.dir.path().join("data");
    fs::create_dir_all(data.join("sub")).unwrap();
    fs::write(data.join("hello.txt"), "hello from data\nsecond\n").unwrap();
    // Written through the broker in the sandbox's own view: /dev is its
    // tmpfs, which filesystem.write does not cover (Landlock refuses).
    let wfile = Path::new("/dev/bt-write");
    let policy = r.dir.path().join("broker.json");
    fs::write(
        &policy,
        r#"{"version":1,"filesystem":{"read":["/usr","/etc","/lib","/lib64","/bin","/proc"],
            "write":["/tmp"],"exec":["/usr/bin","/usr/lib","/bin"]},
            "broker":{"fs_read":"allow","list_dir":"allow","fs_write":"allow"},
            "env":{"pass":["PATH"]}}"#,
    )
    .unwrap();
    let o = r.run(&[
        "--policy",
        policy.to_str().unwrap(),
        &fixture("workers/py_fallbacks.py"),
        data.to_str().unwrap(),
        wfile.to_str().unwrap(),
    ]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}", show(&o));
    for line in [
        "listdir: hello.txt,sub",
        "scandir: hello.txt:file,sub:dir",
        "pathlib: hello from data",
        "fd open: ok",
        "write: ok",
        "append: ok",
        "read back: one|two",
        "os.open: hello from data",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "{line:?} missing:\n{}",
            show(&o)
        );
    }
    assert!(
        out.lines().any(|l| l == "exclusive: exists"),
        "{}",
        show(&o)
    );

    // A host path the sandbox cannot see is never written on a broker
    // answer alone (only read): writing needs a filesystem.write grant.
    let out_dir = r.dir.path().join("out");
    fs::create_dir_all(&out_dir).unwrap();
    fs::set_permissions(&out_dir, fs::Permissions::from_mode(0o777)).unwrap();
    let host_file = out_dir.join("w.txt");
    let o = r.run(&[
        "--policy",
        policy.to_str().unwrap(),
        &fixture("workers/py_fallbacks.py"),
        data.to_str().unwrap(),
        host_file.to_str().unwrap(),
    ]);
    let out = text(&o.stdout);
    assert!(
        out.lines()
            .any(|l| l.starts_with("write: ") && l.contains("No such file")),
        "{}",
        show(&o)
    );
    assert!(!host_file.exists(), "{}", show(&o));

    // Several threads share the worker's one connection: every read,
    // through the fallback and through buntime.read_file, gets the file.
    let o = r.run(&[
        "--policy",
        policy.to_str().unwrap(),
        &fixture("workers/py_threads.py"),
        data.join("hello.txt").to_str().unwrap(),
        "4",
        "25",
    ]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        text(&o.stdout)
            .lines()
            .any(|l| l == "threads: 200 reads ok"),
        "{}",
        show(&o)
    );

    // buntime.run: a program under filesystem.exec runs; one outside it is
    // put to the broker, whose exec rule (deny by default) refuses it.
    let prog = data.join("sub/prog.sh");
    fs::write(&prog, "#!/bin/sh\necho prog ran\n").unwrap();
    fs::set_permissions(&prog, fs::Permissions::from_mode(0o755)).unwrap();
    let o = r.run(&[
        "--policy",
        policy.to_str().unwrap(),
        &fixture("workers/py_exec.py"),
        prog.to_str().unwrap(),
    ]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}", show(&o));
    assert!(out.lines().any(|l| l == "run echo: hi"), "{}", show(&o));
    assert!(
        out.lines()
            .any(|l| l == "run prog: denied (not granted by the policy)"),
        "{}",
        show(&o)
    );
    r.assert_clean();
}

/// The `buntime` module and the broker from a Python script in a real
/// sandbox: static rules, a denied path (statically and through the
/// broker), granted reads and listings, and NET_CONNECT to a host server
/// (the sandbox has no network) through both `socket.create_connection`
/// and `buntime.connect`.
#[test]
fn python_broker_requests_and_connections() {
    use std::net::TcpListener;
    let r = Run::new();
    let data = r.dir.path().join("data");
    fs::create_dir_all(data.join("sub")).unwrap();
    fs::write(data.join("hello.txt"), "hello from data\n").unwrap();
    // An echo server on the host, for two connections.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut c, _) = l.accept().unwrap();
            let mut line = String::new();
            BufReader::new(c.try_clone().unwrap())
                .read_line(&mut line)
                .unwrap();
            c.write_all(line.as_bytes()).unwrap();
        }
    });
    let policy = r.dir.path().join("broker.json");
    fs::write(
        &policy,
        format!(
            r#"{{"version":1,"filesystem":{{"read":["/usr","/etc","/lib","/lib64","/bin","/proc"],
            "write":["/tmp"],"exec":["/usr/bin","/usr/lib","/bin"],"deny":["/etc/shadow"]}},
            "network":{{"mode":"none","allow":["127.0.0.1:{port}"]}},
            "broker":{{"fs_read":"allow","list_dir":"allow","net_connect":"allow"}},
            "env":{{"pass":["PATH"]}}}}"#
        ),
    )
    .unwrap();
    let hello = data.join("hello.txt");
    // Both of the worker's clients: the library's, and the pure-Python one
    // (workers/python/buntime_worker/doorbell.py).
    for client in ["ctypes", "python"] {
        let o = r
            .cmd(&[
                "--allow-env=BUNTIME_PY_CLIENT",
                "--policy",
                policy.to_str().unwrap(),
                &fixture("workers/py_broker.py"),
                "5",
                hello.to_str().unwrap(),
            ])
            .env("BUNTIME_PY_CLIENT", client)
            .output()
            .expect("run buntime");
        python_broker_output(&o);
        let module = if client == "python" {
            "doorbell"
        } else {
            "ipc"
        };
        let want = format!("client: buntime_worker.{module}");
        assert!(text(&o.stdout).lines().any(|l| l == want), "{}", show(&o));
    }
    let o = r.run(&[
        "--policy",
        policy.to_str().unwrap(),
        &fixture("workers/py_net.py"),
        "127.0.0.1",
        &port.to_string(),
    ]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(
        text(&o.stdout),
        "create_connection: ping 1\nconnect: ping 2\n",
        "{}",
        show(&o)
    );
    server.join().unwrap();
    r.assert_clean();
}

/// What `py_broker.py` prints under the broker policy above.
fn python_broker_output(o: &Output) {
    assert_eq!(o.status.code(), Some(5), "{}", show(o));
    let out = text(&o.stdout);
    for line in [
        "available: True",
        "static open: ok",
        "shadow via broker: denied (denied by the policy)",
        "fallback open: hello from data",
        "read_file: hello from data",
        "list_dir: hello.txt,sub",
        "tmp write: ok",
        "exit: 5",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "{line:?} missing:\n{}",
            show(o)
        );
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("shadow: denied (") && l.contains("denied by the policy")),
        "{}",
        show(o)
    );
}

/// An HTTP server on the host at `ip` that answers every request with
/// `body`; returns its port.
fn answering_server(ip: &str, body: &'static str) -> u16 {
    let l = std::net::TcpListener::bind((ip, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn network_through_the_proxy_from_a_script() {
    let r = Run::new();
    // A host server on loopback: named by the flag, so reachable.
    let port = answering_server("127.0.0.1", "hello");
    let s = r.script(
        "net.py",
        "import sys, urllib.request, urllib.error\nfor u in sys.argv[1:]:\n    try:\n        print(u, urllib.request.urlopen(u, timeout=10).read().decode())\n    except urllib.error.HTTPError as e:\n        print(u, e.code, e.headers['X-Buntime-Deny'])\n",
    );
    let allowed = format!("http://127.0.0.1:{port}/");
    let other = format!("http://127.0.0.2:{port}/");
    let o = r.run(&[
        &format!("--allow-net=127.0.0.1:{port}"),
        s.to_str().unwrap(),
        &allowed,
        &other,
    ]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}", show(&o));
    assert!(out.contains(&format!("{allowed} hello\n")), "{}", show(&o));
    assert!(
        out.contains(&format!("{other} 403 loopback address")),
        "{}",
        show(&o)
    );
    r.assert_clean();
}

#[test]
fn bun_fetch_goes_through_the_proxy() {
    let r = Run::new();
    // 127.0.0.2, not 127.0.0.1: NO_PROXY names 127.0.0.1, and Bun's fetch
    // honours it (the connect would then meet Landlock, not the proxy).
    let port = answering_server("127.0.0.2", "from bun");
    let s = r.script(
        "net.ts",
        "for (const u of process.argv.slice(2)) {\n  try {\n    const r: Response = await fetch(u);\n    console.log(u, r.status, r.ok ? await r.text() : r.headers.get(\"x-buntime-deny\"));\n  } catch (e) {\n    console.log(u, \"error\", String(e));\n  }\n}\n",
    );
    let allowed = format!("http://127.0.0.2:{port}/");
    let other = format!("http://127.0.0.3:{port}/");
    let tunnel = format!("https://127.0.0.3:{port}/");
    let o = r.run(&[
        &format!("--allow-net=127.0.0.2:{port}"),
        s.to_str().unwrap(),
        &allowed,
        &other,
        &tunnel,
    ]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        out.contains(&format!("{allowed} 200 from bun\n")),
        "{}",
        show(&o)
    );
    // Forwarded (absolute URI) and CONNECT: both refused by the proxy.
    assert!(
        out.contains(&format!("{other} 403 loopback address")),
        "{}",
        show(&o)
    );
    let refused = out.lines().find(|l| l.starts_with(&tunnel));
    assert!(
        refused.is_some_and(|l| l.contains("error") && l.contains("403")),
        "{}",
        show(&o)
    );
    // The run's summary, from the audit log: both reached the proxy.
    let err = text(&o.stderr);
    assert!(err.contains("buntime: 2 requests denied: "), "{}", show(&o));
    assert_eq!(
        err.matches(&format!("127.0.0.3:{port} (loopback address"))
            .count(),
        2,
        "{}",
        show(&o)
    );
    r.assert_clean();
}

#[test]
fn two_hundred_runs_leave_nothing_behind() {
    let r = Run::new();
    for i in 0..200 {
        let o = r.run(&["--", "/bin/true"]);
        assert!(o.status.success(), "run {i}: {}", show(&o));
    }
    r.assert_clean();
    // No supervisor of ours still runs.
    let ps = Command::new("pgrep")
        .args(["-f", "supervise run-"])
        .output()
        .unwrap();
    let root = r.root().to_string_lossy().into_owned();
    let left: Vec<String> = text(&ps.stdout)
        .lines()
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| text(&c).contains(&root))
                .unwrap_or(false)
        })
        .map(str::to_string)
        .collect();
    assert!(left.is_empty(), "supervisors left: {left:?}");
}

/// The bundle is scratch: with the state root on disk (here /var/tmp) and
/// /dev/shm a memory filesystem, root's run puts it in a fresh directory
/// there; wherever it was, it is gone after the run.
#[test]
fn the_bundle_is_scratch_on_a_memory_filesystem_and_removed() {
    let r = Run::new();
    let o = r
        .cmd(&["--", "/bin/true"])
        .env("BUNTIME_LOG", "cli=debug")
        .output()
        .expect("run buntime");
    assert!(o.status.success(), "{}", show(&o));
    let bundle = text(&o.stderr)
        .lines()
        .find_map(|l| {
            l.split("run: bundle in ")
                .nth(1)
                .map(|p| PathBuf::from(p.trim()))
        })
        .unwrap_or_else(|| panic!("no bundle line: {}", show(&o)));
    let on_tmpfs = |p: &str| {
        nix::sys::statfs::statfs(p)
            .is_ok_and(|f| f.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
    };
    if !on_tmpfs("/var/tmp") && on_tmpfs("/dev/shm") {
        assert!(
            bundle.starts_with("/dev/shm") && bundle.to_string_lossy().contains("buntime-bundle-"),
            "bundle in {}",
            bundle.display()
        );
    }
    assert!(!bundle.exists(), "bundle left: {}", bundle.display());
    r.assert_clean();
}

/// `buntime run … 2>&1 | head`: stderr closed while buntime still logs
/// (debug logging on) must neither crash the run nor leave it behind.
#[test]
fn a_closed_stderr_leaves_nothing_behind() {
    let r = Run::new();
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let o = r
        .cmd(&["--", "/bin/sh", "-c", "echo out"])
        .env("BUNTIME_LOG", "debug")
        .stderr(writer)
        .output()
        .expect("run buntime");
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(text(&o.stdout), "out\n");
    r.assert_clean();
}

/// A tiny HTTP client for the debug UI (loopback, no keep-alive).
#[cfg(feature = "ui")]
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::net::TcpStream;
    let mut s = TcpStream::connect(addr).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

#[cfg(not(feature = "ui"))]
#[test]
fn debug_ui_is_refused_without_the_ui_feature() {
    let r = Run::new();
    let o = r.run(&["--debug-ui", "--", "true"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--debug-ui: this buntime was built without the debug UI"),
        "{err}"
    );
    r.assert_clean();
}

#[cfg(feature = "ui")]
#[test]
fn debug_ui_serves_the_run_and_answers_its_asks() {
    let r = Run::new();
    let data = r.dir.path().join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("x.csv"), "a,b\n").unwrap();
    let policy = r.dir.path().join("ask.json");
    fs::write(
        &policy,
        r#"{"version":1,"filesystem":{"read":["/usr","/etc","/lib","/lib64","/bin","/proc"],
            "write":["/tmp"],"exec":["/usr/bin","/usr/lib","/bin"]},
            "broker":{"fs_read":"ask"}}"#,
    )
    .unwrap();
    let script = r.script(
        "ui.py",
        &format!("print(open('{}/x.csv').read().strip())\n", data.display()),
    );
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let child = r
        .cmd(&[
            &format!("--debug-ui-listen={addr}"),
            "--ask-timeout=20s",
            "--policy",
            policy.to_str().unwrap(),
            script.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The pending ask shows in the UI; allow it there.
    let mut answered = false;
    assert!(wait_until(Duration::from_secs(20), || {
        let Ok(s) = std::net::TcpStream::connect(&addr) else {
            return false;
        };
        drop(s);
        let (code, body) = http(&addr, "GET", "/api/asks", "");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let Some(ask) = v
            .as_array()
            .and_then(|a| a.first())
            .cloned()
            .or_else(|| v["asks"].as_array().and_then(|a| a.first()).cloned())
        else {
            return false;
        };
        assert_eq!(code, 200);
        assert_eq!(ask["kind"], "fs_read");
        let path = format!(
            "/api/asks/{}/{}",
            ask["container"].as_str().unwrap(),
            ask["id"]
        );
        let (code, _) = http(&addr, "POST", &path, r#"{"result":"allow"}"#);
        answered = code == 200;
        true
    }));
    assert!(answered);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(text(&o.stdout), "a,b\n");
    assert!(
        text(&o.stderr).contains(&format!("buntime: debug UI at http://{addr}/")),
        "{}",
        show(&o)
    );
    r.assert_clean();
}

/// As an ordinary user: the test set-up makes the user, delegates a cgroup
/// subtree (`buntime setup-user`), and puts the binary, the worker files
/// and the scripts where that user can read them.
#[test]
fn ordinary_users_run_sandboxes_rootless() {
    const USER: &str = "buntime-test";
    let run_as = |args: &[&str], home: &Path| {
        Command::new("runuser")
            .args(["-u", USER, "--", "env", "XDG_RUNTIME_DIR="])
            .arg(format!("BUNTIME_HOME={}", home.display()))
            .args(args)
            .current_dir("/")
            .stdin(Stdio::null())
            .output()
            .expect("runuser")
    };
    if Command::new("id")
        .arg(USER)
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        let st = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                USER,
            ])
            .status()
            .expect("useradd");
        assert!(st.success(), "useradd {USER}");
    }
    let o = Command::new(BUNTIME)
        .args(["setup-user", USER])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let delegated: Vec<String> = text(&o.stdout).lines().map(str::to_string).collect();
    assert!(delegated
        .iter()
        .any(|d| d.starts_with("/sys/fs/cgroup/memory/buntime/user-")));

    // Stage the worker files (as root), then copy everything somewhere
    // world-readable.
    let r = Run::new();
    let staged = r.run(&[&fixture("../../examples/hello.py")]);
    assert!(staged.status.success(), "{}", show(&staged));
    let pub_dir = r.dir.path().join("pub");
    fs::create_dir_all(pub_dir.join("bin")).unwrap();
    let bin = pub_dir.join("bin/buntime");
    fs::copy(BUNTIME, &bin).unwrap();
    let home = pub_dir.join("home");
    let src_home = Path::new(BUNTIME).parent().unwrap().join("buntime-home");
    let st = Command::new("cp")
        .arg("-r")
        .arg(&src_home)
        .arg(&home)
        .status()
        .unwrap();
    assert!(st.success());
    fs::copy(fixture("run/escape.py"), pub_dir.join("escape.py")).unwrap();
    fs::write(
        pub_dir.join("hello.py"),
        "import os, sys\nprint('hello as', os.getuid())\nsys.exit(3)\n",
    )
    .unwrap();
    let st = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(r.dir.path())
        .status()
        .unwrap();
    assert!(st.success());
    let b = bin.to_str().unwrap();

    let o = run_as(
        &[b, "run", pub_dir.join("hello.py").to_str().unwrap()],
        &home,
    );
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    // Root inside its user namespace, the caller outside.
    assert_eq!(text(&o.stdout), "hello as 0\n");

    let o = run_as(
        &[b, "run", pub_dir.join("escape.py").to_str().unwrap()],
        &home,
    );
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}", show(&o));
    assert!(!out.contains("ESCAPED"), "{}", show(&o));
    for line in [
        "read-shadow: blocked (EACCES)",
        "write-outside: blocked (EROFS)",
        "mount: blocked (EPERM)",
        "unshare: blocked (EPERM)",
        "fork-bomb: blocked (EAGAIN)",
    ] {
        assert!(out.contains(line), "{line}: {}", show(&o));
    }

    // The user's own host /tmp is not the sandbox's: the broker's static
    // grant of /tmp cannot reach the user's file there (issue 18).
    let victim = PathBuf::from(format!(
        "/tmp/buntime-rootless-victim-{}",
        std::process::id()
    ));
    fs::write(&victim, "rootless-host-secret").unwrap();
    let uid = Command::new("id").args(["-u", USER]).output().unwrap();
    let uid: u32 = text(&uid.stdout).trim().parse().unwrap();
    nix::unistd::chown(&victim, Some(nix::unistd::Uid::from_raw(uid)), None).unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
    let attack = pub_dir.join("victim.py");
    fs::write(
        &attack,
        format!(
            "import buntime\nfor f in (lambda: buntime.read_file('{v}'), lambda: buntime.write_file('{v}', b'PWNED')):\n    try:\n        print(f())\n    except OSError as e:\n        print('refused', e)\nprint('granted', buntime.read_file('{me}')[:6])\n",
            v = victim.display(),
            me = pub_dir.join("victim.py").display()
        ),
    )
    .unwrap();
    fs::set_permissions(&attack, fs::Permissions::from_mode(0o644)).unwrap();
    let o = run_as(&[b, "run", attack.to_str().unwrap()], &home);
    let leaked = fs::read_to_string(&victim).unwrap();
    let _ = fs::remove_file(&victim);
    assert!(
        !text(&o.stdout).contains("rootless-host-secret"),
        "{}",
        show(&o)
    );
    assert_eq!(leaked, "rootless-host-secret", "{}", show(&o));
    // Refused as the sandbox's own /tmp, by a supervisor that still serves
    // (a granted read goes through).
    assert!(
        text(&o.stdout).contains("its /tmp is its own"),
        "{}",
        show(&o)
    );
    assert!(
        text(&o.stdout).contains("granted b'import'"),
        "{}",
        show(&o)
    );
    // The read is refused; the write lands in the sandbox's own /tmp.
    assert_eq!(
        text(&o.stdout).matches("refused").count(),
        1,
        "{}",
        show(&o)
    );

    let o = run_as(
        &[
            b,
            "run",
            "--memory=64M",
            "--",
            "/usr/bin/python3",
            "-c",
            "x = [bytearray(8 << 20) for _ in range(100)]",
        ],
        &home,
    );
    assert_eq!(o.status.code(), Some(137), "{}", show(&o));
    assert!(
        text(&o.stderr).contains("the memory limit (64M) was reached"),
        "{}",
        show(&o)
    );

    // The network: the proxy (bound in the sandbox's namespace by the
    // rootless hook) and the broker's NET_CONNECT, to a host server.
    let port = answering_server("127.0.0.1", "rootless");
    let allow = format!("--allow-net=127.0.0.1:{port}");
    let curl = |url: &str, extra: &[&str]| {
        let mut args = vec![b, "run", allow.as_str(), "--", "/usr/bin/curl", "-sS"];
        args.extend_from_slice(extra);
        args.push(url);
        run_as(&args, &home)
    };
    let through_proxy = ["--noproxy", ""];
    let o = curl(&format!("http://127.0.0.1:{port}/"), &through_proxy);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(text(&o.stdout), "rootless", "{}", show(&o));
    let o = curl(
        &format!("http://127.0.0.2:{port}/"),
        &["--noproxy", "", "-o", "/dev/null", "-w", "%{http_code}"],
    );
    assert_eq!(text(&o.stdout), "403", "{}", show(&o));
    assert!(
        text(&o.stderr).contains("1 request denied: connect to 127.0.0.2"),
        "{}",
        show(&o)
    );
    // Around the proxy (curl honours NO_PROXY=127.0.0.1): Landlock refuses.
    let o = curl(&format!("http://127.0.0.1:{port}/"), &[]);
    assert_eq!(o.status.code(), Some(7), "{}", show(&o));
    fs::write(
        pub_dir.join("net.py"),
        "import sys, urllib.request\nprint(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())\n",
    )
    .unwrap();
    let o = run_as(
        &[
            b,
            "run",
            &allow,
            pub_dir.join("net.py").to_str().unwrap(),
            &format!("http://127.0.0.1:{port}/"),
        ],
        &home,
    );
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(text(&o.stdout), "rootless\n", "{}", show(&o));

    // Output, stdin, signals, the time limit and `ask`, as for root. Through
    // setpriv (which execs) so that the child is buntime itself.
    let id_of = |flag: &str| {
        text(
            &Command::new("id")
                .args([flag, USER])
                .output()
                .unwrap()
                .stdout,
        )
        .trim()
        .to_string()
    };
    let (uid, gid) = (id_of("-u"), id_of("-g"));
    let as_user = |args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .args(["--clear-groups", "--", "env", "XDG_RUNTIME_DIR="])
            .arg(format!("BUNTIME_HOME={}", home.display()))
            .arg(b)
            .arg("run")
            .args(args)
            .current_dir("/");
        c
    };
    let script = |name: &str, body: &str| put_script(&pub_dir, name, body);
    check_output_and_stdin(&as_user, &pub_dir);
    check_sigterm_and_timeout(&as_user, &pub_dir);

    // `ask` with nobody to answer (stdin is no terminal): denied after
    // the ask timeout, and said so.
    // Not under the script's directory, which is readable; but readable
    // by the user outside the sandbox.
    let secret_dir = r.dir.path().join("secret");
    fs::create_dir_all(&secret_dir).unwrap();
    fs::write(secret_dir.join("secret.txt"), "not granted\n").unwrap();
    let secret = secret_dir.join("secret.txt").display().to_string();
    let policy = script(
        "ask.json",
        r#"{"version":1,"filesystem":{"read":["/usr","/etc","/lib","/lib64","/bin","/proc"],
            "write":["/tmp"],"exec":["/usr/bin","/usr/lib","/bin"]},
            "broker":{"fs_read":"ask"},"env":{"pass":["PATH"]}}"#,
    );
    let reader = script(
        "ask.py",
        &format!("try:\n    print(open('{secret}').read().strip())\nexcept OSError as e:\n    print('refused:', e.strerror)\n"),
    );
    let o = as_user(&["--policy", &policy, "--ask-timeout=1s", &reader])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    assert!(text(&o.stdout).starts_with("refused:"), "{}", show(&o));
    assert!(
        text(&o.stderr).contains("1 request denied: read"),
        "{}",
        show(&o)
    );

    for i in 0..200 {
        let st = as_user(&["--", "/bin/true"])
            .stdin(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "rootless run {i}");
    }

    // Nothing left: no process of the user (supervisors included), no
    // sandbox cgroup under the user's subtree, no state.
    let procs = || {
        text(
            &Command::new("pgrep")
                .args(["-u", USER])
                .output()
                .unwrap()
                .stdout,
        )
    };
    assert!(
        wait_until(Duration::from_secs(5), || procs().trim().is_empty()),
        "processes of {USER} left: {}",
        procs()
    );
    for d in &delegated {
        let left: Vec<_> = fs::read_dir(d)
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "cgroups left in {d}: {left:?}");
    }
    let state = PathBuf::from(format!("/tmp/buntime-run-{uid}/.buntime"));
    let left = state_left(&state);
    assert!(
        left.is_empty(),
        "state left in {}: {left:?}",
        state.display()
    );
    for d in &delegated {
        let _ = fs::remove_dir(d);
    }
}

/// Every `supervisor.log` under `dir` (a state root; a few levels deep).
fn supervisor_logs(dir: &Path, depth: u32) -> Vec<String> {
    files_named(dir, "supervisor.log", depth)
}

/// The text of every file called `name` under `dir`, a few levels deep.
fn files_named(dir: &Path, name: &str, depth: u32) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        if e.file_name() == name {
            found.push(fs::read_to_string(&p).unwrap_or_default());
        } else if depth > 0 && e.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(files_named(&p, name, depth - 1));
        }
    }
    found
}

/// `BUNTIME_LOG` reaches the supervisor `buntime run` starts (its own
/// binary, which otherwise writes only warnings): with
/// `supervisor=debug`, its debug line about the sandbox's cgroups is in
/// the run's `supervisor.log` while the sandbox runs.
#[test]
fn buntime_log_reaches_the_supervisor() {
    let r = Run::new();
    let child = r
        // A pid 1 that ends on SIGTERM (`buntime run` passes it on).
        .cmd(&[
            "--",
            "/bin/sh",
            "-c",
            "trap 'exit 0' TERM; while :; do sleep 1; done",
        ])
        .env("BUNTIME_LOG", "supervisor=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run buntime");
    let mut seen = Vec::new();
    let found = wait_until(Duration::from_secs(20), || {
        seen = supervisor_logs(&r.root(), 3);
        seen.iter().any(|log| {
            log.lines().any(|l| {
                l.contains("level=debug") && l.contains("joined the sandbox's cpu cgroups")
            })
        })
    });
    // Started (the runtime's state says so only after `buntime run` has
    // taken over the signals it forwards): a SIGTERM before that would end
    // `buntime run` itself, not the sandbox.
    let started = wait_until(Duration::from_secs(20), || {
        files_named(&r.root(), "state.json", 2)
            .iter()
            .any(|s| s.contains("\"status\":\"running\""))
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGTERM,
    )
    .expect("signal buntime run");
    let o = child.wait_with_output().expect("wait for buntime run");
    assert!(found, "no supervisor debug line: {seen:?}\n{}", show(&o));
    assert!(started, "the sandbox never ran: {}", show(&o));
    r.assert_clean();
}
