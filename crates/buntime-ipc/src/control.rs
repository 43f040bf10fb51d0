//! The control socket: a Unix SOCK_SEQPACKET connection per worker, used
//! for the handshake (protocol version, SO_PEERCRED check, segment fd),
//! READY / DATA / STOP signalling, and SCM_RIGHTS file-descriptor passing.
//!
//! Every message is one datagram: `[u8 kind][u8 0][u16 0][u32 LE arg][body]`,
//! at most `MAX_CONTROL_MSG` bytes, with at most one fd attached.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::socket::{self, sockopt, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};

use super::error::{IpcError, Result};

/// `b"BNTC"` little-endian: first word of HELLO.
pub const CONTROL_MAGIC: u32 = u32::from_le_bytes(*b"BNTC");
/// Control protocol versions this build speaks.
pub const MIN_PROTOCOL_VERSION: u16 = 1;
pub const PROTOCOL_VERSION: u16 = 1;
/// Largest control datagram (header + body).
pub const MAX_CONTROL_MSG: usize = 512;
/// Control message header: `[u8 kind][u8 0][u16 0][u32 LE arg]`.
pub const CTL_HEADER: usize = 8;

/// Control message kinds.
pub mod ctl {
    /// W->S. Body: `u32 magic, u16 min_version, u16 max_version`.
    pub const HELLO: u8 = 0x01;
    /// S->W. Arg: chosen version. Fd: the segment (memfd or file).
    pub const WELCOME: u8 = 0x02;
    /// S->W. Body: UTF-8 reason. The supervisor closes afterwards.
    pub const REJECT: u8 = 0x03;
    /// W->S. The worker mapped the segment and is ready.
    pub const READY: u8 = 0x04;
    /// Both ways. Doorbell: the ring towards the receiver has data (sent only
    /// when the receiver announced WAIT_DOORBELL).
    pub const DATA: u8 = 0x05;
    /// Both ways. Arg: reason code; body: UTF-8 reason. Orderly shutdown.
    pub const STOP: u8 = 0x06;
    /// S->W. Arg: request id. Fd: the file/socket granted for that request.
    pub const FD: u8 = 0x07;
    /// W->S. Arg: the exit status (i32, two's complement). For a worker
    /// that never wrote to its ring (the pure-Python start): it needs no
    /// ring write, so no store ordering on any CPU.
    pub const EXIT: u8 = 0x08;
}

/// STOP reason codes.
pub mod stop {
    pub const NORMAL: u32 = 0;
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const CORRUPTION: u32 = 2;
}

/// One received control message.
#[derive(Debug)]
pub struct ControlMsg {
    pub kind: u8,
    pub arg: u32,
    pub body: Vec<u8>,
    pub fd: Option<OwnedFd>,
}

/// Credentials of the connected peer (SO_PEERCRED, filled in by the kernel
/// at connect time: the worker cannot forge them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// Who may connect. `None` fields are not checked.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub pid: Option<i32>,
}

impl PeerPolicy {
    /// Only processes running as our own uid (host view).
    pub fn same_uid() -> Self {
        PeerPolicy {
            uid: Some(nix::unistd::getuid().as_raw()),
            ..Default::default()
        }
    }

    pub fn check(&self, c: &PeerCred) -> std::result::Result<(), String> {
        if let Some(uid) = self.uid.filter(|&u| u != c.uid) {
            return Err(format!("uid {} is not the expected {uid}", c.uid));
        }
        if let Some(gid) = self.gid.filter(|&g| g != c.gid) {
            return Err(format!("gid {} is not the expected {gid}", c.gid));
        }
        if let Some(pid) = self.pid.filter(|&p| p != c.pid) {
            return Err(format!("pid {} is not the expected {pid}", c.pid));
        }
        Ok(())
    }
}

fn seqpacket() -> Result<OwnedFd> {
    Ok(socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

/// Wait until `fd` is readable or `timeout` passes. Ok(false) on timeout.
fn poll_in(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> Result<bool> {
    poll_for(fd, libc::POLLIN, timeout)
}

/// Waits until `fd` is ready for `events` (or hung up) or `timeout` passes.
fn poll_for(fd: BorrowedFd<'_>, events: libc::c_short, timeout: Option<Duration>) -> Result<bool> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let ms: i32 = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up so a sub-millisecond remainder still waits.
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
            }
        };
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        // POLLHUP/POLLERR also count as readable: recv reports them.
        return Ok(r > 0);
    }
}

/// Messages `linger` reads at most before it closes anyway.
pub const LINGER_MESSAGES: usize = 1024;
/// How long the supervisor waits, after REJECT or STOP, for the peer to
/// read it and hang up.
pub const LINGER: Duration = Duration::from_millis(250);

/// A connected control socket (either side).
#[derive(Debug)]
pub struct ControlSocket {
    fd: OwnedFd,
}

/// The descriptors of every SCM_RIGHTS entry in a control buffer the
/// kernel filled for `msg`, now owned (closed on drop).
fn take_fds(msg: &libc::msghdr) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    // SAFETY: walking the control buffer the kernel filled, with the
    // libc macros; each SCM_RIGHTS entry holds cmsg_len-CMSG_LEN(0)
    // bytes of fds that now belong to us.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let bytes = ((*c).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    let raw = std::ptr::read_unaligned(data.add(i));
                    fds.push(OwnedFd::from_raw_fd(raw));
                }
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    fds
}

impl ControlSocket {
    /// Worker side: connect to the supervisor's socket at `path`.
    pub fn connect(path: &Path) -> Result<Self> {
        let fd = seqpacket()?;
        let addr = UnixAddr::new(path)?;
        socket::connect(fd.as_raw_fd(), &addr)?;
        Ok(ControlSocket { fd })
    }

    /// A connected pair (tests, or a supervisor that forks its worker).
    pub fn pair() -> Result<(Self, Self)> {
        let (a, b) = socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        Ok((ControlSocket { fd: a }, ControlSocket { fd: b }))
    }

    pub fn from_fd(fd: OwnedFd) -> Self {
        ControlSocket { fd }
    }

    pub fn peer_cred(&self) -> Result<PeerCred> {
        let c = socket::getsockopt(&self.fd, sockopt::PeerCredentials)?;
        Ok(PeerCred {
            pid: c.pid(),
            uid: c.uid(),
            gid: c.gid(),
        })
    }

    /// Send one message, blocking if the socket buffer is full.
    pub fn send(&self, kind: u8, arg: u32, body: &[u8], fd: Option<BorrowedFd<'_>>) -> Result<()> {
        self.send_flags(kind, arg, body, fd, 0).map(|_| ())
    }

    /// Send without blocking. Ok(false) if the socket buffer is full (for a
    /// doorbell that just means one is already pending).
    /// Send, waiting at most `timeout` for room: a peer that never reads
    /// its socket must not block the sender forever.
    pub fn send_within(
        &self,
        kind: u8,
        arg: u32,
        body: &[u8],
        fd: Option<BorrowedFd<'_>>,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.send_flags(kind, arg, body, fd, libc::MSG_DONTWAIT)? {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !poll_for(self.fd.as_fd(), libc::POLLOUT, Some(left))? {
                return Err(IpcError::Timeout);
            }
        }
    }

    pub fn try_send(&self, kind: u8, arg: u32, body: &[u8]) -> Result<bool> {
        self.send_flags(kind, arg, body, None, libc::MSG_DONTWAIT)
    }

    fn send_flags(
        &self,
        kind: u8,
        arg: u32,
        body: &[u8],
        fd: Option<BorrowedFd<'_>>,
        flags: libc::c_int,
    ) -> Result<bool> {
        if CTL_HEADER + body.len() > MAX_CONTROL_MSG {
            return Err(IpcError::TooLarge {
                len: CTL_HEADER + body.len(),
                max: MAX_CONTROL_MSG,
            });
        }
        let mut buf = [0u8; MAX_CONTROL_MSG];
        buf[0] = kind;
        buf[4..8].copy_from_slice(&arg.to_le_bytes());
        buf[CTL_HEADER..CTL_HEADER + body.len()].copy_from_slice(body);
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: CTL_HEADER + body.len(),
        };
        // u64 array: cmsg buffers must be aligned like cmsghdr.
        let mut cbuf = [0u64; 8];
        // SAFETY: msghdr is plain data; zeroed is a valid empty header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if let Some(fd) = fd {
            // SAFETY: cbuf has room for CMSG_SPACE(4) (<= 24 bytes); the
            // header pointer comes from CMSG_FIRSTHDR on that buffer.
            unsafe {
                msg.msg_control = cbuf.as_mut_ptr().cast();
                msg.msg_controllen = libc::CMSG_SPACE(4) as _;
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = libc::CMSG_LEN(4) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd.as_raw_fd());
            }
        }
        loop {
            // SAFETY: msg points at live iov/cbuf for the call.
            let r = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &msg, flags | libc::MSG_NOSIGNAL) };
            if r >= 0 {
                return Ok(true);
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) if flags & libc::MSG_DONTWAIT != 0 => return Ok(false),
                Some(libc::EPIPE) | Some(libc::ECONNRESET) => return Err(IpcError::Closed),
                _ => return Err(e.into()),
            }
        }
    }

    /// Receive one message. `Ok(None)` on timeout (`None` waits forever,
    /// `Some(ZERO)` polls). `Err(Closed)` when the peer hung up.
    ///
    /// A message already queued (a granted fd: the supervisor sends it
    /// before the ring's ALLOW) is read at once, with no `poll` first.
    pub fn recv(&self, timeout: Option<Duration>) -> Result<Option<ControlMsg>> {
        if let Some(m) = self.recv_now()? {
            return Ok(Some(m));
        }
        if timeout == Some(Duration::ZERO) || !poll_in(self.fd.as_fd(), timeout)? {
            return Ok(None);
        }
        self.recv_now()
    }

    /// One message if one is queued (`Ok(None)` if not), without waiting.
    fn recv_now(&self) -> Result<Option<ControlMsg>> {
        let mut buf = [0u8; MAX_CONTROL_MSG];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut cbuf = [0u64; 16];
        // SAFETY: as in send_flags.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
        // A peer that hung up with our data unread leaves a one-shot
        // ECONNRESET that the kernel reports before the messages it queued
        // for us (a REJECT, say): read once more to get them.
        let mut reset = false;
        let n = loop {
            // SAFETY: msg points at live buffers for the call.
            let r = unsafe {
                libc::recvmsg(
                    self.fd.as_raw_fd(),
                    &mut msg,
                    libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
                )
            };
            if r >= 0 {
                break r as usize;
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) if reset => return Err(IpcError::Closed),
                Some(libc::EAGAIN) => return Ok(None),
                Some(libc::ECONNRESET) if !reset => reset = true,
                Some(libc::ECONNRESET) => return Err(IpcError::Closed),
                _ => return Err(e.into()),
            }
        };
        // Take ownership of every fd the kernel installed first, so that
        // whatever we reject below gets closed rather than leaked.
        let mut fds = take_fds(&msg);
        if n == 0 {
            return Err(IpcError::Closed);
        }
        if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
            return Err(IpcError::Protocol("truncated control message".into()));
        }
        if fds.len() > 1 {
            return Err(IpcError::Protocol(format!(
                "{} fds in one control message",
                fds.len()
            )));
        }
        if n < CTL_HEADER || buf[1] != 0 || buf[2] != 0 || buf[3] != 0 {
            return Err(IpcError::Protocol("malformed control header".into()));
        }
        Ok(Some(ControlMsg {
            kind: buf[0],
            arg: u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]),
            body: buf[CTL_HEADER..n].to_vec(),
            fd: fds.pop(),
        }))
    }

    /// Shut our sending side: the peer reads what we sent, then EOF (a
    /// peer blocked in recv wakes up).
    pub fn shutdown_write(&self) {
        let _ = socket::shutdown(self.fd.as_raw_fd(), socket::Shutdown::Write);
    }

    /// Half-closes, then reads and drops what the peer sends until it hangs
    /// up, `wait` passes or `LINGER_MESSAGES` arrived. Closing a socket with
    /// the peer's data unread makes the kernel report ECONNRESET to the
    /// peer before what we sent last (REJECT, STOP): clients that do not
    /// retry (Python, Bun) would then never see the reason.
    pub fn linger(&self, wait: Duration) {
        self.shutdown_write();
        let deadline = Instant::now() + wait;
        for _ in 0..LINGER_MESSAGES {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(Some(left)) {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            }
        }
    }

    /// REJECT with `why` (cut to fit a control message), then `linger`.
    pub fn reject(&self, why: &str, wait: Duration) {
        let max = MAX_CONTROL_MSG - CTL_HEADER;
        let mut end = why.len().min(max);
        while !why.is_char_boundary(end) {
            end -= 1;
        }
        let _ = self.send_within(ctl::REJECT, 0, &why.as_bytes()[..end], None, wait);
        self.linger(wait);
    }
}

impl AsFd for ControlSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The supervisor's listening socket; removed from the filesystem on drop.
#[derive(Debug)]
pub struct ControlListener {
    fd: OwnedFd,
    path: PathBuf,
}

impl ControlListener {
    pub fn bind(path: &Path) -> Result<Self> {
        let fd = seqpacket()?;
        socket::bind(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
        let l = ControlListener {
            fd,
            path: path.to_path_buf(),
        };
        // Only the owner may connect; the kernel checks write permission on
        // the socket inode. The supervisor loosens it per container if needed.
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        socket::listen(&l.fd, Backlog::new(8)?)?;
        Ok(l)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accept one connection, waiting at most `timeout`.
    pub fn accept(&self, timeout: Option<Duration>) -> Result<ControlSocket> {
        if !poll_in(self.fd.as_fd(), timeout)? {
            return Err(IpcError::Timeout);
        }
        let raw = socket::accept4(self.fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC)?;
        // SAFETY: accept4 returned a new descriptor that we now own.
        Ok(ControlSocket {
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        })
    }
}

impl AsFd for ControlListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for ControlListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Capability flag in HELLO and WELCOME: "I issue membarrier before I
/// sleep", so the peer may publish its indexes with plain stores.
pub const FLAG_BARRIER_BEFORE_SLEEP: u32 = 1;
/// Capability flag in HELLO: "I cannot wake you with a futex (a worker in
/// a language without that system call): while you wait for my writes,
/// ask for a DATA doorbell on the control socket instead."
pub const FLAG_DOORBELL_WAKE: u32 = 2;

/// Our capability flags.
pub fn local_flags() -> u32 {
    if super::wait::membarrier_ok() {
        FLAG_BARRIER_BEFORE_SLEEP
    } else {
        0
    }
}

/// HELLO body: magic, version range, capability flags.
pub fn hello_body() -> [u8; 12] {
    let mut b = [0u8; 12];
    b[0..4].copy_from_slice(&CONTROL_MAGIC.to_le_bytes());
    b[4..6].copy_from_slice(&MIN_PROTOCOL_VERSION.to_le_bytes());
    b[6..8].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    b[8..12].copy_from_slice(&local_flags().to_le_bytes());
    b
}

/// Capability flags from a WELCOME body (absent: none).
pub fn welcome_flags(body: &[u8]) -> u32 {
    body.first_chunk::<4>()
        .map_or(0, |b| u32::from_le_bytes(*b))
}

/// Pick the version to speak given a peer's HELLO body; also returns the
/// peer's capability flags.
pub fn negotiate(body: &[u8]) -> std::result::Result<(u16, u32), String> {
    let b: [u8; 12] = body
        .try_into()
        .map_err(|_| format!("HELLO body is {} bytes, expected 12", body.len()))?;
    if u32::from_le_bytes([b[0], b[1], b[2], b[3]]) != CONTROL_MAGIC {
        return Err("bad HELLO magic".into());
    }
    let lo = u16::from_le_bytes([b[4], b[5]]);
    let hi = u16::from_le_bytes([b[6], b[7]]);
    let v = hi.min(PROTOCOL_VERSION);
    if lo > hi || v < lo.max(MIN_PROTOCOL_VERSION) {
        return Err(format!(
            "no common protocol version: peer {lo}..={hi}, ours {MIN_PROTOCOL_VERSION}..={PROTOCOL_VERSION}"
        ));
    }
    Ok((v, u32::from_le_bytes([b[8], b[9], b[10], b[11]])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_versions() {
        assert_eq!(
            negotiate(&hello_body()),
            Ok((PROTOCOL_VERSION, local_flags()))
        );
        let mut future = hello_body();
        future[4..6].copy_from_slice(&7u16.to_le_bytes());
        future[6..8].copy_from_slice(&9u16.to_le_bytes());
        assert!(negotiate(&future).is_err());
        assert!(negotiate(b"BNTC").is_err());
    }

    #[test]
    fn passes_fd_and_rejects_two() {
        let (a, b) = ControlSocket::pair().unwrap();
        let f = tempfile::tempfile().unwrap();
        a.send(ctl::FD, 5, b"x", Some(f.as_fd())).unwrap();
        let m = b.recv(Some(Duration::from_secs(5))).unwrap().unwrap();
        assert_eq!((m.kind, m.arg, m.body.as_slice()), (ctl::FD, 5, &b"x"[..]));
        assert!(m.fd.is_some());
        assert_eq!(b.recv(Some(Duration::ZERO)).unwrap().map(|m| m.kind), None);
        drop(a);
        assert!(matches!(
            b.recv(Some(Duration::from_secs(5))),
            Err(IpcError::Closed)
        ));
    }

    #[test]
    fn peer_policy() {
        let c = PeerCred {
            pid: 10,
            uid: 1000,
            gid: 100,
        };
        assert!(PeerPolicy::default().check(&c).is_ok());
        assert!(PeerPolicy {
            uid: Some(0),
            ..Default::default()
        }
        .check(&c)
        .is_err());
        assert!(PeerPolicy {
            uid: Some(1000),
            gid: Some(100),
            pid: Some(10)
        }
        .check(&c)
        .is_ok());
    }
}
