//! `buntime`: the people-facing command line. Policy tools now; `run`
//! arrives with its own issue.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use buntime::policy::{self, check_policy, explain, PolicyFlags, Severity};

#[derive(Parser, Debug)]
#[command(
    name = "buntime",
    version,
    about = "Run untrusted code in a deny-by-default sandbox",
    long_about = "Run untrusted code in a deny-by-default sandbox.\n\nA policy (JSON, see docs/policy.md) says what the sandbox may read, write, execute and connect to. Start with `buntime init-policy > my-policy.json`."
)]
struct Cli {
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
    /// Run a program in a sandbox (not available yet).
    Run {
        /// Anything; `run` is not implemented yet.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
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
            println!("{label}: ok");
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
            print!("{}", p.to_pretty_json());
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
                print!("{}", explain(&p));
                Ok(ExitCode::SUCCESS)
            }
            PolicyCommand::Schema => {
                print!("{}", policy::json_schema_text());
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Run { .. } => {
            eprintln!("buntime run is not available yet (see issue: main job)");
            Ok(ExitCode::from(2))
        }
    }
}

fn main() -> ExitCode {
    buntime::logging::init_cli_logging();
    let cli = Cli::parse();
    tracing::debug!(target: "cli", command = ?cli.command, "starting");
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
