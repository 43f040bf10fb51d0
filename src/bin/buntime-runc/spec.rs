//! `spec` (a default config.json, or `--explain ID`) and `features`.

use std::path::Path;

use anyhow::Result;
use buntime::runtime::{defaults, lifecycle, Root};
use buntime::stdout;
use clap::Args;

/// liboci-cli's `spec` (`--bundle`, `--rootless`) and buntime's `--explain`.
#[derive(Args, Debug)]
pub struct SpecArgs {
    #[command(flatten)]
    pub oci: liboci_cli::Spec,
    /// Instead of writing a spec, print the effective spec of container ID
    /// (the bundle's spec after its policy was applied) and the policy
    #[arg(long, value_name = "ID")]
    pub explain: Option<String>,
}

/// `spec [--bundle DIR] [--rootless]`: writes DIR/config.json.
pub fn write(a: &liboci_cli::Spec) -> Result<()> {
    let bundle = a.bundle.as_deref().unwrap_or(Path::new("."));
    defaults::write_default_spec(bundle, a.rootless)?;
    Ok(())
}

/// `spec --explain ID`: the effective spec and the policy of a container.
pub fn explain(root: &Root, id: &str) -> Result<()> {
    stdout::print(&lifecycle::explain(root, id)?)?;
    Ok(())
}

/// `features`: the OCI features JSON.
pub fn features() -> Result<()> {
    stdout::println(&serde_json::to_string_pretty(&defaults::features())?)?;
    Ok(())
}
