//! `update`: a container's resource limits.
//!
//! Not liboci-cli's `Update`: runc's sizes take suffixes (`512m`),
//! `--memory`/`--cpu-quota` take -1, and `--resources -` reads stdin, which
//! its numeric fields and `PathBuf` do not allow.

use anyhow::Result;
use buntime::runtime::update::{self, UpdateOptions};
use buntime::runtime::Root;
use clap::Args;

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// JSON file (or - for stdin) with the linux resources to apply
    #[arg(short, long)]
    resources: Option<String>,
    /// Memory limit in bytes (k, m, g suffixes allowed)
    #[arg(long)]
    memory: Option<String>,
    /// Memory soft limit
    #[arg(long)]
    memory_reservation: Option<String>,
    /// Memory plus swap limit (-1 for unlimited)
    #[arg(long)]
    memory_swap: Option<String>,
    /// Maximum number of pids (-1 for unlimited)
    #[arg(long, allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    /// CPU CFS quota in microseconds (-1 for unlimited)
    #[arg(long, allow_hyphen_values = true)]
    cpu_quota: Option<i64>,
    /// CPU CFS period in microseconds
    #[arg(long)]
    cpu_period: Option<u64>,
    /// CPU shares (relative weight)
    #[arg(long)]
    cpu_share: Option<u64>,
    /// CPUs to run on (e.g. 0-1)
    #[arg(long)]
    cpuset_cpus: Option<String>,
    /// Memory nodes to use
    #[arg(long)]
    cpuset_mems: Option<String>,
    /// Block IO weight (10-1000)
    #[arg(long)]
    blkio_weight: Option<u16>,
    /// Container id
    id: String,
}

pub fn run(root: &Root, a: &UpdateArgs) -> Result<()> {
    let opts = UpdateOptions {
        resources: a.resources.clone(),
        memory: a.memory.clone(),
        memory_reservation: a.memory_reservation.clone(),
        memory_swap: a.memory_swap.clone(),
        pids_limit: a.pids_limit,
        cpu_quota: a.cpu_quota,
        cpu_period: a.cpu_period,
        cpu_shares: a.cpu_share,
        cpuset_cpus: a.cpuset_cpus.clone(),
        cpuset_mems: a.cpuset_mems.clone(),
        blkio_weight: a.blkio_weight,
    };
    update::update(root, &a.id, &opts)?;
    Ok(())
}
