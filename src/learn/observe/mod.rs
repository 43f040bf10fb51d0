//! Observing a learned run in the kernel path: a seccomp user-notification
//! filter on the file, exec and connect calls (added to the bundle's
//! profile, loaded by libcontainer right before exec, its listener fd
//! handed to `linux.seccomp.listenerPath`), and a thread of `buntime run`
//! that reads each call's arguments and lets it continue.
//!
//! Everything read from the sandbox's memory is only a record: the call
//! always continues (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`), so a process
//! that changes its memory under us can only spoil its own record, never
//! gain anything (a learned run is not sandboxed by filesystem or network
//! rules anyway; docs/learn.md).

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use libcontainer::oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSyscall};
use libseccomp::{ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags};

mod decode;
mod notif;

pub(crate) use decode::Calls;
pub(crate) use notif::{last_fd, peer_is, receive_fd, seccomp_listener, wait_readable, Readiness};

/// The calls a learned run is observed on.
pub const OBSERVED_CALLS: &[&str] = &["open", "openat", "openat2", "execve", "execveat", "connect"];

/// What a call asked for.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum FileUse {
    /// Opened for reading.
    Read,
    /// Opened as a directory (listing).
    List,
    /// Opened for writing (or truncating) a file that may exist.
    Write,
    /// Opened with `O_CREAT`: may create the file.
    Create,
    /// Executed.
    Exec,
}

/// One observed call.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    File {
        path: PathBuf,
        access: FileUse,
    },
    Connect(SocketAddr),
    /// A connect to a UNIX socket (not a policy matter: recorded for the
    /// summary only).
    ConnectUnix(PathBuf),
    /// A `host:port` the container's proxy was asked for (from its audit
    /// log: the proxy knows the name, the kernel path only the proxy).
    Host(String),
    /// A `host:port` a proxy was asked for and the address it reached (or
    /// refused) for it: a name is judged by that address too, so a name
    /// of an internal address is granted only as the address would be.
    Proxied {
        host: String,
        addr: SocketAddr,
    },
}

/// What is known of a container path, taken in the container's root while
/// it ran (the host's file of that name is another file).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Facts {
    /// It existed when the call was made.
    pub exists: bool,
    /// A program's interpreter: (path, whether it is exec'd itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<(PathBuf, bool)>,
}

/// What the observer saw.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Observed {
    pub events: Vec<Event>,
    /// Whether the listener got the filter's fd at all (when not, nothing
    /// was observed and the policy is incomplete).
    pub attached: bool,
    /// Calls whose arguments could not be read (the process was gone, or
    /// its memory unreadable).
    pub unreadable: u64,
    /// Paths are a container's (its own root), not the host's: what is
    /// known of them is in `facts`.
    #[serde(default)]
    pub in_container: bool,
    #[serde(default)]
    pub facts: std::collections::BTreeMap<PathBuf, Facts>,
    /// More distinct calls than the observer keeps (`MAX_EVENTS`): the
    /// rest were not recorded.
    #[serde(default)]
    pub truncated: bool,
    /// Audit records the run's names were read from were dropped at the
    /// log's quota (an `audit`/`drop` line): names asked for may be
    /// missing.
    #[serde(default)]
    pub records_dropped: bool,
    /// The learning proxy's port on loopback (`buntime run --learn`):
    /// connects to it are buntime's own, the hosts asked of it are events.
    #[serde(default)]
    pub proxy: Option<u16>,
}

/// Distinct calls an observer keeps; beyond, the record is marked
/// truncated (the observer's memory is root's, not the sandbox's to fill).
pub const MAX_EVENTS: usize = 65_536;
/// Bytes of paths an observer keeps (a path may be 4 KiB).
pub const MAX_EVENT_BYTES: usize = 16 << 20;

/// Why a truncated record is incomplete, for the policy's description.
pub fn truncated_why() -> String {
    format!(
        "more distinct calls than the observer keeps ({MAX_EVENTS}, or {} MiB of paths): the rest were not recorded",
        MAX_EVENT_BYTES >> 20
    )
}

/// The distinct events an observer has kept, to drop repeats on arrival
/// and to stop at [`MAX_EVENTS`] or [`MAX_EVENT_BYTES`].
#[derive(Default)]
pub(crate) struct Distinct {
    known: std::collections::HashSet<Event>,
    bytes: usize,
}

impl Distinct {
    /// Whether `e` is to be kept: new and within the bounds. A new event
    /// past them marks `seen` truncated instead.
    pub(crate) fn admit(&mut self, e: &Event, seen: &mut Observed) -> bool {
        if self.known.contains(e) {
            return false;
        }
        let size = match e {
            Event::File { path, .. } | Event::ConnectUnix(path) => path.as_os_str().len(),
            Event::Host(h) | Event::Proxied { host: h, .. } => h.len(),
            Event::Connect(_) => 0,
        } + 64;
        if self.known.len() >= MAX_EVENTS || self.bytes + size > MAX_EVENT_BYTES {
            seen.truncated = true;
            return false;
        }
        self.bytes += size;
        self.known.insert(e.clone());
        true
    }

    /// Adds `e` to `seen` when it is to be kept.
    pub(crate) fn record(&mut self, e: Event, seen: &mut Observed) {
        if self.admit(&e, seen) {
            seen.events.push(e);
        }
    }
}

/// The listener socket's name in its directory.
pub const SOCKET_NAME: &str = "learn.sock";

/// The running observer.
pub struct Listener {
    pub socket: PathBuf,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Observed>,
}

impl Listener {
    /// Makes `dir` (mode 0700: only we may connect), binds the listener
    /// socket [`SOCKET_NAME`] in it and starts the thread. Call before the
    /// container is created: libcontainer connects to it while creating,
    /// and the sandbox's first calls wait for our answers.
    pub fn start(dir: &Path) -> io::Result<Listener> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new().mode(0o700).create(dir)?;
        // The mode asked for is the umask's to lower, never to raise; set
        // it exactly all the same.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        let socket = dir.join(SOCKET_NAME);
        let listener = UnixListener::bind(&socket)?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("learn".into())
            .spawn(move || serve(listener, &flag))?;
        Ok(Listener {
            socket,
            stop,
            thread,
        })
    }

    /// Stops the thread (after the sandbox is gone) and returns what it saw.
    pub fn finish(self) -> Observed {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::fs::remove_file(&self.socket);
        self.thread.join().unwrap_or_else(|_| {
            tracing::warn!(target: "learn", "the learn listener panicked");
            Observed::default()
        })
    }
}

/// The bundle profile of a learned run: `base` with the observed calls
/// moved from `SCMP_ACT_ALLOW` to `SCMP_ACT_NOTIFY`, handed to `listener`.
pub fn notify_profile(base: &LinuxSeccomp, listener: &Path) -> LinuxSeccomp {
    let mut p = base.clone();
    let mut moved = Vec::new();
    let mut calls: Vec<LinuxSyscall> = p.syscalls().clone().unwrap_or_default();
    for c in calls.iter_mut() {
        if c.action() != LinuxSeccompAction::ScmpActAllow || c.args().is_some() {
            continue;
        }
        let (take, keep): (Vec<String>, Vec<String>) = c
            .names()
            .iter()
            .cloned()
            .partition(|n| OBSERVED_CALLS.contains(&n.as_str()));
        moved.extend(take);
        c.set_names(keep);
    }
    calls.retain(|c| !c.names().is_empty());
    // A profile that allows by default (or a container's that had none)
    // names the calls nowhere: they notify too.
    if matches!(
        p.default_action(),
        LinuxSeccompAction::ScmpActAllow | LinuxSeccompAction::ScmpActLog
    ) {
        for name in OBSERVED_CALLS {
            let named = calls.iter().any(|c| c.names().iter().any(|n| n == name));
            if !named && !moved.iter().any(|m| m == name) {
                moved.push(name.to_string());
            }
        }
    }
    if !moved.is_empty() {
        let mut n = LinuxSyscall::default();
        n.set_names(moved);
        n.set_action(LinuxSeccompAction::ScmpActNotify);
        calls.push(n);
    }
    p.set_syscalls(Some(calls));
    p.set_listener_path(Some(listener.to_path_buf()));
    p
}

/// Puts the learn filter in a bundle's spec: its profile (buntime's, from
/// the template) with the observed calls notifying `listener`.
pub fn attach(
    spec: &mut libcontainer::oci_spec::runtime::Spec,
    listener: &Path,
) -> Result<(), String> {
    let mut linux = spec
        .linux()
        .clone()
        .ok_or("--learn: the bundle has no linux section")?;
    let base = linux
        .seccomp()
        .clone()
        .ok_or("--learn: the bundle has no seccomp profile to observe through")?;
    linux.set_seccomp(Some(notify_profile(&base, listener)));
    spec.set_linux(Some(linux));
    Ok(())
}

fn serve(listener: UnixListener, stop: &AtomicBool) -> Observed {
    let mut seen = Observed::default();
    let fd = loop {
        if stop.load(Ordering::SeqCst) {
            return seen;
        }
        match listener.accept() {
            // libcontainer's main process is this one: a connection from
            // any other process is refused, and so is an fd that is not a
            // seccomp listener.
            Ok((conn, _)) => match peer_is(&conn, Some(std::process::id()))
                .and_then(|()| receive_fd(conn.as_raw_fd()))
                .and_then(seccomp_listener)
            {
                Ok(fd) => break fd,
                Err(e) => {
                    tracing::warn!(target: "learn", "refused a connection to the learn socket: {e}");
                    continue;
                }
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => {
                tracing::warn!(target: "learn", "accept on the learn socket: {e}");
                return seen;
            }
        }
    };
    seen.attached = true;
    let calls = Calls::new();
    let mut distinct = Distinct::default();
    // Events before the first execve are buntime's own executor (Landlock,
    // its filters); the program starts at its exec.
    let mut started = false;
    loop {
        match wait_readable(fd.as_raw_fd()) {
            Readiness::Ready => {}
            Readiness::Idle if stop.load(Ordering::SeqCst) => break,
            Readiness::Idle => continue,
            Readiness::Gone => break,
        }
        let req = match ScmpNotifReq::receive(fd.as_raw_fd()) {
            Ok(r) => r,
            // The calling task was killed between poll and receive.
            Err(_) => continue,
        };
        let event = calls.decode(&req);
        // Valid still: the pid was the caller's while we read its memory.
        let valid = libseccomp::notify_id_valid(fd.as_raw_fd(), req.id).is_ok();
        let _ = ScmpNotifResp::new_continue(req.id, ScmpNotifRespFlags::empty())
            .respond(fd.as_raw_fd());
        match event {
            Some(e) if valid => {
                if !started {
                    started = matches!(
                        e,
                        Event::File {
                            access: FileUse::Exec,
                            ..
                        }
                    );
                    if !started {
                        continue;
                    }
                }
                distinct.record(e, &mut seen)
            }
            _ => seen.unreadable += u64::from(started),
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::decode::file_event;
    use super::*;
    use std::fs::File;

    #[test]
    fn notify_profile_moves_only_the_observed_calls() {
        let base = crate::spec::default_seccomp(crate::policy::NetMode::Host);
        let p = notify_profile(&base, Path::new("/run/x.sock"));
        assert!(libcontainer::seccomp::is_notify(&p));
        let calls = p.syscalls().clone().unwrap_or_default();
        let notify: Vec<&String> = calls
            .iter()
            .filter(|c| c.action() == LinuxSeccompAction::ScmpActNotify)
            .flat_map(|c| c.names())
            .collect();
        assert!(notify.iter().any(|n| *n == "openat"));
        assert!(notify.iter().any(|n| *n == "connect"));
        assert!(!notify.iter().any(|n| *n == "read"));
        let allowed_read = calls.iter().any(|c| {
            c.action() == LinuxSeccompAction::ScmpActAllow && c.names().iter().any(|n| n == "read")
        });
        assert!(allowed_read);
    }

    #[test]
    fn repeats_are_dropped_and_distinct_calls_capped() {
        let mut seen = Observed::default();
        let mut d = Distinct::default();
        let e = |i: usize| Event::File {
            path: PathBuf::from(format!("/x/{i}")),
            access: FileUse::Read,
        };
        for _ in 0..3 {
            d.record(e(0), &mut seen);
        }
        assert_eq!(seen.events.len(), 1);
        for i in 0..MAX_EVENTS + 10 {
            d.record(e(i), &mut seen);
        }
        assert_eq!(seen.events.len(), MAX_EVENTS);
        assert!(seen.truncated);
        // Long paths: the byte bound holds first.
        let mut seen = Observed::default();
        let mut d = Distinct::default();
        for i in 0..MAX_EVENTS {
            d.record(
                Event::File {
                    path: PathBuf::from(format!("/{}/{i}", "y".repeat(4000))),
                    access: FileUse::Read,
                },
                &mut seen,
            );
        }
        assert!(seen.truncated);
        assert!(seen.events.len() < MAX_EVENT_BYTES / 4000);
    }

    #[test]
    fn the_socket_is_private_and_takes_only_a_seccomp_listener() {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::net::UnixStream;
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("learn");
        let l = Listener::start(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // A file's fd is not a listener: refused, the observer stays
        // unattached.
        let c = UnixStream::connect(&l.socket).unwrap();
        let f = File::open("/dev/null").unwrap();
        let fds = [f.as_raw_fd()];
        let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
        let iov = [io::IoSlice::new(b"{}")];
        nix::sys::socket::sendmsg::<()>(
            c.as_raw_fd(),
            &iov,
            &cmsg,
            nix::sys::socket::MsgFlags::empty(),
            None,
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let seen = l.finish();
        assert!(!seen.attached);
    }

    #[test]
    fn open_flags_map_to_uses() {
        let p = PathBuf::from("/x");
        let u = |f: i32| match file_event(p.clone(), f as u64) {
            Event::File { access, .. } => access,
            _ => unreachable!(),
        };
        assert_eq!(u(libc::O_RDONLY), FileUse::Read);
        assert_eq!(u(libc::O_RDONLY | libc::O_DIRECTORY), FileUse::List);
        assert_eq!(u(libc::O_WRONLY), FileUse::Write);
        assert_eq!(u(libc::O_WRONLY | libc::O_CREAT), FileUse::Create);
        assert_eq!(u(libc::O_RDONLY | libc::O_TRUNC), FileUse::Write);
    }
}
