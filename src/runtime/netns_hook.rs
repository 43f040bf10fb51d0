//! Setting up a rootless proxy-mode container's network namespace from
//! inside.
//!
//! As root, `create` enters the container's new network namespace from
//! the host to bring `lo` up, and the supervisor enters it to bind the
//! egress proxy. An ordinary user cannot: the namespace belongs to the
//! container's user namespace, and the init is not dumpable until its
//! exec, so `/proc/PID/ns/*` stay closed to us. A `createContainer` hook
//! can: libcontainer runs it in the container's namespaces, with the
//! init's full capabilities there, before `pivot_root` (so our binary and
//! the state directory are still at their host paths). The hook brings `lo`
//! up, binds the proxy's listening socket, and sends it back over a Unix
//! datagram socket that `create` made in the container's state directory;
//! `create` hands it to the supervisor. The socket stays bound in the
//! container's namespace wherever the descriptor goes.

use std::ffi::OsString;
use std::io::IoSlice;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::{HookBuilder, HooksBuilder, Spec};
use nix::sys::socket::{
    getsockopt, recvmsg, sendmsg, sockopt, ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr,
};

use super::error::{Result, RuntimeError};

/// argv[1] that makes either binary run as the hook.
pub const HOOK_ARG: &str = "__netns-hook";
/// The datagram socket in the container's state directory.
pub use crate::statedir::NETNS_HOOK_SOCKET as SOCKET_FILE;
/// How long libcontainer lets the hook run.
const HOOK_TIMEOUT_SECS: i64 = 10;
/// The one message the hook sends, with the listener attached.
const MESSAGE: &[u8] = b"proxy-listener";

/// `create`'s end: bound before the container is built, read after.
pub struct HookSocket {
    sock: UnixDatagram,
    path: PathBuf,
}

impl HookSocket {
    /// Binds `dir/netns-hook.sock` (the directory is ours, mode 0700).
    /// Through `/proc/self/fd/N/`: a socket address holds 107 bytes, and
    /// state directories can be deeper than that.
    pub fn bind(dir: &Path) -> Result<Self> {
        let dir_fd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(dir)
            .map_err(|e| RuntimeError::io(format!("open {}", dir.display()), e))?;
        let short = format!("/proc/self/fd/{}/{SOCKET_FILE}", dir_fd.as_raw_fd());
        let sock = UnixDatagram::bind(&short)
            .map_err(|e| RuntimeError::io(format!("bind {}/{SOCKET_FILE}", dir.display()), e))?;
        Ok(HookSocket {
            sock,
            path: dir.join(SOCKET_FILE),
        })
    }

    /// The directory the hook sends to.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("/"))
    }

    /// The proxy listener the hook sent. The hook has exited by the time
    /// libcontainer's build returns, so the message is queued or was never
    /// sent: nothing to wait for.
    pub fn take_listener(&self, port: u16) -> Result<TcpListener> {
        let mut buf = [0u8; 32];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<UnixAddr>(
            self.sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| RuntimeError::Invalid(format!("network set-up hook sent nothing: {e}")))?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(|e| {
            RuntimeError::Invalid(format!("network set-up hook: bad control message: {e}"))
        })? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: the kernel installed these descriptors for us.
                fds.extend(raw.into_iter().map(|r| unsafe { OwnedFd::from_raw_fd(r) }));
            }
        }
        let len = msg.bytes;
        if &buf[..len.min(buf.len())] != MESSAGE || fds.len() != 1 {
            return Err(RuntimeError::Invalid(
                "network set-up hook: unexpected message".into(),
            ));
        }
        let fd = fds.remove(0);
        check_listener(&fd)?;
        let listener = TcpListener::from(fd);
        match listener.local_addr() {
            Ok(std::net::SocketAddr::V4(a))
                if *a.ip() == Ipv4Addr::LOCALHOST && a.port() == port =>
            {
                Ok(listener)
            }
            _ => Err(RuntimeError::Invalid(format!(
                "network set-up hook: socket is not bound to 127.0.0.1:{port}"
            ))),
        }
    }
}

impl Drop for HookSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Only a listening TCP socket is taken (the socket path is in a directory
/// only we can reach, but check what we are about to serve on).
fn check_listener(fd: &OwnedFd) -> Result<()> {
    let bad = |why: &str| RuntimeError::Invalid(format!("network set-up hook: {why}"));
    let listening = getsockopt(fd, sockopt::AcceptConn).map_err(|_| bad("not a socket"))?;
    let stream = getsockopt(fd, sockopt::SockType).map_err(|_| bad("not a socket"))?
        == nix::sys::socket::SockType::Stream;
    if !listening || !stream {
        return Err(bad("not a listening TCP socket"));
    }
    Ok(())
}

/// Adds the hook to the spec libcontainer runs.
pub fn add_to_spec(spec: &mut Spec, dir: &Path, proxy_port: u16) -> Result<()> {
    let exe = crate::exeseal::exe_path()
        .map_err(|e| RuntimeError::io("find own executable for the network hook", e))?;
    let args = vec![
        "buntime-netns-hook".to_string(),
        HOOK_ARG.to_string(),
        "--dir".to_string(),
        dir.display().to_string(),
        "--proxy-port".to_string(),
        proxy_port.to_string(),
    ];
    // Bounded, so that a hook that cannot finish fails `create` instead of
    // hanging it (it takes milliseconds).
    let hook = HookBuilder::default()
        .path(exe)
        .args(args)
        .timeout(HOOK_TIMEOUT_SECS)
        .build()
        .map_err(|e| RuntimeError::Invalid(format!("network hook: {e}")))?;
    let mut hooks = spec.hooks().clone().unwrap_or_else(|| {
        HooksBuilder::default()
            .build()
            .unwrap_or_else(|_| Default::default())
    });
    let mut list = hooks.create_container().clone().unwrap_or_default();
    list.push(hook);
    hooks.set_create_container(Some(list));
    spec.set_hooks(Some(hooks));
    Ok(())
}

/// Runs the hook when this process was started as one (`argv[1] ==
/// HOOK_ARG`) and returns its exit code; None otherwise. Either binary
/// calls it first thing. The hook runs in the container's namespaces
/// before the init's exec.
pub fn run_if_invoked() -> Option<u8> {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_none_or(|a| a != HOOK_ARG) {
        return None;
    }
    match run(&args[2..]) {
        Ok(()) => Some(0),
        Err(e) => {
            eprintln!("buntime: network set-up in the sandbox: {e}");
            Some(1)
        }
    }
}

fn run(args: &[OsString]) -> std::result::Result<(), String> {
    let mut dir: Option<PathBuf> = None;
    let mut port: Option<u16> = None;
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1);
        match (args[i].to_str(), value) {
            (Some("--dir"), Some(v)) => dir = Some(PathBuf::from(v)),
            (Some("--proxy-port"), Some(v)) => {
                port = Some(
                    v.to_str()
                        .and_then(|s| s.parse().ok())
                        .ok_or("--proxy-port: expected a port number")?,
                )
            }
            _ => return Err(format!("unexpected argument {:?}", args[i])),
        }
        i += 2;
    }
    let dir = dir.ok_or("--dir is required")?;
    let port = port.ok_or("--proxy-port is required")?;
    super::loopback::set_lo_up().map_err(|e| e.to_string())?;
    let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
        .map_err(|e| format!("bind 127.0.0.1:{port}: {e}"))?;
    // Relative to the directory, for the same 107 bytes.
    std::env::set_current_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let sock = UnixDatagram::unbound().map_err(|e| format!("socket: {e}"))?;
    let addr = UnixAddr::new(SOCKET_FILE).map_err(|e| format!("{SOCKET_FILE}: {e}"))?;
    let fds = [listener.as_fd().as_raw_fd()];
    sendmsg(
        sock.as_raw_fd(),
        &[IoSlice::new(MESSAGE)],
        &[ControlMessage::ScmRights(&fds)],
        // The socket is fresh and holds one message: never wait.
        MsgFlags::MSG_DONTWAIT,
        Some(&addr),
    )
    .map_err(|e| format!("send the proxy listener to {}: {e}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(dir: &Path, fd: RawFd, body: &[u8]) {
        let sock = UnixDatagram::unbound().unwrap();
        let addr = UnixAddr::new(&dir.join(SOCKET_FILE)).unwrap();
        let fds = [fd];
        sendmsg(
            sock.as_raw_fd(),
            &[IoSlice::new(body)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            Some(&addr),
        )
        .unwrap();
    }

    #[test]
    fn only_a_listening_socket_on_the_proxy_port_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let h = HookSocket::bind(dir.path()).unwrap();
        assert!(h.take_listener(1).is_err(), "nothing sent yet");

        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        send(dir.path(), udp.as_raw_fd(), MESSAGE);
        let e = h.take_listener(1).unwrap_err().to_string();
        assert!(e.contains("not a listening TCP socket"), "{e}");

        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        send(dir.path(), l.as_raw_fd(), MESSAGE);
        let e = h
            .take_listener(port.wrapping_add(1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not bound to 127.0.0.1"), "{e}");

        send(dir.path(), l.as_raw_fd(), b"other");
        assert!(h.take_listener(port).is_err());

        send(dir.path(), l.as_raw_fd(), MESSAGE);
        let got = h.take_listener(port).unwrap();
        assert_eq!(got.local_addr().unwrap(), l.local_addr().unwrap());
        let path = dir.path().join(SOCKET_FILE);
        assert!(path.exists());
        drop(h);
        assert!(!path.exists(), "the socket file goes with the HookSocket");
    }

    #[test]
    fn bad_hook_arguments_are_named() {
        let e = run(&["--bogus".into()]).unwrap_err();
        assert!(e.contains("--bogus"), "{e}");
        let e = run(&["--proxy-port".into(), "x".into()]).unwrap_err();
        assert!(e.contains("--proxy-port"), "{e}");
        let e = run(&[]).unwrap_err();
        assert!(e.contains("--dir"), "{e}");
        let e = run(&["--dir".into(), "/nonexistent".into()]).unwrap_err();
        assert!(e.contains("--proxy-port is required"), "{e}");
    }

    #[test]
    fn the_hook_is_appended_to_the_spec() {
        let mut spec = Spec::default();
        add_to_spec(&mut spec, Path::new("/state/x"), 3128).unwrap();
        let hooks = spec.hooks().clone().unwrap();
        let list = hooks.create_container().clone().unwrap();
        assert_eq!(list.len(), 1);
        let args = list[0].args().clone().unwrap();
        assert_eq!(
            &args[1..],
            &[HOOK_ARG, "--dir", "/state/x", "--proxy-port", "3128"]
        );
    }
}
