//! The client's side: `run --pool` claims a pooled run of its key and
//! waits for its exit code, forwarding signals; `pool drain` ends every
//! pooled run of a state root.

use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

use super::peer::{self, Peer};
use super::token;
use super::{key_dir, pool_root, tidy, ACK, CLAIM, COMMIT, DRAIN};
use crate::runtime::foreground;

/// How long a pooled run has to take a claim (it answers at once).
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `drain` waits for one pooled run to delete its sandbox.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("pooled run {pid} ({socket}) ended without an exit code")]
    NoCode { pid: i32, socket: String },
    #[error("waiting for pooled run {pid}: {source}")]
    Io { pid: i32, source: std::io::Error },
}

/// A pooled run we claimed: it runs the script with our stdio.
pub struct Claimed {
    conn: UnixStream,
    /// The pooled run's pid (SO_PEERCRED), for messages.
    pub pid: i32,
    /// Where our signals go: the pooled run, never a recycled pid.
    pidfd: OwnedFd,
    pub socket: PathBuf,
    /// Blocked since before the claim.
    set: SigSet,
}

/// The pooled runs' sockets under `dir`.
fn sockets(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                .collect()
        })
        .unwrap_or_default()
}

/// Connects to a pooled run of ours (our uid and user namespace);
/// a socket nobody listens on any more is removed.
fn connect(path: &Path) -> std::io::Result<(UnixStream, Peer)> {
    let conn = UnixStream::connect(path).inspect_err(|e| {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            let _ = std::fs::remove_file(path);
            let _ = std::fs::remove_file(token::path_of(path));
        }
    })?;
    let peer = peer::check(&conn, &peer::Expected::user_only()?)?;
    Ok((conn, peer))
}

/// Claims a ready pooled run of `key`, if there is one. The signals to
/// forward are blocked from before the claim (the script may run at
/// once) until the code came, or no claim was made.
pub fn claim(state_root: &Path, key: &str) -> Option<Claimed> {
    let sockets = sockets(&key_dir(state_root, key));
    if sockets.is_empty() {
        return None;
    }
    let set = foreground::block_signals().ok()?;
    for socket in sockets {
        match try_claim(&socket, key, set) {
            Ok(c) => return Some(c),
            Err(e) => {
                tracing::debug!(target: "cli", "pool: {} not claimed: {e}", socket.display())
            }
        }
    }
    foreground::unblock_signals(&set);
    None
}

/// CLAIM with our key (the pooled run checks it is its own), its token
/// and our fds 0, 1, 2; its ACK; our COMMIT.
fn try_claim(socket: &Path, key: &str, set: SigSet) -> std::io::Result<Claimed> {
    let token = token::read(socket)?;
    let (mut conn, Peer { pid, pidfd }) = connect(socket)?;
    let fds = [0, 1, 2];
    sendmsg::<()>(
        conn.as_raw_fd(),
        &[
            IoSlice::new(&[CLAIM]),
            IoSlice::new(key.as_bytes()),
            IoSlice::new(&token),
        ],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )?;
    conn.set_read_timeout(Some(ACK_TIMEOUT))?;
    let mut ack = [0u8; 1];
    // EOF: another client took it first, or it ended.
    conn.read_exact(&mut ack)?;
    if ack[0] != ACK {
        return Err(std::io::Error::other("unexpected answer"));
    }
    // Written: the pooled run has it (it shuts its reading side before
    // it gives up, so a late commit fails here and we fall back).
    // Before the commit: after it, no error may send us to a fresh run.
    conn.set_read_timeout(None)?;
    conn.write_all(&[COMMIT])?;
    Ok(Claimed {
        conn,
        pid,
        pidfd,
        socket: socket.to_path_buf(),
        set,
    })
}

impl Claimed {
    /// Waits for the run's exit code, forwarding the signals `run` would
    /// forward to its sandbox to the pooled run (which forwards them on).
    pub fn wait(mut self) -> Result<i32, ClaimError> {
        let pid = self.pid;
        let io = |source| ClaimError::Io { pid, source };
        let set = self.set;
        let sfd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(|e| io(e.into()))?;
        let mut code = Vec::with_capacity(4);
        loop {
            let mut p = [
                libc::pollfd {
                    fd: self.conn.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: sfd.as_fd().as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfds.
            if unsafe { libc::poll(p.as_mut_ptr(), 2, -1) } < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(io(e));
            }
            if p[1].revents != 0 {
                forward(&sfd, &self.pidfd);
            }
            if p[0].revents != 0 {
                let mut buf = [0u8; 4];
                let n = self.conn.read(&mut buf).map_err(io)?;
                code.extend_from_slice(&buf[..n]);
                if code.len() >= 4 {
                    foreground::unblock_signals(&set);
                    return Ok(i32::from_le_bytes([code[0], code[1], code[2], code[3]]));
                }
                if n == 0 {
                    foreground::unblock_signals(&set);
                    return Err(ClaimError::NoCode {
                        pid,
                        socket: self.socket.display().to_string(),
                    });
                }
            }
        }
    }
}

/// Passes the signals read from `sfd` on to the pooled run.
fn forward(sfd: &SignalFd, pidfd: &OwnedFd) {
    while let Ok(Some(info)) = sfd.read_signal() {
        let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
            continue;
        };
        if sig != Signal::SIGCHLD {
            peer::signal(pidfd, sig as i32);
        }
    }
}

/// Ends every pooled run of ours under `state_root`, each once its
/// sandbox is deleted; how many.
pub fn drain(state_root: &Path) -> usize {
    let mut n = 0;
    let keys = std::fs::read_dir(pool_root(state_root))
        .map(|r| r.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
        .unwrap_or_default();
    for key in keys {
        let key = key.to_string_lossy().into_owned();
        for socket in sockets(&key_dir(state_root, &key)) {
            let Ok(token) = token::read(&socket) else {
                // Not one we may drain; if nobody listens, connect removes
                // what is left of it.
                let _ = connect(&socket);
                continue;
            };
            if let Ok((mut conn, peer)) = connect(&socket) {
                if conn.write_all(&[&[DRAIN][..], &token].concat()).is_ok() {
                    wait_closed(conn);
                    wait_exited(&peer.pidfd);
                    n += 1;
                }
            }
        }
        tidy(state_root, &key);
    }
    n
}

/// Reads until EOF: the pooled run closes once its sandbox is gone.
fn wait_closed(mut conn: UnixStream) {
    let _ = conn.set_read_timeout(Some(DRAIN_TIMEOUT));
    let mut sink = [0u8; 16];
    while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
}

/// Waits (at most a few seconds) for the process of `pidfd` to exit.
fn wait_exited(pidfd: &std::os::fd::OwnedFd) {
    let mut p = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, 5000) };
}
