//! `events`: container statistics as runc prints them, one JSON object a
//! line: `{"type":"stats","id":…,"data":{…}}`.

use std::time::Duration;

use libcgroups::common::CgroupManager;
use libcontainer::container::ContainerStatus;

use super::cgroup;
use super::error::{Result, RuntimeError};
use super::state::Root;

/// One stats event of a container.
pub fn stats_event(root: &Root, id: &str) -> Result<serde_json::Value> {
    let c = root.load(id)?;
    let stats = cgroup::manager(&c)?
        .stats()
        .map_err(|e| RuntimeError::backend(format!("statistics of {id:?}"), &e))?;
    let data = serde_json::to_value(&stats)
        .map_err(|e| RuntimeError::Invalid(format!("encode statistics: {e}")))?;
    Ok(serde_json::json!({ "type": "stats", "id": id, "data": data }))
}

/// Prints one event (`once`) or one every `interval` until the container
/// stops.
pub fn events(root: &Root, id: &str, interval: Duration, once: bool) -> Result<()> {
    loop {
        let event = stats_event(root, id)?;
        crate::stdout::println(&event.to_string())?;
        if once {
            return Ok(());
        }
        std::thread::sleep(interval);
        if root.load(id)?.status() == ContainerStatus::Stopped {
            return Ok(());
        }
    }
}
