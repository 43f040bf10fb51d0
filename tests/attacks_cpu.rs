//! The supervisor's CPU, as an attack from inside a real `buntime run`
//! sandbox (as root, default policy), judged from the host: a worker
//! storms its supervisor (FUTEX_WAKE on the segment's futex word in a
//! loop, then a flood of small STDOUT frames) and the container's CPU
//! cgroup must have been charged with what the supervisor spent on it; the
//! supervisor must be in that cgroup's CPU hierarchies only, not in `ps`,
//! and every cgroup of the run must be gone at the end.
//!
//! No wall-clock thresholds: CPU time is compared with CPU time, within
//! the clock-tick rounding of /proc/PID/stat.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BUNTIME: &str = env!("CARGO_BIN_EXE_buntime");
const RUNC: &str = env!("CARGO_BIN_EXE_buntime-runc");

/// Handshake by hand without the doorbell flag (so the supervisor sleeps
/// on the futex word of the ring), map the segment, FUTEX_WAKE the word
/// the supervisor sleeps on for 2 s; then 2 s of 64-byte STDOUT frames
/// through the worker library. Phases are gated by the host (stdin).
const STORM_PY: &str = r#"
import _socket, ctypes, mmap, os, sys, time
from buntime_worker import broker, protocol

def msg(kind, arg=0, body=b""):
    return bytes((kind, 0, 0, 0)) + arg.to_bytes(4, "little") + body

print("ready", file=sys.stderr, flush=True)
sys.stdin.readline()

s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
s.connect(os.environ["BUNTIME_CONTROL"])
hello = b"BNTC" + (1).to_bytes(2, "little") * 2 + (0).to_bytes(4, "little")
s.sendmsg([msg(0x01, 0, hello)])
data, anc, _, _ = s.recvmsg(512, _socket.CMSG_SPACE(4))
assert data[0] == 0x02, data
fd = int.from_bytes(anc[0][2][:4], "little")
s.sendmsg([msg(0x04)])
seg = mmap.mmap(fd, os.fstat(fd).st_size)
w2s = int.from_bytes(seg[0x18:0x1C], "little")
head = ctypes.addressof(ctypes.c_char.from_buffer(seg)) + w2s
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
SYS_futex, FUTEX_WAKE = 202, 1
wakes = 0
end = time.monotonic() + 2
while time.monotonic() < end:
    for _ in range(500):
        libc.syscall(SYS_futex, ctypes.c_void_p(head), FUTEX_WAKE, 0x7fffffff, None, None, 0)
    wakes += 500
print("futex wakes", wakes, file=sys.stderr, flush=True)
print("futex done", file=sys.stderr, flush=True)
sys.stdin.readline()

c = broker.client()
frame = b"x" * 64
frames = 0
end = time.monotonic() + 2
while time.monotonic() < end:
    for _ in range(200):
        c.send(protocol.STDOUT, frame)
    frames += 200
print("frames", frames, file=sys.stderr, flush=True)
print("stormed", file=sys.stderr, flush=True)
sys.stdin.readline()
"#;

/// utime + stime of a whole process (its exited threads included), in ns.
fn cpu_ns(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // utime, stime are fields 14, 15 (1-based), i.e. 11, 12 here.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks * tick_ns())
}

fn tick_ns() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1_000_000_000 / hz.max(1) as u64
}

/// The run's cgroup directory in the hierarchy mounted at `mount`.
fn cgroup_dir(mount: &str, id: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup")
        .join(mount)
        .join("buntime")
        .join(id)
}

/// The CPU charged to the run's cgroup so far, in ns: `cpuacct.usage`
/// (cgroup v1), else `cpu.stat`'s `usage_usec` (v2).
fn cgroup_cpu_ns(id: &str) -> u64 {
    let v1 = cgroup_dir("cpuacct", id).join("cpuacct.usage");
    if let Ok(t) = fs::read_to_string(&v1) {
        return t.trim().parse().unwrap();
    }
    let v2 = Path::new("/sys/fs/cgroup/buntime")
        .join(id)
        .join("cpu.stat");
    let t = fs::read_to_string(&v2).unwrap_or_else(|e| panic!("{}: {e}", v2.display()));
    t.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .map(|u| u.trim().parse::<u64>().unwrap() * 1000)
        .unwrap()
}

/// The sandbox's own processes (the supervisor's excepted), from the
/// cgroup the supervisor does not join.
fn sandbox_pids(id: &str, sup: i32) -> Vec<i32> {
    let procs = ["devices", "pids", "memory"]
        .iter()
        .find_map(|m| fs::read_to_string(cgroup_dir(m, id).join("cgroup.procs")).ok())
        .or_else(|| {
            fs::read_to_string(
                Path::new("/sys/fs/cgroup/buntime")
                    .join(id)
                    .join("cgroup.procs"),
            )
            .ok()
        })
        .expect("the run's cgroup.procs");
    procs
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .filter(|&p| p != sup)
        .collect()
}

/// One reading: (cgroup, supervisor, sandbox processes), in ns.
fn reading(id: &str, sup: i32, pids: &[i32]) -> (u64, u64, u64) {
    let sandbox = pids.iter().filter_map(|&p| cpu_ns(p)).sum();
    let s = cpu_ns(sup).expect("supervisor's /proc/PID/stat");
    (cgroup_cpu_ns(id), s, sandbox)
}

fn supervisor_pid(state: &Path) -> (String, i32) {
    for e in fs::read_dir(state.join(".buntime")).unwrap().flatten() {
        let meta = e.path().join("buntime.json");
        if let Ok(t) = fs::read_to_string(&meta) {
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            let pid = v["supervisorPid"].as_i64().expect("supervisorPid") as i32;
            return (e.file_name().to_string_lossy().into_owned(), pid);
        }
    }
    panic!("no sandbox state under {}", state.display());
}

/// The cgroup of `pid` in each v1 hierarchy (`controllers -> path`).
fn cgroups_of(pid: i32) -> Vec<(String, String)> {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut p = l.splitn(3, ':');
            let (_, c, path) = (p.next()?, p.next()?, p.next()?);
            Some((c.to_string(), path.to_string()))
        })
        .collect()
}

fn wait_line(err: &mut impl BufRead, want: &str, seen: &mut String) {
    let start = Instant::now();
    while !seen.lines().any(|l| l == want) {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            panic!("the run ended before {want:?}:\n{seen}");
        }
        seen.push_str(&line);
        // A hang guard, not a performance assertion.
        assert!(start.elapsed() < Duration::from_secs(600), "{seen}");
    }
}

#[test]
fn supervisor_cpu_under_a_storm_is_charged_to_the_sandbox() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("needs root; skipped");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("buntime-test-cpu-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let state = dir.path().join("state");
    let script = dir.path().join("storm.py");
    fs::write(&script, STORM_PY).unwrap();
    let mut child = Command::new(BUNTIME)
        .arg("--root")
        .arg(&state)
        .arg("run")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    wait_line(&mut err, "ready", &mut seen);

    let (id, sup) = supervisor_pid(&state);
    // The supervisor is in the run's cpu and cpuacct cgroups, and in no
    // other hierarchy of it (ps, kill --all, pids, freezer, memory).
    let want = format!("/buntime/{id}");
    let groups = cgroups_of(sup);
    let v1 = groups.iter().any(|(c, _)| !c.is_empty());
    for (ctrls, path) in &groups {
        let cpu = ctrls.split(',').any(|c| c == "cpu" || c == "cpuacct");
        if v1 && cpu {
            assert_eq!(path, &want, "supervisor's {ctrls} cgroup: {groups:?}");
        } else if v1 && !ctrls.is_empty() {
            assert_ne!(path, &want, "supervisor in the run's {ctrls}: {groups:?}");
        }
    }
    let ps = Command::new(RUNC)
        .arg("--root")
        .arg(&state)
        .args(["ps", "--format", "json", &id])
        .output()
        .unwrap();
    assert!(
        ps.status.success(),
        "{}",
        String::from_utf8_lossy(&ps.stderr)
    );
    let listed: Vec<i32> = serde_json::from_slice(&ps.stdout).unwrap();
    assert!(
        !listed.is_empty() && !listed.contains(&sup),
        "ps: {listed:?}"
    );

    let pids = sandbox_pids(&id, sup);
    let before = reading(&id, sup, &pids);
    stdin.write_all(b"\n").unwrap();
    wait_line(&mut err, "futex done", &mut seen);
    let middle = reading(&id, sup, &pids);
    stdin.write_all(b"\n").unwrap();
    wait_line(&mut err, "stormed", &mut seen);
    let after = reading(&id, sup, &pids);
    // For the record (no threshold): what the futex storm alone cost the
    // supervisor, against what it cost the sandbox.
    eprintln!(
        "futex phase: supervisor {} ns, sandbox {} ns",
        middle.1.saturating_sub(before.1),
        middle.2.saturating_sub(before.2)
    );

    let charged = after.0 - before.0;
    let supervisor = after.1.saturating_sub(before.1);
    let sandbox = after.2.saturating_sub(before.2);
    // /proc/PID/stat is in clock ticks, truncated: each process's
    // difference may be up to a tick short or long.
    let slack = (pids.len() as u64 + 1) * tick_ns();
    eprintln!(
        "charged {charged} ns; supervisor {supervisor} ns, sandbox {sandbox} ns ({} pids); {seen}",
        pids.len()
    );
    assert!(
        supervisor > slack,
        "the storm cost the supervisor nothing measurable ({supervisor} ns): not an attack"
    );
    assert!(
        charged + slack >= supervisor + sandbox,
        "the cgroup was charged {charged} ns, but the sandbox used {sandbox} ns and its \
         supervisor {supervisor} ns"
    );

    stdin.write_all(b"\n").unwrap();
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{seen}{rest}");

    // Nothing left: the supervisor, every cgroup of the run, the state.
    assert!(
        !Path::new(&format!("/proc/{sup}")).exists()
            || !fs::read_to_string(format!("/proc/{sup}/cmdline"))
                .unwrap_or_default()
                .contains("supervise"),
        "the supervisor outlived the run"
    );
    for e in fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let d = e.path().join("buntime").join(&id);
        assert!(!d.exists(), "{} left behind", d.display());
    }
    let left: Vec<_> = fs::read_dir(state.join(".buntime"))
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name())
                .filter(|n| n != ".seccomp-cache")
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "state left: {left:?}");
}
