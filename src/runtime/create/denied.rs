//! The unreadable file `create` binds over denied files.

use std::fs;
use std::path::Path;

use crate::runtime::error::{Result, RuntimeError};
use crate::statedir::DENIED_FILE;

/// An empty file nobody may read (mode 000): reading a denied file fails
/// (`EACCES`: no capability in the sandbox overrides the mode) instead of
/// looking empty.
pub(super) fn make_denied_file(dir: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(DENIED_FILE);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(&path)
        .map(|_| ())
        .map_err(|e| RuntimeError::io(format!("create {}", path.display()), e))
}
