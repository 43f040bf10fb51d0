//! What learning needs from the runtime's state root: a container's
//! learned policy (`buntime-runc policy learned ID`, the debug UI) and the
//! audit log of a container named by id (`buntime policy suggest
//! --from-audit ID`). `learn` works on a state directory and records;
//! finding them by id is the runtime's.

use std::path::{Path, PathBuf};

use super::state::{validate_id, Meta, Root};
use crate::audit::AuditRecord;
use crate::learn::container::{ContainerFacts, ContainerLearned};
use crate::learn::LearnError;
use crate::statedir::META_FILE;

/// The least policy for container `id` of `root`, from what its
/// supervisor recorded and its audit log; once the container is deleted
/// (or replaced by one of that id that is not learning), from the record
/// `delete` kept (`super::kept`).
pub fn learned(root: &Root, id: &str, threshold: usize) -> Result<ContainerLearned, LearnError> {
    validate_id(id).map_err(|e| LearnError::Invalid(e.to_string()))?;
    let dir = root.state_dir(id);
    let live = root.exists(id);
    if !live || !dir.learn_record().exists() {
        if let Some(kept) = super::kept::find(root, id) {
            let facts = ContainerFacts {
                id,
                dir: &kept,
                policy_name: kept
                    .read_json::<Meta>(META_FILE)
                    .ok()
                    .and_then(|m| m.policy_name),
                running: false,
                deleted: true,
            };
            return crate::learn::container::learned(&facts, threshold);
        }
    }
    if !live {
        return Err(LearnError::Invalid(format!(
            "container {id:?} does not exist"
        )));
    }
    let meta = root.read_meta(id);
    let facts = ContainerFacts {
        id,
        dir: &dir,
        policy_name: meta.policy_name.clone(),
        running: meta
            .supervisor_pid
            .is_some_and(|p| crate::supervisor::is_ours(p, id)),
        deleted: false,
    };
    crate::learn::container::learned(&facts, threshold)
}

/// Audit records of `what`: a file, else the id of a container or
/// sandbox in one of `roots` (its whole log, a rotated part first), or
/// of a deleted learning container (its kept lines).
pub fn read_audit_of(what: &str, roots: &[PathBuf]) -> Result<Vec<AuditRecord>, LearnError> {
    let file = Path::new(what);
    if file.is_file() || what.contains('/') {
        return crate::learn::diff::read_audit(file);
    }
    if validate_id(what).is_err() {
        return Err(LearnError::Invalid(format!(
            "--from-audit {what:?}: neither a file nor a container id"
        )));
    }
    for r in roots.iter().filter(|r| r.is_dir()) {
        let Ok(root) = Root::open(r, false) else {
            continue;
        };
        let dir = root.extra_dir(what);
        if dir.is_dir() {
            return Ok(crate::audit::read_all(&dir));
        }
        // A deleted learning container: the lines its kept record has
        // (denials and the proxy's records, what `suggest` reads).
        if let Some(kept) = super::kept::find(&root, what) {
            return Ok(crate::audit::read_all(kept.path()));
        }
    }
    Err(LearnError::Invalid(format!(
        "--from-audit {what:?}: no such file, nor a container of that id in {}",
        roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}
