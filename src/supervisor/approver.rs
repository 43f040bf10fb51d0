//! `ask` decisions: the supervisor's approver socket (`approve.sock` in the
//! state directory, a Unix stream socket speaking JSON lines). One request
//! object goes out, `{"id":N,"result":"allow"|"deny"}` comes back. No
//! approver, or no answer within the timeout: deny.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The approver's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Allow,
    Deny,
    /// No approver connected, it hung up, or it did not answer in time.
    NoAnswer,
}

pub struct Approver {
    listener: UnixListener,
    path: PathBuf,
    /// The current approver connection; held for the whole of one ask, so
    /// asks are answered one at a time.
    conn: Mutex<Option<BufReader<UnixStream>>>,
    next_id: AtomicU64,
    timeout: Duration,
}

impl Approver {
    pub fn bind(path: &Path, timeout: Duration) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(Approver {
            listener,
            path: path.to_path_buf(),
            conn: Mutex::new(None),
            next_id: AtomicU64::new(1),
            timeout,
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The newest pending connection, if any (a new approver replaces the
    /// old one).
    fn accept_newest(&self) -> Option<UnixStream> {
        let mut newest = None;
        while let Ok((s, _)) = self.listener.accept() {
            newest = Some(s);
        }
        newest
    }

    /// Ask about `request` (a JSON object; `id` is added). Blocks at most
    /// the timeout.
    pub fn ask(&self, mut request: serde_json::Value) -> Answer {
        let deadline = Instant::now() + self.timeout;
        let mut guard = match self.conn.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        loop {
            if let Some(s) = self.accept_newest() {
                if s.set_nonblocking(false).is_ok() {
                    *guard = Some(BufReader::new(s));
                }
            }
            if guard.is_some() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let Some(reader) = guard.as_mut() else {
            return Answer::NoAnswer;
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Some(o) = request.as_object_mut() {
            o.insert("id".into(), id.into());
        }
        let mut line = request.to_string();
        line.push('\n');
        let sent = reader.get_mut().write_all(line.as_bytes());
        if sent.is_err() {
            *guard = None;
            return Answer::NoAnswer;
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Answer::NoAnswer;
            }
            if reader.get_mut().set_read_timeout(Some(left)).is_err() {
                *guard = None;
                return Answer::NoAnswer;
            }
            let mut text = String::new();
            // Bound a line so an approver cannot make us buffer without end.
            match Read::by_ref(reader).take(4096).read_line(&mut text) {
                Ok(0) => {
                    *guard = None;
                    return Answer::NoAnswer;
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Answer::NoAnswer
                }
                Err(_) => {
                    *guard = None;
                    return Answer::NoAnswer;
                }
            }
            let Ok(v) = serde_json::from_str::<serde_json::Value>(text.trim()) else {
                continue;
            };
            if v.get("id").and_then(|i| i.as_u64()) != Some(id) {
                continue; // a late answer to an earlier, timed-out ask
            }
            return match v.get("result").and_then(|r| r.as_str()) {
                Some("allow") => Answer::Allow,
                _ => Answer::Deny,
            };
        }
    }
}

impl Drop for Approver {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_approver_means_no_answer_after_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let a =
            Approver::bind(&dir.path().join("approve.sock"), Duration::from_millis(200)).unwrap();
        let t = Instant::now();
        assert_eq!(
            a.ask(serde_json::json!({"kind": "fs_read"})),
            Answer::NoAnswer
        );
        assert!(t.elapsed() >= Duration::from_millis(200));
    }

    #[test]
    fn answers_are_matched_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("approve.sock");
        let a = Approver::bind(&path, Duration::from_secs(5)).unwrap();
        let conn = UnixStream::connect(&path).unwrap();
        let h = std::thread::spawn(move || {
            let mut w = conn.try_clone().unwrap();
            let mut r = BufReader::new(conn);
            for answer in ["allow", "deny", "maybe"] {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let q: serde_json::Value = serde_json::from_str(&line).unwrap();
                // A stale answer first: must be skipped.
                writeln!(w, r#"{{"id":999,"result":"allow"}}"#).unwrap();
                writeln!(w, r#"{{"id":{},"result":"{answer}"}}"#, q["id"]).unwrap();
            }
        });
        assert_eq!(a.ask(serde_json::json!({})), Answer::Allow);
        assert_eq!(a.ask(serde_json::json!({})), Answer::Deny);
        assert_eq!(a.ask(serde_json::json!({})), Answer::Deny);
        h.join().unwrap();
        drop(a);
        assert!(!path.exists());
    }
}
