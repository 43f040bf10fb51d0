//! Pooled sandboxes whose pooled run was killed before its claim. Their
//! supervisor killed them (`supervisor::claim`), but what only the pooled
//! run removes (the container's state directory, cgroups, bundle) stays, and
//! the id `run-PID` would be refused to a later run of that pid. `pool
//! fill` and `pool drain` delete them (docs/run.md, "Pool").

use std::path::Path;

use crate::runtime::{lifecycle, Root};

/// Deletes the pooled sandboxes of `state_root` whose pooled run is gone;
/// how many.
pub fn sweep_orphans(state_root: &Path) -> usize {
    let Ok(root) = Root::open(state_root, false) else {
        return 0;
    };
    let mut n = 0;
    for id in root.ids().unwrap_or_default() {
        if !orphaned(&root, &id) {
            continue;
        }
        match lifecycle::delete(&root, &id, true) {
            Ok(()) => {
                super::scratch::remove_left(state_root, &id);
                n += 1;
            }
            Err(e) => tracing::warn!(target: "cli", "pool: delete orphaned sandbox {id}: {e}"),
        }
    }
    n
}

/// A pooled sandbox (its spec says `timeout-from: claim`) named after a
/// pid that is no pooled run now. A live `pool serve` of that pid is the
/// sandbox's own (ids are unique), however far it has got.
fn orphaned(root: &Root, id: &str) -> bool {
    let Some(pid) = id.strip_prefix("run-").and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    pooled(root, id) && !serving(pid)
}

fn pooled(root: &Root, id: &str) -> bool {
    root.state_dir(id)
        .read_json::<libcontainer::oci_spec::runtime::Spec>(crate::statedir::SPEC_FILE)
        .ok()
        .and_then(|s| s.annotations().clone())
        .and_then(|a| a.get(crate::supervisor::ANNOTATION_TIMEOUT_FROM).cloned())
        .is_some_and(|v| v == "claim")
}

/// Is `pid` a pooled run (`buntime … pool serve …`)?
fn serving(pid: u32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    args.windows(2).any(|w| w[0] == b"pool" && w[1] == b"serve")
}
