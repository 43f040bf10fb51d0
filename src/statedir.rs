//! A container's state directory, `<root>/.buntime/<id>/`: every file
//! buntime keeps there, by name, in one place.
//!
//! `create` writes it (`runtime::create`), the supervisor serves from it
//! (its `run/` directory is bound into the container at `/run/buntime`),
//! `exec`, `spec --explain`, `audit`, `learn` and the UI read it. Who
//! writes a file is said at its name. libcontainer's own directory
//! (`<root>/<id>/`, its `state.json`) is not this one.
//!
//! The names are also the relative paths the supervisor binds its sockets
//! by (it makes this directory its working directory: a socket address
//! holds at most 107 bytes), so they are public.

use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A file of a state directory larger than this is not read (a learning
/// record, an applied policy: `read_small`).
pub const MAX_FILE_BYTES: u64 = 32 << 20;

/// The effective spec libcontainer runs, and `exec` and the supervisor
/// read (`create`; seccomp arguments in libcontainer's order).
pub const SPEC_FILE: &str = "config.json";
/// Where `buntime run` keeps its containers' state (`buntime-runc`'s is
/// `runtime::DEFAULT_ROOT`, or its `--root`).
pub const RUN_STATE_ROOT: &str = "/run/buntime-run";
/// buntime's metadata of the container (`runtime::state::Meta`).
pub const META_FILE: &str = "buntime.json";
/// The applied policy, canonical JSON (`create`).
pub const POLICY_FILE: &str = "policy.json";
/// The Landlock plan, read again by `exec`.
pub const LANDLOCK_FILE: &str = "landlock.json";
/// The effective spec in canonical form, for `spec --explain`.
pub const EFFECTIVE_FILE: &str = "effective-spec.json";
/// The bundle's seccomp profile, precompiled (`runtime::seccomp_bpf`).
pub const SECCOMP_BPF_FILE: &str = "seccomp.bpf";
/// The policy's seccomp profile stacked on the bundle's own, precompiled.
pub const POLICY_SECCOMP_BPF_FILE: &str = "policy-seccomp.bpf";
/// Before precompiled programs, the stacked policy profile was stored as
/// JSON, in libcontainer's argument order (read by `exec` of such
/// containers only).
pub const LEGACY_POLICY_SECCOMP_FILE: &str = "policy-seccomp.json";
/// An empty file nobody may read (mode 000), bound over
/// `filesystem.deny` files.
pub const DENIED_FILE: &str = "denied";
/// The rootless network set-up hook's datagram socket
/// (`runtime::netns_hook`).
pub const NETNS_HOOK_SOCKET: &str = "netns-hook.sock";
/// The supervisor's directory, bound read-only into the container.
pub const RUN_DIR: &str = "run";
/// Where [`RUN_DIR`] is bound in the container (read-only), and its two
/// files there.
pub const CONTAINER_DIR: &str = "/run/buntime";
pub const CONTAINER_IPC: &str = "/run/buntime/ipc";
pub const CONTAINER_CONTROL: &str = "/run/buntime/control.sock";
/// In [`RUN_DIR`]: the file segment named by `BUNTIME_IPC`.
pub const SEGMENT_FILE: &str = "ipc";
/// In [`RUN_DIR`]: the control socket workers connect to.
pub const CONTROL_FILE: &str = "control.sock";
/// The socket an approver (the UI, `buntime run`'s prompt) listens on.
pub const APPROVER_FILE: &str = "approve.sock";
/// What the sandbox's workers printed (`resources.output`).
pub const OUTPUT_FILE: &str = "output.log";
/// A pooled run's claim (`buntime run --pool`): when it was claimed, in
/// CLOCK_MONOTONIC nanoseconds; `resources.timeout` counts from it.
pub const CLAIMED_FILE: &str = "claimed";
/// CLOCK_MONOTONIC now, in nanoseconds (one clock for all processes of
/// the host: `CLAIMED_FILE` is written by one and read by another).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}
/// The supervisor's own log.
pub const LOG_FILE: &str = "supervisor.log";
/// The audit log (`crate::audit`).
pub const AUDIT_FILE: &str = "audit.log";
/// The audit log's previous file, after a rotation.
pub const AUDIT_FILE_OLD: &str = "audit.log.1";
/// A learning container's seccomp listener socket (`learn::container`).
pub const LEARN_SOCKET: &str = "learn.sock";
/// What a learning container was seen doing (`learn::container`).
pub const LEARN_RECORD: &str = "learned.json";

/// Why a state file could not be read or written. The text names the
/// file, as the runtime's errors always did.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("read {path}: {err}")]
    Read { path: String, err: std::io::Error },
    #[error("write {path}: {err}")]
    Write { path: String, err: std::io::Error },
    #[error("{path}: {message}")]
    Decode { path: String, message: String },
    #[error("encode {path}: {message}")]
    Encode { path: String, message: String },
}

/// One container's state directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StateDir { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A file of this directory by name (one of this module's constants).
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn spec(&self) -> PathBuf {
        self.file(SPEC_FILE)
    }
    pub fn meta(&self) -> PathBuf {
        self.file(META_FILE)
    }
    pub fn policy(&self) -> PathBuf {
        self.file(POLICY_FILE)
    }
    pub fn landlock(&self) -> PathBuf {
        self.file(LANDLOCK_FILE)
    }
    pub fn effective_spec(&self) -> PathBuf {
        self.file(EFFECTIVE_FILE)
    }
    pub fn denied(&self) -> PathBuf {
        self.file(DENIED_FILE)
    }
    pub fn run_dir(&self) -> PathBuf {
        self.file(RUN_DIR)
    }
    pub fn segment(&self) -> PathBuf {
        self.run_dir().join(SEGMENT_FILE)
    }
    pub fn control(&self) -> PathBuf {
        self.run_dir().join(CONTROL_FILE)
    }
    pub fn approver(&self) -> PathBuf {
        self.file(APPROVER_FILE)
    }
    pub fn output(&self) -> PathBuf {
        self.file(OUTPUT_FILE)
    }
    pub fn supervisor_log(&self) -> PathBuf {
        self.file(LOG_FILE)
    }
    pub fn audit(&self) -> PathBuf {
        self.file(AUDIT_FILE)
    }
    pub fn audit_old(&self) -> PathBuf {
        self.file(AUDIT_FILE_OLD)
    }
    pub fn learn_record(&self) -> PathBuf {
        self.file(LEARN_RECORD)
    }

    /// The text of a state file.
    pub fn read_text(&self, name: &str) -> Result<String, StateFileError> {
        let path = self.file(name);
        std::fs::read_to_string(&path).map_err(|err| StateFileError::Read {
            path: path.display().to_string(),
            err,
        })
    }

    /// The applied policy's canonical JSON (`policy.json`).
    pub fn read_policy_text(&self) -> Result<String, StateFileError> {
        self.read_text(POLICY_FILE)
    }

    /// Writes a state file whole.
    pub fn write_text(&self, name: &str, body: &str) -> Result<(), StateFileError> {
        let path = self.file(name);
        std::fs::write(&path, body).map_err(|err| StateFileError::Write {
            path: path.display().to_string(),
            err,
        })
    }

    /// A JSON state file, decoded.
    pub fn read_json<T: DeserializeOwned>(&self, name: &str) -> Result<T, StateFileError> {
        let path = self.file(name);
        let text = std::fs::read(&path).map_err(|err| StateFileError::Read {
            path: path.display().to_string(),
            err,
        })?;
        serde_json::from_slice(&text).map_err(|e| StateFileError::Decode {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Writes `value` as pretty JSON.
    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StateFileError> {
        let body = serde_json::to_string_pretty(value).map_err(|e| StateFileError::Encode {
            path: self.file(name).display().to_string(),
            message: e.to_string(),
        })?;
        self.write_text(name, &body)
    }
}

/// A file of a state directory, never through a symlink, if it exists and
/// is a regular file of at most [`MAX_FILE_BYTES`] (a container's files
/// are written by root, but a deleted one's copy or a sandbox's bind may
/// not be what it says).
pub fn read_small(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    read_bounded(f, path).map(Some)
}

/// All of `f` (opened from `path`), a regular file of at most
/// [`MAX_FILE_BYTES`].
pub fn read_bounded(f: std::fs::File, path: &Path) -> io::Result<Vec<u8>> {
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if m.len() > MAX_FILE_BYTES {
        return Err(io::Error::other(format!(
            "{} is larger than {MAX_FILE_BYTES} bytes",
            path.display()
        )));
    }
    let mut out = Vec::new();
    f.take(MAX_FILE_BYTES).read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_and_errors_name_the_file() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::new(d.path());
        s.write_json(LANDLOCK_FILE, &vec!["/a", "/b"]).unwrap();
        let back: Vec<String> = s.read_json(LANDLOCK_FILE).unwrap();
        assert_eq!(back, ["/a", "/b"]);
        let e = s.read_policy_text().unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("read {}", d.path().join(POLICY_FILE).display())),
            "{e}"
        );
        assert_eq!(s.control(), d.path().join("run/control.sock"));
    }
}
