//! The small lifecycle commands: `start`, `state`, `kill`, `delete`,
//! `pause`, `resume`, and the hidden `supervise`.

use anyhow::Result;
use buntime::runtime::{lifecycle, Root};
use buntime::stdout;
use clap::Args;

/// `kill`'s arguments: liboci-cli's `Kill` requires the signal, runc's
/// defaults it to SIGTERM.
#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal every process in the container
    #[arg(short, long)]
    pub all: bool,
    /// Container id
    pub id: String,
    /// Signal name (KILL, SIGKILL) or number
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
}

/// `state ID`: the OCI state as JSON.
pub fn state(root: &Root, id: &str) -> Result<()> {
    let state = lifecycle::state(root, id)?;
    stdout::println(&serde_json::to_string_pretty(&state)?)?;
    Ok(())
}

/// `kill [--all] ID [SIGNAL]`.
pub fn kill(root: &Root, a: &KillArgs) -> Result<()> {
    let sig = lifecycle::parse_signal(&a.signal)?;
    lifecycle::kill(root, &a.id, sig, a.all)?;
    Ok(())
}
