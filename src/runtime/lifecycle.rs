//! `start`, `state`, `kill`, `delete`, `pause`, `resume`.

use libcgroups::common::{CgroupManager, FreezerState};
use libcontainer::container::{Container, ContainerStatus};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use super::cgroup;
use super::error::{Result, RuntimeError};
use super::state::{oci_state, status_word, Root};

fn wrong_status(c: &Container, action: &'static str) -> RuntimeError {
    RuntimeError::Status {
        id: c.id().to_string(),
        status: status_word(c.status()).to_string(),
        action,
    }
}

/// Starts a created container.
pub fn start(root: &Root, id: &str) -> Result<()> {
    let mut c = root.load(id)?;
    if c.status() != ContainerStatus::Created {
        return Err(wrong_status(&c, "start (it must be created)"));
    }
    c.start()
        .map_err(|e| RuntimeError::backend(format!("start container {id:?}"), &e))
}

/// The OCI state of a container, as printed by `state`.
pub fn state(root: &Root, id: &str) -> Result<serde_json::Value> {
    let c = root.load(id)?;
    Ok(oci_state(&c, &root.read_meta(id)))
}

/// What `spec --explain ID` prints: the policy in plain words, where it
/// came from, and the effective spec libcontainer runs.
pub fn explain(root: &Root, id: &str) -> Result<String> {
    let _ = root.load(id)?;
    let dir = root.state_dir(id);
    let policy_text = dir.read_policy_text()?;
    let policy = crate::policy::parse_policy(&policy_text, "policy.json")
        .map_err(|e| RuntimeError::Policy(e.to_string()))?;
    let meta = root.read_meta(id);
    let mut out = String::new();
    for (k, v) in &meta.annotations {
        out.push_str(&format!("{k}: {v}\n"));
    }
    out.push('\n');
    out.push_str(&crate::policy::explain(&policy));
    out.push_str("\neffective spec:\n");
    out.push_str(&dir.read_text(crate::statedir::EFFECTIVE_FILE)?);
    out.push('\n');
    Ok(out)
}

/// Parses a signal given as a name (`KILL`, `SIGKILL`) or a number.
pub fn parse_signal(text: &str) -> Result<Signal> {
    let upper = text.trim().to_ascii_uppercase();
    let parsed = match upper.parse::<i32>() {
        Ok(n) => Signal::try_from(n).ok(),
        Err(_) => {
            let name = if upper.starts_with("SIG") {
                upper.clone()
            } else {
                format!("SIG{upper}")
            };
            name.parse::<Signal>().ok()
        }
    };
    parsed.ok_or_else(|| RuntimeError::Invalid(format!("invalid signal {text:?}")))
}

/// Sends a signal to the container's init, or with `all` to every process
/// in its cgroup. The recorded status is left alone: a signal that the
/// process survives must not mark the container stopped.
pub fn kill(root: &Root, id: &str, sig: Signal, all: bool) -> Result<()> {
    let c = root.load(id)?;
    let status = c.status();
    let alive = matches!(
        status,
        ContainerStatus::Created | ContainerStatus::Running | ContainerStatus::Paused
    );
    if !(alive || (all && status == ContainerStatus::Stopped)) {
        return Err(RuntimeError::Status {
            id: id.to_string(),
            status: status_word(status).to_string(),
            action: "kill (container not running)",
        });
    }
    let targets: Vec<i32> = if all {
        // Not the supervisor (`ps::pids`): `kill --all` is for the container.
        match super::ps::pids_if_present(root, id)? {
            Some(pids) => pids,
            // systemd removes a scope once its last process has exited, and
            // containerd's shim still asks to kill what is left: nothing
            // (runc does the same).
            None if status == ContainerStatus::Stopped => Vec::new(),
            None => {
                return Err(RuntimeError::Invalid(format!(
                    "kill --all {id:?}: the container is {} but its cgroup is gone",
                    status_word(status)
                )))
            }
        }
    } else {
        c.pid().map(|p| vec![p.as_raw()]).unwrap_or_default()
    };
    for pid in targets {
        match signal::kill(Pid::from_raw(pid), sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => {
                return Err(RuntimeError::Invalid(format!(
                    "send {sig} to pid {pid} of {id:?}: {e}"
                )))
            }
        }
    }
    // A frozen process (cgroup v1 freezer) cannot act on SIGKILL until thawed.
    if sig == Signal::SIGKILL && status == ContainerStatus::Paused {
        let mgr = cgroup::manager(&c)?;
        mgr.freeze(FreezerState::Thawed)
            .map_err(|e| RuntimeError::backend(format!("thaw {id:?}"), &e))?;
    }
    Ok(())
}

/// Deletes a container. With `force` a running one is killed first, and a
/// missing one is not an error (as in runc).
pub fn delete(root: &Root, id: &str, force: bool) -> Result<()> {
    let mut c = match root.load(id) {
        Ok(c) => c,
        Err(RuntimeError::NotFound(_)) if force => {
            // Leftovers of a half-made container go too.
            crate::supervisor::stop(root.read_meta(id).supervisor_pid, id);
            super::kept::keep(root, id);
            root.remove_extra(id)?;
            return Ok(());
        }
        Err(RuntimeError::NotFound(_)) if root.extra_dir(id).exists() => {
            crate::supervisor::stop(root.read_meta(id).supervisor_pid, id);
            super::kept::keep(root, id);
            root.remove_extra(id)?;
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let status = c.status();
    if !force && matches!(status, ContainerStatus::Running | ContainerStatus::Paused) {
        return Err(wrong_status(
            &c,
            "delete a container that is not stopped (use --force)",
        ));
    }
    let supervisor = root.read_meta(id).supervisor_pid;
    // The supervisor is in the container's CPU cgroup (its work is charged
    // there, `supervisor::charge`): removing the cgroup would kill it (and
    // its last audit lines), or fail busy. A stopped container's supervisor
    // winds down on its own (audit lines of connections that just ended),
    // so it is waited for first (stopped if that takes too long); one whose
    // init still runs is moved out, and waited for once the init is gone.
    // Should deleting a running container fail, its supervisor still serves.
    if status == ContainerStatus::Stopped {
        finish_supervisor(supervisor, id);
        if !delete_stopped_directly(&c)? {
            c.delete(force)
                .map_err(|e| RuntimeError::backend(format!("delete container {id:?}"), &e))?;
        }
    } else {
        if let (Some(s), Some(init)) = (supervisor, c.pid()) {
            if crate::supervisor::is_ours(s, id) {
                crate::supervisor::charge::evict(s, init.as_raw());
            }
        }
        c.delete(force)
            .map_err(|e| RuntimeError::backend(format!("delete container {id:?}"), &e))?;
        finish_supervisor(supervisor, id);
    }
    tracing::debug!(target: "cli", "delete: container, cgroup and supervisor gone");
    // What a learning container learned outlives it (engines delete a
    // short-lived container at once): docs/learn.md.
    super::kept::keep(root, id);
    root.remove_extra(id)
}

/// Waits for the supervisor of a container whose init is gone to exit on
/// its own (`WIND_DOWN`), then stops it.
fn finish_supervisor(supervisor: Option<i32>, id: &str) {
    match crate::supervisor::begin_finish(supervisor, id) {
        Some(s) => s.wait(),
        None => crate::supervisor::stop(supervisor, id),
    }
}

/// What libcontainer's delete does for a stopped container without
/// poststop hooks (remove the cgroup, then the state directory), with the
/// cgroup removed directly (`cgroup::remove_direct`). False: not such a
/// container; libcontainer deletes it.
fn delete_stopped_directly(c: &libcontainer::container::Container) -> Result<bool> {
    if c.systemd() || c.intel_rdt_dir().is_some() || !c.root.exists() {
        return Ok(false);
    }
    let Ok(cfg) = c.spec() else {
        return Ok(false);
    };
    let poststop = cfg
        .hooks
        .as_ref()
        .and_then(|h| h.poststop().as_ref())
        .is_some_and(|v| !v.is_empty());
    if poststop {
        return Ok(false);
    }
    if !super::cgroup::remove_direct(&cfg.cgroup_path)? {
        return Ok(false);
    }
    std::fs::remove_dir_all(&c.root)
        .map_err(|e| RuntimeError::io(format!("remove {}", c.root.display()), e))?;
    Ok(true)
}

pub fn pause(root: &Root, id: &str) -> Result<()> {
    let mut c = root.load(id)?;
    if c.status() != ContainerStatus::Running {
        return Err(wrong_status(&c, "pause (it must be running)"));
    }
    c.pause()
        .map_err(|e| RuntimeError::backend(format!("pause container {id:?}"), &e))
}

pub fn resume(root: &Root, id: &str) -> Result<()> {
    let mut c = root.load(id)?;
    if c.status() != ContainerStatus::Paused {
        return Err(wrong_status(&c, "resume (it must be paused)"));
    }
    c.resume()
        .map_err(|e| RuntimeError::backend(format!("resume container {id:?}"), &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("KILL").ok(), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("SIGKILL").ok(), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("9").ok(), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("term").ok(), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("15").ok(), Some(Signal::SIGTERM));
        let err = parse_signal("NOPE").expect_err("bad signal");
        assert!(err.to_string().contains("invalid signal \"NOPE\""));
        assert!(parse_signal("99").is_err());
    }
}
