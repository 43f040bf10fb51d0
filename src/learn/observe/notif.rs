//! The plumbing of a seccomp notification listener: receiving its fd,
//! checking the peer, waiting for a notification.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

pub(crate) enum Readiness {
    Ready,
    Idle,
    /// Every process the filter was on is gone.
    Gone,
}

pub(crate) fn wait_readable(fd: RawFd) -> Readiness {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, 100) };
    if n <= 0 {
        return Readiness::Idle;
    }
    if p.revents & libc::POLLIN != 0 {
        Readiness::Ready
    } else if p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
        Readiness::Gone
    } else {
        Readiness::Idle
    }
}

/// The fd libcontainer sends with SCM_RIGHTS (the OCI seccomp-agent
/// protocol: the container's state as JSON, and the listener fd).
pub(crate) fn receive_fd(conn: RawFd) -> io::Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, MsgFlags};
    let mut buf = vec![0u8; 64 * 1024];
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    // The connection was accepted from a non-blocking listener.
    nix::fcntl::fcntl(
        conn,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .map_err(io::Error::from)?;
    let msg = recvmsg::<()>(conn, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(io::Error::from)?;
    if let Some(fd) = last_fd(&msg)? {
        return Ok(fd);
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "no file descriptor in the seccomp listener message",
    ))
}

/// The last fd a received message carries (SCM_RIGHTS). Every fd in it is
/// taken over first, so the others are closed rather than leaked.
pub(crate) fn last_fd(msg: &nix::sys::socket::RecvMsg<'_, '_, ()>) -> io::Result<Option<OwnedFd>> {
    use nix::sys::socket::ControlMessageOwned;
    let mut owned = Vec::new();
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel just installed these fds for us.
            owned.extend(fds.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
        }
    }
    Ok(owned.pop())
}

/// Whether the peer of `conn` is our own uid (and, when given, the
/// process `pid`), from the kernel's `SO_PEERCRED`.
pub(crate) fn peer_is(conn: &std::os::unix::net::UnixStream, pid: Option<u32>) -> io::Result<()> {
    let cred = nix::sys::socket::getsockopt(conn, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(io::Error::from)?;
    let euid = nix::unistd::geteuid().as_raw();
    let pid_ok = pid.is_none_or(|p| i64::from(cred.pid()) == i64::from(p));
    if cred.uid() == euid && pid_ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "the peer is pid {} uid {}, not libcontainer's (uid {euid})",
                cred.pid(),
                cred.uid()
            ),
        ))
    }
}

/// `fd` when it is a seccomp user-notification listener (what the kernel
/// names `anon_inode:seccomp notify`), an error otherwise.
pub(crate) fn seccomp_listener(fd: OwnedFd) -> io::Result<OwnedFd> {
    let what = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    if what == Path::new("anon_inode:seccomp notify") {
        Ok(fd)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the fd received is {}, not a seccomp listener",
                what.display()
            ),
        ))
    }
}
