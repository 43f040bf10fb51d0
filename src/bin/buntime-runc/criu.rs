//! `checkpoint` and `restore`: refused with the reason. runc's arguments
//! are taken so that an engine's call gets the reason rather than a usage
//! error; liboci-cli's `Checkpoint` lacks several of them and restricts
//! `--manage-cgroups-mode`, and it has no `Restore`.

use std::path::PathBuf;

use buntime::runtime::RuntimeError;
use clap::Args;

/// runc's options shared by checkpoint and restore.
#[derive(Args, Debug)]
pub struct CriuArgs {
    #[arg(long)]
    image_path: Option<PathBuf>,
    #[arg(long)]
    work_path: Option<PathBuf>,
    #[arg(long)]
    tcp_established: bool,
    #[arg(long)]
    ext_unix_sk: bool,
    #[arg(long)]
    shell_job: bool,
    #[arg(long)]
    file_locks: bool,
    #[arg(long)]
    lazy_pages: bool,
    #[arg(long)]
    manage_cgroups_mode: Option<String>,
    #[arg(long)]
    empty_ns: Vec<String>,
    #[arg(long)]
    auto_dedup: bool,
}

#[derive(Args, Debug)]
pub struct CheckpointArgs {
    #[command(flatten)]
    criu: CriuArgs,
    #[arg(long)]
    parent_path: Option<PathBuf>,
    #[arg(long)]
    leave_running: bool,
    #[arg(long)]
    status_fd: Option<i32>,
    #[arg(long)]
    page_server: Option<String>,
    #[arg(long)]
    pre_dump: bool,
    /// Container id
    id: String,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    #[command(flatten)]
    criu: CriuArgs,
    #[arg(long)]
    console_socket: Option<PathBuf>,
    #[arg(short, long)]
    bundle: Option<PathBuf>,
    #[arg(short, long)]
    detach: bool,
    #[arg(long)]
    pid_file: Option<PathBuf>,
    #[arg(long)]
    no_subreaper: bool,
    #[arg(long)]
    no_pivot: bool,
    #[arg(long)]
    lsm_profile: Option<String>,
    #[arg(long)]
    lsm_mount_context: Option<String>,
    /// Container id
    id: String,
}

/// libcontainer 0.7 can dump through CRIU but cannot restore; a dump would
/// also lose the supervisor (docs: "Checkpoint").
pub fn checkpoint() -> RuntimeError {
    RuntimeError::Unsupported {
        command: "checkpoint",
        reason: "nothing could restore it (libcontainer 0.7 has no CRIU restore), and \
                 an image would not hold the container's supervisor, a process outside \
                 it whose broker socket and proxy its processes are connected to \
                 (features: org.opencontainers.runc.checkpoint.enabled=false)",
    }
}

pub fn restore() -> RuntimeError {
    RuntimeError::Unsupported {
        command: "restore",
        reason: "libcontainer 0.7 has no CRIU restore",
    }
}
