//! Physical floors for the broker rows (issue 23), measured by the broker
//! bench in the same run, with no container and no buntime code:
//!
//! * [`fd_passing`]: what the kernel charges for "another process opens
//!   the file beneath a root and passes the fd; the asker reads it". Two
//!   processes (fork) ping-pong over a `SOCK_SEQPACKET` socketpair: the
//!   server `openat2(root, path, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`
//!   and `sendmsg` with `SCM_RIGHTS`, the asker `recvmsg`, `read`, `close`.
//!   Both sides busy-poll (`MSG_DONTWAIT` loops), as the ring spins, so no
//!   sleep or wake-up is in it. The floor of the allowed FS_READ row.
//! * [`blocking_python`]: two `/usr/bin/python3` processes ping-pong a
//!   small message over a socketpair, blocking in `recv` on both sides:
//!   what any client that blocks in the kernel for its reply pays on this
//!   machine (on an idle VM, a halted vCPU's wake-up). The floor of the
//!   pure-Python client's rows.

use std::ffi::OsStr;
use std::fs;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::socket::{
    recv, recvmsg, send, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned,
    MsgFlags, SockFlag, SockType,
};

/// Round trips before the timed ones (caches, page faults, frequency).
const WARM: usize = 200;

/// p50 and p99 of `v` in microseconds, from nanoseconds.
fn percentiles(mut v: Vec<u64>) -> Option<(f64, f64)> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1e3;
    Some((at(0.5), at(0.99)))
}

/// p50 and p99 (µs) of the two spinning round trips, alternated round
/// by round so that both see the same load.
pub struct Spinning {
    /// Open beneath the root, pass the fd, read it, close it.
    pub fd: (f64, f64),
    /// The same ping-pong without the open, the fd or the read: the
    /// transport's share of `fd`.
    pub bare: (f64, f64),
    /// As `fd`, the request written to shared memory (as on the ring)
    /// instead of sent: only the reply with the fd crosses the socket.
    pub ring: (f64, f64),
}

/// A word in memory shared with the forked server: the request counter
/// it spins on in the ring phase (`u32::MAX`: leave).
struct Bell(*mut libc::c_void);

impl Bell {
    fn new() -> Result<Self, String> {
        // SAFETY: a fresh anonymous shared mapping, checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        Ok(Bell(p))
    }

    fn word(&self) -> &std::sync::atomic::AtomicU32 {
        // SAFETY: the mapping is page-aligned, zeroed and lives as long as
        // `self`; both processes only touch it atomically.
        unsafe { &*(self.0 as *const std::sync::atomic::AtomicU32) }
    }
}

impl Drop for Bell {
    fn drop(&mut self) {
        // SAFETY: unmaps the page `new` mapped.
        unsafe { libc::munmap(self.0, 4096) };
    }
}

/// The fd-passing floor over `rounds` round trips, or why it could not
/// be measured. The file is `dir/floor-root/data/
/// small.txt`, opened as `/data/small.txt` beneath `dir/floor-root`.
/// Call it while the bench has one thread: the server is a fork.
pub fn fd_passing(dir: &Path, rounds: usize) -> Result<Spinning, String> {
    let root = dir.join("floor-root");
    fs::create_dir_all(root.join("data")).map_err(|e| e.to_string())?;
    fs::write(root.join("data/small.txt"), "a small file\n").map_err(|e| e.to_string())?;
    let root_fd = fs::File::open(&root).map_err(|e| e.to_string())?;
    let bell = Bell::new()?;
    let (asker, server) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| format!("socketpair: {e}"))?;
    // SAFETY: the bench has one thread here; the child only serves and
    // leaves with `_exit`, never returning into the bench.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Child => {
            drop(asker);
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                serve(root_fd.as_raw_fd(), &server, &bell)
            }));
            // SAFETY: ends the child without running the parent's exit code.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(server);
            let got = ask(&asker, rounds, &bell);
            // The server sees end-of-file and leaves.
            drop(asker);
            let _ = nix::sys::wait::waitpid(child, None);
            let [fd, bare, ring] = got?.map(percentiles);
            let none = || "no round trips".to_string();
            Ok(Spinning {
                fd: fd.ok_or_else(none)?,
                bare: bare.ok_or_else(none)?,
                ring: ring.ok_or_else(none)?,
            })
        }
    }
}

const SMALL: &str = "/data/small.txt";

/// Opens `path` beneath `root` and passes the fd (or one byte saying no).
fn open_and_pass(root: RawFd, sock: &OwnedFd, path: &Path) -> nix::Result<usize> {
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match openat2(root, path, how) {
        Ok(fd) => {
            let fds = [fd];
            let r = sendmsg::<()>(
                sock.as_raw_fd(),
                &[IoSlice::new(b"A")],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::empty(),
                None,
            );
            let _ = nix::unistd::close(fd);
            r
        }
        Err(_) => send(sock.as_raw_fd(), b"D", MsgFlags::empty()),
    }
}

/// The ring phase's server: spins on the shared word; each new value is
/// a request for [`SMALL`].
fn serve_ring(root: RawFd, sock: &OwnedFd, bell: &Bell) {
    use std::sync::atomic::Ordering;
    // Zero until the ring phase: the asker may have asked already.
    let mut seen = 0;
    loop {
        let now = bell.word().load(Ordering::Acquire);
        if now == seen {
            std::hint::spin_loop();
            continue;
        }
        if now == u32::MAX || open_and_pass(root, sock, Path::new(SMALL)).is_err() {
            return;
        }
        seen = now;
    }
}

/// The server side: per request, open the path beneath `root` and pass
/// the fd; spins while nothing is queued. `ring` switches to the ring
/// phase.
fn serve(root: RawFd, sock: &OwnedFd, bell: &Bell) {
    let mut buf = [0u8; 256];
    loop {
        let n = match recv(sock.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return,
            Ok(n) => n,
            Err(Errno::EAGAIN | Errno::EINTR) => {
                std::hint::spin_loop();
                continue;
            }
            Err(_) => return,
        };
        let path = Path::new(OsStr::from_bytes(&buf[..n]));
        if path.as_os_str() == "-" {
            // The bare round trip: no open, no fd.
            if send(sock.as_raw_fd(), b"E", MsgFlags::empty()).is_err() {
                return;
            }
            continue;
        }
        if path.as_os_str() == "ring" {
            return serve_ring(root, sock, bell);
        }
        if open_and_pass(root, sock, path).is_err() {
            return;
        }
    }
}

/// The asker's side: `WARM + rounds` of each round trip, alternated
/// (nanoseconds, warm-up dropped): with the fd, timed from the send to
/// the file read and its fd closed; bare, to the reply.
/// Then the ring phase's `WARM + rounds`, the request written to shared
/// memory. Returns the fd, bare and ring times.
fn ask(sock: &OwnedFd, rounds: usize, bell: &Bell) -> Result<[Vec<u64>; 3], String> {
    use std::sync::atomic::Ordering;
    let mut fd_times = Vec::with_capacity(rounds);
    let mut bare_times = Vec::with_capacity(rounds);
    for i in 0..WARM + rounds {
        let bare = bare_round(sock)?;
        let fd = fd_round(sock)?;
        if i >= WARM {
            bare_times.push(bare);
            fd_times.push(fd);
        }
    }
    send(sock.as_raw_fd(), b"ring", MsgFlags::empty()).map_err(|e| format!("send: {e}"))?;
    let mut ring_times = Vec::with_capacity(rounds);
    for i in 0..WARM + rounds {
        let start = Instant::now();
        bell.word().store(i as u32 + 1, Ordering::Release);
        receive_and_read(sock)?;
        if i >= WARM {
            ring_times.push(start.elapsed().as_nanos() as u64);
        }
    }
    bell.word().store(u32::MAX, Ordering::Release);
    Ok([fd_times, bare_times, ring_times])
}

/// One bare round trip, spinning for the reply (nanoseconds).
fn bare_round(sock: &OwnedFd) -> Result<u64, String> {
    let mut reply = [0u8; 8];
    let start = Instant::now();
    send(sock.as_raw_fd(), b"-", MsgFlags::empty()).map_err(|e| format!("send: {e}"))?;
    loop {
        match recv(sock.as_raw_fd(), &mut reply, MsgFlags::MSG_DONTWAIT) {
            Ok(_) => return Ok(start.elapsed().as_nanos() as u64),
            Err(Errno::EAGAIN | Errno::EINTR) => std::hint::spin_loop(),
            Err(e) => return Err(format!("recv: {e}")),
        }
    }
}

/// One open-and-pass round trip, spinning for the reply; ends with the
/// file read and its fd closed (nanoseconds).
fn fd_round(sock: &OwnedFd) -> Result<u64, String> {
    let start = Instant::now();
    send(sock.as_raw_fd(), SMALL.as_bytes(), MsgFlags::empty())
        .map_err(|e| format!("send: {e}"))?;
    receive_and_read(sock)?;
    Ok(start.elapsed().as_nanos() as u64)
}

/// Spins for the reply's fd, reads the file, closes it.
fn receive_and_read(sock: &OwnedFd) -> Result<(), String> {
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let mut reply = [0u8; 8];
    let mut data = [0u8; 64];
    let fd = loop {
        let mut iov = [IoSliceMut::new(&mut reply)];
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(m) => break passed_fd(&m)?,
            Err(Errno::EAGAIN | Errno::EINTR) => std::hint::spin_loop(),
            Err(e) => return Err(format!("recvmsg: {e}")),
        }
    };
    let read = nix::unistd::read(fd, &mut data);
    let _ = nix::unistd::close(fd);
    if read.map_err(|e| format!("read: {e}"))? == 0 {
        return Err("the passed file is empty".into());
    }
    Ok(())
}

fn passed_fd(m: &nix::sys::socket::RecvMsg<()>) -> Result<RawFd, String> {
    let cmsgs = m.cmsgs().map_err(|e| format!("cmsgs: {e}"))?;
    for c in cmsgs {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                return Ok(fd);
            }
        }
    }
    Err("the server refused the open (no fd passed)".into())
}

const PY_PINGPONG: &str = r#"
import os, socket, sys, time
n, cpus, warm = int(sys.argv[1]), int(sys.argv[2]), 300
mine = sorted(os.sched_getaffinity(0))
if len(mine) < cpus:
    raise SystemExit("fewer than %d CPUs" % cpus)
os.sched_setaffinity(0, {mine[0]})
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
pid = os.fork()
if pid == 0:
    os.sched_setaffinity(0, {mine[cpus - 1]})
    a.close()
    while True:
        m = b.recv(64)
        if not m:
            os._exit(0)
        b.send(m)
b.close()
t = []
msg = b"x" * 16
for _ in range(n + warm):
    s = time.perf_counter_ns()
    a.send(msg)
    a.recv(64)
    t.append(time.perf_counter_ns() - s)
a.close()
os.waitpid(pid, 0)
t = sorted(t[warm:])
print("RESULT p50_us=%.2f p99_us=%.2f" % (t[len(t) // 2] / 1e3, t[int((len(t) - 1) * 0.99)] / 1e3))
"#;

/// The blocking round trip between two Python processes, `rounds` of
/// them (p50, p99 in µs), pinned to one CPU or to two (`cpus`): on two
/// each reply wakes the other CPU, on one it is a switch on the same.
pub fn blocking_python(rounds: usize, cpus: usize) -> Result<(f64, f64), String> {
    let out = Command::new("/usr/bin/python3")
        .args(["-c", PY_PINGPONG, &rounds.to_string(), &cpus.to_string()])
        .output()
        .map_err(|e| format!("/usr/bin/python3: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("RESULT"))
        .ok_or_else(|| format!("no result: {}", String::from_utf8_lossy(&out.stderr)))?;
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| format!("no {k} in {line}"))
    };
    Ok((field("p50_us=")?, field("p99_us=")?))
}
