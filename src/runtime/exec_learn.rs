//! `exec` into a learning container (`buntime.dev/learn`, docs/learn.md):
//! the exec'd process is observed as init is. libcontainer gives an exec'd
//! process no seccomp profile, so the executor loads the container's
//! observing profile itself, last (after the container's own programs: it
//! only adds itself), and hands its listener fd back through a socket pair
//! it inherited; `exec` passes it on to the supervisor's learn socket as
//! libcontainer passes init's (one connection per filter: the container
//! state as JSON, the fd as `SCM_RIGHTS`), which the `Observer` serves
//! next to init's. Fails closed as `create` does: a learning container
//! whose observer cannot be reached gets no exec.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, MsgFlags};

use super::error::{Result, RuntimeError};
use super::state::{Meta, Root};
use crate::learn::container::ANNOTATION_LEARN;

/// How long `exec` waits for the exec'd process's listener fd: it is sent
/// right before the program's exec, which waits for the observer.
const HANDOFF_WAIT: Duration = Duration::from_secs(30);

/// The channel from the exec'd process back to `exec`, and the way to the
/// supervisor's learn socket.
pub struct Handoff {
    ours: UnixStream,
    /// The exec'd process's end: inherited through libcontainer's clones
    /// (its fds are marked close-on-exec, not closed); dropped here after
    /// the build.
    theirs: Option<UnixStream>,
    /// The state directory, `O_PATH`: its socket is reached through
    /// `/proc/self/fd/N` (the absolute path can be too long for an address).
    dir: OwnedFd,
    id: String,
}

impl Handoff {
    /// For a learning container (its metadata says it is observed), the
    /// channel; `None` for any other. A learning container whose
    /// supervisor is gone or whose socket is missing is refused: `create`
    /// refuses a learning container it cannot observe the same way. A
    /// paused one (`--ignore-paused`, `paused`) or one whose cgroup is
    /// frozen by other means (read from the freezer of `init`'s cgroup;
    /// one that cannot be read counts as frozen) is refused at once: its
    /// exec'd process would be frozen before it could hand over its
    /// filter. This only makes the refusal come at once (a freeze can
    /// still come later): the guarantee is the handoff, whose failure
    /// kills the process ([`finish`]).
    pub fn prepare(
        root: &Root,
        id: &str,
        meta: &Meta,
        paused: bool,
        init: Option<i32>,
    ) -> Result<Option<Handoff>> {
        if meta.annotations.get(ANNOTATION_LEARN).map(String::as_str) != Some("observing") {
            return Ok(None);
        }
        let frozen = match init.map(super::freezer::frozen) {
            Some(Ok(false)) => None,
            Some(Ok(true)) => Some("its cgroup is frozen".to_string()),
            Some(Err(e)) => Some(format!("its cgroup's freezer cannot be read: {e}")),
            None => Some("it has no init process".to_string()),
        };
        if paused || frozen.is_some() {
            let why = frozen.unwrap_or_else(|| "it was paused".into());
            return Err(RuntimeError::Policy(format!(
                "container {id:?} is paused and learning ({ANNOTATION_LEARN}; {why}): an exec'd process would be frozen before it hands its observing filter to the observer, so it could not be observed; exec refused (resume the container first)"
            )));
        }
        let unreachable = |why: String| {
            RuntimeError::Policy(format!(
                "container {id:?} is learning ({ANNOTATION_LEARN}) but its observer cannot be reached: {why}; exec refused (an exec'd process is observed as init is, and create refuses a learning container without its observer)"
            ))
        };
        let alive = meta
            .supervisor_pid
            .is_some_and(|p| crate::supervisor::is_ours(p, id));
        if !alive {
            return Err(unreachable("its supervisor is not running".into()));
        }
        let state = root.state_dir(id);
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(state.path())
            .map(OwnedFd::from)
            .map_err(|e| unreachable(format!("open {}: {e}", state.path().display())))?;
        let socket = state.file(crate::statedir::LEARN_SOCKET);
        if std::fs::symlink_metadata(&socket).is_err() {
            return Err(unreachable(format!("no socket {}", socket.display())));
        }
        let (ours, theirs) = UnixStream::pair()
            .map_err(|e| RuntimeError::io("create the learn handoff socket pair", e))?;
        Ok(Some(Handoff {
            ours,
            theirs: Some(theirs),
            dir,
            id: id.to_string(),
        }))
    }

    /// The fd number the executor sends the listener fd on (the same in
    /// the exec'd process: it is inherited).
    pub fn child_fd(&self) -> Option<RawFd> {
        self.theirs.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Serves the handoff while libcontainer builds the process (its
    /// build returns only once the process has exec'd, and that exec waits
    /// for the observer): receives the listener fd and passes it to the
    /// observer. Returns the process's end, to drop after the build (so a
    /// process that stopped before its filter gives an end of file), and
    /// the thread. On an error the fd is closed, so the process's observed
    /// calls (its exec first) fail: it never runs unobserved.
    pub fn start(mut self) -> Result<(Option<UnixStream>, JoinHandle<Result<()>>)> {
        let theirs = self.theirs.take();
        let thread = std::thread::Builder::new()
            .name("exec-learn".into())
            .spawn(move || self.hand_over())
            .map_err(|e| RuntimeError::io("start the learn handoff", e))?;
        Ok((theirs, thread))
    }

    fn hand_over(self) -> Result<()> {
        let fd = self.receive().map_err(|e| {
            RuntimeError::Policy(format!(
                "exec in learning container {:?}: the exec'd process did not hand over its observing filter: {e}",
                self.id
            ))
        })?;
        let Some(fd) = fd else {
            // It stopped before its filter (its own error is on stderr).
            return Ok(());
        };
        self.send(&fd).map_err(|e| {
            RuntimeError::Policy(format!(
                "container {:?} is learning ({ANNOTATION_LEARN}) but its observer cannot be reached: {e}; the exec'd process is stopped unobserved",
                self.id
            ))
        })
    }

    fn receive(&self) -> io::Result<Option<OwnedFd>> {
        self.ours.set_read_timeout(Some(HANDOFF_WAIT))?;
        let mut buf = [0u8; 64];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<()>(
            self.ours.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        if msg.bytes == 0 {
            return Ok(None);
        }
        crate::learn::observe::last_fd(&msg)?
            .map(Some)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a message without a file descriptor",
                )
            })
    }

    /// libcontainer's seccomp-agent message: the process state, the fd.
    fn send(&self, fd: &OwnedFd) -> io::Result<()> {
        let path = PathBuf::from(format!(
            "/proc/self/fd/{}/{}",
            self.dir.as_raw_fd(),
            crate::statedir::LEARN_SOCKET
        ));
        let conn = UnixStream::connect(&path)?;
        let state = process_state(&self.id);
        let iov = [IoSlice::new(&state)];
        let fds = [fd.as_raw_fd()];
        sendmsg::<()>(
            conn.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(io::Error::from)?;
        Ok(())
    }
}

/// The OCI container process state libcontainer sends with init's fd
/// (the pid is not known yet: 0; the observer reads each call's pid from
/// the kernel's notification).
fn process_state(id: &str) -> Vec<u8> {
    let pid = 0;
    serde_json::to_vec(&serde_json::json!({
        "ociVersion": libcontainer::oci_spec::runtime::VERSION,
        "fds": [libcontainer::oci_spec::runtime::SECCOMP_FD_NAME],
        "pid": pid,
        "metadata": "",
        "state": {"ociVersion": libcontainer::oci_spec::runtime::VERSION, "id": id, "status": "running", "pid": pid, "bundle": ""},
    }))
    .unwrap_or_default()
}

/// In the exec'd process (the executor): sends the observing filter's
/// listener fd on `channel` and closes both.
pub fn send_listener(channel: RawFd, listener: RawFd) -> io::Result<()> {
    let iov = [IoSlice::new(b"seccompFd")];
    let fds = [listener];
    let sent = sendmsg::<()>(
        channel,
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    );
    let _ = nix::unistd::close(listener);
    let _ = nix::unistd::close(channel);
    sent.map(drop).map_err(io::Error::from)
}

/// Once the process `pid` is built: the handoff's outcome. When it failed,
/// the process is killed (it would run with a filter nobody serves, or
/// stay frozen) and the failure returned.
pub fn finish(thread: Option<JoinHandle<Result<()>>>, pid: i32) -> Result<()> {
    let Some(t) = thread else {
        return Ok(());
    };
    t.join()
        .map_err(|_| RuntimeError::Invalid("the learn handoff panicked".into()))
        .and_then(|r| r)
        .map_err(|e| kill_unobserved(pid, e))
}

/// Kills the exec'd process `pid`, and returns `why`.
fn kill_unobserved(pid: i32, why: RuntimeError) -> RuntimeError {
    let pid = nix::unistd::Pid::from_raw(pid);
    if let Err(e) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL) {
        tracing::warn!(target: "exec", %pid, "could not kill the unobserved exec'd process: {e}");
    }
    why
}
