//! Looking at containers: `ps`, `list` and `events`.

use anyhow::Result;
use buntime::runtime::ps::Format;
use buntime::runtime::{list, ps, Root};
use buntime::stdout;
use clap::Args;

/// `list`'s arguments: liboci-cli's `List` has no `-f` (runc's short
/// for `--format`).
#[derive(Args, Debug)]
pub struct ListArgs {
    /// table or json
    #[arg(short, long, default_value = "table")]
    pub format: String,
    /// Print ids only
    #[arg(short, long)]
    pub quiet: bool,
}

/// `events`' arguments: liboci-cli's `Events` takes the interval in whole
/// seconds only; runc takes a duration (`5s`, `500ms`).
#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Print statistics once and exit
    #[arg(long)]
    pub stats: bool,
    /// Interval between statistics (e.g. 5s, 500ms, 1m)
    #[arg(long, default_value = "5s")]
    pub interval: String,
    /// Container id
    pub id: String,
}

/// `ps ID [PS OPTIONS]`: a table from ps(1), or the pids as JSON.
pub fn ps(root: &Root, a: &liboci_cli::Ps) -> Result<()> {
    let id = &a.container_id;
    match Format::parse(&a.format)? {
        Format::Json => stdout::println(&serde_json::to_string(&ps::pids(root, id)?)?)?,
        Format::Table => stdout::print(&ps::table(root, id, &a.ps_options)?)?,
    }
    Ok(())
}

/// `list`: the containers under the root.
pub fn list(root: &Root, a: &ListArgs) -> Result<()> {
    stdout::print(&list::list(root, Format::parse(&a.format)?, a.quiet)?)?;
    Ok(())
}

/// `events ID`: statistics every interval, or once with `--stats`.
pub fn events(root: &Root, a: &EventsArgs) -> Result<()> {
    let interval = parse_interval(&a.interval)?;
    buntime::runtime::events::events(
        root,
        &a.id,
        std::time::Duration::from_secs(u64::from(interval)),
        a.stats,
    )?;
    Ok(())
}

/// Parses an events interval as the policy parses durations (`5s`,
/// `500ms`, `1m`, or plain seconds); at least one second.
fn parse_interval(text: &str) -> Result<u32> {
    let span = buntime::policy::TimeSpan::parse(text.trim()).map_err(|e| {
        anyhow::anyhow!("invalid --interval {text:?}: expected a duration such as 5s ({e})")
    })?;
    let secs = span.millis().div_ceil(1000).max(1);
    u32::try_from(secs).map_err(|_| anyhow::anyhow!("invalid --interval {text:?}: too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("5s").ok(), Some(5));
        assert_eq!(parse_interval("500ms").ok(), Some(1));
        assert_eq!(parse_interval("2m").ok(), Some(120));
        assert_eq!(parse_interval("7").ok(), Some(7));
        assert!(parse_interval("soon").is_err());
    }
}
