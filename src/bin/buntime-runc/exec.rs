//! `exec`: another process in a running container.
//!
//! Not liboci-cli's `Exec`: that one parses `--env` and `--user` itself
//! (with other errors than the policy-aware ones of `runtime::exec`) and
//! takes `--cgroup`, `--apparmor` and `--process-label`, which buntime-runc
//! does not implement: they stay usage errors rather than being ignored.

use std::path::PathBuf;

use anyhow::Result;
use buntime::runtime::exec::{exec, ExecOptions};
use buntime::runtime::Root;
use clap::Args;

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// JSON file with the process to run (OCI process object); its
    /// capabilities are cut to init's, its rlimits and env made as init's
    #[arg(short, long)]
    process: Option<PathBuf>,
    /// Return once the process is started
    #[arg(short, long)]
    detach: bool,
    /// Write the process pid to FILE
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Allocate a pseudo-terminal
    #[arg(short, long)]
    tty: bool,
    /// Unix socket to receive the pty master on
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// Working directory inside the container
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// Set an environment variable (KEY=VALUE), repeatable; refused when
    /// the policy's env rules would drop or change it
    #[arg(short, long)]
    env: Vec<String>,
    /// UID[:GID] to run as (default: the spec's user; a UID alone keeps
    /// the spec's gid)
    #[arg(short, long)]
    user: Option<String>,
    /// Additional group id, repeatable
    #[arg(short = 'g', long = "additional-gids")]
    additional_gids: Vec<u32>,
    /// A capability the process must have, repeatable; refused unless
    /// init holds it (an exec'd process gets init's capabilities only)
    #[arg(long)]
    cap: Vec<String>,
    /// Set no_new_privs for the process (init's is always kept)
    #[arg(long)]
    no_new_privs: bool,
    /// Pass N more file descriptors to the process
    #[arg(long, default_value_t = 0)]
    preserve_fds: i32,
    /// Allow exec into a paused container
    #[arg(long)]
    ignore_paused: bool,
    /// Container id
    id: String,
    /// Command and arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Runs the process; returns its exit code (0 when detached).
pub fn run(root: &Root, a: &ExecArgs) -> Result<i32> {
    let opts = ExecOptions {
        id: a.id.clone(),
        process: a.process.clone(),
        args: a.command.clone(),
        env: a.env.clone(),
        cwd: a.cwd.clone(),
        user: a.user.clone(),
        additional_gids: a.additional_gids.clone(),
        caps: a.cap.clone(),
        no_new_privs: a.no_new_privs,
        tty: a.tty,
        console_socket: a.console_socket.clone(),
        pid_file: a.pid_file.clone(),
        preserve_fds: a.preserve_fds,
        detach: a.detach,
        ignore_paused: a.ignore_paused,
    };
    Ok(exec(root, &opts)?)
}
