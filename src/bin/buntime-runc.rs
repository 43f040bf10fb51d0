//! buntime-runc: the OCI runtime command line, spoken the way runc speaks it,
//! because containerd's shim, conmon and the conformance suites call it so.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use buntime::logging::{init_runc_logging, runc_line, say, LogFormat};
use buntime::runtime::create::{create, CreateOptions};
use buntime::runtime::exec::{exec, ExecOptions};
use buntime::runtime::ps::Format;
use buntime::runtime::update::UpdateOptions;
use buntime::runtime::{defaults, foreground, lifecycle, list, ps, update, Root, RuntimeError};
use buntime::stdout;
use clap::{ArgAction, Args, Parser, Subcommand};
use nix::unistd::Pid;

#[derive(Parser, Debug)]
#[command(
    name = "buntime-runc",
    version,
    about = "A runc-compatible OCI runtime that runs untrusted code under a deny-by-default policy",
    disable_version_flag = true
)]
struct Cli {
    /// Root directory for container state
    #[arg(long, default_value = "/run/buntime-runc")]
    root: PathBuf,
    /// Write logs to FILE (default: stderr)
    #[arg(long)]
    log: Option<PathBuf>,
    /// Log format: text or json
    #[arg(long, default_value = "text")]
    log_format: String,
    /// Manage cgroups through systemd
    #[arg(long)]
    systemd_cgroup: bool,
    /// Log debug output
    #[arg(long)]
    debug: bool,
    /// Accepted for runc compatibility (rootless mode is detected)
    #[arg(long, hide = true)]
    rootless: Option<String>,
    /// Accepted for runc compatibility (checkpoint/restore are not supported)
    #[arg(long, hide = true)]
    criu: Option<String>,
    /// Print the version
    #[arg(short = 'v', long, action = ArgAction::Version)]
    version: Option<bool>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a container from a bundle; it waits for `start`
    Create(CreateArgs),
    /// Start a created container
    Start(IdArg),
    /// Print a container's OCI state
    State(IdArg),
    /// Send a signal to a container's init (or every process with --all)
    Kill(KillArgs),
    /// Delete a container
    Delete(DeleteArgs),
    /// Create and start a container; in the foreground by default
    Run(RunArgs),
    /// Run another process in a running container
    Exec(ExecArgs),
    /// List a container's processes
    Ps(PsArgs),
    /// List containers
    List(ListArgs),
    /// Freeze every process of a container
    Pause(IdArg),
    /// Thaw a paused container
    Resume(IdArg),
    /// Print a container's events and statistics
    Events(EventsArgs),
    /// Change a container's resource limits
    Update(UpdateArgs),
    /// Write a default config.json
    Spec(SpecArgs),
    /// Print what this runtime supports (OCI features JSON)
    Features,
    /// Not supported: refused with the reason (runc's arguments accepted)
    Checkpoint(CheckpointArgs),
    /// Not supported: refused with the reason (runc's arguments accepted)
    Restore(RestoreArgs),
    /// Print a container's audit log (the supervisor's decisions)
    Audit(AuditArgs),
    /// Policies of containers: `policy learned ID`
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Run a container's supervisor (started by `create`)
    #[command(hide = true)]
    Supervise(IdArg),
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
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

#[derive(Args, Debug)]
struct AuditArgs {
    /// Keep printing new records until the supervisor exits
    #[arg(short, long)]
    follow: bool,
    /// Container id
    id: String,
}

/// runc's checkpoint options, taken so that an engine's call gets the
/// reason rather than a usage error.
#[derive(Args, Debug)]
struct CriuArgs {
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
struct CheckpointArgs {
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
struct RestoreArgs {
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

#[derive(Args, Debug)]
struct IdArg {
    /// Container id
    id: String,
}

#[derive(Args, Debug)]
struct CreateArgs {
    /// Bundle directory (holding config.json)
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// Write the init pid to FILE
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Unix socket to receive the pty master on
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// Pass N more file descriptors (from fd 3) to the container
    #[arg(long, default_value_t = 0)]
    preserve_fds: i32,
    /// Use chroot instead of pivot_root
    #[arg(long)]
    no_pivot: bool,
    /// Accepted for runc compatibility
    #[arg(long)]
    no_new_keyring: bool,
    /// Container id
    id: String,
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    create: CreateArgs,
    /// Return after starting the container
    #[arg(short, long)]
    detach: bool,
    /// Keep the container after it exits
    #[arg(long)]
    keep: bool,
    /// Accepted for runc compatibility
    #[arg(long)]
    no_subreaper: bool,
}

#[derive(Args, Debug)]
struct KillArgs {
    /// Signal every process in the container
    #[arg(short, long)]
    all: bool,
    /// Container id
    id: String,
    /// Signal name (KILL, SIGKILL) or number
    #[arg(default_value = "SIGTERM")]
    signal: String,
}

#[derive(Args, Debug)]
struct DeleteArgs {
    /// Kill a running container first; a missing one is not an error
    #[arg(short, long)]
    force: bool,
    /// Container id
    id: String,
}

#[derive(Args, Debug)]
struct ExecArgs {
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

#[derive(Args, Debug)]
struct PsArgs {
    /// table or json (a list of pids)
    #[arg(short, long, default_value = "table")]
    format: String,
    /// Container id
    id: String,
    /// Options passed to ps(1) (default -ef)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    ps_options: Vec<String>,
}

#[derive(Args, Debug)]
struct ListArgs {
    /// table or json
    #[arg(short, long, default_value = "table")]
    format: String,
    /// Print ids only
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct EventsArgs {
    /// Print statistics once and exit
    #[arg(long)]
    stats: bool,
    /// Interval between statistics (e.g. 5s, 500ms, 1m)
    #[arg(long, default_value = "5s")]
    interval: String,
    /// Container id
    id: String,
}

#[derive(Args, Debug)]
struct UpdateArgs {
    /// JSON file (or - for stdin) with the linux resources to apply
    #[arg(short, long)]
    resources: Option<String>,
    /// Memory limit in bytes (k, m, g suffixes allowed)
    #[arg(long)]
    memory: Option<String>,
    /// Memory soft limit
    #[arg(long)]
    memory_reservation: Option<String>,
    /// Memory plus swap limit (-1 for unlimited)
    #[arg(long)]
    memory_swap: Option<String>,
    /// Maximum number of pids (-1 for unlimited)
    #[arg(long, allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    /// CPU CFS quota in microseconds (-1 for unlimited)
    #[arg(long, allow_hyphen_values = true)]
    cpu_quota: Option<i64>,
    /// CPU CFS period in microseconds
    #[arg(long)]
    cpu_period: Option<u64>,
    /// CPU shares (relative weight)
    #[arg(long)]
    cpu_share: Option<u64>,
    /// CPUs to run on (e.g. 0-1)
    #[arg(long)]
    cpuset_cpus: Option<String>,
    /// Memory nodes to use
    #[arg(long)]
    cpuset_mems: Option<String>,
    /// Block IO weight (10-1000)
    #[arg(long)]
    blkio_weight: Option<u16>,
    /// Container id
    id: String,
}

#[derive(Args, Debug)]
struct SpecArgs {
    /// Directory to write config.json in
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// Write a spec for a rootless container
    #[arg(long)]
    rootless: bool,
    /// Instead of writing a spec, print the effective spec of container ID
    /// (the bundle's spec after its policy was applied) and the policy
    #[arg(long, value_name = "ID")]
    explain: Option<String>,
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

fn create_options(a: &CreateArgs, detach: bool) -> CreateOptions {
    CreateOptions {
        id: a.id.clone(),
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
fn run(root: &Root, a: &RunArgs) -> Result<i32> {
    let id = &a.create.id;
    if a.detach {
        create(root, &create_options(&a.create, true))?;
        if let Err(e) = lifecycle::start(root, id) {
            let _ = lifecycle::delete(root, id, true);
            return Err(e.into());
        }
        return Ok(0);
    }
    foreground::become_subreaper()?;
    let container = create(root, &create_options(&a.create, false))?;
    let pid = container
        .pid()
        .map(|p| Pid::from_raw(p.as_raw()))
        .context("created container has no pid")?;
    let set = foreground::block_signals()?;
    if let Err(e) = lifecycle::start(root, id) {
        let _ = lifecycle::delete(root, id, true);
        return Err(e.into());
    }
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

/// `audit ID [--follow]`: prints `audit.log`; with --follow keeps
/// printing until the supervisor has exited and the log is drained.
fn audit(root: &Root, a: &AuditArgs) -> Result<()> {
    use std::io::Read;
    buntime::runtime::state::validate_id(&a.id)?;
    let dir = root.extra_dir(&a.id);
    if !dir.exists() {
        anyhow::bail!("container {:?} does not exist", a.id);
    }
    let path = dir.join(buntime::audit::AUDIT_FILE);
    // The previous file of a rotated log first, then the current one.
    let (old, mut file) =
        buntime::audit::open_both(&dir).with_context(|| format!("open {}", path.display()))?;
    if let Some(mut o) = old {
        let mut b = Vec::new();
        o.read_to_end(&mut b)?;
        stdout::write(&b)?;
    }
    loop {
        if file.is_none() {
            file = std::fs::File::open(&path).ok();
        }
        let mut buf = Vec::new();
        let mut rotated = false;
        if let Some(f) = file.as_mut() {
            f.read_to_end(&mut buf)?;
            if buntime::audit::replaced(f, &path) {
                // What was appended before the rename, then the new file.
                f.read_to_end(&mut buf)?;
                rotated = true;
            }
        }
        if rotated {
            // The file between, if two rotations went by; else the new one.
            file = file
                .as_ref()
                .and_then(|f| buntime::audit::missed_old(f, &path));
        }
        stdout::write(&buf)?;
        if !a.follow && !rotated {
            return Ok(());
        }
        let running = root
            .read_meta(&a.id)
            .supervisor_pid
            .is_some_and(|p| buntime::supervisor::is_ours(p, &a.id));
        if buf.is_empty() && !rotated && (!running || !dir.exists()) {
            return Ok(());
        }
        if buf.is_empty() && !rotated {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

fn dispatch(cli: &Cli) -> Result<i32> {
    // `spec` and `features` need no state root.
    match &cli.command {
        // libcontainer 0.7 can dump through CRIU but cannot restore; a
        // dump would also lose the supervisor (docs: "Checkpoint").
        Command::Checkpoint(_) => {
            return Err(RuntimeError::Unsupported {
                command: "checkpoint",
                reason: "nothing could restore it (libcontainer 0.7 has no CRIU restore), and \
                         an image would not hold the container's supervisor, a process outside \
                         it whose broker socket and proxy its processes are connected to \
                         (features: org.opencontainers.runc.checkpoint.enabled=false)",
            }
            .into())
        }
        Command::Restore(_) => {
            return Err(RuntimeError::Unsupported {
                command: "restore",
                reason: "libcontainer 0.7 has no CRIU restore",
            }
            .into())
        }
        Command::Spec(a) if a.explain.is_none() => {
            defaults::write_default_spec(&a.bundle, a.rootless)?;
            return Ok(0);
        }
        Command::Features => {
            stdout::println(&serde_json::to_string_pretty(&defaults::features())?)?;
            return Ok(0);
        }
        _ => {}
    }
    let root = Root::open(&cli.root, cli.systemd_cgroup)?;
    match &cli.command {
        Command::Create(a) => {
            create(&root, &create_options(a, true))?;
        }
        Command::Start(a) => lifecycle::start(&root, &a.id)?,
        Command::State(a) => {
            let state = lifecycle::state(&root, &a.id)?;
            stdout::println(&serde_json::to_string_pretty(&state)?)?;
        }
        Command::Kill(a) => {
            let sig = lifecycle::parse_signal(&a.signal)?;
            lifecycle::kill(&root, &a.id, sig, a.all)?;
        }
        Command::Delete(a) => lifecycle::delete(&root, &a.id, a.force)?,
        Command::Run(a) => return run(&root, a),
        Command::Exec(a) => {
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
            return Ok(exec(&root, &opts)?);
        }
        Command::Ps(a) => match Format::parse(&a.format)? {
            Format::Json => stdout::println(&serde_json::to_string(&ps::pids(&root, &a.id)?)?)?,
            Format::Table => stdout::print(&ps::table(&root, &a.id, &a.ps_options)?)?,
        },
        Command::List(a) => stdout::print(&list::list(&root, Format::parse(&a.format)?, a.quiet)?)?,
        Command::Pause(a) => lifecycle::pause(&root, &a.id)?,
        Command::Resume(a) => lifecycle::resume(&root, &a.id)?,
        Command::Events(a) => {
            let interval = parse_interval(&a.interval)?;
            buntime::runtime::events::events(
                &root,
                &a.id,
                std::time::Duration::from_secs(u64::from(interval)),
                a.stats,
            )?;
        }
        Command::Update(a) => {
            let opts = UpdateOptions {
                resources: a.resources.clone(),
                memory: a.memory.clone(),
                memory_reservation: a.memory_reservation.clone(),
                memory_swap: a.memory_swap.clone(),
                pids_limit: a.pids_limit,
                cpu_quota: a.cpu_quota,
                cpu_period: a.cpu_period,
                cpu_shares: a.cpu_share,
                cpuset_cpus: a.cpuset_cpus.clone(),
                cpuset_mems: a.cpuset_mems.clone(),
                blkio_weight: a.blkio_weight,
            };
            update::update(&root, &a.id, &opts)?;
        }
        Command::Spec(a) => {
            if let Some(id) = &a.explain {
                stdout::print(&lifecycle::explain(&root, id)?)?;
            }
        }
        Command::Features | Command::Checkpoint(_) | Command::Restore(_) => {}
        Command::Audit(a) => audit(&root, a)?,
        Command::Policy(PolicyCommand::Learned { threshold, id }) => {
            let c = buntime::learn::container::learned(&root, id, *threshold)?;
            stdout::print(&c.learned.policy.to_pretty_json())?;
            buntime::logging::say(&buntime::learn::container::summary_text(id, &c));
        }
        Command::Supervise(a) => buntime::supervisor::run(&root, &a.id)?,
    }
    Ok(0)
}

/// An error before logging is set up, in the shape of runc's.
fn say_error(format: LogFormat, msg: &str) {
    let line = runc_line(format, &tracing::Level::ERROR, "cli", msg);
    say(line.trim_end());
}

fn main() -> ExitCode {
    // A rootless container's network set-up runs as a hook of our own
    // binary (see `runtime::netns_hook`), before any CLI parsing.
    if let Some(code) = buntime::runtime::netns_hook::run_if_invoked() {
        return ExitCode::from(code);
    }
    // A re-executed sealed copy of ourselves checks itself, first thing.
    if let Err(e) = buntime::exeseal::init() {
        say_error(LogFormat::Text, &e.to_string());
        return ExitCode::from(1);
    }
    let cli = Cli::parse();
    let format = match LogFormat::parse(&cli.log_format) {
        Ok(f) => f,
        Err(msg) => {
            say_error(LogFormat::Text, &msg);
            return ExitCode::from(1);
        }
    };
    if let Err(e) = init_runc_logging(cli.log.as_deref(), format, cli.debug) {
        say_error(format, &format!("--log {:?}: {e}", cli.log));
        return ExitCode::from(1);
    }
    tracing::debug!(target: "cli", "buntime-runc started");
    match dispatch(&cli) {
        Ok(code) => ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1)),
        // `state ID | head -c1`: the reader is gone; end as runc does.
        Err(e) if stdout::is_closed(e.as_ref()) => stdout::end_quietly(),
        Err(e) => {
            // create/run/exec found that what enters the container must
            // run from a sealed copy (CVE-2019-5736): everything is undone;
            // the command starts again from one (`buntime::exeseal`).
            let e = match e.downcast::<RuntimeError>() {
                Ok(RuntimeError::Reseal(reason)) => buntime::exeseal::reexec(reason).into(),
                Ok(other) => anyhow::Error::from(other),
                Err(e) => e,
            };
            let msg = format!("{e:#}");
            // runc's convention, which engines and harnesses look for: the
            // error is a log line (`level=error msg="…"`, or JSON). Without
            // --log it goes to stderr; with --log to the file (containerd
            // shows its last error line) and the bare message to stderr.
            tracing::error!(target: "cli", "{msg}");
            if cli.log.is_some() {
                say(&msg);
            }
            ExitCode::from(1)
        }
    }
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

    #[test]
    fn flags_after_id_parse() {
        let cli = Cli::try_parse_from(["buntime-runc", "create", "job", "--bundle", "/b"])
            .expect("parse");
        match cli.command {
            Command::Create(a) => {
                assert_eq!(a.id, "job");
                assert_eq!(a.bundle, PathBuf::from("/b"));
            }
            other => panic!("wrong command {other:?}"),
        }
    }
}
