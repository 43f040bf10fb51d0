//! Which file a sandbox's path names: always the one in the sandbox's own
//! view (its root and mount namespace), never the host's by accident.
//!
//! Every path is resolved under `/proc/<init>/root`, taken once when the
//! supervisor starts, so the sandbox's private `/tmp`, `/dev/shm`, `/proc`
//! and `/dev` are its own. `buntime run` adds one case: its sandbox has no
//! image, only an empty root with the policy's host paths bound at the
//! same place. A path that falls outside every mount of the sandbox names
//! nothing inside it, and there (only there, and only for what the broker
//! grants: `ask` or `allow`) the supervisor may open the host's file of
//! that name — with the worker's rights (see `creds`).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use crate::policy::normalize_path;

/// A mount of the sandbox: where, and whether it shows the host's tree of
/// the same name (a bind of the same path) or something of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnMount {
    pub dest: PathBuf,
    pub host_same_path: bool,
}

pub struct View {
    init_pid: i32,
    /// The init itself: its pid names the same process only while this
    /// says it lives (a late open must not reach a recycled pid's root).
    init: std::os::fd::OwnedFd,
    /// The sandbox's root directory, O_PATH, opened on first use: before
    /// its exec a rootless init is not dumpable, so not ours to open.
    root: std::sync::OnceLock<File>,
    /// `buntime run` only: the host's `/` and the sandbox's mounts.
    host: Option<(File, Vec<OwnMount>)>,
}

fn open_dir(path: &str) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
}

impl View {
    /// The sandbox's view of `init_pid`; with `host_paths` (`buntime
    /// run`'s: the policy's paths, bound at the same place), the host's
    /// tree too, for paths outside the mounts the spec lists.
    /// `init` is a pidfd of `init_pid` (the supervisor's own, cloned).
    pub fn open(
        init_pid: i32,
        init: std::os::fd::OwnedFd,
        spec: &Spec,
        host_paths: Option<&[PathBuf]>,
    ) -> std::io::Result<View> {
        let host = match host_paths {
            Some(named) => Some((open_dir("/")?, own_mounts(spec, named))),
            None => None,
        };
        let view = View {
            init_pid,
            init,
            root: std::sync::OnceLock::new(),
            host,
        };
        // As root the init's root can be taken now; a rootless init is
        // not dumpable before its exec, so its root is taken on first use.
        let _ = view.root();
        Ok(view)
    }

    /// The sandbox's root (`/proc/<init>/root` as taken the first time).
    pub fn root(&self) -> std::io::Result<&File> {
        if let Some(r) = self.root.get() {
            return Ok(r);
        }
        let r = open_dir(&format!("/proc/{}/root", self.init_pid))?;
        // Opened by pid: only valid if the init is still the process that
        // pid named when the supervisor took its pidfd.
        if !alive(&self.init) {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(self.root.get_or_init(|| r))
    }

    /// The sandbox's root if it was taken already (no open, no check).
    pub fn root_taken(&self) -> Option<&File> {
        self.root.get()
    }

    /// The mount of the sandbox that covers `p`, the deepest one.
    pub fn mount_of(&self, p: &Path) -> Option<&OwnMount> {
        let (_, mounts) = self.host.as_ref()?;
        mounts
            .iter()
            .filter(|m| p.starts_with(&m.dest))
            .max_by_key(|m| m.dest.components().count())
    }

    /// Where a broker-granted path that the sandbox's view lacks may be
    /// opened instead: the host's tree when no mount of the sandbox covers
    /// it (nothing inside has that name), else nowhere.
    pub fn host_fallback(&self, p: &Path) -> Option<&File> {
        let (host, _) = self.host.as_ref()?;
        match self.mount_of(p) {
            None => Some(host),
            Some(_) => None,
        }
    }

    /// Why a path is missing, for the refusal: the sandbox's own mount
    /// that shadows the host's directory of that name, if one does.
    pub fn shadowed_by(&self, p: &Path) -> Option<&Path> {
        self.mount_of(p)
            .filter(|m| !m.host_same_path)
            .map(|m| m.dest.as_path())
    }
}

/// pidfd_send_signal(0): the process is still there (a zombie's pid is
/// not reused either).
fn alive(pidfd: &std::os::fd::OwnedFd) -> bool {
    super::pidfd_signal(pidfd, 0)
}

/// The spec's mount destinations (normalised). A bind at one of the
/// policy's host paths shows the host's tree of that name (its source may
/// be a staged bind of it: `runtime::stage`).
fn own_mounts(spec: &Spec, host_named: &[PathBuf]) -> Vec<OwnMount> {
    spec.mounts()
        .iter()
        .flatten()
        .map(|m| {
            let dest = normalize_path(&Path::new("/").join(m.destination()));
            let host_same_path = crate::spec::is_bind(m)
                && (host_named.contains(&dest)
                    || m.source()
                        .as_deref()
                        .is_some_and(|s| normalize_path(s) == dest));
            OwnMount {
                dest,
                host_same_path,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mounts: serde_json::Value) -> Spec {
        let mut v: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/golden/bundle.json")).unwrap();
        v["mounts"] = mounts;
        serde_json::from_value(v).unwrap()
    }

    fn me() -> std::os::fd::OwnedFd {
        crate::supervisor::pidfd_open(std::process::id() as i32).unwrap()
    }

    #[test]
    fn paths_under_the_sandboxs_own_mounts_never_reach_the_host() {
        let s = spec(serde_json::json!([
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]},
            {"destination": "/opt/buntime", "type": "bind", "source": "/x/home", "options": ["rbind"]},
        ]));
        let v = View::open(std::process::id() as i32, me(), &s, Some(&[])).unwrap();
        for p in [
            "/tmp/x/victim",
            "/tmp",
            "/proc/1/environ",
            "/usr/bin/env",
            "/opt/buntime/x",
        ] {
            assert!(v.host_fallback(Path::new(p)).is_none(), "{p}");
        }
        assert!(v.host_fallback(Path::new("/data/x.csv")).is_some());
        assert_eq!(v.shadowed_by(Path::new("/tmp/x")), Some(Path::new("/tmp")));
        assert_eq!(v.shadowed_by(Path::new("/usr/x")), None);
        assert_eq!(
            v.shadowed_by(Path::new("/opt/buntime/y")),
            Some(Path::new("/opt/buntime"))
        );
        // A policy's host path whose bind was staged (another source)
        // still shows the host's tree of that name.
        let staged = spec(serde_json::json!([
            {"destination": "/data", "type": "bind", "source": "/b/stage/0", "options": ["rbind"]},
        ]));
        let named = [PathBuf::from("/data")];
        let v = View::open(std::process::id() as i32, me(), &staged, Some(&named)).unwrap();
        assert_eq!(v.shadowed_by(Path::new("/data/missing")), None);
        let v = View::open(std::process::id() as i32, me(), &staged, Some(&[])).unwrap();
        assert_eq!(
            v.shadowed_by(Path::new("/data/missing")),
            Some(Path::new("/data"))
        );
        // Without host paths (containers): never the host.
        let c = View::open(std::process::id() as i32, me(), &s, None).unwrap();
        assert!(c.host_fallback(Path::new("/data/x.csv")).is_none());
    }
}
