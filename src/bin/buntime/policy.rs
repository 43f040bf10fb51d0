//! `init-policy` and `policy check|explain|schema|diff|suggest`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;

use buntime::learn;
use buntime::policy::{self, check_policy, explain, PolicyFlags, Severity};
use buntime::sandbox;
use buntime::stdout;

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
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

/// `init-policy [FLAGS]`: the policy the flags make, on stdout.
pub fn init_policy(flags: &PolicyFlags) -> Result<ExitCode> {
    let cwd = std::env::current_dir().context("finding the current directory")?;
    let p = flags.to_policy(&cwd)?;
    stdout::print(&p.to_pretty_json())?;
    Ok(ExitCode::SUCCESS)
}

/// `policy ...`; `roots` is `--root`.
pub fn run(command: PolicyCommand, roots: Vec<PathBuf>) -> Result<ExitCode> {
    match command {
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
        PolicyCommand::Diff { a, b } => diff(&a, &b),
        PolicyCommand::Suggest { from_audit, base } => suggest(&from_audit, &base, roots),
    }
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
                if buntime::runtime::error::output_closed(&e) {
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

/// `policy diff A B`.
fn diff(a: &str, b: &str) -> Result<ExitCode> {
    let (pa, pb) = (learn::diff::load(a)?, learn::diff::load(b)?);
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

/// `policy suggest --from-audit ID|FILE [--base POLICY]`.
fn suggest(from_audit: &str, base: &str, roots: Vec<PathBuf>) -> Result<ExitCode> {
    let pb = learn::diff::load(base)?;
    let roots = if roots.is_empty() {
        default_roots()
    } else {
        roots
    };
    let records = buntime::runtime::learned::read_audit_of(from_audit, &roots)?;
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

/// Where `suggest` looks for an id: buntime-runc's root, `buntime run`'s,
/// and this user's `buntime run` root.
fn default_roots() -> Vec<PathBuf> {
    vec![
        PathBuf::from(buntime::runtime::DEFAULT_ROOT),
        PathBuf::from(sandbox::DEFAULT_STATE_ROOT),
        sandbox::default_state_root(),
    ]
}
