//! buntime-runc: the OCI runtime command line, spoken the way runc speaks it,
//! because containerd's shim, conmon and the conformance suites call it so.
//!
//! The arguments are liboci-cli's (youki's) where they are runc's; the
//! commands that take more, or other forms, declare their own next to
//! their code (one file per command or group of small ones). The work is
//! done in the library: these files only map arguments to it.

mod audit;
mod create;
mod criu;
mod exec;
mod inspect;
mod lifecycle;
mod oci;
mod spec;
mod update;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use buntime::logging::{init_runc_logging, runc_line, say, LogFilter, LogFormat};
use buntime::runtime::{lifecycle as rt, Root, RuntimeError, DEFAULT_ROOT};
use buntime::stdout;
use clap::{ArgAction, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "buntime-runc",
    version,
    about = "A runc-compatible OCI runtime that runs untrusted code under a deny-by-default policy",
    disable_version_flag = true,
    mut_args(oci::words)
)]
struct Cli {
    #[command(flatten)]
    global: liboci_cli::GlobalOpts,
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
    #[command(mut_args(oci::words))]
    Create(liboci_cli::Create),
    /// Start a created container
    #[command(mut_args(oci::words))]
    Start(liboci_cli::Start),
    /// Print a container's OCI state
    #[command(mut_args(oci::words))]
    State(liboci_cli::State),
    /// Send a signal to a container's init (or every process with --all)
    Kill(lifecycle::KillArgs),
    /// Delete a container
    #[command(mut_args(oci::words))]
    Delete(liboci_cli::Delete),
    /// Create and start a container; in the foreground by default
    #[command(mut_args(oci::words))]
    Run(liboci_cli::Run),
    /// Run another process in a running container
    Exec(exec::ExecArgs),
    /// List a container's processes
    #[command(mut_args(oci::words))]
    Ps(liboci_cli::Ps),
    /// List containers
    List(inspect::ListArgs),
    /// Freeze every process of a container
    #[command(mut_args(oci::words))]
    Pause(liboci_cli::Pause),
    /// Thaw a paused container
    #[command(mut_args(oci::words))]
    Resume(liboci_cli::Resume),
    /// Print a container's events and statistics
    Events(inspect::EventsArgs),
    /// Change a container's resource limits
    Update(update::UpdateArgs),
    /// Write a default config.json
    #[command(mut_args(oci::spec_words))]
    Spec(spec::SpecArgs),
    /// Print what this runtime supports (OCI features JSON)
    Features(liboci_cli::Features),
    /// Not supported: refused with the reason (runc's arguments accepted)
    Checkpoint(criu::CheckpointArgs),
    /// Not supported: refused with the reason (runc's arguments accepted)
    Restore(criu::RestoreArgs),
    /// Print a container's audit log (the supervisor's decisions)
    Audit(audit::AuditArgs),
    /// Policies of containers: `policy learned ID`
    #[command(subcommand)]
    Policy(audit::PolicyCommand),
    /// Run a container's supervisor (started by `create`)
    #[command(hide = true)]
    Supervise(IdArg),
}

#[derive(clap::Args, Debug)]
struct IdArg {
    /// Container id
    id: String,
}

/// The commands that need no state root; `None` for the others.
fn dispatch_rootless(command: &Command) -> Option<Result<i32>> {
    let done = match command {
        Command::Checkpoint(_) => Err(criu::checkpoint().into()),
        Command::Restore(_) => Err(criu::restore().into()),
        Command::Spec(a) if a.explain.is_none() => spec::write(&a.oci),
        Command::Features(_) => spec::features(),
        _ => return None,
    };
    Some(done.map(|()| 0))
}

/// Runs the command; returns the exit code.
fn dispatch(cli: &Cli) -> Result<i32> {
    if let Some(done) = dispatch_rootless(&cli.command) {
        return done;
    }
    let dir = cli
        .global
        .root
        .as_deref()
        .unwrap_or(Path::new(DEFAULT_ROOT));
    let root = Root::open(dir, cli.global.systemd_cgroup)?;
    match &cli.command {
        Command::Create(a) => create::run_create(&root, a)?,
        Command::Start(a) => rt::start(&root, &a.container_id)?,
        Command::State(a) => lifecycle::state(&root, &a.container_id)?,
        Command::Kill(a) => lifecycle::kill(&root, a)?,
        Command::Delete(a) => rt::delete(&root, &a.container_id, a.force)?,
        Command::Run(a) => return create::run_run(&root, a),
        Command::Exec(a) => return exec::run(&root, a),
        Command::Ps(a) => inspect::ps(&root, a)?,
        Command::List(a) => inspect::list(&root, a)?,
        Command::Pause(a) => rt::pause(&root, &a.container_id)?,
        Command::Resume(a) => rt::resume(&root, &a.container_id)?,
        Command::Events(a) => inspect::events(&root, a)?,
        Command::Update(a) => update::run(&root, a)?,
        Command::Spec(a) => {
            if let Some(id) = &a.explain {
                spec::explain(&root, id)?;
            }
        }
        Command::Features(_) | Command::Checkpoint(_) | Command::Restore(_) => {}
        Command::Audit(a) => audit::audit(&root, a)?,
        Command::Policy(c) => audit::policy(&root, c)?,
        Command::Supervise(a) => buntime::supervisor::run(&root.state_dir(&a.id), &a.id)?,
    }
    Ok(0)
}

/// An error before logging is set up, in the shape of runc's.
fn say_error(format: LogFormat, msg: &str) {
    let line = runc_line(format, &tracing::Level::ERROR, "cli", msg);
    say(line.trim_end());
}

/// Reports a command's error the way runc does; the exit code.
fn report(cli: &Cli, e: anyhow::Error) -> ExitCode {
    // `state ID | head -c1`: the reader is gone; end as runc does.
    if buntime::runtime::error::output_closed(e.as_ref()) {
        stdout::end_quietly();
    }
    // create/run/exec found that what enters the container must run from
    // a sealed copy (CVE-2019-5736): everything is undone; the command
    // starts again from one (`buntime::exeseal`).
    let e = match e.downcast::<RuntimeError>() {
        Ok(RuntimeError::Reseal(reason)) => buntime::exeseal::reexec(reason).into(),
        Ok(other) => anyhow::Error::from(other),
        Err(e) => e,
    };
    let msg = format!("{e:#}");
    // runc's convention, which engines and harnesses look for: the error
    // is a log line (`level=error msg="…"`, or JSON). Without --log it
    // goes to stderr; with --log to the file (containerd shows its last
    // error line) and the bare message to stderr.
    tracing::error!(target: "cli", "{msg}");
    if cli.global.log.is_some() {
        say(&msg);
    }
    ExitCode::from(1)
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
    let format = match LogFormat::parse(cli.global.log_format.as_deref().unwrap_or("text")) {
        Ok(f) => f,
        Err(msg) => {
            say_error(LogFormat::Text, &msg);
            return ExitCode::from(1);
        }
    };
    let log = cli.global.log.as_deref();
    if let Err(e) = init_runc_logging(
        log,
        format,
        LogFilter::Runc {
            debug: cli.global.debug,
        },
    ) {
        say_error(format, &format!("--log {:?}: {e}", cli.global.log));
        return ExitCode::from(1);
    }
    tracing::debug!(target: "cli", "buntime-runc started");
    match dispatch(&cli) {
        Ok(code) => ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1)),
        Err(e) => report(&cli, e),
    }
}

#[cfg(test)]
mod tests;
