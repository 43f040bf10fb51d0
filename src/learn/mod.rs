//! Learn mode (`buntime run --learn`, docs/learn.md): run once, allowed
//! what it asks for, observed in the kernel path ([`observe`]); then the
//! least policy that lets the same run pass ([`generalise`]). Also the
//! policy tools built on the same comparison ([`diff`]).

pub mod container;
pub mod diff;
pub mod generalise;
pub mod observe;
pub mod proxy;
mod sock_owner;

use std::path::{Path, PathBuf};

use crate::policy::{Broker, FsPath, NetMode, Policy};
pub use generalise::{Generalise, Learned, Summary};
pub use observe::{Listener, Observed};

/// Files under one directory from which learning grants the directory.
pub const DEFAULT_THRESHOLD: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    #[error("{0}")]
    Invalid(String),
    #[error("--learn: cannot write the learned policy to {path}: {source}; what was learned is in {fallback}")]
    Write {
        path: PathBuf,
        fallback: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--learn: cannot write the learned policy to {path} ({source}) nor to {fallback}")]
    Lost {
        path: PathBuf,
        fallback: PathBuf,
        source: std::io::Error,
    },
}

/// One learned run, as `buntime run --learn` asks for it.
#[derive(Clone, Debug)]
pub struct LearnRequest {
    /// Where the learned policy goes.
    pub output: PathBuf,
    pub threshold: usize,
    /// The policy the learned one is cut from (`--policy` or the default,
    /// with the flags applied).
    pub base: Policy,
    /// What the run was, for the policy's description and the summary
    /// (`job.py`, `-- ls -l`).
    pub label: String,
    /// The command to run it again, for the summary.
    pub rerun: String,
}

/// The default output: `./<script stem>.policy.json` (a command: its name).
/// Arguments as a shell would need them (for the summary and the
/// policy's description).
pub fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn default_output(target: &str) -> PathBuf {
    let name = Path::new(target)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "learned".into());
    PathBuf::from(format!("./{name}.policy.json"))
}

/// Top-level host entries a learned run does not get: the sandbox's own
/// kernel filesystems and `/tmp`, and `/run` (the supervisor's mount point
/// `/run/buntime` cannot be made on the host's `/run`).
pub const LEARN_UNBOUND: &[&str] = &["/proc", "/sys", "/dev", "/tmp", "/run"];

/// The policy a learned run runs under: not sandboxed by filesystem or
/// network rules (every host path readable, writable and executable as
/// far as the files' modes let the sandbox's uid; the host's network),
/// but the base's deny list (credential files stay masked), its limits
/// and its kernel isolation. The broker grants nothing: nothing is left
/// to ask for.
pub fn learning_policy(base: &Policy) -> Policy {
    let mut p = base.clone();
    // `buntime run` never binds `/` itself (nor /proc, /sys, /dev, /tmp:
    // the sandbox has its own): every other top-level entry of the host.
    let top: Vec<FsPath> = std::fs::read_dir("/")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| Path::new("/").join(e.file_name()))
                .filter(|p| !LEARN_UNBOUND.iter().any(|v| p == Path::new(v)))
                .filter_map(|p| FsPath::try_from(p.to_string_lossy().into_owned()).ok())
                .collect()
        })
        .unwrap_or_default();
    for list in [
        &mut p.filesystem.read,
        &mut p.filesystem.write,
        &mut p.filesystem.exec,
    ] {
        list.extend(top.iter().cloned());
        list.sort();
        list.dedup();
    }
    p.exec.allow.clear();
    p.network.mode = NetMode::Host;
    p.network.allow.clear();
    p.network.deny.clear();
    p.broker = Broker::default();
    p
}

/// Why a learned policy is incomplete (`buntime run --learn`), if it is:
/// what the record says of itself, then the run's exit status.
pub fn incompleteness(code: i32, seen: &Observed) -> Option<String> {
    record_incompleteness(seen).or_else(|| {
        (code != 0).then(|| {
            format!("the run exited with status {code}: what it did not reach is not in the policy")
        })
    })
}

/// Why what was recorded of a run (`seen`) is not all it used, if it is
/// not: the observer never attached, its record was truncated, or the
/// audit log dropped records at its quota. Every way of learning checks
/// this first (`buntime run --learn`, `policy learned`).
pub fn record_incompleteness(seen: &Observed) -> Option<String> {
    if !seen.attached {
        Some("the observer never attached: nothing was recorded".into())
    } else if seen.truncated {
        Some(observe::truncated_why())
    } else if seen.records_dropped {
        Some("the audit log's quota was used up: hosts asked for by name after it are not in the policy".into())
    } else {
        None
    }
}

/// Whether the audit log dropped records at its quota: some of what the
/// run asked for may be missing from `records` (`Observed.records_dropped`).
pub fn records_dropped(records: &[crate::audit::AuditRecord]) -> bool {
    records.iter().any(dropped_at_quota)
}

/// An audit log's own line saying records were dropped at its quota.
pub(crate) fn dropped_at_quota(r: &crate::audit::AuditRecord) -> bool {
    r.kind == crate::audit::Kind::Audit && r.rule == crate::policy::RuleRef::AuditQuota
}

/// Learns from `seen`, writes the policy (or, when `req.output` cannot be
/// written, a file in the temporary directory, and says so) and prints the
/// summary on stderr. `Ok` holds the path written.
pub fn conclude(
    req: &LearnRequest,
    code: i32,
    seen: &Observed,
    implicit: Vec<PathBuf>,
) -> Result<PathBuf, LearnError> {
    let g = Generalise {
        base: req.base.clone(),
        threshold: req.threshold,
        home: std::env::var_os("HOME").map(PathBuf::from),
        implicit,
        proxy: seen.proxy,
    };
    let mut learned = g.learn(seen)?;
    let incomplete = incompleteness(code, seen);
    learned.policy.description = match &incomplete {
        Some(why) => format!(
            "INCOMPLETE ({why}). Learned by buntime run --learn from {}.",
            req.label
        ),
        None => format!("Learned by buntime run --learn from {}.", req.label),
    };
    let body = learned.policy.to_pretty_json();
    let written = match replace_file(&req.output, body.as_bytes()) {
        Ok(()) => Ok(req.output.clone()),
        Err(source) => {
            let dir = std::env::temp_dir();
            let stem = format!("buntime-learned-{}", std::process::id());
            match create_new(&dir, &stem, ".policy.json", body.as_bytes()) {
                Ok(fallback) => Err(LearnError::Write {
                    path: req.output.clone(),
                    fallback,
                    source,
                }),
                Err(_) => Err(LearnError::Lost {
                    path: req.output.clone(),
                    fallback: dir.join(format!("{stem}.policy.json")),
                    source,
                }),
            }
        }
    };
    let shown = match &written {
        Ok(p) => p.clone(),
        Err(LearnError::Write { fallback, .. }) => fallback.clone(),
        Err(_) => req.output.clone(),
    };
    crate::logging::say(&summary_text(&learned, &shown, incomplete.as_deref(), req));
    written
}

/// A new file `dir/STEM[-N]SUFFIX` holding `body`, made with `O_EXCL` and
/// `O_NOFOLLOW` (a symlink or file planted at that name is never written
/// through: the next name is taken). Returns its path.
fn create_new(dir: &Path, stem: &str, suffix: &str, body: &[u8]) -> std::io::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut last = None;
    for n in 0..16 {
        let name = match n {
            0 => format!("{stem}{suffix}"),
            n => format!("{stem}-{n}{suffix}"),
        };
        let path = dir.join(name);
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path);
        match opened {
            Ok(mut f) => {
                let done = f.write_all(body).and_then(|()| f.sync_all());
                if let Err(e) = done {
                    let _ = std::fs::remove_file(&path);
                    return Err(e);
                }
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::AlreadyExists)))
}

/// Puts `body` at `path` without following a symlink there: written to a
/// new file in the same directory ([`create_new`]), then renamed over
/// `path` (a rename replaces a symlink, never writes through it).
fn replace_file(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let stem = format!(".{}.{}", name.to_string_lossy(), std::process::id());
    let tmp = create_new(dir, &stem, ".tmp", body)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// The grouped summary printed after a learned run.
pub fn summary_text(
    l: &Learned,
    file: &Path,
    incomplete: Option<&str>,
    req: &LearnRequest,
) -> String {
    let mut out = format!(
        "buntime: learned policy for {} written to {}\n",
        req.label,
        file.display()
    );
    out.push_str(&grouped(l, incomplete));
    out.push_str("  the learned run itself was not sandboxed by filesystem or network rules (docs/learn.md)\n");
    out.push_str(&format!(
        "  review it, then: buntime run --policy {} {}",
        file.display(),
        req.rerun
    ));
    out
}

/// What a learned policy grants, one group a line, then what was asked
/// for and not granted, and notes.
pub fn grouped(l: &Learned, incomplete: Option<&str>) -> String {
    let s = &l.summary;
    let mut out = String::new();
    let line = |out: &mut String, what: &str, items: &[String]| {
        let v = if items.is_empty() {
            "none".to_string()
        } else {
            items.join(", ")
        };
        out.push_str(&format!("  {what:<15} {v}\n"));
    };
    if let Some(why) = incomplete {
        out.push_str(&format!("  INCOMPLETE: {why}\n"));
    }
    line(&mut out, "files read", &s.read);
    line(&mut out, "files written", &s.written);
    line(&mut out, "programs run", &s.programs);
    line(&mut out, "hosts reached", &s.hosts);
    let env: Vec<String> = l
        .policy
        .env
        .pass
        .iter()
        .map(|p| p.as_str().to_string())
        .collect();
    out.push_str(&format!(
        "  {:<15} not observable: the base policy's env.pass is kept ({})\n",
        "environment",
        if env.is_empty() {
            "none".to_string()
        } else {
            env.join(", ")
        }
    ));
    if !s.not_granted.is_empty() {
        let v: Vec<String> = s
            .not_granted
            .iter()
            .map(|n| format!("{} ({})", n.what, n.why))
            .collect();
        out.push_str(&format!("  asked for, not granted: {}\n", v.join(", ")));
    }
    for n in &s.notes {
        out.push_str(&format!("  note: {n}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_dropped_at_the_quota_make_the_policy_incomplete() {
        let mut seen = Observed {
            attached: true,
            ..Default::default()
        };
        assert_eq!(incompleteness(0, &seen), None);
        seen.records_dropped = true;
        let why = incompleteness(0, &seen).expect("incomplete");
        assert!(why.contains("quota"), "{why}");
    }
}
