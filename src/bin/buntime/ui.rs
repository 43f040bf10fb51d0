//! `buntime ui`: the debug UI server (the `ui` feature).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct UiArgs {
    /// Address to listen on (port 0: any free port).
    #[arg(long, value_name = "ADDR", default_value = buntime::ui::DEFAULT_LISTEN)]
    listen: std::net::SocketAddr,
    /// Require this token (default: $BUNTIME_UI_TOKEN, which `ps`
    /// does not show; else none on loopback, a random one printed at
    /// start elsewhere).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Show only this sandbox.
    #[arg(long, value_name = "ID")]
    only: Option<String>,
}

/// Serves until killed; `roots` is `--root`.
pub fn run(a: UiArgs, roots: Vec<PathBuf>) -> Result<ExitCode> {
    let roots = if roots.is_empty() {
        buntime::ui::default_roots()
    } else {
        roots
    };
    let token = a.token.or_else(|| std::env::var("BUNTIME_UI_TOKEN").ok());
    buntime::ui::serve(buntime::ui::UiOptions {
        listen: a.listen,
        roots,
        only: a.only,
        token,
    })?;
    Ok(ExitCode::SUCCESS)
}
