//! `ps`: the processes of a container.

use std::process::Command;

use super::cgroup;
use super::error::{Result, RuntimeError};
use super::state::Root;

/// Output formats of `ps` (and `list`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

impl Format {
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "table" => Ok(Self::Table),
            "json" => Ok(Self::Json),
            other => Err(RuntimeError::Invalid(format!(
                "invalid --format {other:?}: expected \"table\" or \"json\""
            ))),
        }
    }
}

/// The pids in the container's cgroup, but its supervisor's (which on
/// cgroup v2 shares it, `supervisor::charge`).
pub fn pids(root: &Root, id: &str) -> Result<Vec<i32>> {
    let c = root.load(id)?;
    let sup = root.read_meta(id).supervisor_pid;
    let mut pids = cgroup::pids(&c)?;
    pids.retain(|&p| Some(p) != sup);
    Ok(pids)
}

/// [`pids`], or None when the container's cgroup is gone.
pub fn pids_if_present(root: &Root, id: &str) -> Result<Option<Vec<i32>>> {
    let c = root.load(id)?;
    let sup = root.read_meta(id).supervisor_pid;
    let mut pids = cgroup::pids_if_present(&c)?;
    if let Some(pids) = pids.as_mut() {
        pids.retain(|&p| Some(p) != sup);
    }
    Ok(pids)
}

/// runc's table: the host `ps` output (with `ps_args`, default `-ef`)
/// filtered to the container's processes.
pub fn table(root: &Root, id: &str, ps_args: &[String]) -> Result<String> {
    let pids = pids(root, id)?;
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let out = Command::new("ps")
        .args(&args)
        .output()
        .map_err(|e| RuntimeError::io("run ps", e))?;
    if !out.status.success() {
        return Err(RuntimeError::Invalid(format!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let pid_col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or_else(|| RuntimeError::Invalid("ps output has no PID column".into()))?;
    let mut result = format!("{header}\n");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(pid_col)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            result.push_str(line);
            result.push('\n');
        }
    }
    Ok(result)
}
