//! Reading the log back (the UI, `buntime run`'s report, learning, tests):
//! both files, across a rotation, nothing skipped or repeated.

use std::fs::File;
use std::path::Path;

use super::{AuditRecord, AUDIT_FILE, AUDIT_FILE_OLD};

/// Has `path` been replaced (rotated) since `f` was opened from it? Readers
/// that follow the log drain `f` once more, then reopen `path`. A missing
/// `path` is not (yet) a new file: between the writer's rename and its
/// open, or a removed state directory, where readers end by other means.
pub fn replaced(f: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) != (b.dev(), b.ino()),
        _ => false,
    }
}

fn open_opt(path: &Path) -> std::io::Result<Option<File>> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// `audit.log.1` and `audit.log` of `dir`, opened as one consistent pair:
/// a rotation between the two opens (which would skip a whole file) is
/// seen and the pair opened again.
pub fn open_both(dir: &Path) -> std::io::Result<(Option<File>, Option<File>)> {
    let old_path = dir.join(AUDIT_FILE_OLD);
    for _ in 0..10 {
        let old = open_opt(&old_path)?;
        let current = open_opt(&dir.join(AUDIT_FILE))?;
        let stable = match &old {
            Some(o) => !replaced(o, &old_path),
            None => !old_path.exists(),
        };
        if stable {
            return Ok((old, current));
        }
    }
    Err(std::io::Error::other("the audit log kept rotating"))
}

/// Both files' bytes, oldest first, nothing skipped or repeated across a
/// rotation while reading.
pub fn read_all_bytes(dir: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let (old, current) = open_both(dir)?;
    let mut out = Vec::new();
    if let Some(mut o) = old {
        o.read_to_end(&mut out)?;
    }
    if let Some(mut c) = current {
        c.read_to_end(&mut out)?;
        let path = dir.join(AUDIT_FILE);
        if replaced(&c, &path) {
            // Rotated while read: what it got before the rename, then
            // the new file.
            c.read_to_end(&mut out)?;
            if let Some(mut n) = open_opt(&path)? {
                n.read_to_end(&mut out)?;
            }
        }
    }
    Ok(out)
}

/// For a reader that has drained `f`, rotated away from `path`: the file
/// to read next when it is not the current one. Two rotations while the
/// reader was behind leave a whole file at `audit.log.1` that it never
/// saw; `None` means go on with the current `audit.log`.
pub fn missed_old(f: &File, path: &Path) -> Option<File> {
    let old = path.with_file_name(AUDIT_FILE_OLD);
    if old.exists() && replaced(f, &old) {
        File::open(&old).ok()
    } else {
        None
    }
}

/// The records of both files, oldest first (unreadable lines skipped).
pub fn read_all(dir: &Path) -> Vec<AuditRecord> {
    let bytes = read_all_bytes(dir).unwrap_or_default();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
