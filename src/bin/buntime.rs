//! `buntime`: the people-facing command line: `run` (one script in a
//! sandbox) and the policy tools.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use buntime::learn;
use buntime::policy::{self, check_policy, explain, PolicyFlags, Severity};
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
        command: PolicyCommand,
    },
    /// Run a script or command in a fresh sandbox, e.g.
    /// `buntime run --allow-net=github.com main.py` or
    /// `buntime run --allow-read=. -- ls -l`.
    ///
    /// `.py` runs under the Python worker, `.ts`/`.js` under the Bun
    /// worker, anything else as a command. Exits with the script's exit
    /// code (124 on timeout, 137 when killed, e.g. by the memory limit).
    Run(Box<RunArgs>),
    /// Serve the debug UI: sandboxes, live decisions, pending questions
    /// and why things were refused, in the browser, e.g.
    /// `buntime ui --listen 127.0.0.1:7437`.
    ///
    /// Listens on loopback unless told otherwise; on any other address the
    /// page needs the token printed at start.
    Ui {
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
    },
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

#[derive(clap::Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    flags: PolicyFlags,
    /// Start from this policy file instead of the default policy (the
    /// flags still apply on top).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// The interpreter: a Python (default /usr/bin/python3) for .py, a Bun
    /// binary for .ts/.js (default: the project's Bun).
    #[arg(long, value_name = "PATH")]
    interpreter: Option<PathBuf>,
    /// How long a broker `ask` waits for an answer (default 30s; with no
    /// terminal to ask, it is denied when this runs out).
    #[arg(long, value_name = "DURATION")]
    ask_timeout: Option<String>,
    /// Serve the debug UI for this run (on a free loopback port) and print
    /// its address; it answers `ask`s instead of the terminal.
    #[arg(long)]
    debug_ui: bool,
    /// Serve the debug UI on this address (implies --debug-ui).
    #[arg(long, value_name = "ADDR")]
    debug_ui_listen: Option<String>,
    /// Learn mode: run unsandboxed by filesystem and network rules,
    /// observe what it uses, and write the least policy that lets the same
    /// run pass (default ./<script>.policy.json; see docs/learn.md).
    #[arg(long, value_name = "FILE", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    learn: Option<String>,
    /// With --learn: files read under one directory from which the
    /// directory is granted instead.
    #[arg(long, value_name = "N", requires = "learn", default_value_t = buntime::learn::DEFAULT_THRESHOLD)]
    learn_threshold: usize,
    /// FILE [ARGS…], or -- COMMAND [ARGS…].
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "FILE|-- COMMAND"
    )]
    target: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Validate policy files ("-" reads standard input); exit 1 on any error.
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Summarise what a policy allows.
    Explain {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the policy JSON Schema.
    Schema,
    /// What policy B allows that policy A does not, in plain words (a
    /// shipped name such as `default`, or a file).
    Diff {
        #[arg(value_name = "A")]
        a: String,
        #[arg(value_name = "B")]
        b: String,
    },
    /// The smallest change to a policy that would have allowed the
    /// denials of an audit log: the policy on stdout, the change in words
    /// on stderr.
    Suggest {
        /// The audit log (`audit.log`, one JSON record a line), or the id
        /// of a container or `buntime run` sandbox whose log is read from
        /// its state root (`--root`, default: buntime-runc's and buntime
        /// run's).
        #[arg(long = "from-audit", value_name = "ID|FILE")]
        from_audit: String,
        /// The policy to change (default: the default policy).
        #[arg(long, value_name = "POLICY", default_value = "default")]
        base: String,
    },
}

fn read_source(file: &Path) -> Result<(String, String)> {
    if file == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading policy from standard input")?;
        Ok((s, "<stdin>".to_string()))
    } else {
        let label = file.display().to_string();
        let s = std::fs::read_to_string(file)
            .with_context(|| format!("{label}: cannot read policy"))?;
        Ok((s, label))
    }
}

/// Check each file; print findings to stderr, one "ok" line per good file
/// to stdout. Returns whether every file was free of errors.
fn check(files: &[PathBuf]) -> bool {
    let mut all_ok = true;
    for f in files {
        let (src, label) = match read_source(f) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: {e:#}");
                all_ok = false;
                continue;
            }
        };
        let (_, findings) = check_policy(&src, &label);
        let errors = findings
            .iter()
            .filter(|x| x.severity == Severity::Error)
            .count();
        for finding in &findings {
            eprintln!("{finding}");
        }
        tracing::debug!(target: "cli", file = %label, errors, findings = findings.len(), "checked policy");
        if errors == 0 {
            if let Err(e) = stdout::println(&format!("{label}: ok")) {
                if stdout::is_closed(&e) {
                    stdout::end_quietly();
                }
                all_ok = false;
            }
        } else {
            all_ok = false;
        }
    }
    all_ok
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::InitPolicy { flags } => {
            let cwd = std::env::current_dir().context("finding the current directory")?;
            let p = flags.to_policy(&cwd)?;
            stdout::print(&p.to_pretty_json())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy { command } => match command {
            PolicyCommand::Check { files } => Ok(if check(&files) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }),
            PolicyCommand::Explain { file } => {
                let (src, label) = read_source(&file)?;
                let p = policy::parse_policy(&src, &label)?;
                stdout::print(&explain(&p))?;
                Ok(ExitCode::SUCCESS)
            }
            PolicyCommand::Schema => {
                stdout::print(&policy::json_schema_text())?;
                Ok(ExitCode::SUCCESS)
            }
            PolicyCommand::Diff { a, b } => {
                let (pa, pb) = (learn::diff::load(&a)?, learn::diff::load(&b)?);
                let lines = learn::diff::diff(&pa, &pb);
                if lines.is_empty() {
                    println!("{b} allows nothing {a} does not.");
                } else {
                    println!("{b} allows what {a} does not:");
                    for l in lines {
                        println!("  {l}");
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            PolicyCommand::Suggest { from_audit, base } => {
                let pb = learn::diff::load(&base)?;
                let roots = if cli.root.is_empty() {
                    let mut r = buntime::ui::default_roots();
                    r.push(sandbox::default_state_root());
                    r
                } else {
                    cli.root.clone()
                };
                let records = learn::diff::read_audit_of(&from_audit, &roots)?;
                let (p, refused) = learn::diff::suggest(&pb, &records)?;
                print!("{}", p.to_pretty_json());
                let lines = learn::diff::diff(&pb, &p);
                if lines.is_empty() {
                    eprintln!("no change: {from_audit} has no denial this change could allow");
                } else {
                    eprintln!("the change to {base}:");
                    for l in lines {
                        eprintln!("  {l}");
                    }
                }
                for r in refused {
                    eprintln!("  asked for, not suggested: {r}");
                }
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Run(args) => run_sandbox(cli.root.last().cloned(), *args),
        Command::Ui {
            listen,
            token,
            only,
        } => {
            let roots = if cli.root.is_empty() {
                buntime::ui::default_roots()
            } else {
                cli.root
            };
            let token = token.or_else(|| std::env::var("BUNTIME_UI_TOKEN").ok());
            buntime::ui::serve(buntime::ui::UiOptions {
                listen,
                roots,
                only,
                token,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::SetupUser { user } => {
            let u = nix::unistd::User::from_name(&user)
                .with_context(|| format!("look up user {user:?}"))?
                .ok_or_else(|| anyhow::anyhow!("no user named {user:?}"))?;
            for d in sandbox::delegate::setup_user(u.uid.as_raw(), u.gid.as_raw())? {
                stdout::println(&d.to_string())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Supervise { id } => {
            let dir = cli
                .root
                .last()
                .cloned()
                .unwrap_or_else(|| PathBuf::from(sandbox::DEFAULT_STATE_ROOT));
            let root = buntime::runtime::Root::open(&dir, false)?;
            buntime::supervisor::run(&root, &id)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_sandbox(root: Option<PathBuf>, a: RunArgs) -> Result<ExitCode> {
    use std::io::IsTerminal;
    if let Some(t) = &a.ask_timeout {
        policy::TimeSpan::parse(t).map_err(|e| anyhow::anyhow!("--ask-timeout {t:?}: {e}"))?;
    }
    let cwd = std::env::current_dir().context("finding the current directory")?;
    let mut flags = a.flags;
    let origin = match &a.policy {
        Some(file) => {
            flags.base = file.to_string_lossy().into_owned();
            format!("--policy {}", file.display())
        }
        None if flags.is_empty() => format!("{} policy", flags.base),
        None => format!("{} policy and flags", flags.base),
    };
    let mut policy = flags.to_policy(&cwd)?;
    // clap drops a leading `--`; the target is the tail of the raw
    // arguments, so look at what came right before it.
    let raw: Vec<String> = std::env::args().collect();
    let dashed = raw.len() > a.target.len() && raw[raw.len() - a.target.len() - 1] == "--";
    let target = match a.target.split_first() {
        Some(_) if dashed => sandbox::Target::Command {
            argv: a.target.clone(),
        },
        Some((first, rest)) => sandbox::Target::Script {
            path: PathBuf::from(first),
            args: rest.to_vec(),
        },
        None => anyhow::bail!("nothing to run: expected FILE or -- COMMAND"),
    };
    let learn = match &a.learn {
        Some(out) => {
            let mut base = policy.clone();
            base.resolve_relative(&cwd);
            policy = buntime::learn::learning_policy(&base);
            let words = buntime::learn::shell_words(&a.target);
            let shown = if dashed { format!("-- {words}") } else { words };
            let output = if out.is_empty() {
                let name = a.target.first();
                buntime::learn::default_output(name.map(String::as_str).unwrap_or("learned"))
            } else {
                PathBuf::from(out)
            };
            if a.learn_threshold == 0 {
                anyhow::bail!("--learn-threshold: expected a number of files >= 1");
            }
            Some(buntime::learn::LearnRequest {
                output,
                threshold: a.learn_threshold,
                base,
                label: shown.clone(),
                rerun: shown,
            })
        }
        None => None,
    };
    let implicit = learn_implicit(&target);
    let req = sandbox::RunRequest {
        policy,
        origin,
        target,
        interpreter: a.interpreter,
        state_root: root.unwrap_or_else(sandbox::default_state_root),
        ask_timeout: a.ask_timeout,
        prompt: std::io::stdin().is_terminal(),
        debug_ui: match (a.debug_ui, &a.debug_ui_listen) {
            (_, Some(addr)) => Some(
                addr.parse()
                    .map_err(|e| anyhow::anyhow!("--debug-ui-listen {addr:?}: {e}"))?,
            ),
            (true, None) => Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
            (false, None) => None,
        },
        learn: learn.is_some(),
    };
    let (code, seen) = sandbox::run_observed(req)?;
    if let (Some(l), Some(seen)) = (&learn, seen) {
        if let Err(e) = buntime::learn::conclude(l, code, &seen, implicit) {
            buntime::logging::say(&format!("error: {e}"));
            return Ok(ExitCode::from(if code == 0 {
                1
            } else {
                code.clamp(1, 255) as u8
            }));
        }
    }
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// What `buntime run` grants a run by itself, left out of a learned
/// policy: the worker files and the script's directory.
fn learn_implicit(target: &sandbox::Target) -> Vec<PathBuf> {
    // The supervisor's sockets are at /run/buntime in every sandbox.
    let mut v = vec![
        PathBuf::from(sandbox::WORKER_DIR),
        PathBuf::from("/run/buntime"),
    ];
    if let sandbox::Target::Script { path, .. } = target {
        if let Some(dir) = std::fs::canonicalize(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
        {
            v.push(dir);
        }
    }
    v
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
        Err(e) if buntime::stdout::is_closed(e.as_ref()) => buntime::stdout::end_quietly(),
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
