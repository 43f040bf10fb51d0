//! `buntime pool fill|drain`: ready, single-use sandboxes for
//! `buntime run --pool` (docs/run.md, "Pool"). A pooled run is this binary
//! re-executed (`pool serve`, hidden), in a session of its own.

use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};

use anyhow::{Context, Result};
use clap::Parser;

use buntime::sandbox;

use crate::run::{self, RunArgs};

#[derive(clap::Subcommand, Debug)]
pub enum PoolCommand {
    /// Start N pooled runs of `buntime run [FLAGS] FILE [ARGS…]` (or
    /// `-- COMMAND`) from here, each waiting for one `buntime run --pool`
    /// of exactly that command line; returns once they are ready.
    Fill(Box<FillArgs>),
    /// End every pooled run of yours (their sandboxes deleted).
    Drain,
    /// One pooled run (started by `fill`).
    #[command(hide = true)]
    Serve(ServeArgs),
}

#[derive(clap::Args, Debug)]
pub struct FillArgs {
    /// How many pooled runs to start (at most 64 a fill).
    #[arg(short = 'n', value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=MAX_FILL))]
    count: u16,
    /// A pooled run unclaimed this long ends (its sandbox deleted).
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    idle: String,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[arg(long)]
    key: String,
    #[arg(long)]
    shape: String,
    /// `fill`'s arguments, as given to it.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    fill: Vec<String>,
}

/// `fill`'s arguments parsed again in the pooled run.
#[derive(Parser, Debug)]
struct FillLine {
    #[command(flatten)]
    fill: FillArgs,
}

/// Pooled runs one `fill` may start: each holds a sandbox (processes,
/// cgroups, a supervisor) until claimed or idle.
const MAX_FILL: i64 = 64;

/// The fd `fill` passes its report pipe on (moved off at once: fd 3 is
/// the warm worker's).
const REPORT_FD: i32 = 3;

/// systemd's socket activation: the fds a process is handed. Never the
/// pooled run's (the filler's fds are not passed on).
const SOCKET_ACTIVATION_ENV: [&str; 3] = ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"];

/// Marks every fd from `first` up close-on-exec (`close_range`, Linux
/// 5.11); whether it could. Async-signal-safe.
fn cloexec_from(first: i32) -> bool {
    // SAFETY: close_range only flags descriptors of our own table.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    r == 0
}

/// `serve`'s inherited fds (but stdio) made close-on-exec, so neither the
/// sandbox nor the supervisor gets them.
fn cloexec_inherited() -> Result<()> {
    if cloexec_from(3) {
        return Ok(());
    }
    // Before close_range's flag: one by one.
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .context("listing /proc/self/fd")?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD only flags the descriptor (a closed one: EBADF).
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

pub fn run(command: PoolCommand, root: Option<PathBuf>) -> Result<ExitCode> {
    let state_root = root.clone().unwrap_or_else(sandbox::default_state_root);
    match command {
        PoolCommand::Fill(f) => fill(*f, root, state_root),
        PoolCommand::Drain => {
            let n = sandbox::pool::claim::drain(&state_root);
            buntime::logging::say(&format!("buntime: drained {n} pooled run(s)"));
            let k = sandbox::sweep_orphans(&state_root);
            if k > 0 {
                buntime::logging::say(&format!(
                    "buntime: deleted {k} sandbox(es) of killed pooled runs"
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        PoolCommand::Serve(s) => serve(s, state_root),
    }
}

/// The raw arguments after `fill`.
fn fill_tail(raw: &[String]) -> Vec<String> {
    match raw
        .windows(2)
        .position(|w| w[0] == "pool" && w[1] == "fill")
    {
        Some(i) => raw[i + 2..].to_vec(),
        None => Vec::new(),
    }
}

fn idle_of(f: &FillArgs) -> Result<std::time::Duration> {
    buntime::policy::TimeSpan::parse(&f.idle)
        .map(|t| t.as_duration())
        .map_err(|e| anyhow::anyhow!("--idle {:?}: {e}", f.idle))
}

fn fill(f: FillArgs, root: Option<PathBuf>, state_root: PathBuf) -> Result<ExitCode> {
    run::refuse_with_pool(&f.run, "pool fill")?;
    idle_of(&f)?;
    let raw: Vec<String> = std::env::args().collect();
    let dashed = run::dashed(&raw, &f.run.target);
    // Bad flags and policies are said here, before anything starts.
    run::request(&f.run, dashed, state_root.clone())?;
    let key = run::pool_key(&f.run, dashed, &state_root)?;
    let shape = sandbox::relay::Shape::of_own().encode();
    let tail = fill_tail(&raw);
    let swept = sandbox::sweep_orphans(&state_root);
    tracing::debug!(target: "cli", "pool: {swept} sandbox(es) of killed pooled runs deleted");
    let mut started = Vec::new();
    let mut unstarted = None;
    for _ in 0..f.count {
        match spawn(&root, &key, &shape, &tail) {
            Ok(s) => started.push(s),
            Err(e) => {
                unstarted = Some(e);
                break;
            }
        }
    }
    let mut ready = 0;
    for (pid, report) in started {
        match await_ready(report) {
            Ok(()) => ready += 1,
            Err(e) => buntime::logging::say(&format!("error: pooled run {pid}: {e}")),
        }
    }
    tracing::debug!(target: "cli", "pool: {ready} ready under key {key}");
    if let Some(e) = &unstarted {
        buntime::logging::say(&format!("error: {e:#}"));
    }
    if usize::from(f.count) == ready {
        return Ok(ExitCode::SUCCESS);
    }
    // The ready ones stay (`pool drain` ends them): say how many.
    buntime::logging::say(&format!(
        "buntime: {ready} of {} pooled run(s) ready",
        f.count
    ));
    Ok(ExitCode::from(1))
}

/// Starts one pooled run; its pid and the pipe it reports on.
fn spawn(
    root: &Option<PathBuf>,
    key: &str,
    shape: &str,
    tail: &[String],
) -> Result<(u32, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    // Ourselves as the supervisor is started: the sealed copy when this
    // process runs from one (its path is then no file to exec).
    let mut cmd = buntime::exeseal::self_command().context("finding own executable")?;
    if let Some(r) = root {
        cmd.arg("--root").arg(r);
    }
    cmd.args(["pool", "serve", "--key", key, "--shape", shape, "--"])
        .args(tail)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // libcontainer would hand that many more of our fds to the sandbox.
    for v in SOCKET_ACTIVATION_ENV {
        cmd.env_remove(v);
    }
    let w = write.as_raw_fd();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 || libc::dup2(w, REPORT_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Nothing of ours but stdio and the report pipe reaches the
            // pooled run, which would hold it for --idle (`serve` checks
            // again: this fails on kernels before 5.11).
            cloexec_from(REPORT_FD + 1);
            Ok(())
        });
    }
    let child = cmd.spawn().context("starting a pooled run")?;
    drop(write);
    Ok((child.id(), read))
}

/// Waits for the pooled run's `ready`, or its error.
fn await_ready(report: OwnedFd) -> Result<()> {
    let mut lines = std::io::BufReader::new(std::fs::File::from(report)).lines();
    match lines.next() {
        Some(Ok(l)) if l == "ready" => Ok(()),
        Some(Ok(l)) => Err(anyhow::anyhow!(
            "{}",
            l.strip_prefix("error: ").unwrap_or(&l)
        )),
        _ => Err(anyhow::anyhow!("ended before it was ready")),
    }
}

/// `pool serve`: one pooled run. Its stderr is /dev/null: what fails
/// before it is ready is said on the report pipe, for `fill` to print.
fn serve(s: ServeArgs, state_root: PathBuf) -> Result<ExitCode> {
    // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor; fd 3 is then free.
    let mut report = unsafe {
        let fd = libc::fcntl(REPORT_FD, libc::F_DUPFD_CLOEXEC, 10);
        if fd < 0 {
            anyhow::bail!("pool serve: no report pipe (started by `pool fill` only)");
        }
        libc::close(REPORT_FD);
        std::fs::File::from_raw_fd(fd)
    };
    let (req, key, shape, idle) = match serve_request(s, state_root) {
        Ok(r) => r,
        Err(e) => {
            // One line: `fill` reads one.
            let text = format!("{e:#}");
            let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            let _ = writeln!(report, "error: {}", line.trim_start_matches("error: "));
            return Err(e);
        }
    };
    let opts = sandbox::PoolOptions {
        key,
        shape,
        idle,
        report,
    };
    sandbox::serve_pooled(req, opts)?;
    Ok(ExitCode::SUCCESS)
}

/// What a pooled run is: its request, key, shape and idle bound.
type Served = (
    sandbox::RunRequest,
    String,
    sandbox::relay::Shape,
    std::time::Duration,
);

/// The pooled run's request and options, from `fill`'s arguments.
fn serve_request(s: ServeArgs, state_root: PathBuf) -> Result<Served> {
    cloexec_inherited()?;
    let line = FillLine::try_parse_from(std::iter::once("fill".to_string()).chain(s.fill.clone()))?;
    let dashed = run::dashed(&s.fill, &line.fill.run.target);
    let (mut req, _) = run::request(&line.fill.run, dashed, state_root)?;
    // The caller's terminal is not ours to ask on.
    req.prompt = false;
    let shape = sandbox::relay::Shape::parse(&s.shape)
        .ok_or_else(|| anyhow::anyhow!("pool serve: bad --shape"))?;
    Ok((req, s.key, shape, idle_of(&line.fill)?))
}
