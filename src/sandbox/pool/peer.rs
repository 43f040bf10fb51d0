//! Who is at the other end of a pool socket: our uid is not enough (a
//! rootless sandbox runs as the caller's uid on the host), so the peer's
//! user namespace (and for the pooled run, mount namespace) must be ours
//! too. The peer is pinned by a
//! pidfd (`SO_PEERPIDFD`, else `pidfd_open` of the `SO_PEERCRED` pid)
//! that is still alive after its namespaces were read, so the pid read
//! through /proc was the peer's, not a recycled one.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;

/// A namespace's identity: device and inode of its nsfs file.
pub type NsId = (u64, u64);

/// The namespaces a peer must be in: our user namespace, and the mount
/// namespace we were started in (a pooled run makes a private one for its
/// sandbox, so it notes the first before; a client cannot see the pooled
/// run's first one and checks the user namespace alone, which every
/// sandbox has of its own).
#[derive(Clone, Copy, Debug)]
pub struct Expected {
    user: NsId,
    mnt: Option<NsId>,
}

impl Expected {
    /// Our user and mount namespaces, now.
    pub fn here() -> std::io::Result<Expected> {
        Ok(Expected {
            user: ns_id("/proc/self/ns/user")?,
            mnt: Some(ns_id("/proc/self/ns/mnt")?),
        })
    }

    /// Our user namespace only.
    pub fn user_only() -> std::io::Result<Expected> {
        Ok(Expected {
            user: ns_id("/proc/self/ns/user")?,
            mnt: None,
        })
    }
}

/// The checked peer: its pid and a pidfd of it (signals go there).
pub struct Peer {
    pub pid: i32,
    pub pidfd: OwnedFd,
}

/// The peer of `conn`, if it is our uid in the `want`ed namespaces.
pub fn check(conn: &UnixStream, want: &Expected) -> std::io::Result<Peer> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let cred = getsockopt(conn, PeerCredentials)?;
    if cred.uid() != nix::unistd::geteuid().as_raw() {
        return Err(refused("another uid"));
    }
    // 0: the peer's pid is not visible here (another pid namespace).
    if cred.pid() <= 0 {
        return Err(refused("a process of another pid namespace"));
    }
    let pidfd = match peer_pidfd(conn) {
        Ok(fd) => fd,
        // Kernels before 6.5 lack SO_PEERPIDFD: the pid, checked alive
        // below (best effort). Any other error (EINVAL: the connecting
        // process has exited) is a refusal: its pid may be another's.
        Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => {
            crate::supervisor::pidfd_open(cred.pid())?
        }
        Err(_) => return Err(refused("gone (its pid may be another's now)")),
    };
    let proc = format!("/proc/{}/ns", cred.pid());
    if ns_id(&format!("{proc}/user"))? != want.user {
        return Err(refused("another user namespace"));
    }
    if let Some(mnt) = want.mnt {
        if ns_id(&format!("{proc}/mnt"))? != mnt {
            return Err(refused("another mount namespace"));
        }
    }
    if !alive(&pidfd) {
        return Err(refused("gone (its pid may be another's now)"));
    }
    Ok(Peer {
        pid: cred.pid(),
        pidfd,
    })
}

fn refused(why: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!("peer refused: {why}"),
    )
}

fn ns_id(path: &str) -> std::io::Result<NsId> {
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// `SO_PEERPIDFD` (Linux 6.5): the peer as it connected.
fn peer_pidfd(conn: &UnixStream) -> std::io::Result<OwnedFd> {
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into an int of the right size.
    let r = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERPIDFD,
            (&mut fd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 || fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor the kernel just made for us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// pidfd_send_signal(0): the process has not exited.
fn alive(pidfd: &OwnedFd) -> bool {
    signal(pidfd, 0)
}

/// Sends `sig` to the peer through its pidfd (never a recycled pid).
pub fn signal(pidfd: &OwnedFd, sig: i32) -> bool {
    crate::supervisor::pidfd_signal(pidfd, sig)
}
