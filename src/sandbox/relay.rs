//! `resources.output` under `buntime run`: the sandbox's stdout and stderr
//! are pipes (or, where ours is a terminal, a pseudo-terminal, so that the
//! sandbox still sees a terminal and line-buffers), relayed to ours as the
//! data arrives. Bytes of both are counted together; past the limit the
//! relay stops, the sandbox is killed, and `buntime run` says so.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Exit status of a run killed for `resources.output` (as for a writer
/// whose reader went away: 128 + SIGPIPE).
pub const OUTPUT_LIMIT_EXIT: i32 = 141;

/// The sandbox's ends (for `CreateOptions`) and ours (for `Relay::start`).
pub struct Plumbing {
    pub stdout: Arc<OwnedFd>,
    pub stderr: Arc<OwnedFd>,
    sources: Vec<Source>,
}

/// One stream read from the sandbox and written to one of our fds.
struct Source {
    read: OwnedFd,
    to: RawFd,
}

fn is_tty(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// Do fds 1 and 2 lead to the same file (`2>&1`, one terminal)?
fn same_file() -> bool {
    use nix::sys::stat::fstat;
    match (fstat(1), fstat(2)) {
        (Ok(a), Ok(b)) => (a.st_dev, a.st_ino, a.st_rdev) == (b.st_dev, b.st_ino, b.st_rdev),
        _ => false,
    }
}

fn set_cloexec(fd: &OwnedFd) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map(|_| ())
        .map_err(std::io::Error::from)
}

/// (ours, the sandbox's): a pipe.
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}

/// (ours, the sandbox's): a pseudo-terminal in raw mode (bytes pass as
/// written: our terminal does its own newline translation), with the size
/// of the terminal at `like`.
fn pty(like: RawFd) -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills the winsize we pass.
    let sized = unsafe { libc::ioctl(like, libc::TIOCGWINSZ, &mut ws) } == 0;
    let p = nix::pty::openpty(sized.then_some(&ws), None).map_err(std::io::Error::from)?;
    set_cloexec(&p.master)?;
    set_cloexec(&p.slave)?;
    let mut t = nix::sys::termios::tcgetattr(&p.slave).map_err(std::io::Error::from)?;
    nix::sys::termios::cfmakeraw(&mut t);
    nix::sys::termios::tcsetattr(&p.slave, nix::sys::termios::SetArg::TCSANOW, &t)
        .map_err(std::io::Error::from)?;
    Ok((p.master, p.slave))
}

/// What our stdout and stderr are (terminals? one file?): what the
/// relay's plumbing is made to match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub out_tty: bool,
    pub err_tty: bool,
    /// fds 1 and 2 lead to the same file.
    pub same: bool,
}

impl Shape {
    /// Our own fds 1 and 2.
    pub fn of_own() -> Shape {
        Shape {
            out_tty: is_tty(1),
            err_tty: is_tty(2),
            same: same_file(),
        }
    }

    /// Three letters, `t`/`-` each: for a command line.
    pub fn encode(self) -> String {
        [self.out_tty, self.err_tty, self.same]
            .iter()
            .map(|&b| if b { 't' } else { '-' })
            .collect()
    }

    pub fn parse(s: &str) -> Option<Shape> {
        let b: Vec<bool> = s.chars().map(|c| c == 't').collect();
        (b.len() == 3).then(|| Shape {
            out_tty: b[0],
            err_tty: b[1],
            same: b[2],
        })
    }
}

/// Makes the streams: a pty for a stream that is a terminal here, a pipe
/// otherwise; one for both when fds 1 and 2 are the same file (`2>&1`, a
/// terminal), which keeps the order of their bytes exactly.
pub fn plumb() -> std::io::Result<Plumbing> {
    plumb_as(Shape::of_own())
}

/// [`plumb`] for streams shaped as `shape` says (a pooled run's, made
/// before its caller's stdio is known).
pub fn plumb_as(shape: Shape) -> std::io::Result<Plumbing> {
    let Shape {
        out_tty,
        err_tty,
        same,
    } = shape;
    let make = |tty: bool, fd: RawFd| if tty { pty(fd) } else { pipe() };
    if same {
        let (ours, theirs) = make(out_tty, 1)?;
        // Two descriptors: libcontainer closes each after its dup2.
        let second = theirs.try_clone()?;
        return Ok(Plumbing {
            stdout: Arc::new(theirs),
            stderr: Arc::new(second),
            sources: vec![Source { read: ours, to: 1 }],
        });
    }
    let (out_r, out_w) = make(out_tty, 1)?;
    let (err_r, err_w) = make(err_tty, 2)?;
    Ok(Plumbing {
        stdout: Arc::new(out_w),
        stderr: Arc::new(err_w),
        sources: vec![Source { read: out_r, to: 1 }, Source { read: err_r, to: 2 }],
    })
}

impl Plumbing {
    /// Gives each pty the size of the terminal its stream goes to (a
    /// pooled run's ptys were made before it had one).
    pub fn fit_terminals(&self) {
        for s in &self.sources {
            let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
            // SAFETY: TIOCGWINSZ fills the winsize we pass; TIOCSWINSZ
            // reads it (a pipe refuses both: nothing to do then).
            unsafe {
                if libc::ioctl(s.to, libc::TIOCGWINSZ, &mut ws) == 0 {
                    libc::ioctl(s.read.as_raw_fd(), libc::TIOCSWINSZ, &ws);
                }
            }
        }
    }
}

/// How often a pooled run's ptys are checked against their terminals.
const RESIZE_POLL: Duration = Duration::from_millis(200);

impl Plumbing {
    /// Keeps each pty the size of its terminal as that changes, by a
    /// thread checking every 200 ms for the process's life: a pooled
    /// run's terminal is the client's, whose SIGWINCH is forwarded to the
    /// sandbox before its pty knows the new size. After a resize the
    /// thread sends `init` (a pidfd of the sandbox's init: never a
    /// recycled pid) a SIGWINCH of its own, which finds the new size.
    pub fn follow_terminals(&self, init: OwnedFd) -> std::io::Result<()> {
        let mut pairs = Vec::new();
        for s in &self.sources {
            // SAFETY: isatty only inspects the descriptor.
            if unsafe { libc::isatty(s.read.as_raw_fd()) } == 1 {
                pairs.push((s.to, s.read.try_clone()?));
            }
        }
        if pairs.is_empty() {
            return Ok(());
        }
        std::thread::Builder::new()
            .name("resize".into())
            .spawn(move || loop {
                std::thread::sleep(RESIZE_POLL);
                let resized = pairs
                    .iter()
                    .fold(false, |any, (to, pty)| refit(*to, pty.as_raw_fd()) || any);
                if resized {
                    crate::supervisor::pidfd_signal(&init, libc::SIGWINCH);
                }
            })
            .map(drop)
    }
}

/// `pty` sized as the terminal `to` if they differ; whether it was.
fn refit(to: RawFd, pty: RawFd) -> bool {
    // SAFETY: plain data; TIOCGWINSZ fills the winsize we pass and
    // TIOCSWINSZ reads it.
    unsafe {
        let mut want: libc::winsize = std::mem::zeroed();
        let mut have: libc::winsize = std::mem::zeroed();
        libc::ioctl(to, libc::TIOCGWINSZ, &mut want) == 0
            && libc::ioctl(pty, libc::TIOCGWINSZ, &mut have) == 0
            && (want.ws_row, want.ws_col) != (have.ws_row, have.ws_col)
            && libc::ioctl(pty, libc::TIOCSWINSZ, &want) == 0
    }
}

/// What the relay did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Relayed {
    /// Bytes passed on (at most the limit).
    pub bytes: u64,
    /// The limit was reached and the sandbox killed.
    pub limit_hit: bool,
}

/// The running relay thread.
pub struct Relay {
    done: mpsc::Receiver<Relayed>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    /// Starts relaying `plumbing`'s streams; `init` is the sandbox's init
    /// (killed at the limit). The sandbox's ends must be closed here once
    /// the sandbox holds them (drop `Plumbing`'s Arcs), or EOF never comes.
    pub fn start(plumbing: Plumbing, limit: u64, init: i32) -> std::io::Result<Relay> {
        // Taken while the init cannot have exited (it waits to be started),
        // so the kill never reaches a recycled pid.
        let pidfd = crate::supervisor::pidfd_open(init)?;
        let (tx, done) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let sources = plumbing.sources;
        std::thread::Builder::new()
            .name("output".into())
            .spawn(move || {
                let r = relay(sources, limit, &pidfd, &flag);
                let _ = tx.send(r);
            })?;
        Ok(Relay { done, stop })
    }

    /// After the sandbox exited: what is still in the streams is relayed
    /// (until EOF, at most `wait`), then the relay ends.
    pub fn finish(self, wait: Duration) -> Relayed {
        match self.done.recv_timeout(wait) {
            Ok(r) => r,
            Err(_) => {
                self.stop.store(true, Ordering::SeqCst);
                self.done
                    .recv_timeout(Duration::from_secs(1))
                    .unwrap_or_default()
            }
        }
    }
}

/// Writes all of `data` to `fd`; false when it is gone (EPIPE and such).
fn write_all(fd: RawFd, data: &[u8]) -> bool {
    // SAFETY: a File borrowed for the call, never closed (ManuallyDrop).
    let mut f = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    f.write_all(data).is_ok()
}

fn relay(mut sources: Vec<Source>, limit: u64, pidfd: &OwnedFd, stop: &AtomicBool) -> Relayed {
    let mut out = Relayed::default();
    let mut buf = vec![0u8; 64 << 10];
    while !sources.is_empty() && !stop.load(Ordering::SeqCst) {
        let mut fds: Vec<libc::pollfd> = sources
            .iter()
            .map(|s| libc::pollfd {
                fd: s.read.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: valid pollfds; a bounded wait so `stop` is seen.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        if r < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        let mut closed = Vec::new();
        for (i, p) in fds.iter().enumerate() {
            if p.revents == 0 {
                continue;
            }
            let s = &sources[i];
            // SAFETY: reads into our buffer from a descriptor we own.
            let n = unsafe { libc::read(s.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                ) {
                    continue;
                }
                // EIO: a pty whose other side is closed (its EOF).
                closed.push(i);
                continue;
            }
            if n == 0 {
                closed.push(i);
                continue;
            }
            let n = n as usize;
            let room = limit.saturating_sub(out.bytes).min(n as u64) as usize;
            if room > 0 && !write_all(s.to, &buf[..room]) {
                // Our side is gone: so is the sandbox's stream (it gets
                // EPIPE, as it would writing to ours directly).
                closed.push(i);
            }
            out.bytes += room as u64;
            if room < n {
                let _ = crate::supervisor::signal_kill(pidfd);
                out.limit_hit = true;
                return out;
            }
        }
        for i in closed.into_iter().rev() {
            sources.remove(i);
        }
    }
    out
}
