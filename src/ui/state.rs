//! Reading sandboxes for the UI: the state roots' containers
//! (`<root>/<id>`, libcontainer's) and buntime's files beside them
//! (`<root>/.buntime/<id>/`: `policy.json`, `audit.log`, `output.log`,
//! `buntime.json`, `approve.sock`). Read-only: the UI never changes a
//! sandbox (answering an `ask` goes through the supervisor's socket).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use libcgroups::common::CgroupManager;
use serde::Serialize;

use crate::audit::AuditRecord;
use crate::policy::{parse_policy, Policy};
use crate::runtime::state::{status_word, validate_id, Meta, Root};
use crate::statedir::StateDir;
use crate::supervisor::ANNOTATION_ASK_TIMEOUT;

/// How much of an audit log a new stream replays at most (the tail).
pub const REPLAY_BYTES: u64 = 4 << 20;
/// Longest audit line the UI reads; longer ones are skipped.
const MAX_LINE: usize = 64 << 10;
/// Most output one request returns.
pub const OUTPUT_CHUNK: u64 = 64 << 10;
/// Default `ask` timeout of the supervisor (when the annotation is absent).
const DEFAULT_ASK_TIMEOUT: Duration = Duration::from_secs(30);

/// The state roots the UI looks at, and optionally the one sandbox it is
/// limited to.
#[derive(Debug, Clone)]
pub struct Roots {
    roots: Vec<PathBuf>,
    only: Option<String>,
}

/// One sandbox: its id and the root it lives in.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub id: String,
    pub root: Root,
}

impl Roots {
    pub fn new(roots: Vec<PathBuf>, only: Option<String>) -> Self {
        Roots { roots, only }
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.roots
    }

    pub fn only(&self) -> Option<&str> {
        self.only.as_deref()
    }

    /// The roots that exist (never created: the UI only reads).
    fn open_roots(&self) -> Vec<Root> {
        self.roots
            .iter()
            .filter(|p| p.is_dir())
            .filter_map(|p| Root::open(p, false).ok())
            .collect()
    }

    /// Every sandbox, sorted by id; an id found in two roots is listed once
    /// (the first root's).
    pub fn list(&self) -> Vec<Sandbox> {
        let mut out: Vec<Sandbox> = Vec::new();
        for root in self.open_roots() {
            let ids = root.ids().unwrap_or_default();
            for id in ids {
                if self.only.as_deref().is_some_and(|o| o != id) {
                    continue;
                }
                if out.iter().any(|s| s.id == id) {
                    tracing::debug!(target: "ui", id = %id, root = %root.path().display(),
                        "id also in an earlier root; not listed twice");
                    continue;
                }
                out.push(Sandbox {
                    id,
                    root: root.clone(),
                });
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// The sandbox `id`, if it is one of ours (valid id, in a root, and
    /// the `only` one when set).
    pub fn find(&self, id: &str) -> Option<Sandbox> {
        validate_id(id).ok()?;
        if self.only.as_deref().is_some_and(|o| o != id) {
            return None;
        }
        self.open_roots()
            .into_iter()
            .find(|r| r.container_dir(id).join("state.json").exists() || r.extra_dir(id).is_dir())
            .map(|root| Sandbox {
                id: id.to_string(),
                root,
            })
    }

    /// A deleted learning container's kept record (`runtime::kept`), as
    /// a sandbox of the root that holds it: only its learned policy is
    /// served.
    pub fn find_kept(&self, id: &str) -> Option<Sandbox> {
        if self.only.as_deref().is_some_and(|o| o != id) {
            return None;
        }
        self.open_roots()
            .into_iter()
            .find(|r| crate::runtime::kept::find(r, id).is_some())
            .map(|root| Sandbox {
                id: id.to_string(),
                root,
            })
    }
}

/// A current/limit pair from the cgroup (limit 0 or absent: none).
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub current: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyInfo {
    /// A short name: the named policy, `default`, `inline`, …
    pub name: String,
    /// Where it came from (`buntime.dev/policy-origin`).
    pub origin: String,
    /// SHA-256 of the applied policy (`buntime.dev/policy-sha256`).
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SupervisorInfo {
    pub pid: Option<i32>,
    pub alive: bool,
}

/// One row of the sandbox list.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub id: String,
    pub root: String,
    pub status: String,
    pub pid: i32,
    pub created: Option<String>,
    pub uptime_s: Option<u64>,
    pub policy: PolicyInfo,
    pub memory: Option<Usage>,
    pub pids: Option<Usage>,
    pub supervisor: SupervisorInfo,
}

/// A short policy name from the origin text (see `PolicyOrigin`'s Display).
pub fn policy_name(origin: &str) -> String {
    if let Some(rest) = origin.strip_prefix("annotation buntime.dev/policy-name=") {
        return rest.split(" (").next().unwrap_or(rest).to_string();
    }
    if origin == "annotation buntime.dev/policy" {
        return "inline".into();
    }
    if origin == "built-in default" {
        return "engine".into();
    }
    if let Some(file) = origin.strip_prefix("node default ") {
        return Path::new(file)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "node default".into());
    }
    if let Some(what) = origin.strip_prefix("buntime run: ") {
        return what.to_string();
    }
    if origin.is_empty() {
        return "unknown".into();
    }
    origin.to_string()
}

impl Sandbox {
    /// buntime's directory of this sandbox.
    pub fn dir(&self) -> PathBuf {
        self.root.extra_dir(&self.id)
    }

    pub fn meta(&self) -> Meta {
        self.root.read_meta(&self.id)
    }

    /// Its files.
    pub fn state_dir(&self) -> StateDir {
        self.root.state_dir(&self.id)
    }

    pub fn audit_path(&self) -> PathBuf {
        self.state_dir().audit()
    }

    pub fn output_path(&self) -> PathBuf {
        self.state_dir().output()
    }

    pub fn approver_path(&self) -> PathBuf {
        self.state_dir().approver()
    }

    /// Whether no more decisions can come: its supervisor has exited, or
    /// it has none (created without one, or its create failed and took the
    /// directory away). Not while `create` has yet to record the supervisor.
    pub fn finished(&self, meta: &Meta) -> bool {
        match meta.supervisor_pid {
            Some(_) => !self.supervisor_alive(meta),
            None => {
                self.root
                    .container_dir(&self.id)
                    .join("state.json")
                    .exists()
                    || !self.dir().is_dir()
            }
        }
    }

    /// Whether the sandbox's supervisor still runs (never a recycled pid).
    pub fn supervisor_alive(&self, meta: &Meta) -> bool {
        meta.supervisor_pid
            .is_some_and(|p| p > 0 && crate::supervisor::is_ours(p, &self.id))
    }

    /// The applied policy, if it can be read.
    pub fn policy(&self) -> Option<Policy> {
        let text = self.state_dir().read_policy_text().ok()?;
        parse_policy(&text, "policy.json").ok()
    }

    /// The raw `policy.json` (canonical JSON), if any.
    pub fn policy_json(&self) -> Option<serde_json::Value> {
        let text = self.state_dir().read_policy_text().ok()?;
        serde_json::from_str(&text).ok()
    }

    /// How long the supervisor waits for an answer to an `ask`.
    pub fn ask_timeout(&self) -> Duration {
        let spec: Option<serde_json::Value> = std::fs::read(self.dir().join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        spec.as_ref()
            .and_then(|s| s["annotations"][ANNOTATION_ASK_TIMEOUT].as_str())
            .and_then(|t| crate::policy::TimeSpan::parse(t).ok())
            .map(|t| t.as_duration().min(Duration::from_secs(600)))
            .unwrap_or(DEFAULT_ASK_TIMEOUT)
    }

    /// The list row: state from libcontainer, usage from the cgroup.
    pub fn summary(&self) -> Summary {
        let meta = self.meta();
        let origin = meta
            .annotations
            .get("buntime.dev/policy-origin")
            .cloned()
            .unwrap_or_default();
        let mut s = Summary {
            id: self.id.clone(),
            root: self.root.path().display().to_string(),
            status: "unknown".into(),
            pid: 0,
            created: None,
            uptime_s: None,
            policy: PolicyInfo {
                name: policy_name(&origin),
                origin,
                sha256: meta
                    .annotations
                    .get(crate::policy::ANNOTATION_POLICY_SHA256)
                    .cloned()
                    .unwrap_or_default(),
            },
            memory: None,
            pids: None,
            supervisor: SupervisorInfo {
                pid: meta.supervisor_pid,
                alive: self.supervisor_alive(&meta),
            },
        };
        let Ok(c) = self.root.load(&self.id) else {
            return s;
        };
        let status = c.status();
        s.status = status_word(status).into();
        let stopped = status == libcontainer::container::ContainerStatus::Stopped;
        s.pid = if stopped {
            0
        } else {
            c.pid().map(|p| p.as_raw()).unwrap_or(0)
        };
        if let Some(created) = c.created() {
            s.created = Some(created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            if !stopped {
                let up = chrono::Utc::now().signed_duration_since(created);
                s.uptime_s = u64::try_from(up.num_seconds()).ok();
            }
        }
        if !stopped {
            let stats = crate::runtime::cgroup::manager(&c)
                .ok()
                .and_then(|m| m.stats().ok());
            if let Some(stats) = stats {
                let limit = |l: u64| (l > 0 && l < (1 << 62)).then_some(l);
                s.memory = Some(Usage {
                    current: stats.memory.memory.usage,
                    limit: limit(stats.memory.memory.limit),
                });
                s.pids = Some(Usage {
                    current: stats.pids.current,
                    limit: limit(stats.pids.limit),
                });
            }
        }
        s
    }
}

/// Reads an audit log from an offset on, one whole line at a time (a
/// line being written is kept until its newline arrives).
pub struct AuditTail {
    path: PathBuf,
    file: Option<File>,
    offset: u64,
    partial: Vec<u8>,
    /// Skipping the rest of an over-long line.
    skipping: bool,
}

/// Where a stream starts: `resume` (the last offset a client saw, from
/// `Last-Event-ID`) if it is inside the file, else the last
/// [`REPLAY_BYTES`] of it.
pub fn start_offset(path: &Path, resume: Option<u64>) -> u64 {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    match resume {
        Some(r) if r <= size => r,
        _ => size.saturating_sub(REPLAY_BYTES),
    }
}

impl AuditTail {
    /// Starts at `offset`; a start in the middle of the file skips to the
    /// next line.
    pub fn new(path: PathBuf, offset: u64) -> Self {
        let mut t = AuditTail {
            path,
            file: None,
            offset,
            partial: Vec::new(),
            skipping: false,
        };
        if offset > 0 {
            // Find out whether we start at a line boundary.
            if let Ok(mut f) = File::open(&t.path) {
                let mut b = [0u8; 1];
                if f.seek(SeekFrom::Start(offset - 1)).is_ok()
                    && f.read_exact(&mut b).is_ok()
                    && b[0] != b'\n'
                {
                    t.skipping = true;
                }
            }
        }
        t
    }

    /// The offset just past the last whole line returned.
    #[cfg(test)]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whole new lines, parsed; each with the offset just past it.
    /// Unparsable lines are skipped.
    pub fn read_new(&mut self) -> Vec<(u64, AuditRecord)> {
        let mut out = Vec::new();
        if self.file.is_none() {
            match File::open(&self.path) {
                Ok(mut f) => {
                    let start = self.offset + self.partial.len() as u64;
                    if f.seek(SeekFrom::Start(start)).is_err() {
                        return out;
                    }
                    self.file = Some(f);
                }
                Err(_) => return out,
            }
        }
        let Some(f) = self.file.as_mut() else {
            return out;
        };
        let mut buf = vec![0u8; 64 << 10];
        // At the end of a file that has been rotated away: read once more
        // (what was appended before the rename), then go on in the new one.
        let mut rotated = false;
        loop {
            let n = match f.read(&mut buf) {
                Ok(0) if !rotated && crate::audit::replaced(f, &self.path) => {
                    rotated = true;
                    continue;
                }
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for &b in &buf[..n] {
                if b != b'\n' {
                    if !self.skipping {
                        self.partial.push(b);
                        if self.partial.len() > MAX_LINE {
                            self.offset += self.partial.len() as u64;
                            self.partial.clear();
                            self.skipping = true;
                        }
                    } else {
                        self.offset += 1;
                    }
                    continue;
                }
                let len = self.partial.len() as u64 + 1;
                if !self.skipping {
                    if let Ok(r) = serde_json::from_slice::<AuditRecord>(&self.partial) {
                        out.push((self.offset + len, r));
                    }
                }
                self.offset += len;
                self.partial.clear();
                self.skipping = false;
            }
            if out.len() >= 2000 {
                // More to read here first: the switch waits.
                rotated = false;
                break;
            }
        }
        if rotated {
            self.file = self
                .file
                .as_ref()
                .and_then(|f| crate::audit::missed_old(f, &self.path));
            self.offset = 0;
            self.partial.clear();
            self.skipping = false;
        }
        out
    }
}

/// A piece of the output log.
#[derive(Debug, Clone, Serialize)]
pub struct Output {
    /// Where this piece starts (after skipping, if the reader fell behind).
    pub from: u64,
    /// Where the next request should start.
    pub next: u64,
    pub size: u64,
    /// Bytes skipped because there was more than one chunk to catch up.
    pub skipped: u64,
    pub text: String,
}

/// The output log from `from` on, at most [`OUTPUT_CHUNK`] bytes; a reader
/// more than a chunk behind skips to the last chunk.
pub fn read_output(path: &Path, from: u64) -> Output {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let from = from.min(size);
    let start = from.max(size.saturating_sub(OUTPUT_CHUNK));
    let mut text = Vec::new();
    if let Ok(mut f) = File::open(path) {
        if f.seek(SeekFrom::Start(start)).is_ok() {
            let _ = f.take(OUTPUT_CHUNK).read_to_end(&mut text);
        }
    }
    Output {
        from: start,
        next: start + text.len() as u64,
        size,
        skipped: start - from,
        text: String::from_utf8_lossy(&text).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn policy_names_from_origins() {
        assert_eq!(
            policy_name(
                "annotation buntime.dev/policy-name=strict (/etc/buntime/policies/strict.json)"
            ),
            "strict"
        );
        assert_eq!(
            policy_name("annotation buntime.dev/policy-name=x (built in)"),
            "x"
        );
        assert_eq!(policy_name("built-in default"), "engine");
        assert_eq!(policy_name("annotation buntime.dev/policy"), "inline");
        assert_eq!(
            policy_name("node default /etc/buntime/default.json"),
            "default"
        );
        assert_eq!(
            policy_name("buntime run: --policy p.json"),
            "--policy p.json"
        );
        assert_eq!(policy_name(""), "unknown");
    }

    fn line(subject: &str) -> String {
        format!(
            "{{\"time\":\"t\",\"container\":\"c\",\"pid\":1,\"kind\":\"fs_read\",\"subject\":\"{subject}\",\"decision\":\"allow\",\"rule\":\"r\",\"latency_us\":1,\"bytes\":0}}\n"
        )
    }

    #[test]
    fn the_tail_returns_whole_lines_only_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.log");
        let mut f = File::create(&p).unwrap();
        let mut t = AuditTail::new(p.clone(), 0);
        assert!(t.read_new().is_empty());
        let a = line("/a");
        f.write_all(a.as_bytes()).unwrap();
        let b = line("/b");
        f.write_all(&b.as_bytes()[..10]).unwrap();
        let got = t.read_new();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.subject, "/a");
        assert_eq!(got[0].0, a.len() as u64);
        f.write_all(&b.as_bytes()[10..]).unwrap();
        f.write_all(b"not json\n").unwrap();
        let got = t.read_new();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.subject, "/b");
        // Resuming in the middle of a line skips to the next one.
        let mut t = AuditTail::new(p.clone(), 5);
        let got = t.read_new();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.subject, "/b");
        // Resuming at a boundary starts there.
        let mut t = AuditTail::new(p.clone(), a.len() as u64);
        assert_eq!(t.read_new()[0].1.subject, "/b");
        assert_eq!(start_offset(&p, Some(1 << 40)), 0);
        assert_eq!(start_offset(&p, Some(3)), 3);
    }

    #[test]
    fn over_long_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.log");
        let mut body = vec![b'x'; MAX_LINE + 10];
        body.push(b'\n');
        body.extend_from_slice(line("/after").as_bytes());
        std::fs::write(&p, &body).unwrap();
        let mut t = AuditTail::new(p.clone(), 0);
        let got = t.read_new();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.subject, "/after");
        assert_eq!(t.offset(), body.len() as u64);
    }

    #[test]
    fn the_tail_follows_a_rotated_log_without_losing_records() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(crate::statedir::AUDIT_FILE);
        let rec = |n: usize| {
            crate::audit::AuditRecord::new("c", 1, crate::audit::Kind::FsRead, format!("/{n}"))
        };
        let one = serde_json::to_string(&rec(10)).unwrap().len() as u64 + 1;
        // Rotates every third record.
        let log = crate::audit::AuditLog::open_capped(&p, one * 3).unwrap();
        log.record(&rec(0));
        let mut t = AuditTail::new(p.clone(), 0);
        let mut seen: Vec<String> = t.read_new().into_iter().map(|(_, r)| r.subject).collect();
        // A rotation between two reads: the tail finishes the old file,
        // then reads the new one; every record once, in order.
        for n in 1..5 {
            log.record(&rec(n));
        }
        for _ in 0..3 {
            seen.extend(t.read_new().into_iter().map(|(_, r)| r.subject));
        }
        assert_eq!(seen, ["/0", "/1", "/2", "/3", "/4"]);
        for n in 5..12 {
            log.record(&rec(n));
            seen.extend(t.read_new().into_iter().map(|(_, r)| r.subject));
        }
        let want: Vec<String> = (0..12).map(|n| format!("/{n}")).collect();
        assert_eq!(seen, want);
        // Two rotations while the tail is behind: the file between, now
        // audit.log.1, is read before the current one.
        for n in 12..18 {
            log.record(&rec(n));
        }
        for _ in 0..4 {
            seen.extend(t.read_new().into_iter().map(|(_, r)| r.subject));
        }
        let want: Vec<String> = (0..18).map(|n| format!("/{n}")).collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn output_is_read_in_bounded_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("output.log");
        assert_eq!(read_output(&p, 0).size, 0);
        std::fs::write(&p, "hello\n").unwrap();
        let o = read_output(&p, 0);
        assert_eq!((o.text.as_str(), o.next), ("hello\n", 6));
        assert_eq!(read_output(&p, 6).text, "");
        let big = vec![b'a'; (OUTPUT_CHUNK * 3) as usize];
        std::fs::write(&p, &big).unwrap();
        let o = read_output(&p, 0);
        assert_eq!(o.skipped, OUTPUT_CHUNK * 2);
        assert_eq!(o.next, OUTPUT_CHUNK * 3);
    }

    #[test]
    fn find_refuses_bad_ids_and_respects_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".buntime/job")).unwrap();
        let roots = Roots::new(vec![dir.path().to_path_buf()], None);
        assert!(roots.find("job").is_some());
        assert!(roots.find("../job").is_none());
        assert!(roots.find("nope").is_none());
        let only = Roots::new(vec![dir.path().to_path_buf()], Some("other".into()));
        assert!(only.find("job").is_none());
        let missing = Roots::new(vec![dir.path().join("missing")], None);
        assert!(missing.list().is_empty());
        assert!(!dir.path().join("missing").exists());
    }
}
