//! The pooled run's side: listen for one claim (or a drain), unclaimed at
//! most the idle time; take the client's stdio; send the exit code.

use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use super::token::{self, TOKEN_LEN};
use super::{key_dir, make_private_dir, tidy, ACK, CLAIM, COMMIT, DRAIN};

/// How long a connected client has to say what it wants (and to commit
/// after our ACK).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// A pooled run's socket; unlinked when dropped (or at the claim).
pub struct Listener {
    sock: UnixListener,
    path: PathBuf,
    state_root: PathBuf,
    key: String,
    unlinked: bool,
    /// Where a client must be (`peer::check`).
    peers: super::peer::Expected,
    /// What CLAIM and DRAIN must carry (`token`).
    token: [u8; TOKEN_LEN],
}

/// How the wait for a claim ended.
pub enum Waited {
    Claimed(Claim),
    /// `pool drain`: end unclaimed; the connection is closed once the
    /// sandbox is gone (the drain waits for that).
    Drained(UnixStream),
    /// Unclaimed for the idle time.
    Idle,
    /// SIGTERM, SIGINT, SIGHUP or SIGQUIT.
    Signalled(Signal),
    /// The sandbox's init ended before any claim.
    SandboxExited,
    Failed(std::io::Error),
}

/// A taken claim: the client's connection and its stdio.
pub struct Claim {
    conn: UnixStream,
    /// The client's fds 0, 1, 2 (taken by the pooled run).
    pub stdio: Vec<OwnedFd>,
}

impl Listener {
    /// Listens at `<state root>/pool/<key>/<our pid>.sock`, for clients
    /// in the namespaces of `peers`.
    pub fn bind(
        state_root: &Path,
        key: &str,
        peers: super::peer::Expected,
    ) -> std::io::Result<Listener> {
        let dir = key_dir(state_root, key);
        let path = dir.join(format!("{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        // A pooled run ending may remove the (empty) directories between
        // our mkdir and bind: make them again. The token is there before
        // anyone can connect.
        let mut tries = 0;
        let (sock, token) = loop {
            make_private_dir(&dir)?;
            let made = token::create(&path).and_then(|t| Ok((UnixListener::bind(&path)?, t)));
            match made {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 5 => tries += 1,
                r => {
                    break r.inspect_err(|_| {
                        let _ = std::fs::remove_file(token::path_of(&path));
                    })?
                }
            }
        };
        sock.set_nonblocking(true)?;
        Ok(Listener {
            sock,
            path,
            state_root: state_root.to_path_buf(),
            key: key.to_string(),
            unlinked: false,
            peers,
            token,
        })
    }

    fn unlink(&mut self) {
        if !self.unlinked {
            self.unlinked = true;
            let _ = std::fs::remove_file(&self.path);
            let _ = std::fs::remove_file(token::path_of(&self.path));
            tidy(&self.state_root, &self.key);
        }
    }

    /// Waits for one claim or drain from our own uid, at most `idle`;
    /// `set` (blocked) are the signals that may end the wait; `init` the
    /// sandbox's init (its pidfd).
    pub fn wait(&mut self, idle: Duration, set: &SigSet, init: &OwnedFd) -> Waited {
        let sfd = match SignalFd::with_flags(set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
            Ok(s) => s,
            Err(e) => return Waited::Failed(e.into()),
        };
        let deadline = Instant::now() + idle;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Waited::Idle;
            }
            let fds = [
                self.sock.as_raw_fd(),
                sfd.as_fd().as_raw_fd(),
                init.as_raw_fd(),
            ];
            let ready = match poll_in(&fds, left) {
                Ok(r) => r,
                Err(e) => return Waited::Failed(e),
            };
            if ready[1] {
                if let Some(sig) = ending_signal(&sfd) {
                    return Waited::Signalled(sig);
                }
            }
            if ready[2] {
                return Waited::SandboxExited;
            }
            if ready[0] {
                if let Some(w) = self.take_one() {
                    return w;
                }
            }
        }
    }

    /// One connection: a claim or a drain from our uid in our user and
    /// mount namespaces (`peer::check`), else nothing.
    fn take_one(&mut self) -> Option<Waited> {
        let (conn, _) = self.sock.accept().ok()?;
        if let Err(e) = super::peer::check(&conn, &self.peers) {
            tracing::warn!(target: "cli", "pool: refused a connection: {e}");
            return None;
        }
        conn.set_nonblocking(false).ok()?;
        conn.set_read_timeout(Some(REQUEST_TIMEOUT)).ok()?;
        let (what, fds) = recv_request(&conn).ok()?;
        if what == CLAIM && !same_key(&conn, &self.key) {
            tracing::warn!(target: "cli", "pool: refused a claim for another key");
            return None;
        }
        if !has_token(&conn, &self.token) {
            tracing::warn!(target: "cli", "pool: refused a request without this run's token");
            return None;
        }
        match (what, fds) {
            (DRAIN, _) => {
                self.unlink();
                Some(Waited::Drained(conn))
            }
            (CLAIM, fds) if fds.len() == 3 => {
                if !committed(&conn) {
                    // Its fds dropped; still unclaimed, still listening.
                    tracing::debug!(target: "cli", "pool: a claim was not committed");
                    return None;
                }
                // Never served twice: gone before anything else happens.
                self.unlink();
                conn.set_read_timeout(None).ok()?;
                Some(Waited::Claimed(Claim { conn, stdio: fds }))
            }
            _ => None,
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.unlink();
    }
}

/// The key the client sends after CLAIM: it computed the same one from
/// its own request and context (the directory it found us in says so
/// too, but that is a name anyone of our uid can read).
fn same_key(mut conn: &UnixStream, key: &str) -> bool {
    let mut got = [0u8; super::KEY_LEN];
    conn.read_exact(&mut got).is_ok() && got == key.as_bytes()
}

/// The token the client sends after its request (and key): the one in
/// our token file, compared in constant time.
fn has_token(mut conn: &UnixStream, want: &[u8; TOKEN_LEN]) -> bool {
    let mut got = [0u8; TOKEN_LEN];
    conn.read_exact(&mut got).is_ok() && token::same(&got, want)
}

/// ACK, then the client's COMMIT within the request timeout. Giving up,
/// the reading side is shut first (a COMMIT sent from then on fails at
/// the client, which falls back) and one already here still counts: the
/// script runs on exactly one side.
fn committed(mut conn: &UnixStream) -> bool {
    if conn.write_all(&[ACK]).is_err() {
        return false;
    }
    let mut b = [0u8; 1];
    if let Ok(n) = conn.read(&mut b) {
        return n == 1 && b[0] == COMMIT;
    }
    let _ = conn.shutdown(std::net::Shutdown::Read);
    let _ = conn.set_nonblocking(true);
    let late = matches!(conn.read(&mut b), Ok(1) if b[0] == COMMIT);
    let _ = conn.set_nonblocking(false);
    late
}

impl Claim {
    /// The client's connection, to watch for its hang-up (it sends
    /// nothing after its commit).
    pub fn connection(&self) -> std::io::Result<UnixStream> {
        self.conn.try_clone()
    }

    /// The run's exit code, the one message after the ack.
    pub fn send_code(mut self, code: i32) {
        let _ = self.conn.write_all(&code.to_le_bytes());
    }
}

/// The signals that end an unclaimed pooled run; others are read and
/// dropped (SIGCHLD of libcontainer's helpers, SIGWINCH, ...).
fn ending_signal(sfd: &SignalFd) -> Option<Signal> {
    while let Ok(Some(info)) = sfd.read_signal() {
        let sig = Signal::try_from(info.ssi_signo as i32).ok();
        if let Some(s @ (Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP | Signal::SIGQUIT)) = sig
        {
            return Some(s);
        }
    }
    None
}

/// Which of `fds` are readable, waiting at most `wait`.
fn poll_in(fds: &[RawFd], wait: Duration) -> std::io::Result<Vec<bool>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = wait.as_millis().clamp(1, 60_000) as i32;
    // SAFETY: valid pollfds of descriptors we hold.
    let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(p.iter().map(|x| r > 0 && x.revents != 0).collect())
}

/// One request byte and the fds that came with it.
fn recv_request(conn: &UnixStream) -> std::io::Result<(u8, Vec<OwnedFd>)> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 3]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(v) = c {
            // SAFETY: fds the kernel just gave us, owned by no one else.
            fds.extend(v.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    if msg.bytes == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok((byte[0], fds))
}
