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
        #[arg(long, default_value_t = buntime::learn::DEFAULT_THRESHOLD,
              conflicts_with_all = ["list", "forget"])]
        threshold: usize,
        /// List the records kept of deleted learning containers (id, when
        /// kept, size, whether complete)
        #[arg(long, conflicts_with_all = ["id", "forget"])]
        list: bool,
        /// Remove the kept record of a deleted learning container
        #[arg(long, value_name = "ID", conflicts_with = "id")]
        forget: Option<String>,
        /// Container id
        #[arg(required_unless_present_any = ["list", "forget"])]
        id: Option<String>,
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
    let PolicyCommand::Learned {
        threshold,
        list,
        forget,
        id,
    } = command;
    if *list {
        return list_kept(root);
    }
    if let Some(id) = forget {
        buntime::runtime::kept::forget(root, id)?;
        buntime::logging::say(&format!("forgot the kept learned record of {id}"));
        return Ok(());
    }
    let Some(id) = id else {
        anyhow::bail!("policy learned: give a container id, --list or --forget ID");
    };
    let c = buntime::runtime::learned::learned(root, id, *threshold)?;
    stdout::print(&c.learned.policy.to_pretty_json())?;
    buntime::logging::say(&buntime::learn::container::summary_text(id, &c));
    Ok(())
}

/// `policy learned --list`: one line a kept record, oldest first.
fn list_kept(root: &Root) -> Result<()> {
    let mut out = format!("{:<24} {:<20} {:>10} COMPLETE\n", "ID", "KEPT", "SIZE");
    let kept = buntime::runtime::kept::list(root)
        .map_err(|e| anyhow::anyhow!("the directory of kept learned records: {e}"))?;
    for r in kept {
        let when = chrono::DateTime::<chrono::Utc>::from(r.kept)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let complete = if r.complete { "yes" } else { "no" };
        out.push_str(&format!(
            "{:<24} {when:<20} {:>10} {complete}\n",
            r.id, r.bytes
        ));
    }
    stdout::write(out.as_bytes())?;
    Ok(())
}
