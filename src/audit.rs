//! Audit records of the supervisor's decisions: one JSON object per line in
//! the container's state directory (`audit.log`), and the same record as a
//! `tracing` event with target `audit`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The audit file's name inside the container's state directory.
pub const AUDIT_FILE: &str = "audit.log";

/// One decision (or one protocol event) of the supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// RFC 3339 UTC, microseconds.
    pub time: String,
    pub container: String,
    /// Host pid of the worker (SO_PEERCRED), 0 when unknown.
    pub pid: i32,
    /// `fs_read`, `fs_write`, `list_dir`, `net_connect`, `exec`, `stdout`,
    /// `connect` (handshake) or `protocol` (a worker broke the protocol).
    pub kind: String,
    /// The path, `host:port`, argv or error text the decision is about.
    pub subject: String,
    /// `allow`, `deny` or `close`.
    pub decision: String,
    /// The rule that decided, or `default`.
    pub rule: String,
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
}

/// A record's kind as a verb for people: `read /etc/x`, `connect to h:443`.
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

impl AuditRecord {
    /// A record made now, rule `default`, nothing decided yet.
    pub fn new(container: &str, pid: i32, kind: &str, subject: impl Into<String>) -> Self {
        AuditRecord {
            time: Self::now(),
            container: container.into(),
            pid,
            kind: kind.into(),
            subject: subject.into(),
            decision: String::new(),
            rule: "default".into(),
            reason: String::new(),
            latency_us: 0,
            bytes: 0,
            addr: None,
            bytes_up: None,
            bytes_down: None,
            duration_ms: None,
        }
    }

    pub fn now() -> String {
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
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
    file: Mutex<File>,
}

impl AuditLog {
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(path)
            .map_err(|source| AuditError::Open {
                path: path.display().to_string(),
                source,
            })?;
        Ok(AuditLog {
            file: Mutex::new(file),
        })
    }

    /// Writes one line and emits the tracing event. Write errors are
    /// logged, not returned: a full disk must not stop decisions.
    pub fn record(&self, r: &AuditRecord) {
        tracing::info!(target: "audit", container = %r.container, pid = r.pid, kind = %r.kind,
            subject = %r.subject, decision = %r.decision, rule = %r.rule, reason = %r.reason,
            latency_us = r.latency_us, bytes = r.bytes, "decision");
        let mut line = serde_json::to_string(r).unwrap_or_default();
        line.push('\n');
        // A poisoned lock only means another thread panicked mid-write.
        let mut f = match self.file.lock() {
            Ok(f) => f,
            Err(p) => p.into_inner(),
        };
        if let Err(e) = f.write_all(line.as_bytes()) {
            tracing::warn!(target: "supervisor", "write audit log: {e}");
        }
    }
}
