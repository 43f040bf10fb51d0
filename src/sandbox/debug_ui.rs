//! `buntime run --debug-ui`: the debug UI for one run, when the binary has
//! it (the `ui` cargo feature).

use super::{setup, RunRequest, SandboxError};

/// The running UI; it stops when dropped.
#[cfg(feature = "ui")]
pub type Handle = crate::ui::UiHandle;
/// Without the `ui` feature there is never one.
#[cfg(not(feature = "ui"))]
pub type Handle = std::convert::Infallible;

/// Refuses `--debug-ui` without the UI built in, before the run makes
/// anything.
pub fn check(req: &RunRequest) -> Result<(), SandboxError> {
    if cfg!(not(feature = "ui")) && req.debug_ui.is_some() {
        return Err(setup(
            "--debug-ui: this buntime was built without the debug UI (cargo feature `ui`)",
        ));
    }
    Ok(())
}

/// Serves the UI for sandbox `id` if asked to, and says where.
#[cfg(feature = "ui")]
pub fn start(req: &RunRequest, id: &str) -> Result<Option<Handle>, SandboxError> {
    let Some(listen) = req.debug_ui else {
        return Ok(None);
    };
    let ui = crate::ui::serve_background(crate::ui::UiOptions {
        listen,
        roots: vec![req.state_root.clone()],
        only: Some(id.to_string()),
        token: None,
    })
    .map_err(|e| setup(format!("--debug-ui: {e}")))?;
    crate::logging::say(&format!("buntime: debug UI at {}", ui.url()));
    Ok(Some(ui))
}

/// Without the UI, [`check`] has refused a request for it.
#[cfg(not(feature = "ui"))]
pub fn start(_req: &RunRequest, _id: &str) -> Result<Option<Handle>, SandboxError> {
    Ok(None)
}
