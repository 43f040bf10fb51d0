//! `buntime-supervisor`: the per-container supervisor on its own
//! (docs/supervisor.md). `create` starts it from beside the runtime binary
//! (`supervisor::spawn`); the runtimes' hidden `supervise` command is the
//! same code, kept for an install without this binary.
//!
//! Why a binary of its own: a supervisor lives as long as its container,
//! one per sandbox, and every page of the binary it touches counts in its
//! RSS. This main parses its few arguments by hand and calls only
//! `buntime::supervisor::run`, so the linker leaves out clap, the runtime
//! (libcontainer), the UI and the CLI; build.rs links it static-pie (no
//! ld.so or shared libc mapped in each one; see "The supervisor's own
//! binary" in docs/performance.md for what that saves).
//!
//! Logging: runc-style lines on stderr (supervisor.log), warnings unless
//! `--debug`; under `buntime run`, `BUNTIME_LOG` when set (`log_filter`).
//!
//! Usage: `buntime-supervisor [--debug] --root ROOT [supervise] ID`. The
//! word `supervise` is what `create` passes: `supervisor::is_ours` and
//! `pgrep -f "supervise ID"` recognise a supervisor by it, whichever
//! binary runs it.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use buntime::logging::{init_runc_logging, say, LogFilter, LogFormat, TargetLevels};

/// The command line.
#[derive(Debug, PartialEq, Eq)]
struct Args {
    root: PathBuf,
    id: String,
    debug: bool,
}

const USAGE: &str = "usage: buntime-supervisor [--debug] --root ROOT [supervise] ID";

fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args, String> {
    let mut root = None;
    let mut id = None;
    let mut debug = false;
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--root") => root = Some(PathBuf::from(args.next().ok_or(USAGE)?)),
            Some("--debug") => debug = true,
            Some("supervise") if id.is_none() => {}
            Some(s) if !s.starts_with('-') && id.is_none() => id = Some(s.to_string()),
            _ => return Err(format!("unexpected argument {a:?}\n{USAGE}")),
        }
    }
    Ok(Args {
        root: root.ok_or(USAGE)?,
        id: id.ok_or(USAGE)?,
        debug,
    })
}

fn supervise(args: &Args) -> Result<(), String> {
    // `create` validated the id (libcontainer's check, which would link
    // libcontainer in here); this keeps the state directory inside the root
    // with runc's id alphabet, and "" or "." never name the root's own.
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_+.-".contains(c);
    if args.id.is_empty() || args.id.starts_with('.') || !args.id.chars().all(allowed) {
        return Err(format!("invalid container id {:?}", args.id));
    }
    // The runtime made the root before it started us: never create one.
    if !args.root.is_dir() {
        return Err(format!("--root {}: no such directory", args.root.display()));
    }
    let root = buntime::runtime::Root::open(&args.root, false).map_err(|e| e.to_string())?;
    buntime::supervisor::run(&root.state_dir(&args.id), &args.id).map_err(|e| e.to_string())
}

/// `--debug` (runc's), else `BUNTIME_LOG` when set: `buntime run` starts
/// the supervisor with its own environment, so the filter that applies to
/// `buntime` applies to its supervisor too, as when `buntime supervise` was
/// the supervisor; else runc's default (warnings of our own targets).
fn log_filter(debug: bool, buntime_log: Option<&str>) -> LogFilter {
    match buntime_log.filter(|v| !v.trim().is_empty()) {
        Some(v) if !debug => LogFilter::Targets(TargetLevels::parse(v)),
        _ => LogFilter::Runc { debug },
    }
}

fn main() -> ExitCode {
    let args = match parse(std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            say(&e);
            return ExitCode::from(2);
        }
    };
    // stderr is the container's supervisor.log: runc-style lines, as
    // `buntime-runc supervise` writes them.
    let filter = log_filter(args.debug, std::env::var("BUNTIME_LOG").ok().as_deref());
    if let Err(e) = init_runc_logging(None, LogFormat::Text, filter) {
        say(&format!("logging: {e}"));
    }
    match supervise(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(target: "supervisor", "{e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Result<Args, String> {
        parse(v.iter().map(OsString::from))
    }

    #[test]
    fn parses_both_forms() {
        let want = Args {
            root: PathBuf::from("/run/x"),
            id: "c1".into(),
            debug: false,
        };
        assert_eq!(args(&["--root", "/run/x", "supervise", "c1"]), Ok(want));
        let a = args(&["--debug", "--root", "/run/x", "c1"]).expect("parses");
        assert!(a.debug);
        assert_eq!(a.id, "c1");
    }

    #[test]
    fn follows_buntime_log_unless_debug() {
        assert_eq!(log_filter(false, None), LogFilter::Runc { debug: false });
        assert_eq!(
            log_filter(false, Some(" ")),
            LogFilter::Runc { debug: false }
        );
        assert_eq!(
            log_filter(true, Some("off")),
            LogFilter::Runc { debug: true }
        );
        assert_eq!(
            log_filter(false, Some("supervisor=debug")),
            LogFilter::Targets(TargetLevels::parse("supervisor=debug"))
        );
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        assert!(args(&["--root", "/r"]).is_err());
        assert!(args(&["c1"]).is_err());
        assert!(args(&["--root"]).is_err());
        assert!(args(&["--root", "/r", "c1", "c2"]).is_err());
        assert!(args(&["--log", "x", "--root", "/r", "c1"]).is_err());
    }

    #[test]
    fn refuses_ids_outside_the_root_or_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        for id in ["", ".", "..", "../x", "a/b", ".buntime", "a b"] {
            let a = Args {
                root: dir.path().to_path_buf(),
                id: id.into(),
                debug: false,
            };
            let e = supervise(&a).expect_err(id);
            assert!(e.contains("invalid container id"), "{id:?}: {e}");
        }
        let missing = Args {
            root: dir.path().join("missing"),
            id: "c1".into(),
            debug: false,
        };
        assert!(supervise(&missing)
            .expect_err("missing")
            .contains("no such directory"));
        assert!(!dir.path().join("missing").exists());
    }
}
