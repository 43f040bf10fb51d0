//! Pending `ask`s: the UI is the approver of each live sandbox. It connects
//! to the supervisor's `approve.sock` (JSON lines, see docs/supervisor.md),
//! keeps each question as pending until someone answers it in the page,
//! and writes `{"id":N,"result":"allow"|"deny"}` back.
//!
//! The supervisor takes the newest connection as its approver. So that two
//! approvers (another UI, `buntime run`'s terminal prompt) do not keep
//! taking the socket from each other, a connection the supervisor dropped
//! while its socket is still there is marked `replaced` and not retried
//! until the page asks for it (`POST /api/sandboxes/ID/approver`).
//!
//! "Always allow" answers allow and remembers (sandbox, kind, subject):
//! the same question from the same sandbox is then allowed at once, for as
//! long as this UI runs.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Longest question line read from a supervisor.
const MAX_LINE: u64 = 16 << 10;
/// Longest subject kept (a hostile sandbox chooses it).
const MAX_SUBJECT: usize = 4096;
/// Most pending asks kept per UI (the supervisor asks one at a time per
/// sandbox, so this is only a bound).
const MAX_PENDING: usize = 1000;

/// An answer from the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
    /// Allow, and allow the same (kind, subject) of this sandbox from now on.
    Always,
}

impl Verdict {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "allow" => Some(Verdict::Allow),
            "deny" => Some(Verdict::Deny),
            "always" => Some(Verdict::Always),
            _ => None,
        }
    }
}

/// One question waiting for an answer.
#[derive(Debug, Clone, Serialize)]
pub struct Ask {
    pub container: String,
    /// The supervisor's id of the question.
    pub id: u64,
    pub pid: i64,
    pub kind: String,
    pub subject: String,
    /// When it arrived (RFC 3339).
    pub asked: String,
    /// How long until the supervisor gives up and denies.
    pub expires_in_ms: u64,
    #[serde(skip)]
    deadline: Instant,
}

/// The UI's approver connection to one sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Link {
    /// Connected: questions come here.
    Connected,
    /// The supervisor took another approver.
    Replaced,
    /// The supervisor is gone.
    Closed,
    /// Could not connect (retried).
    Failed,
}

#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("no pending question {id} of sandbox {container:?} (answered or timed out)")]
    NotPending { container: String, id: u64 },
    #[error("the approver connection of {0:?} is closed")]
    Closed(String),
    #[error("answering {container:?}: {source}")]
    Write {
        container: String,
        source: std::io::Error,
    },
}

struct Conn {
    container: String,
    /// The supervisor the connection belongs to (a new sandbox with the
    /// same id has another).
    supervisor: i32,
    sock: PathBuf,
    timeout: Duration,
    link: Link,
    writer: Option<UnixStream>,
    /// Which connection attempt this is (a reader of an older one must
    /// not touch the newer one).
    epoch: u64,
}

#[derive(Default)]
struct Inner {
    conns: Vec<Conn>,
    pending: Vec<Ask>,
    always: HashSet<(String, String, String)>,
    generation: u64,
    next_epoch: u64,
}

/// The approver side of every sandbox the UI watches.
pub struct Approvals {
    inner: Mutex<Inner>,
    changed: Condvar,
    stop: Arc<AtomicBool>,
}

impl Approvals {
    pub fn new(stop: Arc<AtomicBool>) -> Arc<Self> {
        Arc::new(Approvals {
            inner: Mutex::new(Inner::default()),
            changed: Condvar::new(),
            stop,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means a reader thread panicked.
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn bump(&self, inner: &mut Inner) {
        inner.generation = inner.generation.wrapping_add(1);
        self.changed.notify_all();
    }

    /// Makes sure the UI is the approver of `container` (supervisor pid
    /// `supervisor`, socket `sock`): connects unless already connected or
    /// replaced. Called for every live sandbox by the UI's watcher.
    pub fn watch(
        self: &Arc<Self>,
        container: &str,
        supervisor: i32,
        sock: &Path,
        timeout: impl FnOnce() -> Duration,
    ) {
        {
            let inner = self.lock();
            if let Some(c) = inner
                .conns
                .iter()
                .find(|c| c.container == container && c.supervisor == supervisor)
            {
                if c.link != Link::Failed {
                    return;
                }
            }
        }
        self.connect(container, supervisor, sock, timeout());
    }

    /// (Re)connects as the approver of `container`, replacing whatever
    /// approver the supervisor has. False if the UI never watched it.
    pub fn reconnect(self: &Arc<Self>, container: &str) -> bool {
        let found = {
            let inner = self.lock();
            inner
                .conns
                .iter()
                .find(|c| c.container == container)
                .map(|c| (c.supervisor, c.sock.clone(), c.timeout))
        };
        match found {
            Some((sup, sock, timeout)) => {
                self.connect(container, sup, &sock, timeout);
                true
            }
            None => false,
        }
    }

    fn connect(self: &Arc<Self>, container: &str, supervisor: i32, sock: &Path, timeout: Duration) {
        let stream = UnixStream::connect(sock);
        let mut inner = self.lock();
        inner.next_epoch += 1;
        let epoch = inner.next_epoch;
        inner.conns.retain(|c| c.container != container);
        inner.pending.retain(|a| a.container != container);
        let mut conn = Conn {
            container: container.to_string(),
            supervisor,
            sock: sock.to_path_buf(),
            timeout,
            link: Link::Failed,
            writer: None,
            epoch,
        };
        let reader = match stream.and_then(|s| Ok((s.try_clone()?, s))) {
            Ok((w, r)) => {
                let _ = w.set_write_timeout(Some(Duration::from_secs(2)));
                let _ = r.set_read_timeout(Some(Duration::from_millis(500)));
                conn.writer = Some(w);
                conn.link = Link::Connected;
                Some(r)
            }
            Err(e) => {
                tracing::debug!(target: "ui", container, "approver socket {}: {e}", sock.display());
                None
            }
        };
        inner.conns.push(conn);
        self.bump(&mut inner);
        drop(inner);
        if let Some(r) = reader {
            tracing::info!(target: "ui", container, "approver connected");
            let me = Arc::clone(self);
            let name = container.to_string();
            let spawned = std::thread::Builder::new()
                .name("ui-approver".into())
                .spawn(move || me.read_questions(&name, epoch, r, timeout));
            if let Err(e) = spawned {
                tracing::warn!(target: "ui", "approver thread: {e}");
            }
        }
    }

    /// Reads questions until the supervisor hangs up or the UI stops.
    fn read_questions(&self, container: &str, epoch: u64, stream: UnixStream, timeout: Duration) {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        let mut overlong = false;
        loop {
            if self.stop.load(Ordering::Relaxed) || !self.is_current(container, epoch) {
                return;
            }
            let room = MAX_LINE.saturating_sub(line.len() as u64).max(1);
            match Read::by_ref(&mut reader)
                .take(room)
                .read_until(b'\n', &mut line)
            {
                Ok(0) if line.is_empty() => break,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(_) => break,
            }
            if line.last() != Some(&b'\n') {
                if line.len() as u64 >= MAX_LINE {
                    line.clear();
                    overlong = true;
                    continue;
                }
                // EOF in the middle of a line.
                break;
            }
            if std::mem::take(&mut overlong) {
                line.clear();
                continue;
            }
            self.question(container, epoch, &line, timeout);
            line.clear();
        }
        let mut inner = self.lock();
        if let Some(c) = inner
            .conns
            .iter_mut()
            .find(|c| c.container == container && c.epoch == epoch)
        {
            c.writer = None;
            c.link = if c.sock.exists() {
                Link::Replaced
            } else {
                Link::Closed
            };
            tracing::info!(target: "ui", container, link = ?c.link, "approver connection ended");
        }
        inner.pending.retain(|a| a.container != container);
        self.bump(&mut inner);
    }

    fn is_current(&self, container: &str, epoch: u64) -> bool {
        self.lock()
            .conns
            .iter()
            .any(|c| c.container == container && c.epoch == epoch)
    }

    fn question(&self, container: &str, epoch: u64, line: &[u8], timeout: Duration) {
        let Ok(q) = serde_json::from_slice::<serde_json::Value>(line) else {
            return;
        };
        let Some(id) = q["id"].as_u64() else { return };
        let text = |k: &str| -> String {
            q[k].as_str()
                .unwrap_or_default()
                .chars()
                .take(MAX_SUBJECT)
                .collect()
        };
        let ask = Ask {
            container: container.to_string(),
            id,
            pid: q["pid"].as_i64().unwrap_or(0),
            kind: text("kind"),
            subject: text("subject"),
            asked: crate::audit::AuditRecord::now(),
            expires_in_ms: timeout.as_millis() as u64,
            deadline: Instant::now() + timeout,
        };
        let mut inner = self.lock();
        let key = (container.to_string(), ask.kind.clone(), ask.subject.clone());
        if inner.always.contains(&key) {
            let writer = inner
                .conns
                .iter()
                .find(|c| c.container == container && c.epoch == epoch)
                .and_then(|c| c.writer.as_ref());
            if let Some(w) = writer {
                tracing::info!(target: "ui", container, id, kind = %ask.kind,
                    "allowed by an earlier always-allow");
                let _ = write_answer(w, id, "allow");
            }
            return;
        }
        // The supervisor asks one question at a time: an older one from
        // the same sandbox has been decided (answered or timed out).
        inner
            .pending
            .retain(|a| !(a.container == container && a.id < id));
        if inner.pending.len() >= MAX_PENDING {
            inner.pending.remove(0);
        }
        tracing::info!(target: "ui", container, id, kind = %ask.kind, "pending ask");
        inner.pending.push(ask);
        self.bump(&mut inner);
    }

    /// Answers question `id` of `container`.
    pub fn answer(&self, container: &str, id: u64, verdict: Verdict) -> Result<(), AnswerError> {
        let mut inner = self.lock();
        let now = Instant::now();
        let Some(pos) = inner
            .pending
            .iter()
            .position(|a| a.container == container && a.id == id && a.deadline > now)
        else {
            return Err(AnswerError::NotPending {
                container: container.to_string(),
                id,
            });
        };
        // Taken off the list only once the answer is on its way.
        let writer = inner
            .conns
            .iter()
            .find(|c| c.container == container && c.link == Link::Connected)
            .and_then(|c| c.writer.as_ref())
            .ok_or_else(|| AnswerError::Closed(container.to_string()))?;
        let result = if verdict == Verdict::Deny {
            "deny"
        } else {
            "allow"
        };
        if let Err(source) = write_answer(writer, id, result) {
            // Part of the line may have gone out: nothing more may follow
            // on this connection. Closing it ends its reader, which drops
            // the connection's questions; a reconnect brings them back.
            let _ = writer.shutdown(std::net::Shutdown::Both);
            return Err(AnswerError::Write {
                container: container.to_string(),
                source,
            });
        }
        let ask = inner.pending.remove(pos);
        self.bump(&mut inner);
        tracing::info!(target: "ui", container, id, result, kind = %ask.kind, "answered");
        if verdict == Verdict::Always {
            inner
                .always
                .insert((container.to_string(), ask.kind, ask.subject));
        }
        Ok(())
    }

    /// The questions still waiting, oldest first (of one sandbox, or all).
    pub fn pending(&self, container: Option<&str>) -> Vec<Ask> {
        let mut inner = self.lock();
        let now = Instant::now();
        let before = inner.pending.len();
        inner.pending.retain(|a| a.deadline > now);
        if inner.pending.len() != before {
            self.bump(&mut inner);
        }
        inner
            .pending
            .iter()
            .filter(|a| container.is_none_or(|c| a.container == c))
            .map(|a| {
                let mut a = a.clone();
                a.expires_in_ms = a.deadline.saturating_duration_since(now).as_millis() as u64;
                a
            })
            .collect()
    }

    /// The (kind, subject) pairs always allowed for `container`.
    pub fn always(&self, container: &str) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .lock()
            .always
            .iter()
            .filter(|(c, _, _)| c == container)
            .map(|(_, k, s)| (k.clone(), s.clone()))
            .collect();
        v.sort();
        v
    }

    /// The UI's approver link to `container`, if it ever tried.
    pub fn link(&self, container: &str) -> Option<Link> {
        self.lock()
            .conns
            .iter()
            .find(|c| c.container == container)
            .map(|c| c.link)
    }

    /// A counter that changes whenever the pending set or a link does.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Waits up to `timeout` for the generation to differ from `seen`.
    pub fn wait_change(&self, seen: u64, timeout: Duration) -> u64 {
        let guard = self.lock();
        let (guard, _) = match self
            .changed
            .wait_timeout_while(guard, timeout, |i| i.generation == seen)
        {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        guard.generation
    }
}

fn write_answer(mut w: &UnixStream, id: u64, result: &str) -> std::io::Result<()> {
    let line = format!("{}\n", serde_json::json!({ "id": id, "result": result }));
    w.write_all(line.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn listener(name: &str) -> (tempfile::TempDir, PathBuf, UnixListener) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(format!("{name}.sock"));
        let l = UnixListener::bind(&p).unwrap();
        (d, p, l)
    }

    fn ask(w: &mut UnixStream, id: u64, subject: &str) {
        let q = serde_json::json!({"container": "c", "pid": 7, "kind": "fs_read", "subject": subject, "id": id});
        writeln!(w, "{q}").unwrap();
    }

    /// Waits until the pending asks are exactly the one with `id`.
    fn wait_for(a: &Approvals, id: u64) -> Vec<Ask> {
        let t = Instant::now();
        loop {
            let p = a.pending(Some("c"));
            if p.iter().map(|a| a.id).eq([id]) || t.elapsed() > Duration::from_secs(5) {
                return p;
            }
            a.wait_change(a.generation(), Duration::from_millis(50));
        }
    }

    fn read_answer(r: &mut BufReader<UnixStream>) -> serde_json::Value {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        serde_json::from_str(&l).unwrap()
    }

    #[test]
    fn questions_become_pending_and_answers_go_back() {
        let stop = Arc::new(AtomicBool::new(false));
        let a = Approvals::new(stop.clone());
        let (_d, p, l) = listener("a");
        a.watch("c", 1, &p, || Duration::from_secs(30));
        assert_eq!(a.link("c"), Some(Link::Connected));
        let (mut sup, _) = l.accept().unwrap();
        let mut r = BufReader::new(sup.try_clone().unwrap());
        ask(&mut sup, 3, "/opt/x");
        let p3 = wait_for(&a, 3);
        assert_eq!(
            (p3[0].id, p3[0].subject.as_str(), p3[0].pid),
            (3, "/opt/x", 7)
        );
        a.answer("c", 3, Verdict::Allow).unwrap();
        assert_eq!(
            read_answer(&mut r),
            serde_json::json!({"id": 3, "result": "allow"})
        );
        assert!(a.pending(None).is_empty());
        assert!(matches!(
            a.answer("c", 3, Verdict::Allow),
            Err(AnswerError::NotPending { .. })
        ));
        // A newer question settles older ones.
        ask(&mut sup, 4, "/a");
        wait_for(&a, 4);
        ask(&mut sup, 5, "/b");
        let p5 = wait_for(&a, 5);
        assert_eq!(p5.len(), 1);
        assert_eq!(p5[0].id, 5);
        a.answer("c", 5, Verdict::Deny).unwrap();
        assert_eq!(read_answer(&mut r)["result"], "deny");
        // Always: answered allow now and for the same question later.
        ask(&mut sup, 6, "/always");
        wait_for(&a, 6);
        a.answer("c", 6, Verdict::Always).unwrap();
        assert_eq!(read_answer(&mut r)["result"], "allow");
        ask(&mut sup, 7, "/always");
        assert_eq!(
            read_answer(&mut r),
            serde_json::json!({"id": 7, "result": "allow"})
        );
        assert!(a.pending(None).is_empty());
        assert_eq!(
            a.always("c"),
            vec![("fs_read".to_string(), "/always".to_string())]
        );
        assert!(a.always("other").is_empty());
        // Garbage and over-long lines are skipped.
        writeln!(sup, "not json").unwrap();
        sup.write_all(&vec![b'x'; (MAX_LINE * 2) as usize]).unwrap();
        writeln!(sup).unwrap();
        ask(&mut sup, 8, "/after");
        assert_eq!(wait_for(&a, 8)[0].id, 8);
        // The supervisor removes its socket and hangs up: closed.
        std::fs::remove_file(&p).unwrap();
        drop(l);
        drop(sup);
        drop(r);
        let t = Instant::now();
        while a.link("c") == Some(Link::Connected) && t.elapsed() < Duration::from_secs(5) {
            a.wait_change(a.generation(), Duration::from_millis(50));
        }
        assert_eq!(a.link("c"), Some(Link::Closed));
        assert!(a.pending(None).is_empty());
        stop.store(true, Ordering::Relaxed);
    }

    #[test]
    fn a_replaced_approver_is_not_retried_until_asked() {
        let a = Approvals::new(Arc::new(AtomicBool::new(false)));
        let (_d, p, l) = listener("r");
        a.watch("c", 1, &p, || Duration::from_secs(30));
        let (sup, _) = l.accept().unwrap();
        drop(sup); // the supervisor took another approver
        let t = Instant::now();
        while a.link("c") == Some(Link::Connected) && t.elapsed() < Duration::from_secs(5) {
            a.wait_change(a.generation(), Duration::from_millis(50));
        }
        assert_eq!(a.link("c"), Some(Link::Replaced));
        a.watch("c", 1, &p, || Duration::from_secs(30));
        assert_eq!(a.link("c"), Some(Link::Replaced));
        assert!(a.reconnect("c"));
        assert_eq!(a.link("c"), Some(Link::Connected));
        assert!(!a.reconnect("nope"));
        // A new supervisor for the same id is connected at once.
        a.watch("c", 2, &p, || Duration::from_secs(30));
        assert_eq!(a.link("c"), Some(Link::Connected));
    }

    #[test]
    fn questions_expire_with_the_ask_timeout() {
        let a = Approvals::new(Arc::new(AtomicBool::new(false)));
        let (_d, p, l) = listener("t");
        a.watch("c", 1, &p, || Duration::from_millis(300));
        let (mut sup, _) = l.accept().unwrap();
        ask(&mut sup, 1, "/x");
        assert_eq!(wait_for(&a, 1).len(), 1);
        std::thread::sleep(Duration::from_millis(400));
        assert!(a.pending(Some("c")).is_empty());
        assert!(a.answer("c", 1, Verdict::Allow).is_err());
    }

    #[test]
    fn verdicts_parse() {
        assert_eq!(Verdict::parse("allow"), Some(Verdict::Allow));
        assert_eq!(Verdict::parse("always"), Some(Verdict::Always));
        assert_eq!(Verdict::parse("deny"), Some(Verdict::Deny));
        assert_eq!(Verdict::parse("Allow"), None);
    }
}
