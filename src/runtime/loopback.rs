//! Bringing up `lo` in a container's new network namespace.
//!
//! A fresh network namespace has a loopback device that is down; runc
//! brings it up so that programs in the container can talk to each other on
//! 127.0.0.1 (and, in `proxy` mode, to the proxy). libcontainer does not, so
//! `create` does it here: the runtime enters the namespace for a moment
//! (this CLI process has one thread, which setns requires), sets IFF_UP on
//! `lo`, and returns to its own namespace.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use nix::sched::{setns, CloneFlags};

use super::error::{Result, RuntimeError};

/// Brings `lo` up in the network namespace of `pid`.
pub fn bring_up_in(pid: i32) -> Result<()> {
    let own = File::open("/proc/self/ns/net")
        .map_err(|e| RuntimeError::io("open own network namespace", e))?;
    let target = File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|e| RuntimeError::io("open container network namespace", e))?;
    setns(target.as_fd(), CloneFlags::CLONE_NEWNET)
        .map_err(|e| RuntimeError::Invalid(format!("enter container network namespace: {e}")))?;
    let result = set_lo_up();
    // Returning is not optional: everything after this runs on the host.
    setns(own.as_fd(), CloneFlags::CLONE_NEWNET)
        .map_err(|e| RuntimeError::Invalid(format!("return to host network namespace: {e}")))?;
    result
}

pub(crate) fn set_lo_up() -> Result<()> {
    // SAFETY: plain socket(2); the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(RuntimeError::io(
            "socket for lo",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: `raw` is a fresh descriptor owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write only `req`, which
    // lives for both calls; the union member used is ifru_flags.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(RuntimeError::io(
                "get lo flags",
                std::io::Error::last_os_error(),
            ));
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(RuntimeError::io(
                "set lo up",
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}
