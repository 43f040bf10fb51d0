//! Rootless limits on cgroup v1: the admin delegated `/buntime/user-UID`
//! in each hierarchy (`buntime setup-user`); libcontainer made the
//! sandbox's cgroup below it, owned by the user, and put the init there.
//! Its resource files are then the user's to write; the devices controller
//! (which needs CAP_SYS_ADMIN) is left alone: the sandbox has no device
//! nodes but the defaults anyway.

use std::path::Path;

use super::SandboxError;
use crate::policy::Resources;
use crate::spec::CPU_PERIOD_US;

const V1: &str = "/sys/fs/cgroup";

fn write(ctrl: &str, cgroup: &str, file: &str, value: &str) -> Result<(), SandboxError> {
    let p = Path::new(V1)
        .join(ctrl)
        .join(cgroup.trim_start_matches('/'))
        .join(file);
    std::fs::write(&p, value).map_err(|e| {
        SandboxError::Setup(format!(
            "rootless limits: write {}: {e} (cgroup v1 delegated by `buntime setup-user` is needed; has an admin run it?)",
            p.display()
        ))
    })
}

/// Writes the policy's memory, pids and CPU limits into `cgroup`.
pub fn apply_v1(cgroup: &str, r: &Resources) -> Result<(), SandboxError> {
    if let Some(m) = r.memory {
        write(
            "memory",
            cgroup,
            "memory.limit_in_bytes",
            &m.bytes().to_string(),
        )?;
    }
    if let Some(p) = r.pids {
        write("pids", cgroup, "pids.max", &p.get().to_string())?;
    }
    if let Some(c) = r.cpu {
        let quota = ((c.get() * CPU_PERIOD_US as f64).round() as u64).max(1000);
        write(
            "cpu",
            cgroup,
            "cpu.cfs_period_us",
            &CPU_PERIOD_US.to_string(),
        )?;
        write("cpu", cgroup, "cpu.cfs_quota_us", &quota.to_string())?;
    }
    Ok(())
}
