//! `audit ID [--follow]`: a container's audit log (the supervisor's
//! decisions) and `policy learned ID`.

use anyhow::Result;
use buntime::audit_follow::{FollowError, Follower};
use buntime::runtime::Root;
use buntime::stdout;
use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Keep printing new records until the supervisor exits
    #[arg(short, long)]
    pub follow: bool,
    /// Container id
    pub id: String,
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// The least policy a learning container (annotation
    /// buntime.dev/learn: "true") used: JSON on stdout, a summary on stderr
    Learned {
        /// Files read in one directory from which the directory is granted
        #[arg(long, default_value_t = buntime::learn::DEFAULT_THRESHOLD)]
        threshold: usize,
        /// Container id
        id: String,
    },
}

/// Prints `audit.log`; with --follow keeps printing until the supervisor
/// has exited and the log is drained.
pub fn audit(root: &Root, a: &AuditArgs) -> Result<()> {
    let mut log = Follower::open(root, &a.id, a.follow).map_err(runc_error)?;
    while let Some(bytes) = log.next_chunk().map_err(runc_error)? {
        stdout::write(&bytes)?;
    }
    Ok(())
}

/// A [`FollowError`] as the CLI reports it: an invalid id is the runtime's
/// own error (the same one every command gives).
fn runc_error(e: FollowError) -> anyhow::Error {
    match e {
        FollowError::Id(e) => e.into(),
        other => other.into(),
    }
}

pub fn policy(root: &Root, command: &PolicyCommand) -> Result<()> {
    let PolicyCommand::Learned { threshold, id } = command;
    let c = buntime::runtime::learned::learned(root, id, *threshold)?;
    stdout::print(&c.learned.policy.to_pretty_json())?;
    buntime::logging::say(&buntime::learn::container::summary_text(id, &c));
    Ok(())
}
