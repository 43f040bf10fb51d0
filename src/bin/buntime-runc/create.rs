//! `create` and `run`: a container from a bundle; `run` also starts it and,
//! in the foreground, waits for it, forwarding signals.

use anyhow::{Context, Result};
use buntime::runtime::create::{create, CreateOptions};
use buntime::runtime::{foreground, lifecycle, Root};
use nix::unistd::Pid;

/// `create`: the container waits for `start`.
pub fn run_create(root: &Root, a: &liboci_cli::Create) -> Result<()> {
    let opts = CreateOptions {
        id: a.container_id.clone(),
        bundle: a.bundle.clone(),
        pid_file: a.pid_file.clone(),
        console_socket: a.console_socket.clone(),
        preserve_fds: a.preserve_fds,
        no_pivot: a.no_pivot,
        detach: true,
        ..CreateOptions::default()
    };
    create(root, &opts)?;
    Ok(())
}

fn run_options(a: &liboci_cli::Run, detach: bool) -> CreateOptions {
    CreateOptions {
        id: a.container_id.clone(),
        bundle: a.bundle.clone(),
        pid_file: a.pid_file.clone(),
        console_socket: a.console_socket.clone(),
        preserve_fds: a.preserve_fds,
        no_pivot: a.no_pivot,
        detach,
        ..CreateOptions::default()
    }
}

/// `run`: create, start, and in the foreground wait, forwarding signals.
/// Returns the container's exit code (0 when detached).
pub fn run_run(root: &Root, a: &liboci_cli::Run) -> Result<i32> {
    let id = &a.container_id;
    if a.detach {
        create(root, &run_options(a, true))?;
        start_or_delete(root, id)?;
        return Ok(0);
    }
    foreground::become_subreaper()?;
    let container = create(root, &run_options(a, false))?;
    let pid = container
        .pid()
        .map(|p| Pid::from_raw(p.as_raw()))
        .context("created container has no pid")?;
    let set = foreground::block_signals()?;
    start_or_delete(root, id)?;
    tracing::debug!(target: "cli", "run: started");
    let code = foreground::wait_forward(pid, &set);
    tracing::debug!(target: "cli", "run: exited");
    if !a.keep {
        if let Err(e) = lifecycle::delete(root, id, true) {
            tracing::warn!(target: "cli", "delete {id} after run: {e}");
        }
    }
    Ok(code?)
}

/// Starts a created container; one that does not start is deleted.
fn start_or_delete(root: &Root, id: &str) -> Result<()> {
    if let Err(e) = lifecycle::start(root, id) {
        let _ = lifecycle::delete(root, id, true);
        return Err(e.into());
    }
    Ok(())
}
