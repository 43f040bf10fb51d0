//! Reading a container's audit log as it grows (`buntime-runc audit ID
//! [--follow]`): the previous file of a rotated log first, then the current
//! one, across rotations, until the supervisor has exited and the log is
//! drained. The caller prints what [`Follower::next_chunk`] hands it.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use crate::audit;
use crate::runtime::{state::validate_id, Root, RuntimeError};

/// How long a follower waits for new records when there were none.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// Why a container's audit log cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(transparent)]
    Id(#[from] RuntimeError),
    #[error("container {0:?} does not exist")]
    NotFound(String),
    #[error("open {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Read(#[from] std::io::Error),
}

/// A reader of one container's audit log, from its start.
pub struct Follower<'a> {
    root: &'a Root,
    id: String,
    dir: PathBuf,
    path: PathBuf,
    /// The rotated file, handed out first.
    old: Option<File>,
    file: Option<File>,
    follow: bool,
    done: bool,
}

impl<'a> Follower<'a> {
    /// Opens container `id`'s log; with `follow`, [`Self::next_chunk`]
    /// waits for more until the supervisor is gone.
    pub fn open(root: &'a Root, id: &str, follow: bool) -> Result<Self, FollowError> {
        validate_id(id)?;
        let dir = root.extra_dir(id);
        if !dir.exists() {
            return Err(FollowError::NotFound(id.to_string()));
        }
        let path = dir.join(audit::AUDIT_FILE);
        let (old, file) = audit::open_both(&dir).map_err(|source| FollowError::Open {
            path: path.clone(),
            source,
        })?;
        Ok(Follower {
            root,
            id: id.to_string(),
            dir,
            path,
            old,
            file,
            follow,
            done: false,
        })
    }

    /// The next bytes of the log (possibly none while following), or
    /// `None` once everything was handed out.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, FollowError> {
        if let Some(mut old) = self.old.take() {
            let mut b = Vec::new();
            old.read_to_end(&mut b)?;
            return Ok(Some(b));
        }
        if self.done {
            return Ok(None);
        }
        let (buf, rotated) = self.read_new()?;
        if !self.follow && !rotated {
            self.done = true;
        } else if buf.is_empty() && !rotated {
            if !self.supervised() || !self.dir.exists() {
                self.done = true;
            } else {
                std::thread::sleep(POLL_EVERY);
            }
        }
        Ok(Some(buf))
    }

    /// What was appended since the last read; `true` when the log was
    /// rotated meanwhile (then the next file is already open).
    fn read_new(&mut self) -> std::io::Result<(Vec<u8>, bool)> {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let mut buf = Vec::new();
        let mut rotated = false;
        if let Some(f) = self.file.as_mut() {
            f.read_to_end(&mut buf)?;
            if audit::replaced(f, &self.path) {
                // What was appended before the rename, then the new file.
                f.read_to_end(&mut buf)?;
                rotated = true;
            }
        }
        if rotated {
            // The file between, if two rotations went by; else the new one.
            self.file = self
                .file
                .as_ref()
                .and_then(|f| audit::missed_old(f, &self.path));
        }
        Ok((buf, rotated))
    }

    /// Whether the container's supervisor is still running.
    fn supervised(&self) -> bool {
        self.root
            .read_meta(&self.id)
            .supervisor_pid
            .is_some_and(|p| crate::supervisor::is_ours(p, &self.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(f: &mut Follower) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(b) = f.next_chunk().expect("read") {
            out.extend(b);
        }
        out
    }

    #[test]
    fn the_rotated_file_comes_first_and_a_stopped_container_ends_the_follow() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = Root::open(tmp.path(), false).expect("root");
        let dir = root.extra_dir("c1");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(audit::AUDIT_FILE_OLD), "old\n").expect("write");
        std::fs::write(dir.join(audit::AUDIT_FILE), "new\n").expect("write");
        for follow in [false, true] {
            // No supervisor: following ends once the log is drained.
            let mut f = Follower::open(&root, "c1", follow).expect("open");
            assert_eq!(drain(&mut f), b"old\nnew\n", "follow={follow}");
        }
    }

    #[test]
    fn a_missing_container_and_a_bad_id_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = Root::open(tmp.path(), false).expect("root");
        let e = Follower::open(&root, "ghost", false)
            .err()
            .expect("refused");
        assert_eq!(e.to_string(), "container \"ghost\" does not exist");
        let e = Follower::open(&root, "../x", false).err().expect("refused");
        assert!(matches!(e, FollowError::Id(_)), "{e}");
    }
}
