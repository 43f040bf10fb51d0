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
//! a symlink: directories are checked with `lstat`, files opened with
//! `O_NOFOLLOW` (and created with `O_EXCL`).

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::state::{validate_id, Root};
use crate::statedir::{StateDir, AUDIT_FILE, LEARN_RECORD, META_FILE, POLICY_FILE};

/// The directory of kept records, in the state root.
pub const KEPT_DIR: &str = ".buntime-learned";
/// At most this many deleted containers' records are kept.
pub const MAX_KEPT: usize = 32;
/// At most this many bytes of kept records in all.
pub const MAX_KEPT_BYTES: u64 = 64 << 20;
/// A record (or applied policy) larger than this is not kept.
pub const MAX_ONE_BYTES: u64 = 32 << 20;
/// At most this many distinct audit lines are kept per container.
const MAX_AUDIT_LINES: usize = 65_536;

/// Where container `id`'s record is kept once it is deleted.
pub fn kept_dir(root: &Root, id: &str) -> PathBuf {
    root.path().join(KEPT_DIR).join(id)
}

/// The kept record of a deleted container `id`, if there is one: a real
/// directory (not a symlink) of the runtime's own user.
pub fn find(root: &Root, id: &str) -> Option<StateDir> {
    validate_id(id).ok()?;
    let base = root.path().join(KEPT_DIR);
    let dir = base.join(id);
    (private_dir(&base).is_ok() && private_dir(&dir).is_ok()).then(|| StateDir::new(dir))
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
    let base = root.path().join(KEPT_DIR);
    ensure_private_dir(&base)?;
    let tmp = base.join(format!(".tmp-{id}-{}", std::process::id()));
    remove_entry(&tmp)?;
    fs::DirBuilder::new().mode(0o700).create(&tmp)?;
    for (name, body) in [
        (LEARN_RECORD, &record),
        (POLICY_FILE, &policy),
        (META_FILE, &meta),
        (AUDIT_FILE, &audit),
    ] {
        write_new(&tmp.join(name), body)?;
    }
    let dir = base.join(id);
    remove_entry(&dir)?;
    fs::rename(&tmp, &dir)?;
    prune(&base, id);
    Ok(true)
}

/// A file of the state directory, not through a symlink, if it exists and
/// is not larger than [`MAX_ONE_BYTES`].
fn read_small(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if m.len() > MAX_ONE_BYTES {
        return Err(io::Error::other(format!(
            "{} is larger than {MAX_ONE_BYTES} bytes",
            path.display()
        )));
    }
    let mut out = Vec::new();
    f.take(MAX_ONE_BYTES).read_to_end(&mut out)?;
    Ok(Some(out))
}

/// The audit lines learning reads, each distinct one once, as a log.
fn audit_lines(state: &StateDir) -> Vec<u8> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for r in crate::audit::read_all(state.path()) {
        if !crate::learn::container::learning_needs(&r) || seen.len() >= MAX_AUDIT_LINES {
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

/// A new file (never an existing one, never through a symlink), mode 0600.
fn write_new(path: &Path, body: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    f.write_all(body)?;
    f.sync_all()
}

/// `dir` is a directory (not a symlink) of ours that nobody else may
/// enter.
fn private_dir(dir: &Path) -> io::Result<fs::Metadata> {
    let m = fs::symlink_metadata(dir)?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !m.is_dir() || m.uid() != me || m.mode() & 0o077 != 0 {
        return Err(io::Error::other(format!(
            "{} is not a private directory of uid {me}",
            dir.display()
        )));
    }
    Ok(m)
}

/// Creates `dir` (mode 0700) when missing; refuses one that is a symlink,
/// another user's or open to others.
fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    // The umask may have narrowed it further; never widened.
    if let Ok(m) = fs::symlink_metadata(dir) {
        if m.is_dir() && m.mode() & 0o077 != 0 && !m.file_type().is_symlink() {
            let d = File::open(dir)?;
            if d.metadata()?.ino() == m.ino() {
                d.set_permissions(fs::Permissions::from_mode(0o700))?;
            }
        }
    }
    private_dir(dir).map(|_| ())
}

/// Removes `path` whatever it is; a symlink is removed, never followed
/// (`remove_dir_all` does not follow symlinks either).
fn remove_entry(path: &Path) -> io::Result<()> {
    let r = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match r {
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
/// removed, nothing followed through a symlink (a base directory that is
/// not private lists nothing).
pub fn list(root: &Root) -> Vec<KeptRecord> {
    let base = root.path().join(KEPT_DIR);
    if private_dir(&base).is_err() {
        return Vec::new();
    }
    scan(&base, false)
        .into_iter()
        .map(|e| {
            let complete = record_complete(&base.join(&e.id));
            KeptRecord {
                id: e.id,
                kept: e.kept,
                bytes: e.bytes,
                complete,
            }
        })
        .collect()
}

/// Whether a kept record says the observer attached and dropped nothing.
fn record_complete(dir: &Path) -> bool {
    read_small(&dir.join(LEARN_RECORD))
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice::<crate::learn::observe::Observed>(&b).ok())
        .is_some_and(|o| o.attached && !o.truncated)
}

/// Why `forget` removed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ForgetError {
    #[error("{0}")]
    Id(String),
    #[error("no kept learned record of {0:?} in {1}")]
    Missing(String, String),
    #[error("remove the kept learned record of {0:?}: {1}")]
    Io(String, io::Error),
}

/// Removes the kept record of `id` (`policy learned --forget ID`): only a
/// private directory of ours named by a valid id, inside a private base;
/// a symlink is never followed (`find` refuses one, and `remove_dir_all`
/// does not follow the ones inside).
pub fn forget(root: &Root, id: &str) -> Result<(), ForgetError> {
    validate_id(id).map_err(|e| ForgetError::Id(e.to_string()))?;
    let Some(kept) = find(root, id) else {
        let base = root.path().join(KEPT_DIR);
        return Err(ForgetError::Missing(id.into(), base.display().to_string()));
    };
    fs::remove_dir_all(kept.path()).map_err(|e| ForgetError::Io(id.into(), e))
}

/// The kept records of `base`, oldest first, tidying as `prune` does.
fn entries(base: &Path) -> Vec<Entry> {
    scan(base, true)
}

/// The kept records of `base`, oldest first. With `tidy`, anything else
/// there (a symlink, a file, a name that is not an id) is removed, and so
/// is a temporary directory of a `delete` that died.
fn scan(base: &Path, tidy: bool) -> Vec<Entry> {
    let mut out = Vec::new();
    for e in fs::read_dir(base).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let dir = match private_dir(&path) {
            Ok(m) if validate_id(&name).is_ok() => m,
            _ => {
                if tidy && (!name.starts_with(".tmp-") || stale(&path)) {
                    let _ = remove_entry(&path);
                }
                continue;
            }
        };
        let bytes = fs::read_dir(&path)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|f| f.metadata().ok())
            .map(|m| m.len())
            .sum();
        out.push(Entry {
            id: name,
            kept: dir.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            bytes,
        });
    }
    out.sort_by(|a, b| a.kept.cmp(&b.kept).then_with(|| a.id.cmp(&b.id)));
    out
}

/// A temporary directory left for more than a minute (a `delete` that
/// is still writing one is not disturbed).
fn stale(path: &Path) -> bool {
    fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_none_or(|age| age.as_secs() > 60)
}

/// Drops the oldest records until at most [`MAX_KEPT`] remain and they
/// hold at most [`MAX_KEPT_BYTES`]; `newest` (just kept) goes last.
fn prune(base: &Path, newest: &str) {
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
        let _ = remove_entry(&base.join(&e.id));
        count -= 1;
        bytes = bytes.saturating_sub(e.bytes);
    }
}

#[cfg(test)]
mod tests;
