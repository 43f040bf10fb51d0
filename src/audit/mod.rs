//! Audit records of the supervisor's decisions: one JSON object per line in
//! the container's state directory (`audit.log`), and the same record as a
//! `tracing` event with target `audit`.
//!
//! The sandbox decides how many records it causes, so a log must not let
//! it push its own denials out: records are written within a per-log
//! quota (`DECISION_QUOTA`, allows only up to `ALLOW_QUOTA`), well below
//! the rotation size, and what is over it is counted and summed up in a
//! few lines instead (see docs/supervisor.md "Audit log").

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::policy::{BrokerOp, RuleRef};

/// The audit file's name inside the container's state directory, and
/// where it goes when it is full (replacing the one before): named by
/// `crate::statedir` with the directory's other files.
pub use crate::statedir::{AUDIT_FILE, AUDIT_FILE_OLD};

mod clock;
mod read;
pub use read::{missed_old, open_both, read_all, read_all_bytes, replaced};
/// A full `audit.log`: the sandbox decides how many records it causes, and
/// the state directory is usually on tmpfs (host memory), so the log is
/// rotated at this size, keeping this and the previous file.
pub const MAX_AUDIT_BYTES: u64 = 64 << 20;
/// Bytes of records one log (one sandbox's supervisor) writes at most:
/// half the rotation size, so one sandbox's records are never rotated out.
pub const DECISION_QUOTA: u64 = 32 << 20;
/// Of which `allow` records may take this much: a flood of allowed
/// requests leaves room for the refusals that come after it.
pub const ALLOW_QUOTA: u64 = 24 << 20;
/// Characters of `subject` and `reason` kept in a record (a line is then
/// at most a few KiB, even with every character escaped).
pub const MAX_FIELD_CHARS: usize = 1024;

/// What a record is about; serialized as it always was (`fs_read`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    FsRead,
    FsWrite,
    ListDir,
    NetConnect,
    Exec,
    /// A connection through the egress proxy.
    Proxy,
    /// The sandbox's output (a tally, or the output limit).
    Stdout,
    /// A connection to the supervisor (handshake, refused peer).
    Connect,
    /// A worker broke the protocol.
    Protocol,
    /// A worker's exit status.
    Exit,
    /// The wall-clock limit.
    Timeout,
    /// The log's own lines: the quota used up, what was not written.
    Audit,
}

impl Kind {
    pub const ALL: [Kind; 12] = [
        Kind::FsRead,
        Kind::FsWrite,
        Kind::ListDir,
        Kind::NetConnect,
        Kind::Exec,
        Kind::Proxy,
        Kind::Stdout,
        Kind::Connect,
        Kind::Protocol,
        Kind::Exit,
        Kind::Timeout,
        Kind::Audit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::FsRead => "fs_read",
            Kind::FsWrite => "fs_write",
            Kind::ListDir => "list_dir",
            Kind::NetConnect => "net_connect",
            Kind::Exec => "exec",
            Kind::Proxy => "proxy",
            Kind::Stdout => "stdout",
            Kind::Connect => "connect",
            Kind::Protocol => "protocol",
            Kind::Exit => "exit",
            Kind::Timeout => "timeout",
            Kind::Audit => "audit",
        }
    }

    /// As a verb for people: `read /etc/x`, `connect to h:443`.
    pub fn verb(self) -> &'static str {
        verb(self.as_str())
    }
}

/// A kind (as the approver's questions name it) as a verb for people.
pub fn verb(kind: &str) -> &str {
    match kind {
        "fs_read" => "read",
        "fs_write" => "write",
        "list_dir" => "list",
        "net_connect" | "proxy" => "connect to",
        "exec" => "run",
        other => other,
    }
}

impl From<BrokerOp> for Kind {
    fn from(op: BrokerOp) -> Kind {
        match op {
            BrokerOp::FsRead => Kind::FsRead,
            BrokerOp::FsWrite => Kind::FsWrite,
            BrokerOp::ListDir => Kind::ListDir,
            BrokerOp::NetConnect => Kind::NetConnect,
            BrokerOp::Exec => Kind::Exec,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What became of it; serialized as it always was (`allow`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Deny,
    /// A connection closed (broken protocol, a worker gone).
    Close,
    /// Records over the quota: counted, not written.
    Drop,
    /// The sandbox killed at a limit.
    Kill,
    /// Allowed, but the operation failed (a proxy's upstream, a kill).
    Error,
}

impl Verdict {
    pub const ALL: [Verdict; 6] = [
        Verdict::Allow,
        Verdict::Deny,
        Verdict::Close,
        Verdict::Drop,
        Verdict::Kill,
        Verdict::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Close => "close",
            Verdict::Drop => "drop",
            Verdict::Kill => "kill",
            Verdict::Error => "error",
        }
    }
}

/// A kind or verdict's text that names none.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown audit {what} {text:?}")]
pub struct UnknownName {
    what: &'static str,
    text: String,
}

impl std::str::FromStr for Kind {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Kind, UnknownName> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "kind",
                text: s.into(),
            })
    }
}

impl std::str::FromStr for Verdict {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Verdict, UnknownName> {
        Verdict::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "decision",
                text: s.into(),
            })
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One decision (or one protocol event) of the supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// RFC 3339 UTC, microseconds.
    pub time: String,
    pub container: String,
    /// Host pid of the worker (SO_PEERCRED), 0 when unknown.
    pub pid: i32,
    pub kind: Kind,
    /// The path, `host:port`, argv or error text the decision is about.
    pub subject: String,
    pub decision: Verdict,
    /// The rule that decided, or `default`.
    pub rule: RuleRef,
    /// Why, when denied.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub latency_us: u64,
    pub bytes: u64,
    /// Proxy connections: the upstream address connected to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// Proxy connections: bytes from the sandbox to upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_up: Option<u64>,
    /// Proxy connections: bytes from upstream to the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_down: Option<u64>,
    /// Proxy connections: how long the connection lasted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// How many events the line stands for, when more than one: STDOUT and
    /// STDERR frames of an output tally, records not written over the quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

impl AuditRecord {
    /// A record made now, rule `default`, `deny` until decided otherwise.
    pub fn new(container: &str, pid: i32, kind: Kind, subject: impl Into<String>) -> Self {
        AuditRecord {
            time: Self::now(),
            container: container.into(),
            pid,
            kind,
            subject: subject.into(),
            decision: Verdict::Deny,
            rule: RuleRef::Default,
            reason: String::new(),
            latency_us: 0,
            bytes: 0,
            addr: None,
            bytes_up: None,
            bytes_down: None,
            duration_ms: None,
            count: None,
        }
    }

    /// How many events this line stands for (1 unless it says more).
    pub fn events(&self) -> u64 {
        self.count.unwrap_or(1)
    }

    pub fn now() -> String {
        clock::now()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("open audit log {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
}

/// Appends records to `audit.log`; shared by the supervisor's threads.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    cap: u64,
    quota: Quota,
    sink: Mutex<Sink>,
}

#[derive(Debug)]
struct Sink {
    file: File,
    written: u64,
    /// Bytes of records this log wrote (for the quota).
    used: u64,
    /// Records not written over the quota, by (kind, decision).
    dropped: std::collections::BTreeMap<(Kind, Verdict), u64>,
    /// The line being written, kept between records (no allocation each).
    line: Vec<u8>,
    /// Whole lines held back by `record_later`, written with the next
    /// record, at `flush`, or once `LATER_BYTES` are held.
    later: Vec<u8>,
    /// `finish` ran: the supervisor is exiting and nothing would flush
    /// again, so `record_later` writes at once.
    finished: bool,
}

/// What `record_later` may hold back: about 15 broker lines, all of
/// requests that were answered already.
const LATER_BYTES: usize = 4 << 10;

/// The quota of one log: all records, and `allow` records alone.
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    pub all: u64,
    pub allow: u64,
}

impl Default for Quota {
    fn default() -> Self {
        Quota {
            all: DECISION_QUOTA,
            allow: ALLOW_QUOTA,
        }
    }
}

/// `s` cut to `MAX_FIELD_CHARS` characters (an ellipsis says so).
fn clip(s: &str) -> Option<String> {
    let (at, _) = s.char_indices().nth(MAX_FIELD_CHARS)?;
    Some(format!("{}\u{2026}", &s[..at]))
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
}

impl AuditLog {
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        Self::open_capped(path, MAX_AUDIT_BYTES)
    }

    /// With a rotation size of `cap` bytes.
    pub fn open_capped(path: &Path, cap: u64) -> Result<Self, AuditError> {
        Self::open_with(path, cap, Quota::default())
    }

    /// With a rotation size of `cap` bytes and a quota of its own.
    pub fn open_with(path: &Path, cap: u64, quota: Quota) -> Result<Self, AuditError> {
        let file = open_append(path).map_err(|source| AuditError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(AuditLog {
            path: path.to_path_buf(),
            cap,
            quota,
            sink: Mutex::new(Sink {
                file,
                written,
                used: 0,
                dropped: Default::default(),
                line: Vec::with_capacity(512),
                later: Vec::with_capacity(LATER_BYTES + 1024),
                finished: false,
            }),
        })
    }

    /// `audit.log` → `audit.log.1`, and a new `audit.log`. If the new one
    /// cannot be made, the old one is put back (records must not go on
    /// into `audit.log.1`, where no rotation would ever bound them). An
    /// `audit.log` removed from under us is simply made again.
    fn rotate(&self, sink: &mut Sink) -> std::io::Result<()> {
        let old = self.path.with_file_name(AUDIT_FILE_OLD);
        let moved = match std::fs::rename(&self.path, &old) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        match open_append(&self.path) {
            Ok(f) => {
                sink.file = f;
                sink.written = 0;
                Ok(())
            }
            Err(e) => {
                if moved {
                    let _ = std::fs::rename(&old, &self.path);
                }
                Err(e)
            }
        }
    }

    /// Writes one record (within the quota) and emits the tracing event.
    /// Write errors are logged, not returned: a full disk must not stop
    /// decisions.
    pub fn record(&self, r: &AuditRecord) {
        self.record_as(r, false)
    }

    /// Like `record`, but the line may be held back (in order with every
    /// other) until the next `record`, `flush`, or `LATER_BYTES`: a
    /// connection thread serving requests back to back writes its lines
    /// a few at a time, and flushes before it sleeps (supervisor::serve).
    pub fn record_later(&self, r: &AuditRecord) {
        self.record_as(r, true)
    }

    /// Writes what `record_later` held back.
    pub fn flush(&self) {
        let mut sink = self.lock();
        if !sink.later.is_empty() {
            self.write_held(&mut sink);
        }
    }

    fn record_as(&self, r: &AuditRecord, later: bool) {
        let (subject, reason) = (clip(&r.subject), clip(&r.reason));
        let clipped;
        let r = if subject.is_some() || reason.is_some() {
            let mut c = r.clone();
            if let Some(x) = subject {
                c.subject = x;
            }
            if let Some(x) = reason {
                c.reason = x;
            }
            clipped = c;
            &clipped
        } else {
            r
        };
        let mut sink = self.lock();
        let mut line = std::mem::take(&mut sink.line);
        line_into(&mut line, r);
        let limit = if r.decision == Verdict::Allow {
            self.quota.allow
        } else {
            self.quota.all
        };
        if sink.used + line.len() as u64 > limit {
            let first = sink.dropped.is_empty();
            *sink.dropped.entry((r.kind, r.decision)).or_insert(0) += 1;
            if first {
                self.write_held(&mut sink);
                let mut n = AuditRecord::new(&r.container, 0, Kind::Audit, "quota");
                n.decision = Verdict::Drop;
                n.rule = RuleRef::AuditQuota;
                n.reason = format!(
                    "the audit quota ({} bytes, {} for allows) is used up: further records are counted, not written, and summed up when the supervisor exits",
                    self.quota.all, self.quota.allow
                );
                self.write(&mut sink, to_line(&n).as_bytes());
            }
            sink.line = line;
            return;
        }
        sink.used += line.len() as u64;
        sink.later.extend_from_slice(&line);
        if !later || sink.finished || sink.later.len() >= LATER_BYTES {
            self.write_held(&mut sink);
        }
        sink.line = line;
        // Only what was written, clipped: the quota bounds supervisor.log too.
        tracing::info!(target: "audit", container = %r.container, pid = r.pid, kind = %r.kind,
            subject = %r.subject, decision = %r.decision, rule = %r.rule, reason = %r.reason,
            latency_us = r.latency_us, bytes = r.bytes, "decision");
    }

    /// What the quota kept out: one line per (kind, decision) with `count`
    /// (a few dozen lines at most); nothing when all was written. Called
    /// as the supervisor exits.
    pub fn finish(&self, container: &str) {
        let mut sink = self.lock();
        sink.finished = true;
        self.write_held(&mut sink);
        let mut dropped: Vec<_> = std::mem::take(&mut sink.dropped).into_iter().collect();
        // By name, as the lines always came (not the enums' order).
        dropped.sort_by_key(|((k, d), _)| (k.as_str(), d.as_str()));
        for ((kind, decision), n) in dropped {
            let mut r = AuditRecord::new(container, 0, kind, "(not recorded)");
            r.decision = decision;
            r.rule = RuleRef::AuditQuota;
            r.reason = format!("{n} records over the audit quota were not written");
            r.count = Some(n);
            self.write(&mut sink, to_line(&r).as_bytes());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sink> {
        // A poisoned lock only means another thread panicked mid-write.
        match self.sink.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        }
    }

    /// The held-back lines, in one write.
    fn write_held(&self, sink: &mut Sink) {
        if sink.later.is_empty() {
            return;
        }
        let held = std::mem::take(&mut sink.later);
        self.write(sink, &held);
        sink.later = held;
        sink.later.clear();
    }

    fn write(&self, sink: &mut Sink, line: &[u8]) {
        if sink.written > 0 && sink.written + line.len() as u64 > self.cap {
            // A connection thread holds its worker's rights; the state
            // directory is the supervisor's (nothing to switch elsewhere).
            let rotated = crate::deputy::creds::as_supervisor().and_then(|_own| self.rotate(sink));
            if let Err(e) = rotated {
                tracing::warn!(target: "supervisor", "rotate audit log: {e}");
                // Try again a file's worth later, not at every record.
                sink.written = 0;
            }
        }
        // Whole lines in one write: a reader never sees half a line for long.
        match sink.file.write_all(line) {
            Ok(()) => sink.written += line.len() as u64,
            Err(e) => tracing::warn!(target: "supervisor", "write audit log: {e}"),
        }
    }
}

/// `r` as one JSON line in `buf` (emptied first).
fn line_into(buf: &mut Vec<u8>, r: &AuditRecord) {
    buf.clear();
    if serde_json::to_writer(&mut *buf, r).is_err() {
        buf.clear();
    }
    buf.push(b'\n');
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.flush();
    }
}

fn to_line(r: &AuditRecord) -> String {
    let mut line = serde_json::to_string(r).unwrap_or_default();
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize) -> AuditRecord {
        AuditRecord::new("c", 1, Kind::FsRead, format!("/file/{n}"))
    }

    #[test]
    fn a_full_log_rotates_and_keeps_the_newest_records_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_FILE);
        let one = serde_json::to_string(&record(0)).unwrap().len() as u64 + 1;
        let log = AuditLog::open_capped(&path, one * 10).unwrap();
        for n in 0..35 {
            log.record(&record(n));
        }
        let size = |name: &str| std::fs::metadata(dir.path().join(name)).unwrap().len();
        assert!(size(AUDIT_FILE) <= one * 10);
        assert!(size(AUDIT_FILE_OLD) <= one * 10);
        let kept: Vec<usize> = read_all(dir.path())
            .into_iter()
            .filter_map(|r| r.subject.strip_prefix("/file/")?.parse().ok())
            .collect();
        // The last two files' worth (at least one whole file), oldest
        // first, ending with the newest, nothing in between lost.
        assert!((10..=20).contains(&kept.len()), "{kept:?}");
        let want: Vec<usize> = (35 - kept.len()..35).collect();
        assert_eq!(kept, want);
    }

    #[test]
    fn a_reopened_log_counts_what_is_already_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_FILE);
        let one = serde_json::to_string(&record(0)).unwrap().len() as u64 + 1;
        AuditLog::open_capped(&path, one * 3)
            .unwrap()
            .record(&record(0));
        let log = AuditLog::open_capped(&path, one * 3).unwrap();
        for n in 1..4 {
            log.record(&record(n));
        }
        assert_eq!(read_all(dir.path()).len(), 4);
        assert!(dir.path().join(AUDIT_FILE_OLD).exists());
    }

    #[test]
    fn a_log_removed_from_under_the_writer_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_FILE);
        let log = AuditLog::open_capped(&path, 10).unwrap();
        log.record(&record(0));
        std::fs::remove_file(&path).unwrap();
        // Full: the rotation finds nothing to move and makes a new file,
        // rather than writing on into the removed one.
        log.record(&record(1));
        let kept: Vec<String> = read_all(dir.path())
            .into_iter()
            .map(|r| r.subject)
            .collect();
        assert_eq!(kept, ["/file/1"]);
    }

    #[test]
    fn a_reader_sees_the_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_FILE);
        let log = AuditLog::open_capped(&path, 10).unwrap();
        log.record(&record(0));
        let f = File::open(&path).unwrap();
        assert!(!replaced(&f, &path));
        log.record(&record(1));
        assert!(replaced(&f, &path));
    }

    #[test]
    fn a_flood_of_allows_leaves_room_for_denials_and_the_rest_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_FILE);
        let mut allow = record(1);
        allow.decision = Verdict::Allow;
        let one = serde_json::to_string(&allow).unwrap().len() as u64 + 1;
        let quota = Quota {
            all: one * 10,
            allow: one * 5,
        };
        let log = AuditLog::open_with(&path, u64::MAX, quota).unwrap();
        for _ in 0..100 {
            log.record(&allow);
        }
        let mut deny = record(2);
        deny.decision = Verdict::Deny;
        for _ in 0..100 {
            log.record(&deny);
        }
        log.finish("c");
        let all = read_all(dir.path());
        let count = |d: Verdict| -> u64 {
            all.iter()
                .filter(|r| r.decision == d && r.kind == Kind::FsRead)
                .map(|r| r.events())
                .sum()
        };
        assert_eq!(count(Verdict::Allow), 100);
        assert_eq!(count(Verdict::Deny), 100);
        let written = |d: Verdict| {
            all.iter()
                .filter(|r| r.decision == d && r.count.is_none() && r.kind == Kind::FsRead)
                .count()
        };
        assert_eq!(written(Verdict::Allow), 5);
        assert!(written(Verdict::Deny) >= 4, "{all:?}");
        assert_eq!(all.iter().filter(|r| r.kind == Kind::Audit).count(), 1);
    }

    #[test]
    fn held_lines_are_written_in_order_by_the_next_record_a_flush_or_their_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path).unwrap();
        let subjects = || -> Vec<String> {
            read_all(dir.path())
                .into_iter()
                .map(|r| r.subject)
                .collect()
        };
        log.record_later(&record(0));
        log.record_later(&record(1));
        assert!(subjects().is_empty());
        // An ordinary record writes what was held first.
        log.record(&record(2));
        assert_eq!(subjects(), ["/file/0", "/file/1", "/file/2"]);
        log.record_later(&record(3));
        log.flush();
        assert_eq!(subjects().len(), 4);
        // Never more than LATER_BYTES held back.
        let one = to_line(&record(10)).len();
        for n in 0..LATER_BYTES / one + 1 {
            log.record_later(&record(10 + n));
        }
        let written = subjects();
        assert!(written.len() > 4, "{}", written.len());
        let want: Vec<String> = (0..4)
            .chain(10..10 + written.len() - 4)
            .map(|n| format!("/file/{n}"))
            .collect();
        assert_eq!(written, want);
        // And nothing is lost when the log goes.
        log.record_later(&record(99));
        drop(log);
        assert_eq!(subjects().last().map(String::as_str), Some("/file/99"));
    }

    #[test]
    fn after_finish_lines_are_not_held() {
        // The supervisor exits after `finish` without dropping its log: a
        // connection still served then must not hold its lines back.
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&dir.path().join("audit.log")).unwrap();
        log.record_later(&record(0));
        log.finish("c1");
        log.record_later(&record(1));
        let subjects: Vec<String> = read_all(dir.path())
            .into_iter()
            .map(|r| r.subject)
            .collect();
        assert_eq!(subjects, ["/file/0", "/file/1"]);
        std::mem::forget(log);
    }

    #[test]
    fn lines_are_written_and_read_as_before() {
        // A line of the format as it was when kind, decision and rule
        // were strings: the typed record writes it byte for byte.
        let line = r#"{"time":"2026-11-27T22:16:20.123456Z","container":"job1","pid":4242,"kind":"net_connect","subject":"pypi.org:443","decision":"deny","rule":"network.deny *:443","reason":"denied by network.deny entry \"*:443\"","latency_us":85,"bytes":0}"#;
        let r: AuditRecord = serde_json::from_str(line).unwrap();
        assert_eq!((r.kind, r.decision), (Kind::NetConnect, Verdict::Deny));
        assert!(matches!(r.rule, RuleRef::NetDeny(_)), "{:?}", r.rule);
        assert_eq!(serde_json::to_string(&r).unwrap(), line);
        for k in Kind::ALL {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(k.as_str().parse::<Kind>().ok(), Some(k));
        }
        for v in Verdict::ALL {
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(json, format!("\"{}\"", v.as_str()));
            assert_eq!(v.as_str().parse::<Verdict>().ok(), Some(v));
        }
        // A rule this version does not know is kept as written.
        let odd = line.replace("network.deny *:443", "someday.rule x");
        let r: AuditRecord = serde_json::from_str(&odd).unwrap();
        assert_eq!(r.rule, RuleRef::Other("someday.rule x".into()));
        assert_eq!(serde_json::to_string(&r).unwrap(), odd);
    }

    #[test]
    fn long_fields_are_clipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_FILE);
        let log = AuditLog::open(&path).unwrap();
        let mut r = record(0);
        r.subject = "\u{1}".repeat(100_000);
        log.record(&r);
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len < 8 << 10, "{len}");
    }
}
