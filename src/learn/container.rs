//! Learning a container (`buntime.dev/learn: "true"`, docs/learn.md): the
//! container runs under the policy it already has, and its file, exec and
//! connect calls are observed in the kernel path as in `buntime run
//! --learn`. The seccomp listener is served by the container's supervisor
//! (`buntime-runc create` returns while the container lives), which keeps
//! what it saw in the state directory (`statedir::LEARN_RECORD`);
//! `buntime-runc policy learned ID` cuts the least policy from it and from
//! the audit log (the hosts the proxy was asked for, the broker's denials).
//!
//! The annotation can only take rights away: learning never lifts a rule
//! (unlike `buntime run --learn`), so a tenant gains nothing by asking for
//! it. A node may still refuse it (`"learn": "deny"` in its config).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use libcontainer::oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, Spec};
use libseccomp::{ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags};

use super::generalise::{interpreter_of, Generalise, Learned};
use super::observe::{
    notify_profile, peer_is, receive_fd, seccomp_listener, Calls, Distinct, Event, Facts, FileUse,
    Observed,
};
use super::LearnError;
use crate::policy::source::LearnSetting;
use crate::policy::{NetMode, PolicySources};

/// The bundle annotation asking for learning: `"true"` or `"false"`.
pub const ANNOTATION_LEARN: &str = "buntime.dev/learn";
pub use super::observe::MAX_EVENTS;
/// A socket address holds at most this many bytes of path.
const SUN_PATH_MAX: usize = 107;

/// Whether the bundle asks for learning, and the node allows it. A value
/// other than `true`/`false`, or a node that denies learning, is an error
/// naming the annotation.
pub fn requested(spec: &Spec, sources: &PolicySources) -> Result<bool, String> {
    let value = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_LEARN));
    let wanted = match value.map(|v| v.trim()) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(format!(
                "annotation {ANNOTATION_LEARN}={other:?}: expected \"true\" or \"false\""
            ))
        }
    };
    if wanted && sources.config.learn == LearnSetting::Deny {
        return Err(format!(
            "annotation {ANNOTATION_LEARN} refused: {} sets \"learn\": \"deny\" (this node does not observe containers for learning)",
            sources.config_file.display()
        ));
    }
    Ok(wanted)
}

/// Puts the observing filter in a container's spec: the bundle's profile
/// (or, with none, one that allows everything) with the observed calls
/// notifying `socket`. Only the action of calls the profile allows
/// changes; `SECCOMP_USER_NOTIF_FLAG_CONTINUE` then lets each go on, so
/// what the container may do is what it could do before.
pub fn attach(spec: &mut Spec, socket: &Path) -> Result<(), String> {
    if socket.as_os_str().len() > SUN_PATH_MAX {
        return Err(format!(
            "annotation {ANNOTATION_LEARN}: the learn socket {} is longer than a socket address may be ({SUN_PATH_MAX} bytes): use a shorter --root",
            socket.display()
        ));
    }
    let mut linux = spec
        .linux()
        .clone()
        .ok_or_else(|| format!("annotation {ANNOTATION_LEARN}: the bundle has no linux section"))?;
    let base = linux.seccomp().clone().unwrap_or_else(|| {
        let mut p = LinuxSeccomp::default();
        p.set_default_action(LinuxSeccompAction::ScmpActAllow);
        p.set_syscalls(Some(Vec::new()));
        p
    });
    if libcontainer::seccomp::is_notify(&base) {
        return Err(format!(
            "annotation {ANNOTATION_LEARN}: the bundle's seccomp profile has its own notify listener; learning cannot observe it too"
        ));
    }
    linux.set_seccomp(Some(notify_profile(&base, socket)));
    spec.set_linux(Some(linux));
    Ok(())
}

/// The supervisor's observer: a thread serving the learn socket and every
/// filter handed to it (the init's, and each `exec`'s).
pub struct Observer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Observer {
    /// Binds `socket` (relative to the current directory, the state
    /// directory: absolute paths there may be too long for an address)
    /// and starts serving. Before `create` builds the container: its
    /// init's first observed calls wait for an answer.
    pub fn start(socket: &Path, record: PathBuf) -> io::Result<Observer> {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("learn".into())
            .spawn(move || serve(listener, &record, &flag))?;
        Ok(Observer { stop, thread })
    }

    /// Stops serving (the container's init is gone) and writes the record
    /// one last time.
    pub fn finish(self) {
        self.stop.store(true, Ordering::SeqCst);
        if self.thread.join().is_err() {
            tracing::warn!(target: "supervisor", "the learn observer panicked");
        }
    }
}

/// One filter (one process tree's) being served.
struct Filter {
    fd: OwnedFd,
    /// Its program has exec'd: what came before is the runtime's own
    /// (libcontainer, Landlock, buntime's seccomp programs).
    started: bool,
}

struct Recorder {
    seen: Observed,
    known: Distinct,
    dirty: bool,
}

impl Recorder {
    fn add(&mut self, e: Event, pid: u32) {
        let e = own_exe(e, pid);
        let was_truncated = self.seen.truncated;
        if !self.known.admit(&e, &mut self.seen) {
            // Kept already, or past the bounds (marked truncated: written
            // once more, not at every call after).
            self.dirty |= self.seen.truncated != was_truncated;
            return;
        }
        if let Event::File { path, access } = &e {
            if !self.seen.facts.contains_key(path) {
                let f = facts(pid, path, *access == FileUse::Exec);
                self.seen.facts.insert(path.clone(), f);
            }
        }
        self.seen.events.push(e);
        self.dirty = true;
    }

    /// Written whole to a new file, then renamed: a reader never sees half.
    fn flush(&mut self, record: &Path) {
        if !self.dirty {
            return;
        }
        let tmp = record.with_extension("json.tmp");
        let body = match serde_json::to_vec(&self.seen) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(target: "supervisor", "encode the learn record: {e}");
                return;
            }
        };
        match std::fs::write(&tmp, body).and_then(|()| std::fs::rename(&tmp, record)) {
            Ok(()) => self.dirty = false,
            Err(e) => tracing::warn!(target: "supervisor", "write {}: {e}", record.display()),
        }
    }
}

/// An exec of `/proc/self/exe` (busybox runs its applets so) is of the
/// program the caller runs: named by its path (the link read from the
/// host shows the path in the caller's own root).
fn own_exe(e: Event, pid: u32) -> Event {
    match e {
        Event::File {
            path,
            access: FileUse::Exec,
        } if path == Path::new("/proc/self/exe") || path == Path::new("/proc/thread-self/exe") => {
            let path = std::fs::read_link(format!("/proc/{pid}/exe"))
                .ok()
                .filter(|p| p.is_absolute())
                .map(|p| crate::policy::normalize_path(&p))
                .unwrap_or(path);
            Event::File {
                path,
                access: FileUse::Exec,
            }
        }
        e => e,
    }
}

/// What is known of `path` in the caller's root, taken while the call
/// waits (so before it ran): whether it exists, and a program's
/// interpreter. Resolved inside that root: a symlink in the image cannot
/// make the supervisor read a host file; read with the caller's rights.
fn facts(pid: u32, path: &Path, exec: bool) -> Facts {
    use crate::deputy::fsops::openat2;
    let resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    let Ok(root) = File::open(format!("/proc/{pid}/root")) else {
        return Facts::default();
    };
    let rel = path.strip_prefix("/").unwrap_or(path);
    let exists = openat2(&root, rel, libc::O_PATH, resolve).is_ok();
    let interpreter = if exec {
        // With the caller's rights: the supervisor never reads for the
        // sandbox what the sandbox could not read itself. Fails closed.
        let creds = crate::deputy::creds::SandboxCreds::of_pid(pid).ok();
        let _as_caller = creds.and_then(|c| c.assume().ok());
        _as_caller
            .is_some()
            .then(|| {
                openat2(
                    &root,
                    rel,
                    libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
                    resolve,
                )
                .ok()
            })
            .flatten()
            .map(File::from)
            .filter(|f| f.metadata().is_ok_and(|m| m.is_file()))
            .and_then(interpreter_of)
    } else {
        None
    };
    Facts {
        exists,
        interpreter,
    }
}

fn serve(listener: UnixListener, record: &Path, stop: &AtomicBool) {
    let calls = Calls::new();
    let mut rec = Recorder {
        seen: Observed {
            in_container: true,
            ..Observed::default()
        },
        known: Distinct::default(),
        dirty: true,
    };
    rec.flush(record);
    let mut filters: Vec<Filter> = Vec::new();
    let mut flushed = Instant::now();
    loop {
        let mut pfds: Vec<libc::pollfd> = std::iter::once(listener.as_raw_fd())
            .chain(filters.iter().map(|f| f.fd.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: a valid array of pollfds of that length.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 100) };
        if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
        if n <= 0 && stop.load(Ordering::SeqCst) {
            break;
        }
        if pfds[0].revents & libc::POLLIN != 0 {
            if let Some(fd) = accept_filter(&listener) {
                rec.seen.attached = true;
                rec.dirty = true;
                filters.push(Filter { fd, started: false });
            }
        }
        let mut gone = Vec::new();
        for (i, p) in pfds.iter().enumerate().skip(1) {
            let f = &mut filters[i - 1];
            if p.revents & libc::POLLIN != 0 {
                answer(&calls, f, &mut rec);
            } else if p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                gone.push(i - 1);
            }
        }
        for i in gone.into_iter().rev() {
            filters.remove(i);
        }
        if flushed.elapsed() >= Duration::from_millis(500) {
            rec.flush(record);
            flushed = Instant::now();
        }
    }
    rec.flush(record);
}

/// One connection of libcontainer's (the OCI seccomp-agent protocol):
/// the listener fd. Only root reaches the socket (the state directory is
/// 0700); the wait for the message is bounded all the same.
fn accept_filter(listener: &UnixListener) -> Option<OwnedFd> {
    let (conn, _) = listener.accept().ok()?;
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    // `buntime-runc create` (or `exec`) sends it: root, as we are.
    match peer_is(&conn, None)
        .and_then(|()| receive_fd(conn.as_raw_fd()))
        .and_then(seccomp_listener)
    {
        Ok(fd) => Some(fd),
        Err(e) => {
            tracing::warn!(target: "supervisor", "receive a seccomp listener fd: {e}");
            None
        }
    }
}

/// Reads one notification, records it and lets the call continue.
fn answer(calls: &Calls, f: &mut Filter, rec: &mut Recorder) {
    let Ok(req) = ScmpNotifReq::receive(f.fd.as_raw_fd()) else {
        // The caller was killed between poll and receive.
        return;
    };
    let event = calls.decode(&req);
    let valid = libseccomp::notify_id_valid(f.fd.as_raw_fd(), req.id).is_ok();
    match event {
        Some(e) if valid => {
            if !f.started {
                f.started = matches!(
                    e,
                    Event::File {
                        access: FileUse::Exec,
                        ..
                    }
                );
            }
            if f.started {
                // Before the answer: the facts are of the file as the
                // call found it.
                rec.add(e, req.pid);
            }
        }
        _ => rec.seen.unreadable += u64::from(f.started),
    }
    let _ =
        ScmpNotifResp::new_continue(req.id, ScmpNotifRespFlags::empty()).respond(f.fd.as_raw_fd());
}

/// A learned container's policy, with why it is incomplete if it is.
pub struct ContainerLearned {
    pub learned: Learned,
    pub incomplete: Option<String>,
    /// The policy the container ran under (`origin`).
    pub ran_under: String,
    /// Cut from the record kept when the container was deleted, in
    /// this directory.
    pub deleted: Option<PathBuf>,
}

/// What the runtime knows of a container beyond its state directory
/// (`runtime::learned` gathers it: the metadata, whether its supervisor
/// still runs).
pub struct ContainerFacts<'a> {
    pub id: &'a str,
    pub dir: &'a crate::statedir::StateDir,
    /// The policy it ran under (`origin`), if recorded.
    pub policy_name: Option<String>,
    /// Its supervisor is still running (so the record may grow).
    pub running: bool,
    /// The container was deleted: `dir` is its kept record
    /// (`runtime::kept`).
    pub deleted: bool,
}

/// The least policy for a container, from what its supervisor recorded
/// and its audit log.
pub fn learned(c: &ContainerFacts<'_>, threshold: usize) -> Result<ContainerLearned, LearnError> {
    let (id, dir) = (c.id, c.dir);
    let text = match crate::statedir::read_small(&dir.learn_record()) {
        Ok(Some(t)) => t,
        Ok(None) => {
            return Err(LearnError::Invalid(format!(
                "container {id:?} was not learning: create it with the annotation {ANNOTATION_LEARN}: \"true\" (docs/learn.md)"
            )))
        }
        Err(e) => {
            return Err(LearnError::Invalid(format!(
                "container {id:?}: read {}: {e}",
                dir.learn_record().display()
            )))
        }
    };
    let mut seen: Observed = serde_json::from_slice(&text).map_err(|e| {
        LearnError::Invalid(format!(
            "container {id:?}: {}: {e}",
            dir.learn_record().display()
        ))
    })?;
    let policy_file = dir.policy();
    let base_text = crate::statedir::read_small(&policy_file)
        .and_then(|b| b.ok_or_else(|| io::ErrorKind::NotFound.into()))
        .and_then(|b| String::from_utf8(b).map_err(io::Error::other))
        .map_err(|e| {
            LearnError::Invalid(format!(
                "container {id:?}: read {}: {e}",
                policy_file.display()
            ))
        })?;
    let base = crate::policy::parse_policy(&base_text, &policy_file.display().to_string())
        .map_err(|e| LearnError::Invalid(format!("container {id:?}: {e}")))?;
    let records = crate::audit::read_all(dir.path());
    seen.events.extend(audit_events(&records));
    seen.records_dropped |= super::records_dropped(&records);
    let ran_under = c.policy_name.clone().unwrap_or_else(|| "its policy".into());
    let g = Generalise {
        proxy: (base.network.mode == NetMode::Proxy).then_some(crate::proxy::PROXY_PORT),
        base,
        threshold,
        home: None,
        // buntime's own: the supervisor's directory.
        implicit: vec![PathBuf::from(crate::statedir::CONTAINER_DIR)],
    };
    let mut learned = g.learn(&seen)?;
    let running = c.running;
    let incomplete = super::record_incompleteness(&seen).or_else(|| {
        running.then(|| {
            "the container is still running: what it does later is not in the policy".into()
        })
    });
    learned.policy.description = match &incomplete {
        Some(why) => format!("INCOMPLETE ({why}). Learned from container {id}."),
        None => format!("Learned from container {id}."),
    };
    Ok(ContainerLearned {
        learned,
        incomplete,
        ran_under,
        deleted: c.deleted.then(|| dir.path().to_path_buf()),
    })
}

/// Whether learning reads this audit record (`audit_events`, or a drop
/// at the log's quota, which makes the learned policy incomplete): what
/// `runtime::kept` keeps of a deleted container's log.
pub fn learning_needs(r: &crate::audit::AuditRecord) -> bool {
    super::dropped_at_quota(r) || !audit_events(std::slice::from_ref(r)).is_empty()
}

/// What the audit log adds: the hosts the proxy was asked for (allowed or
/// not: the kernel path sees only the proxy), and the paths and programs
/// the broker refused.
pub fn audit_events(records: &[crate::audit::AuditRecord]) -> Vec<Event> {
    use crate::audit::{Kind, Verdict};
    use crate::policy::RuleRef;
    let mut out = Vec::new();
    // The quota's own lines count records not written: no use of their own
    // (their subject is a placeholder), only the incompleteness they mark.
    for r in records.iter().filter(|r| r.rule != RuleRef::AuditQuota) {
        let access = match (r.kind, r.decision) {
            (Kind::Proxy | Kind::NetConnect, Verdict::Allow | Verdict::Deny) => {
                out.extend(super::proxy::proxied_event(r));
                continue;
            }
            (Kind::FsRead, Verdict::Deny) => FileUse::Read,
            (Kind::ListDir, Verdict::Deny) => FileUse::List,
            (Kind::FsWrite, Verdict::Deny) => FileUse::Write,
            (Kind::Exec, Verdict::Deny) => FileUse::Exec,
            _ => continue,
        };
        let path = match access {
            FileUse::Exec => r.subject.split_whitespace().next().unwrap_or_default(),
            _ => r.subject.as_str(),
        };
        if path.starts_with('/') {
            out.push(Event::File {
                path: crate::policy::normalize_path(Path::new(path)),
                access,
            });
        }
    }
    out
}

/// The summary for `policy learned` (stderr).
pub fn summary_text(id: &str, c: &ContainerLearned) -> String {
    let mut out = format!(
        "buntime-runc: learned policy for container {id} (observed under {})\n",
        c.ran_under
    );
    if let Some(dir) = &c.deleted {
        out.push_str(&format!(
            "  the container was deleted: this is the record kept in {} (docs/learn.md)\n",
            dir.display()
        ));
    }
    out.push_str(&super::grouped(&c.learned, c.incomplete.as_deref()));
    out.push_str(
        "  review it, then give it to the container: the annotation buntime.dev/policy (inline) or a named policy (docs/policy.md)",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_records_bring_hosts_and_refused_paths() {
        use crate::audit::{AuditRecord, Kind, Verdict};
        let mut a = AuditRecord::new("c", 1, Kind::Proxy, "example.org:443");
        a.decision = Verdict::Deny;
        let mut b = AuditRecord::new("c", 1, Kind::FsRead, "/data/x");
        b.decision = Verdict::Deny;
        let mut c = AuditRecord::new("c", 1, Kind::FsRead, "/data/y");
        c.decision = Verdict::Allow;
        let e = audit_events(&[a, b, c]);
        assert_eq!(
            e,
            vec![
                Event::Host("example.org:443".into()),
                Event::File {
                    path: PathBuf::from("/data/x"),
                    access: FileUse::Read
                }
            ]
        );
    }

    #[test]
    fn the_quota_lines_mark_the_log_incomplete_and_bring_no_use() {
        use crate::audit::{AuditRecord, Kind, Verdict};
        let mut q = AuditRecord::new("c", 0, Kind::Audit, "quota");
        q.decision = Verdict::Drop;
        q.rule = crate::policy::RuleRef::AuditQuota;
        let mut n = AuditRecord::new("c", 0, Kind::Proxy, "(not recorded)");
        n.rule = crate::policy::RuleRef::AuditQuota;
        n.count = Some(3);
        assert!(learning_needs(&q), "a kept log keeps the drop line");
        assert!(crate::learn::records_dropped(&[n.clone(), q.clone()]));
        assert!(!crate::learn::records_dropped(std::slice::from_ref(&n)));
        assert_eq!(audit_events(&[q, n]), vec![]);
    }

    #[test]
    fn a_container_without_a_profile_gets_one_that_only_observes() {
        let mut spec = Spec::default();
        if let Some(mut l) = spec.linux().clone() {
            l.set_seccomp(None);
            spec.set_linux(Some(l));
        }
        attach(&mut spec, Path::new("/run/x/learn.sock")).expect("attach");
        let p = spec
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().clone())
            .expect("a profile");
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert!(libcontainer::seccomp::is_notify(&p));
        let long = PathBuf::from(format!("/{}/learn.sock", "x".repeat(120)));
        assert!(attach(&mut spec, &long).is_err());
    }
}
