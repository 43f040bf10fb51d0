//! `buntime run --learn` end to end, as root: learn a script's policy,
//! run it again under that policy with no denials; a script that touches
//! one more path is refused; credential files are never granted; bad
//! input still leaves what was learned, marked incomplete.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BUNTIME: &str = env!("CARGO_BIN_EXE_buntime");

/// A job directory outside /tmp (the sandbox has its own /tmp): data to
/// read, an output directory, the scripts; reachable by the run's uid.
struct Job {
    dir: tempfile::TempDir,
    port: u16,
}

fn serve_http() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = c.write_all(
                b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
            );
        }
    });
    port
}

const JOB: &str = r#"
import os, subprocess, sys, urllib.request
data, out, port = sys.argv[1], sys.argv[2], sys.argv[3]
total = 0
for name in sorted(os.listdir(data)):
    with open(os.path.join(data, name)) as f:
        total += len(f.read())
subprocess.run(["/usr/bin/uname", "-s"], check=True)
body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=20).read()
if len(sys.argv) > 4:
    with open(sys.argv[4]) as f:
        f.read()
with open(out, "w") as f:
    f.write(f"{total} {body.decode()}\n")
print("done", total)
"#;

impl Job {
    fn new() -> Job {
        let dir = tempfile::Builder::new()
            .prefix("buntime-test-learn-")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        let p = dir.path();
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
        for d in ["data", "out", "scripts", "elsewhere"] {
            fs::create_dir_all(p.join(d)).unwrap();
        }
        // Written by the sandbox's own uid.
        fs::set_permissions(p.join("out"), fs::Permissions::from_mode(0o1777)).unwrap();
        for i in 0..3 {
            fs::write(
                p.join("data").join(format!("f{i}.csv")),
                format!("row {i}\n"),
            )
            .unwrap();
        }
        fs::write(p.join("elsewhere/notes.txt"), "not in the learned run\n").unwrap();
        fs::write(p.join("scripts/job.py"), JOB).unwrap();
        fs::write(
            p.join("scripts/shadow.py"),
            "try:\n    open('/etc/shadow').read()\nexcept OSError as e:\n    print('refused', e.errno)\n",
        )
        .unwrap();
        Job {
            port: serve_http(),
            dir,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn run(&self, args: &[&str], extra: &[&str]) -> Output {
        let out = self.path("out/result.txt");
        let _ = fs::remove_file(&out);
        let mut c = Command::new(BUNTIME);
        c.arg("--root")
            .arg(self.path("state"))
            .arg("run")
            .args(args)
            .arg(self.path("scripts/job.py"))
            .arg(self.path("data"))
            .arg(&out)
            .arg(self.port.to_string())
            .args(extra)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        c.output().expect("run buntime")
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    )
}

fn policy_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(p).expect("learned policy")).expect("json")
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn learn_then_run_under_the_learned_policy() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let job = Job::new();
    let o = job.run(&["--learn"], &[]);
    assert!(o.status.success(), "{}", show(&o));
    let err = text(&o.stderr);
    assert!(err.contains("learned policy for"), "{err}");
    assert!(err.contains("files read"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{}", job.port)), "{err}");
    assert!(err.contains("not sandboxed"), "{err}");
    let learned = job.path("job.policy.json");
    let p = policy_json(&learned);
    let data = job.path("data").to_string_lossy().into_owned();
    let out = job.path("out").to_string_lossy().into_owned();
    assert!(
        p["filesystem"]["read"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == &data),
        "{p}"
    );
    assert!(
        p["filesystem"]["write"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == &out),
        "{p}"
    );
    assert_eq!(p["network"]["mode"], "proxy", "{p}");
    assert_eq!(p["network"]["allow"][0], format!("127.0.0.1:{}", job.port));
    assert!(!p["description"].as_str().unwrap().contains("INCOMPLETE"));
    // It is smaller than the default it was cut from.
    let default = policy_json(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies/default.json"
    )));
    let n = |v: &serde_json::Value| v["filesystem"]["read"].as_array().map_or(0, Vec::len);
    assert!(n(&p) < n(&default), "{p}");
    let check = Command::new(BUNTIME)
        .args(["policy", "check"])
        .arg(&learned)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", show(&check));

    // Again, under the learned policy: the same result, nothing denied.
    let policy = learned.to_string_lossy().into_owned();
    let o = job.run(&["--policy", &policy], &[]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(!text(&o.stderr).contains("denied"), "{}", show(&o));
    assert_eq!(
        fs::read_to_string(job.path("out/result.txt")).unwrap(),
        "18 hello\n"
    );

    // One path the learned run did not touch: refused.
    let extra = job
        .path("elsewhere/notes.txt")
        .to_string_lossy()
        .into_owned();
    let o = job.run(&["--policy", &policy], &[&extra]);
    assert!(!o.status.success(), "{}", show(&o));
    assert!(text(&o.stderr).contains("notes.txt"), "{}", show(&o));
    assert!(!job.path("out/result.txt").exists());
}

#[test]
fn learning_never_grants_shadow() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let job = Job::new();
    let o = Command::new(BUNTIME)
        .arg("--root")
        .arg(job.path("state"))
        .args(["run", "--learn=shadow.json"])
        .arg(job.path("scripts/shadow.py"))
        .current_dir(job.dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    assert!(text(&o.stdout).contains("refused"), "{}", show(&o));
    let err = text(&o.stderr);
    assert!(err.contains("asked for, not granted: /etc/shadow"), "{err}");
    let p = fs::read_to_string(job.path("shadow.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&p).unwrap();
    assert!(
        v["filesystem"]["deny"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == "/etc/shadow*"),
        "{p}"
    );
    for list in ["read", "write", "exec"] {
        for r in v["filesystem"][list].as_array().into_iter().flatten() {
            assert!(!r.as_str().unwrap().starts_with("/etc/shadow"), "{p}");
        }
    }
}

#[test]
fn bad_input_still_writes_what_was_learned_marked_incomplete() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let job = Job::new();
    // A run that fails (the port is closed): its policy is marked.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut c = Command::new(BUNTIME);
    c.arg("--root")
        .arg(job.path("state"))
        .args(["run", "--learn=failed.json"])
        .arg(job.path("scripts/job.py"))
        .arg(job.path("data"))
        .arg(job.path("out/x.txt"))
        .arg(closed.to_string())
        .current_dir(job.dir.path())
        .stdin(Stdio::null());
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(text(&o.stderr).contains("INCOMPLETE"), "{}", show(&o));
    let p = policy_json(&job.path("failed.json"));
    assert!(
        p["description"].as_str().unwrap().starts_with("INCOMPLETE"),
        "{p}"
    );
    // What it did reach is there.
    let data = job.path("data").to_string_lossy().into_owned();
    assert!(
        p["filesystem"]["read"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == &data),
        "{p}"
    );

    // An output path that cannot be written: a clear error naming it, a
    // non-zero exit, and the policy in a file the error names.
    let o = job.run(&["--learn=/nonexistent-dir/x.json"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = text(&o.stderr);
    assert!(
        err.contains("cannot write the learned policy to /nonexistent-dir/x.json"),
        "{err}"
    );
    let fallback = err
        .split("what was learned is in ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("fallback path named");
    let v = policy_json(Path::new(fallback));
    assert_eq!(v["version"], 1);
    let _ = fs::remove_file(fallback);
}
