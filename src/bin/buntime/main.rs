//! `buntime`: the people-facing command line: `run` (one script in a
//! sandbox), the policy tools and the debug UI. One file a command; the
//! work is done in the library.

mod policy;
mod pool;
mod run;
#[cfg(feature = "ui")]
mod ui;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use buntime::policy::PolicyFlags;
use buntime::sandbox;
use buntime::stdout;

#[derive(Parser, Debug)]
#[command(
    name = "buntime",
    version,
    about = "Run untrusted code in a deny-by-default sandbox",
    long_about = "Run untrusted code in a deny-by-default sandbox.\n\nA policy (JSON, see docs/policy.md) says what the sandbox may read, write, execute and connect to. Start with `buntime init-policy > my-policy.json`."
)]
struct Cli {
    /// State directory: of `run`'s sandboxes (default /run/buntime-run);
    /// for `ui`, the roots to look in (repeatable; default
    /// /run/buntime-runc and /run/buntime-run).
    #[arg(long, global = true, value_name = "DIR", action = clap::ArgAction::Append)]
    root: Vec<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print a policy built from permission flags, e.g.
    /// `buntime init-policy --allow-read=/data > my-policy.json`.
    InitPolicy {
        #[command(flatten)]
        flags: Box<PolicyFlags>,
    },
    /// Validate, explain or describe policies.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// Run a script or command in a fresh sandbox, e.g.
    /// `buntime run --allow-net=github.com main.py` or
    /// `buntime run --allow-read=. -- ls -l`.
    ///
    /// `.py` runs under the Python worker, `.ts`/`.js` under the Bun
    /// worker, anything else as a command. Exits with the script's exit
    /// code (124 on timeout, 137 when killed, e.g. by the memory limit).
    Run(Box<run::RunArgs>),
    /// Ready, single-use sandboxes for `buntime run --pool`, e.g.
    /// `buntime pool fill -n 4 main.py` then `buntime run --pool main.py`;
    /// `buntime pool drain` ends them.
    Pool {
        #[command(subcommand)]
        command: pool::PoolCommand,
    },
    /// Serve the debug UI: sandboxes, live decisions, pending questions
    /// and why things were refused, in the browser, e.g.
    /// `buntime ui --listen 127.0.0.1:7437`.
    ///
    /// Listens on loopback unless told otherwise; on any other address the
    /// page needs the token printed at start.
    #[cfg(feature = "ui")]
    Ui(ui::UiArgs),
    /// As root, once per boot: let USER run sandboxes rootless (hands them
    /// a cgroup subtree /buntime/user-UID in each cgroup v1 hierarchy and
    /// makes the /opt/buntime mount point).
    SetupUser {
        #[arg(value_name = "USER")]
        user: String,
    },
    /// The per-sandbox supervisor (started by `run`).
    #[command(hide = true)]
    Supervise { id: String },
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::InitPolicy { flags } => policy::init_policy(&flags),
        Command::Policy { command } => policy::run(command, cli.root),
        Command::Run(args) => run::run(cli.root.last().cloned(), *args),
        Command::Pool { command } => pool::run(command, cli.root.last().cloned()),
        #[cfg(feature = "ui")]
        Command::Ui(args) => ui::run(args, cli.root),
        Command::SetupUser { user } => setup_user(&user),
        Command::Supervise { id } => supervise(cli.root.last().cloned(), &id),
    }
}

/// `setup-user USER`: prints the cgroup directories handed to USER.
fn setup_user(user: &str) -> Result<ExitCode> {
    let u = nix::unistd::User::from_name(user)
        .with_context(|| format!("look up user {user:?}"))?
        .ok_or_else(|| anyhow::anyhow!("no user named {user:?}"))?;
    for d in sandbox::delegate::setup_user(u.uid.as_raw(), u.gid.as_raw())? {
        stdout::println(&d.to_string())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `supervise ID`: the sandbox's supervisor, under `--root` or `run`'s.
fn supervise(root: Option<PathBuf>, id: &str) -> Result<ExitCode> {
    let dir = root.unwrap_or_else(|| PathBuf::from(sandbox::DEFAULT_STATE_ROOT));
    let root = buntime::runtime::Root::open(&dir, false)?;
    buntime::supervisor::run(&root.state_dir(id), id)?;
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    // A rootless container's network set-up runs as a hook of our own
    // binary (see `runtime::netns_hook`), before any CLI parsing.
    if let Some(code) = buntime::runtime::netns_hook::run_if_invoked() {
        return ExitCode::from(code);
    }
    buntime::logging::init_cli_logging();
    // A re-executed sealed copy of ourselves checks itself, first thing.
    if let Err(e) = buntime::exeseal::init() {
        buntime::logging::say(&format!("error: {e}"));
        return ExitCode::from(1);
    }
    let cli = Cli::parse();
    tracing::debug!(target: "cli", command = ?cli.command, "starting");
    match run(cli) {
        Ok(code) => code,
        // `buntime policy schema | head`: the reader is gone.
        Err(e) if buntime::runtime::error::output_closed(e.as_ref()) => {
            buntime::stdout::end_quietly()
        }
        Err(e) => {
            // `run` found that the sandbox must be entered from a sealed
            // copy (CVE-2019-5736): everything is undone; start again from
            // one (`buntime::exeseal`).
            let e = match e.downcast::<buntime::sandbox::SandboxError>() {
                Ok(buntime::sandbox::SandboxError::Runtime(
                    buntime::runtime::RuntimeError::Reseal(reason),
                )) => buntime::exeseal::reexec(reason).into(),
                Ok(other) => anyhow::Error::from(other),
                Err(e) => e,
            };
            // Not eprintln!: with stderr closed it would panic (exit 101).
            buntime::logging::say(&format!("error: {e:#}"));
            ExitCode::from(1)
        }
    }
}
