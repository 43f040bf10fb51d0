//! The container's cgroup, for the commands libcontainer has no API for
//! (`ps`, `update`) and for cleaning up after a failed create.

use std::path::Path;

use libcgroups::common::{create_cgroup_manager, AnyCgroupManager, CgroupConfig, CgroupManager};
use libcontainer::container::Container;

use super::error::{Result, RuntimeError};

/// The cgroup manager of a created container.
pub fn manager(container: &Container) -> Result<AnyCgroupManager> {
    let config = container
        .spec()
        .map_err(|e| RuntimeError::backend(format!("container {:?} config", container.id()), &e))?;
    manager_for(&config.cgroup_path, container.systemd(), container.id())
}

/// The cgroup manager for a cgroup path.
pub fn manager_for(cgroup_path: &Path, systemd: bool, id: &str) -> Result<AnyCgroupManager> {
    create_cgroup_manager(CgroupConfig {
        cgroup_path: cgroup_path.to_path_buf(),
        systemd_cgroup: systemd,
        container_name: id.to_string(),
    })
    .map_err(|e| RuntimeError::backend(format!("cgroup of {id:?}"), &e))
}

/// The pids in the container's cgroup, sorted.
pub fn pids(container: &Container) -> Result<Vec<i32>> {
    let mgr = manager(container)?;
    let mut pids: Vec<i32> = mgr
        .get_all_pids()
        .map_err(|e| RuntimeError::backend(format!("pids of {:?}", container.id()), &e))?
        .into_iter()
        .map(|p| p.as_raw())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// Removes a cgroup that a failed create may have left; errors are ignored
/// because the cgroup may never have been made.
pub fn remove_quietly(cgroup_path: &Path, systemd: bool, id: &str) {
    if let Ok(mgr) = manager_for(cgroup_path, systemd, id) {
        let _ = mgr.remove();
    }
}
