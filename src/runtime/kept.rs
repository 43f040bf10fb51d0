//! What a learning container learned, kept past `delete` (docs/learn.md).
//!
//! Engines delete a short-lived container's state directory as soon as it
//! exits (podman `run --rm`, containerd after the task, Kubernetes), and
//! with it the learned record. So `delete` of a container that was learning
//! copies what `policy learned` needs — the record, the applied policy and
//! the audit lines learning reads (`learn::container::learning_needs`,
//! each distinct one once) — to `<root>/.buntime-learned/ID/` (mode 0700,
//! owned by the runtime's user), where `runtime::learned` finds it once the
//! container is gone. Bounded: at most [`MAX_KEPT`] containers and
//! [`MAX_KEPT_BYTES`] in all, the oldest dropped first; a record larger
//! than [`MAX_ONE_BYTES`] is not kept. Nothing there is followed through
//! a symlink: the base is opened with `RESOLVE_NO_SYMLINKS` and used
//! through its descriptor, and each record is checked, read, written and
//! removed relative to it ([`at`]).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use at::Base;

mod at;

use super::state::{validate_id, Root};
use crate::statedir::{
    read_bounded, read_small, StateDir, AUDIT_FILE, LEARN_RECORD, META_FILE, POLICY_FILE,
};

/// The directory of kept records, in the state root.
pub const KEPT_DIR: &str = ".buntime-learned";
/// At most this many deleted containers' records are kept.
pub const MAX_KEPT: usize = 32;
/// At most this many bytes of kept records in all.
pub const MAX_KEPT_BYTES: u64 = 64 << 20;
/// A record (or applied policy) larger than this is not kept.
pub const MAX_ONE_BYTES: u64 = crate::statedir::MAX_FILE_BYTES;
/// At most this many distinct audit lines are kept per container.
const MAX_AUDIT_LINES: usize = 65_536;

/// Where container `id`'s record is kept once it is deleted.
pub fn kept_dir(root: &Root, id: &str) -> PathBuf {
    root.path().join(KEPT_DIR).join(id)
}

/// The kept record of a deleted container `id`, if there is one: a real
/// directory (not a symlink) of the runtime's own user in a private base
/// reached through no symlink.
pub fn find(root: &Root, id: &str) -> Option<StateDir> {
    validate_id(id).ok()?;
    let base = Base::open(&root.path().join(KEPT_DIR)).ok()??;
    base.open_private(OsStr::new(id)).ok()?;
    Some(StateDir::new(base.path().join(id)))
}

/// Called by `delete` once the supervisor is gone, before the state
/// directory is removed: keeps what a learning container learned. Never
/// fails the delete; what went wrong is logged.
pub fn keep(root: &Root, id: &str) {
    match try_keep(root, id) {
        Ok(true) => {
            tracing::info!(target: "cli", id, dir = %kept_dir(root, id).display(),
                "kept the learned record of a deleted container")
        }
        Ok(false) => {}
        Err(e) => tracing::warn!(target: "cli", id,
            "could not keep the learned record of a deleted container: {e}"),
    }
}

/// True when the container was learning and its record is now kept.
fn try_keep(root: &Root, id: &str) -> io::Result<bool> {
    if validate_id(id).is_err() {
        return Ok(false);
    }
    let state = root.state_dir(id);
    let Some(record) = read_small(&state.learn_record())? else {
        return Ok(false);
    };
    let policy = read_small(&state.policy())?.unwrap_or_default();
    let meta = read_small(&state.meta())?.unwrap_or_default();
    let audit = audit_lines(&state);
    let base = Base::create(&root.path().join(KEPT_DIR))?;
    let tmp = format!(".tmp-{id}-{}", std::process::id());
    remove_entry(&base, &tmp)?;
    let dir = base.mkdir(&tmp)?;
    for (name, body) in [
        (LEARN_RECORD, &record),
        (POLICY_FILE, &policy),
        (META_FILE, &meta),
        (AUDIT_FILE, &audit),
    ] {
        let mut f = at::create_file(&dir, name)?;
        f.write_all(body)?;
        f.sync_all()?;
    }
    remove_entry(&base, id)?;
    base.rename(&tmp, id)?;
    prune(&base, id);
    Ok(true)
}

/// The audit lines learning reads, each distinct one once, as a log.
fn audit_lines(state: &StateDir) -> Vec<u8> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for r in crate::audit::read_all(state.path()) {
        // The quota's drop line is kept past the cap: it marks what is
        // learned from the log incomplete.
        let capped = seen.len() >= MAX_AUDIT_LINES && !crate::learn::dropped_at_quota(&r);
        if !crate::learn::container::learning_needs(&r) || capped {
            continue;
        }
        if !seen.insert((r.kind, r.decision, r.subject.clone())) {
            continue;
        }
        if let Ok(line) = serde_json::to_string(&r) {
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
    }
    out
}

/// Removes `name` of the base whatever it is, if it is there; a symlink
/// is removed, never followed.
fn remove_entry(base: &Base, name: &str) -> io::Result<()> {
    match base.remove(OsStr::new(name), false) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// One kept record: its id, when it was kept, its size.
struct Entry {
    id: String,
    kept: SystemTime,
    bytes: u64,
}

/// A kept record as `policy learned --list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptRecord {
    pub id: String,
    /// When `delete` kept it.
    pub kept: SystemTime,
    /// Bytes of its files.
    pub bytes: u64,
    /// The observer attached and kept every distinct call (the container
    /// had exited: `delete` keeps a record once its supervisor is gone).
    pub complete: bool,
}

/// The kept records of `root`, oldest first. Only reads: nothing is
/// removed, nothing followed through a symlink. A base that is reached
/// through a symlink or is not private is an error, not an empty list.
pub fn list(root: &Root) -> io::Result<Vec<KeptRecord>> {
    let Some(base) = Base::open(&root.path().join(KEPT_DIR))? else {
        return Ok(Vec::new());
    };
    Ok(scan(&base, false)
        .into_iter()
        .map(|e| {
            let complete = record_complete(&base, &e.id);
            KeptRecord {
                id: e.id,
                kept: e.kept,
                bytes: e.bytes,
                complete,
            }
        })
        .collect())
}

/// The two facts of a learned record `--list` shows (the rest, events
/// included, is skipped unread into values).
#[derive(serde::Deserialize)]
struct Completeness {
    attached: bool,
    #[serde(default)]
    truncated: bool,
}

/// Whether a kept record says the observer attached and dropped nothing.
fn record_complete(base: &Base, id: &str) -> bool {
    let Ok((dir, _)) = base.open_private(OsStr::new(id)) else {
        return false;
    };
    at::open_file(&dir, LEARN_RECORD)
        .and_then(|f| read_bounded(f, &base.path().join(id).join(LEARN_RECORD)))
        .ok()
        .and_then(|b| serde_json::from_slice::<Completeness>(&b).ok())
        .is_some_and(|o| o.attached && !o.truncated)
}

/// Why `forget` removed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ForgetError {
    #[error("{0}")]
    Id(String),
    #[error("the directory of kept learned records: {0}")]
    Base(io::Error),
    #[error("no kept learned record of {0:?} in {1}")]
    Missing(String, String),
    #[error("remove the kept learned record of {0:?}: {1}")]
    Io(String, io::Error),
}

/// Removes the kept record of `id` (`policy learned --forget ID`): only a
/// private directory of ours named by a valid id, inside a private base
/// reached through no symlink. It is moved aside inside the base first, and
/// what was moved is checked and removed relative to the base's descriptor,
/// so nothing swapped in after a check is removed or followed.
pub fn forget(root: &Root, id: &str) -> Result<(), ForgetError> {
    validate_id(id).map_err(|e| ForgetError::Id(e.to_string()))?;
    let path = root.path().join(KEPT_DIR);
    let missing = || ForgetError::Missing(id.into(), path.display().to_string());
    let base = Base::open(&path)
        .map_err(ForgetError::Base)?
        .ok_or_else(missing)?;
    base.lock().map_err(ForgetError::Base)?;
    let name = OsStr::new(id);
    match base.stat(name) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
        Ok(st) if st.st_mode & libc::S_IFMT != libc::S_IFDIR => return Err(missing()),
        _ => {}
    }
    base.remove(name, true)
        .map_err(|e| ForgetError::Io(id.into(), e))
}

/// The kept records of `base`, oldest first, tidying as `prune` does.
fn entries(base: &Base) -> Vec<Entry> {
    scan(base, true)
}

/// The kept records of `base`, oldest first. With `tidy`, anything else
/// there (a symlink, a file, a name that is not an id, a directory that is
/// not private) is removed, and so is a temporary directory of a `delete`
/// that died.
fn scan(base: &Base, tidy: bool) -> Vec<Entry> {
    let mut out = Vec::new();
    for name in base.names().unwrap_or_default() {
        let id = name.to_string_lossy().into_owned();
        let opened = match base.open_private(&name) {
            Ok(d) if validate_id(&id).is_ok() => d,
            _ => {
                if tidy && (!id.starts_with(".tmp-") || stale(base, &name)) {
                    let _ = base.remove(&name, false);
                }
                continue;
            }
        };
        let (dir, st) = opened;
        out.push(Entry {
            id,
            kept: mtime(&st),
            bytes: at::bytes_of(&dir),
        });
    }
    out.sort_by(|a, b| a.kept.cmp(&b.kept).then_with(|| a.id.cmp(&b.id)));
    out
}

/// When `st` was last modified.
fn mtime(st: &nix::sys::stat::FileStat) -> SystemTime {
    let secs = u64::try_from(st.st_mtime).unwrap_or(0);
    let nanos = u32::try_from(st.st_mtime_nsec).unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)
}

/// A temporary directory left for more than a minute (a `delete` that
/// is still writing one is not disturbed).
fn stale(base: &Base, name: &OsStr) -> bool {
    base.stat(name)
        .ok()
        .and_then(|st| mtime(&st).elapsed().ok())
        .is_none_or(|age| age.as_secs() > 60)
}

/// Drops the oldest records until at most [`MAX_KEPT`] remain and they
/// hold at most [`MAX_KEPT_BYTES`]; `newest` (just kept) goes last.
fn prune(base: &Base, newest: &str) {
    let mut all = entries(base);
    if let Some(i) = all.iter().position(|e| e.id == newest) {
        let e = all.remove(i);
        all.push(e);
    }
    let mut bytes: u64 = all.iter().map(|e| e.bytes).sum();
    let mut count = all.len();
    for e in &all {
        if count <= MAX_KEPT && bytes <= MAX_KEPT_BYTES {
            break;
        }
        tracing::info!(target: "cli", id = %e.id, "dropped an old kept learned record (bounds)");
        let _ = remove_entry(base, &e.id);
        count -= 1;
        bytes = bytes.saturating_sub(e.bytes);
    }
}

#[cfg(test)]
mod tests;
