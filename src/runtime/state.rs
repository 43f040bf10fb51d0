//! Where containers live on disk, and the OCI state we print for them.
//!
//! `<root>/<id>/` belongs to libcontainer (its state.json, config, notify
//! socket). buntime keeps its own files beside it in `<root>/.buntime/<id>/`:
//! the effective config.json libcontainer is pointed at (so `exec` sees the
//! same spec as init), and `buntime.json` with what runc users expect to see
//! in `state` (the bundle they gave us, our annotations).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::syscall::syscall::SyscallType;
use serde::{Deserialize, Serialize};

use super::error::{error_chain, Result, RuntimeError};
use crate::spec::SpecMode;
use crate::statedir::{StateDir, META_FILE};

/// The directory our own per-container files live under, inside the root.
const EXTRA_DIR: &str = ".buntime";

/// The state root (`--root`, default `/run/buntime-runc`).
#[derive(Debug, Clone)]
pub struct Root {
    path: PathBuf,
    pub systemd_cgroup: bool,
}

/// What buntime records about a container beyond libcontainer's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    /// The bundle directory the caller gave to `create`.
    pub bundle: PathBuf,
    /// The absolute rootfs path.
    pub rootfs: PathBuf,
    /// Annotations buntime adds to `state` (`buntime.dev/*`).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// The container's supervisor process (see `crate::supervisor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor_pid: Option<i32>,
    /// The policy's short name (`PolicyOrigin::name`), for `exec` errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_name: Option<String>,
    /// `run` for `buntime run`'s sandboxes, whose policy paths are host
    /// paths; `oci` (also what older metadata without it means) otherwise.
    /// Kept here, where a bundle cannot reach, rather than in the spec.
    #[serde(default)]
    pub mode: SpecMode,
}

impl Root {
    /// Opens the root, creating it (mode 0700) when missing.
    pub fn open(path: &Path, systemd_cgroup: bool) -> Result<Self> {
        if !path.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(|e| RuntimeError::io(format!("--root {}", path.display()), e))?;
        }
        let path = fs::canonicalize(path)
            .map_err(|e| RuntimeError::io(format!("--root {}", path.display()), e))?;
        Ok(Self {
            path,
            systemd_cgroup,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// libcontainer's directory for the container.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.path.join(id)
    }

    /// Where buntime keeps its own files under the root.
    pub fn extra_root(&self) -> PathBuf {
        self.path.join(EXTRA_DIR)
    }

    /// buntime's own directory for the container.
    pub fn extra_dir(&self, id: &str) -> PathBuf {
        self.path.join(EXTRA_DIR).join(id)
    }

    /// buntime's own directory for the container, with its files.
    pub fn state_dir(&self, id: &str) -> StateDir {
        StateDir::new(self.extra_dir(id))
    }

    /// True when either directory of the container exists.
    pub fn exists(&self, id: &str) -> bool {
        self.container_dir(id).exists() || self.extra_dir(id).exists()
    }

    /// Loads a container and refreshes its status from the kernel.
    pub fn load(&self, id: &str) -> Result<Container> {
        validate_id(id)?;
        let dir = self.container_dir(id);
        if !dir.join("state.json").exists() {
            return Err(RuntimeError::NotFound(id.to_string()));
        }
        // libcontainer rewrites state.json in place (truncate, then write):
        // a reader can catch it empty or half-written. Such a read is
        // retried briefly; a state that stays unreadable is an error.
        let mut attempt = 0;
        let mut container = loop {
            match Container::load(dir.clone()) {
                Ok(c) => break c,
                Err(e) if attempt < 20 && e.to_string().contains("parse") => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => return Err(RuntimeError::backend(format!("load container {id:?}"), &e)),
            }
        };
        container
            .refresh_status()
            .map_err(|e| RuntimeError::backend(format!("container {id:?} status"), &e))?;
        Ok(container)
    }

    /// The ids of all containers under the root, sorted.
    pub fn ids(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let entries = fs::read_dir(&self.path)
            .map_err(|e| RuntimeError::io(format!("read {}", self.path.display()), e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !entry.path().join("state.json").exists() {
                continue;
            }
            ids.push(name);
        }
        ids.sort();
        Ok(ids)
    }

    /// The container's metadata; the default when it has none (yet).
    pub fn read_meta(&self, id: &str) -> Meta {
        self.state_dir(id).read_json(META_FILE).unwrap_or_default()
    }

    pub fn write_meta(&self, id: &str, meta: &Meta) -> Result<()> {
        Ok(self.state_dir(id).write_json(META_FILE, meta)?)
    }

    /// Removes buntime's own files of a container (its user namespace's
    /// gate too, `super::userns`).
    pub fn remove_extra(&self, id: &str) -> Result<()> {
        super::userns::remove(self, id)?;
        let dir = self.extra_dir(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::io(format!("remove {}", dir.display()), e)),
        }
    }
}

/// Checks an id with libcontainer's rules, plus one of ours: ids starting
/// with '.' would collide with buntime's own directory in the root.
pub fn validate_id(id: &str) -> Result<()> {
    ContainerBuilder::new(id.to_string(), SyscallType::default())
        .validate_id()
        .map_err(|e| RuntimeError::InvalidId {
            id: id.to_string(),
            reason: error_chain(&e),
        })?;
    if id.starts_with('.') {
        return Err(RuntimeError::InvalidId {
            id: id.to_string(),
            reason: "must not start with '.'".into(),
        });
    }
    Ok(())
}

/// The lower-case status word of the OCI state.
pub fn status_word(status: ContainerStatus) -> &'static str {
    match status {
        ContainerStatus::Creating => "creating",
        ContainerStatus::Created => "created",
        ContainerStatus::Running => "running",
        ContainerStatus::Stopped => "stopped",
        ContainerStatus::Paused => "paused",
    }
}

/// The OCI state object as runc prints it (plus `created`).
pub fn oci_state(container: &Container, meta: &Meta) -> serde_json::Value {
    let status = container.status();
    // runc reports pid 0 once the init process is gone.
    let pid = match status {
        ContainerStatus::Stopped => 0,
        _ => container.pid().map(|p| p.as_raw()).unwrap_or(0),
    };
    let mut annotations: BTreeMap<String, String> = container
        .state
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    annotations.extend(meta.annotations.clone());
    if let Some(pid) = meta.supervisor_pid {
        annotations.insert(
            crate::supervisor::ANNOTATION_SUPERVISOR.to_string(),
            crate::supervisor::status(Some(pid), container.id()),
        );
    }
    let bundle = if meta.bundle.as_os_str().is_empty() {
        container.bundle().clone()
    } else {
        meta.bundle.clone()
    };
    serde_json::json!({
        "ociVersion": container.state.oci_version,
        "id": container.id(),
        "pid": pid,
        "status": status_word(status),
        "bundle": bundle,
        "rootfs": meta.rootfs,
        "created": container.created().map(|c| c.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)),
        "owner": "",
        "annotations": annotations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_with_path_tricks_are_refused() {
        for bad in ["../x", "a/b", "", "..", ".hidden"] {
            let err = validate_id(bad).expect_err(bad);
            assert!(
                err.to_string().starts_with("invalid container id"),
                "{bad}: {err}"
            );
        }
        validate_id("job-1_a.b+c").expect("valid id");
    }

    /// Metadata written before the mode was kept in it means OCI mode.
    #[test]
    fn the_mode_round_trips_and_defaults_to_oci() {
        let old: Meta = serde_json::from_str(r#"{"bundle":"/b","rootfs":"/b/rootfs"}"#).unwrap();
        assert_eq!(old.mode, SpecMode::Oci);
        let run = Meta {
            mode: SpecMode::Run,
            ..Meta::default()
        };
        let text = serde_json::to_string(&run).unwrap();
        assert!(text.contains(r#""mode":"run""#), "{text}");
        let back: Meta = serde_json::from_str(&text).unwrap();
        assert_eq!(back.mode, SpecMode::Run);
    }
}
