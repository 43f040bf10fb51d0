//! Attacks on the host through the supervisor's broker, from inside
//! `buntime run` under the default policy (issue 18, findings 1 and 2):
//! the broker's static grants (`write: /tmp, /dev/shm`, `read: /proc`) must
//! name the sandbox's own private mounts, never the host's, and the broker
//! and the sandbox act as an unprivileged uid, never as host root.
//!
//! Judged on the host: files planted with random tokens whose content,
//! owner and mode must not change, names that must not be listed, secrets
//! in host processes' environments that must not be printed, and the
//! owner of what a granted write leaves on the host.

mod common;

use common::{show, text, token};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BUNTIME: &str = env!("CARGO_BIN_EXE_buntime");
/// `buntime run`'s first sandbox uid (src/sandbox/mod.rs RUN_ID_BASE).
const RUN_ID_BASE: u32 = 2_140_000_000;

/// `buntime run` started with these supplementary groups (as under sudo,
/// where root has group 0 and others).
trait Groups {
    fn groups_of_the_caller(&mut self, groups: &'static [libc::gid_t]) -> &mut Self;
}

impl Groups for Command {
    fn groups_of_the_caller(&mut self, groups: &'static [libc::gid_t]) -> &mut Self {
        use std::os::unix::process::CommandExt;
        // SAFETY: setgroups between fork and exec, on a static list.
        unsafe {
            self.pre_exec(move || {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        }
    }
}

/// Paths this test planted on the host, removed on drop.
struct Planted(Vec<PathBuf>);

impl Drop for Planted {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = fs::remove_dir_all(p).or_else(|_| fs::remove_file(p));
        }
    }
}

/// A host file of another uid, mode 0600, holding `body`.
fn victim(planted: &mut Planted, path: &Path, body: &str) {
    fs::write(path, body).unwrap();
    planted.0.push(path.to_path_buf());
    nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(4242)), None).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

/// Every attempt prints one line: `LABEL OK <result>` or `LABEL NO <error>`.
const ATTACK_PY: &str = r#"
import os, sys
import buntime

def attempt(label, fn):
    try:
        print(label, "OK", fn(), flush=True)
    except Exception as e:
        print(label, "NO", type(e).__name__, e, flush=True)

victim, marker, host_pid, link_target, granted = sys.argv[1:6]
attempt("broker-read", lambda: buntime.read_file(victim))
attempt("open-read", lambda: open(victim, "rb").read())
attempt("broker-write", lambda: buntime.write_file(victim, b"PWNED by the sandbox"))
attempt("open-write", lambda: open(victim, "w").write("PWNED by open"))
attempt("list-tmp", lambda: buntime.list_dir("/tmp"))
attempt("list-shm", lambda: buntime.list_dir("/dev/shm"))
attempt("host-environ", lambda: buntime.read_file(f"/proc/{host_pid}/environ"))
attempt("self-environ", lambda: buntime.read_file("/proc/self/environ"))
attempt("init-cmdline", lambda: buntime.read_file("/proc/1/cmdline"))
# A symlink planted in the sandbox's own /tmp pointing out at a host file.
os.symlink(link_target, "/tmp/out-link")
attempt("link-write", lambda: buntime.write_file("/tmp/out-link", b"PWNED via link"))
attempt("link-read", lambda: buntime.read_file("/tmp/out-link"))
attempt("uid", lambda: (os.getuid(), open("/proc/self/uid_map").read().split()))
attempt("groups", lambda: [l for l in open("/proc/self/status") if l.startswith("Groups:")][0].split()[1:])
with open(os.path.join(granted, "written"), "w") as f:
    f.write("hello")
print("wrote", flush=True)
"#;

#[test]
fn the_broker_and_the_sandbox_never_act_on_the_hosts_files() {
    let tok = token();
    let mut planted = Planted(Vec::new());
    // Host files under the names the sandbox's private mounts also have.
    let tmp_dir = PathBuf::from(format!("/tmp/buntime-attack-{tok}"));
    fs::create_dir(&tmp_dir).unwrap();
    planted.0.push(tmp_dir.clone());
    let victim_path = tmp_dir.join("victim");
    let secret = format!("host-secret-{tok}");
    victim(&mut planted, &victim_path, &secret);
    let shm_marker = PathBuf::from(format!("/dev/shm/buntime-attack-marker-{tok}"));
    fs::write(&shm_marker, "x").unwrap();
    planted.0.push(shm_marker.clone());
    // A host file outside every mount of the sandbox, for the symlink.
    let out_dir = tempfile::Builder::new()
        .prefix("buntime-attack-")
        .tempdir_in("/var/tmp")
        .unwrap();
    fs::set_permissions(out_dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let link_victim = out_dir.path().join("link-victim");
    victim(&mut planted, &link_victim, &secret);
    // Where the policy grants writing: open to every uid.
    let granted = out_dir.path().join("granted");
    fs::create_dir(&granted).unwrap();
    fs::set_permissions(&granted, fs::Permissions::from_mode(0o777)).unwrap();
    let script = out_dir.path().join("attack.py");
    fs::write(&script, ATTACK_PY).unwrap();
    // A host process with a secret in its environment.
    let env_secret = format!("env-secret-{tok}");
    let mut host_proc = Command::new("sleep")
        .arg("60")
        .env("HOST_PROCESS_SECRET", &env_secret)
        .spawn()
        .unwrap();
    let caller_secret = format!("caller-secret-{tok}");
    let state = out_dir.path().join("state");

    let child = Command::new(BUNTIME)
        .arg("--root")
        .arg(&state)
        .arg("run")
        .arg(format!("--allow-write={}", granted.display()))
        .arg(&script)
        .arg(&victim_path)
        .arg(&shm_marker)
        .arg(host_proc.id().to_string())
        .arg(&link_victim)
        .arg(&granted)
        .env("AWS_SECRET_ACCESS_KEY", &caller_secret)
        .stdin(Stdio::null())
        .groups_of_the_caller(&[0, 4, 42])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run_pid = child.id();
    let o = child.wait_with_output().unwrap();
    let _ = host_proc.kill();
    let _ = host_proc.wait();
    let out = text(&o.stdout) + &text(&o.stderr);
    assert!(out.contains("wrote"), "{}", show(&o));

    // Nothing of the host's was read...
    for s in [&secret, &env_secret, &caller_secret] {
        assert!(!out.contains(s.as_str()), "leaked {s}:\n{}", show(&o));
    }
    // ...nor listed: the sandbox's /tmp and /dev/shm are its own.
    // (The planted names are in the script's arguments: only the
    // listings are looked at.)
    for l in out.lines().filter(|l| l.starts_with("list-")) {
        assert!(
            l.starts_with("list-tmp OK") || l.starts_with("list-shm OK"),
            "{l}"
        );
        assert!(!l.contains(&*tok), "a planted name was listed: {l}");
        assert!(!l.contains("buntime-"), "a host entry was listed: {l}");
    }
    // ...nor written, directly or through a planted symlink.
    for v in [&victim_path, &link_victim] {
        assert_eq!(fs::read_to_string(v).unwrap(), secret, "{}", v.display());
        let m = fs::metadata(v).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o777), (4242, 0o600));
    }
    for label in ["broker-read", "broker-write", "link-write", "link-read"] {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("{label} NO"))),
            "{label} was not refused:\n{}",
            show(&o)
        );
    }
    // The sandbox's init is its own worker, not the host's init.
    let host_init = fs::read("/proc/1/cmdline").unwrap();
    let host_init = text(&host_init).replace('\0', " ");
    let line = out
        .lines()
        .find(|l| l.starts_with("init-cmdline"))
        .unwrap_or_default();
    assert!(
        !line.contains(host_init.trim()) || host_init.contains("python3"),
        "{line}"
    );
    // No host root inside: root in the sandbox is the run's own uid, and
    // what it writes through a grant is owned by that uid.
    let want = RUN_ID_BASE + run_pid;
    assert!(
        out.contains(&format!("uid OK (0, ['0', '{want}', '1'])")),
        "{}",
        show(&o)
    );
    // None of the caller's supplementary groups (it has 0, 4 and 42).
    assert!(out.contains("groups OK ['0']"), "{}", show(&o));
    let m = fs::metadata(granted.join("written")).unwrap();
    assert_eq!((m.uid(), m.gid()), (want, want));
}
