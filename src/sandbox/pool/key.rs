//! The pool key: a hash of everything that shapes the sandbox and the run,
//! resolved (docs/run.md, "Pool"), so that a claim gets exactly what a
//! fresh run would make now. It is on the client's path before every
//! `run --pool`, so it reads only cheap things: a few stats, readlinks
//! and small /proc files.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::sandbox::kind::{self, Kind};
use crate::sandbox::relay::Shape;
use crate::sandbox::{RunRequest, Target};

/// The key's length on the wire (hex digits), sent after CLAIM.
pub const KEY_LEN: usize = 32;

/// The namespaces the sandbox and its egress proxy are built from.
const NAMESPACES: [&str; 7] = ["net", "mnt", "user", "pid", "ipc", "uts", "cgroup"];
/// Linux's resource limits, RLIMIT_CPU (0) to RLIMIT_RTTIME (15).
const RLIMITS: u32 = 16;
/// The lines of /proc/self/status that shape what the run may do.
const STATUS: [&str; 10] = [
    "Umask:",
    "Groups:",
    "CapInh:",
    "CapPrm:",
    "CapEff:",
    "CapBnd:",
    "CapAmb:",
    "NoNewPrivs:",
    "Seccomp:",
    "Seccomp_filters:",
];

/// Length-prefixed parts into a SHA-256.
struct Key(Sha256);

impl Key {
    fn part(&mut self, b: &[u8]) {
        self.0.update((b.len() as u64).to_le_bytes());
        self.0.update(b);
    }

    /// What `path` is now: its canonical path, device, inode and mode;
    /// for a file (`content`) also its mtime and size.
    fn file(&mut self, path: &Path, content: bool) {
        let Ok(real) = std::fs::canonicalize(path) else {
            return self.part(b"missing");
        };
        self.part(real.as_os_str().as_bytes());
        let Ok(m) = std::fs::metadata(&real) else {
            return self.part(b"unreadable");
        };
        let mut id = vec![m.dev(), m.ino(), u64::from(m.mode())];
        if content {
            id.extend([m.mtime() as u64, m.mtime_nsec() as u64, m.size()]);
        }
        for v in id {
            self.0.update(v.to_le_bytes());
        }
    }
}

/// The key of a run of `req`: `args` is the run's arguments in a canonical
/// form (what the CLI parsed, `--pool` left out); the rest is resolved
/// here (see the module's doc and docs/run.md).
pub fn key_of_call(args: &str, req: &RunRequest) -> std::io::Result<String> {
    let mut k = Key(Sha256::new());
    let cwd = std::env::current_dir()?;
    caller(&mut k, &cwd)?;
    k.part(req.state_root.as_os_str().as_bytes());
    k.part(args.as_bytes());
    request(&mut k, req, &cwd)?;
    context(&mut k);
    let digest = k.0.finalize();
    Ok(digest[..KEY_LEN / 2]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Who calls, from where: the effective uid, the current directory, this
/// executable, what the caller's stdio are (the relay's plumbing is chosen
/// at create), and the whole environment.
fn caller(k: &mut Key, cwd: &Path) -> std::io::Result<()> {
    use std::io::IsTerminal;
    k.part(&nix::unistd::geteuid().as_raw().to_le_bytes());
    k.part(cwd.as_os_str().as_bytes());
    k.file(&crate::exeseal::exe_path()?, true);
    k.part(Shape::of_own().encode().as_bytes());
    k.part(&[u8::from(std::io::stdin().is_terminal())]);
    // All of it but `_`, the shell's note of the command it ran (`time
    // buntime …` would differ from `buntime …`).
    let mut env: Vec<_> = std::env::vars_os().filter(|(k, _)| k != "_").collect();
    env.sort();
    for (name, value) in env {
        k.part(name.as_bytes());
        k.part(value.as_bytes());
    }
    Ok(())
}

/// The request resolved: the policy as the run would use it (the file's
/// content, not its name) and what each granted path is now; the script
/// or command and the interpreter, as files.
fn request(k: &mut Key, req: &RunRequest, cwd: &Path) -> std::io::Result<()> {
    let mut policy = req.policy.clone();
    policy.resolve_relative(cwd);
    k.part(&serde_json::to_vec(&policy).map_err(std::io::Error::other)?);
    let fs = &policy.filesystem;
    for p in fs.read.iter().chain(&fs.write).chain(&fs.exec) {
        k.file(p.as_path(), false);
    }
    deny(k, &policy);
    k.part(req.origin.as_bytes());
    k.part(req.ask_timeout.as_deref().unwrap_or("").as_bytes());
    match &req.target {
        Target::Script { path, .. } => k.file(&cwd.join(path), true),
        Target::Command { argv } => {
            let first = argv.first().map(String::as_str).unwrap_or("");
            // As plan finds it now; not found, an empty path (a fresh run
            // then fails as it would).
            let found = super::super::plan::which(first, &super::super::plan::path_var());
            k.file(&PathBuf::from(found.unwrap_or_default()), true)
        }
    }
    if let Some(interp) = interpreter(req) {
        k.file(&interp, true);
    }
    workers(k, req.target.kind());
    Ok(())
}

/// The worker files a warm pooled run loaded at fill (what the sandbox
/// mounts at /opt/buntime for the run's kind): each one's name, device,
/// inode, mtime and size. A command runs cold: it reads them at its claim.
fn workers(k: &mut Key, kind: Kind) {
    let dir = match kind {
        Kind::Python => "python",
        Kind::Bun => "bun",
        Kind::Command => return,
    };
    let Ok(home) = crate::sandbox::workers::home() else {
        return k.part(b"no worker home");
    };
    k.file(&home.join("lib/libbuntime_ipc.so"), true);
    let mut files = Vec::new();
    walk(&home.join(dir), 0, &mut files);
    files.sort();
    for (path, stat) in files {
        k.part(path.as_os_str().as_bytes());
        for v in stat {
            k.0.update(v.to_le_bytes());
        }
    }
}

/// The files under `dir` with their (dev, ino, mtime, mtime_nsec, size);
/// bytecode caches left out (each follows its source).
fn walk(dir: &Path, depth: u32, out: &mut Vec<(PathBuf, [u64; 5])>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(m) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if m.is_dir() {
            if depth < 8 && e.file_name() != "__pycache__" {
                walk(&path, depth + 1, out);
            }
            continue;
        }
        let stat = [
            m.dev(),
            m.ino(),
            m.mtime() as u64,
            m.mtime_nsec() as u64,
            m.size(),
        ];
        out.push((path, stat));
    }
}

/// What the deny entries match now (the sandbox masks what they match at
/// create): for an entry, whether it exists and what it is; for a pattern
/// (`/dir/prefix*`), the sorted names it matches, each with what it is. A
/// denied file created after the fill is another key: a fresh run masks it.
fn deny(k: &mut Key, policy: &crate::policy::Policy) {
    for rule in &policy.filesystem.deny {
        let rule = crate::policy::normalize_path(rule.as_path());
        k.part(rule.as_os_str().as_bytes());
        let Some((dir, prefix)) = crate::policy::paths::deny_pattern(&rule) else {
            entry(k, &rule);
            continue;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            k.part(b"unlisted");
            continue;
        };
        let mut names: Vec<_> = entries
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n.as_bytes().starts_with(prefix))
            .collect();
        names.sort();
        for name in names {
            k.part(name.as_bytes());
            entry(k, &dir.join(name));
        }
    }
}

/// Whether `path` exists (not followed) and its type, device and inode.
fn entry(k: &mut Key, path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) => k.part(
            &[u64::from(m.mode() & libc::S_IFMT), m.dev(), m.ino()]
                .map(u64::to_le_bytes)
                .concat(),
        ),
        Err(_) => k.part(b"absent"),
    }
}

/// The host file the interpreter is (as `plan` picks it).
fn interpreter(req: &RunRequest) -> Option<PathBuf> {
    match req.target.kind() {
        Kind::Python => Some(
            req.interpreter
                .clone()
                .unwrap_or_else(|| PathBuf::from(kind::DEFAULT_PYTHON)),
        ),
        Kind::Bun => match &req.interpreter {
            Some(p) => Some(p.clone()),
            None => crate::sandbox::workers::home()
                .ok()
                .map(|h| h.join("bin/bun")),
        },
        Kind::Command => None,
    }
}

/// The caller's process context the sandbox is built from: namespaces,
/// cgroup, LSM label, resource limits, umask, groups, capabilities,
/// no_new_privs, seccomp.
fn context(k: &mut Key) {
    for ns in NAMESPACES {
        match std::fs::metadata(format!("/proc/self/ns/{ns}")) {
            Ok(m) => k.part(&[m.dev().to_le_bytes(), m.ino().to_le_bytes()].concat()),
            Err(_) => k.part(b"none"),
        }
    }
    k.part(&std::fs::read("/proc/self/cgroup").unwrap_or_default());
    // The LSM label (AppArmor, SELinux): a claim must not leave it.
    k.part(&std::fs::read("/proc/self/attr/current").unwrap_or_default());
    for r in 0..RLIMITS {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit fills the struct we own.
        unsafe { libc::getrlimit(r as _, &mut rl) };
        k.part(&[rl.rlim_cur.to_le_bytes(), rl.rlim_max.to_le_bytes()].concat());
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for line in status
        .lines()
        .filter(|l| STATUS.iter().any(|s| l.starts_with(s)))
    {
        k.part(line.as_bytes());
    }
}
