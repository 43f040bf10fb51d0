//! Attacks on the host's credential files from inside `buntime run` under
//! the default policy (issue 18, finding 2): the shadow backups
//! (`/etc/shadow-`, `/etc/gshadow-`) and other `shadow*`/`gshadow*` names
//! are read directly (Python's open, and `cat` with no broker fallback)
//! and through the broker (`buntime.read_file`). Judged on the host: a
//! random token planted in the files (or, for backups the host already
//! has, their own lines) never appears in what the sandbox prints.

mod common;

use common::token;
use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const BUNTIME: &str = env!("CARGO_BIN_EXE_buntime");

/// Files this test planted on the host, removed on drop.
struct Planted(Vec<PathBuf>);

impl Planted {
    /// Creates `path` (mode 0600, like the real ones) with `text`.
    fn file(&mut self, path: &str, text: &str) {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .unwrap_or_else(|e| panic!("plant {path}: {e}"));
        self.0.push(PathBuf::from(path));
        f.write_all(text.as_bytes()).unwrap();
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = fs::remove_file(p);
        }
    }
}

/// For each path: Python's open (whose failure falls back to the broker),
/// `cat` (no fallback), and `buntime.read_file`. One line per attempt.
const ATTACK_PY: &str = r#"
import subprocess, sys
import buntime

def report(label, fn):
    try:
        print(label, "READ", fn(), flush=True)
    except PermissionError as e:
        print(label, "DENIED", e, flush=True)
    except Exception as e:
        print(label, "ERROR", type(e).__name__, e, flush=True)

def cat(p):
    r = subprocess.run(["cat", p], capture_output=True)
    if r.returncode != 0:
        raise PermissionError(r.stderr.decode(errors="replace").strip())
    return r.stdout

for p in sys.argv[1:]:
    report(f"open {p}", lambda: open(p, "rb").read())
    report(f"cat {p}", lambda: cat(p))
    report(f"broker {p}", lambda: buntime.read_file(p))
"#;

#[test]
fn shadow_backups_are_not_read_under_the_default_policy() {
    // The token is in the files, never in their names.
    let tok = token();
    let name = token();
    let mut planted = Planted(Vec::new());
    // What must never appear in the sandbox's output: the token, and the
    // lines of backups the host already has (not touched by this test).
    let mut secrets = vec![tok.clone()];
    let mut targets = Vec::new();
    for p in ["/etc/shadow-", "/etc/gshadow-"] {
        match fs::read_to_string(p) {
            Ok(text) => secrets.extend(text.lines().filter(|l| l.len() >= 8).map(str::to_string)),
            Err(_) => planted.file(p, &format!("root:{tok}:19000:0:99999:7:::\n")),
        }
        targets.push(p.to_string());
    }
    // Other backup names the pattern covers.
    for p in [
        format!("/etc/shadow.bt-{name}"),
        format!("/etc/gshadow.bt-{name}"),
    ] {
        planted.file(&p, &format!("root:{tok}:19000:0:99999:7:::\n"));
        targets.push(p);
    }

    let dir = tempfile::Builder::new()
        .prefix("buntime-test-attack-")
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    let script = dir.path().join("attack.py");
    fs::write(&script, ATTACK_PY).unwrap();
    let o: Output = Command::new(BUNTIME)
        .arg("--root")
        .arg(dir.path().join("state"))
        .arg("run")
        .arg(&script)
        .args(&targets)
        .stdin(Stdio::null())
        .output()
        .expect("run buntime");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let all = format!("{out}{}", String::from_utf8_lossy(&o.stderr));
    let show = format!("[exit {:?}]\n{all}", o.status.code());
    assert!(o.status.success(), "{show}");
    for s in &secrets {
        assert!(!all.contains(s.as_str()), "leaked {s:?}:\n{show}");
    }
    for t in &targets {
        for kind in ["open", "cat", "broker"] {
            let label = format!("{kind} {t} ");
            let line = out
                .lines()
                .find(|l| l.starts_with(&label))
                .unwrap_or_else(|| panic!("no line {label:?}:\n{show}"));
            assert!(line.contains("DENIED"), "{line}\n{show}");
        }
        // The broker names the deny entry that refused it.
        let broker = out
            .lines()
            .find(|l| l.starts_with(&format!("broker {t} ")))
            .unwrap_or_default();
        assert!(broker.contains("denied by the policy"), "{broker}");
    }
}
