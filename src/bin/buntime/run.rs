//! `buntime run`: one script or command in a fresh sandbox.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};

use buntime::policy::{self, Policy, PolicyFlags};
use buntime::sandbox;

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
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
    /// Claim a ready pooled sandbox of this exact command line if there is
    /// one (`buntime pool fill`), else run as without it (docs/run.md).
    #[arg(long)]
    pub pool: bool,
    /// FILE [ARGS…], or -- COMMAND [ARGS…].
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "FILE|-- COMMAND"
    )]
    pub target: Vec<String>,
}

/// Runs the sandbox; exits with the script's code. `root`: `--root`.
pub fn run(root: Option<PathBuf>, a: RunArgs) -> Result<ExitCode> {
    let raw: Vec<String> = std::env::args().collect();
    let dashed = dashed(&raw, &a.target);
    let state_root = root.unwrap_or_else(sandbox::default_state_root);
    if a.pool {
        refuse_with_pool(&a, "--pool")?;
    }
    let (req, learn) = request(&a, dashed, state_root)?;
    if a.pool {
        if let Some(code) = claim_pooled(&a, dashed, &req)? {
            return Ok(ExitCode::from(code.clamp(0, 255) as u8));
        }
    }
    let implicit = learn_implicit(&req.target);
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

/// clap drops a leading `--`; the target is the tail of the raw
/// arguments, so look at what came right before it.
pub fn dashed(raw: &[String], target: &[String]) -> bool {
    raw.len() > target.len() && raw[raw.len() - target.len() - 1] == "--"
}

/// A pooled run of this request claimed and waited for: its exit code;
/// none to claim: `None` (a fresh run).
fn claim_pooled(a: &RunArgs, dashed: bool, req: &sandbox::RunRequest) -> Result<Option<i32>> {
    let took = std::time::Instant::now();
    let key = pool_key_of(a, dashed, req)?;
    tracing::debug!(target: "cli", "run: pool key {key} in {:?}", took.elapsed());
    match sandbox::pool::claim::claim(&req.state_root, &key) {
        Some(c) => {
            tracing::debug!(target: "cli", "run: served by pooled run {} ({})", c.pid, c.socket.display());
            Ok(Some(c.wait()?))
        }
        None => {
            tracing::debug!(target: "cli", "run: no pooled run for key {key}: a fresh sandbox");
            Ok(None)
        }
    }
}

/// The pool key of a run of `a` (`--pool` itself left out), from its
/// request resolved now (`pool fill` computes it the same way).
pub fn pool_key(a: &RunArgs, dashed: bool, state_root: &Path) -> Result<String> {
    let (req, _) = request(a, dashed, state_root.to_path_buf())?;
    pool_key_of(a, dashed, &req)
}

fn pool_key_of(a: &RunArgs, dashed: bool, req: &sandbox::RunRequest) -> Result<String> {
    let mut canonical = format!(
        "{:?}",
        RunArgs {
            pool: false,
            ..a.clone()
        }
    );
    canonical.push_str(if dashed { "|--" } else { "|" });
    sandbox::pool::key_of_call(&canonical, req).context("computing the pool key")
}

/// What a pooled run cannot do: learn, or serve a debug UI.
pub fn refuse_with_pool(a: &RunArgs, what: &str) -> Result<()> {
    if a.learn.is_some() {
        anyhow::bail!("{what} cannot be used with --learn (a learned run is never pooled)");
    }
    if a.debug_ui || a.debug_ui_listen.is_some() {
        anyhow::bail!("{what} cannot be used with --debug-ui (a pooled run serves no UI)");
    }
    Ok(())
}

/// The run's request, and in learn mode what to learn.
pub fn request(
    a: &RunArgs,
    dashed: bool,
    state_root: PathBuf,
) -> Result<(sandbox::RunRequest, Option<buntime::learn::LearnRequest>)> {
    use std::io::IsTerminal;
    if let Some(t) = &a.ask_timeout {
        policy::TimeSpan::parse(t).map_err(|e| anyhow::anyhow!("--ask-timeout {t:?}: {e}"))?;
    }
    let cwd = std::env::current_dir().context("finding the current directory")?;
    let (mut policy, origin) = policy_of(a, &cwd)?;
    let target = target_of(&a.target, dashed)?;
    let learn = match &a.learn {
        Some(out) => Some(learn_request(a, out, &mut policy, &cwd, dashed)?),
        None => None,
    };
    let req = sandbox::RunRequest {
        policy,
        origin,
        target,
        interpreter: a.interpreter.clone(),
        state_root,
        ask_timeout: a.ask_timeout.clone(),
        prompt: std::io::stdin().is_terminal(),
        debug_ui: debug_ui_addr(a.debug_ui, a.debug_ui_listen.as_deref())?,
        learn: learn.as_ref().map(|l| l.base.clone()),
    };
    Ok((req, learn))
}

/// The run's policy from `--policy` and the flags, and where it came from
/// (for the audit log and the UI).
fn policy_of(a: &RunArgs, cwd: &Path) -> Result<(Policy, String)> {
    let mut flags = a.flags.clone();
    let origin = match &a.policy {
        Some(file) => {
            flags.base = file.to_string_lossy().into_owned();
            format!("--policy {}", file.display())
        }
        None if flags.is_empty() => format!("{} policy", flags.base),
        None => format!("{} policy and flags", flags.base),
    };
    Ok((flags.to_policy(cwd)?, origin))
}

/// What to run: a script (by its extension) or, after `--`, a command.
fn target_of(target: &[String], dashed: bool) -> Result<sandbox::Target> {
    Ok(match target.split_first() {
        Some(_) if dashed => sandbox::Target::Command {
            argv: target.to_vec(),
        },
        Some((first, rest)) => sandbox::Target::Script {
            path: PathBuf::from(first),
            args: rest.to_vec(),
        },
        None => anyhow::bail!("nothing to run: expected FILE or -- COMMAND"),
    })
}

/// `--learn[=FILE]`: the run's policy becomes the learning one; what to
/// write where once it is over.
fn learn_request(
    a: &RunArgs,
    out: &str,
    policy: &mut Policy,
    cwd: &Path,
    dashed: bool,
) -> Result<buntime::learn::LearnRequest> {
    let mut base = policy.clone();
    base.resolve_relative(cwd);
    *policy = buntime::learn::learning_policy(&base);
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
    Ok(buntime::learn::LearnRequest {
        output,
        threshold: a.learn_threshold,
        base,
        label: shown.clone(),
        rerun: shown,
    })
}

/// Where `--debug-ui`/`--debug-ui-listen` serve the UI, if anywhere.
fn debug_ui_addr(on: bool, listen: Option<&str>) -> Result<Option<SocketAddr>> {
    Ok(match (on, listen) {
        (_, Some(addr)) => Some(
            addr.parse()
                .map_err(|e| anyhow::anyhow!("--debug-ui-listen {addr:?}: {e}"))?,
        ),
        (true, None) => Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        (false, None) => None,
    })
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
