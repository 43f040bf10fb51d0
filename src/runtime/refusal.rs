//! Errors that say which rule refused: when the kernel refuses the
//! container's exec (or a read of a file the command line names) with
//! `EACCES` because of the policy's Landlock rules, name the policy, the
//! path and the field that would allow it, e.g.
//! `exec "/app/run.sh" refused by policy "default" (filesystem.exec does
//! not cover /app)`.
//!
//! Runs in the container right before (or after a failed) exec, with the
//! Landlock plan already applied: the plan says what the policy grants,
//! the container's own filesystem where the refused file is. Landlock does
//! not restrict `stat`, `readlink` or path walks, so locating the file
//! works whatever the plan says.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::landlock::LandlockPlan;

/// The container's policy as the executor names it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyRef {
    /// See `PolicyOrigin::name`.
    pub name: String,
    /// The supervisor may still grant a read the static rules refuse
    /// (`broker.fs_read` is not `deny`: a worker asks it), so a file the
    /// rules do not cover is not a refusal yet.
    pub brokered_reads: bool,
}

impl PolicyRef {
    pub fn new(name: String, policy: &crate::policy::Policy) -> Self {
        Self {
            name,
            brokered_reads: policy.broker.fs_read != crate::policy::BrokerRule::Deny,
        }
    }
}

/// What the process tried to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Exec,
    Read,
}

impl Access {
    /// The policy field granting it.
    fn field(self) -> &'static str {
        match self {
            Access::Exec => "filesystem.exec",
            Access::Read => "filesystem.read",
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Exec => "exec",
            Access::Read => "read",
        })
    }
}

/// A refusal the policy's rules explain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyRefusal {
    pub access: Access,
    /// As the process named it (argv[0], an argument).
    pub path: String,
    /// The policy's name (see `PolicyOrigin::name`).
    pub policy: String,
    /// The file the rules do not cover: the program itself, or the
    /// interpreter its `#!` line names.
    pub file: PathBuf,
    /// Whether `file` is the script's interpreter.
    pub interpreter: bool,
}

impl PolicyRefusal {
    /// The directory a rule would have to name (the file's own).
    pub fn dir(&self) -> &Path {
        self.file.parent().unwrap_or(&self.file)
    }
}

impl fmt::Display for PolicyRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:?} refused by policy {:?} (",
            self.access, self.path, self.policy
        )?;
        if self.interpreter {
            write!(f, "its interpreter {}: ", self.file.display())?;
        }
        write!(
            f,
            "{} does not cover {})",
            self.access.field(),
            self.dir().display()
        )
    }
}

impl std::error::Error for PolicyRefusal {}

/// Where `execvp` finds `prog`: the path itself when it has a `/`, else
/// the first directory of `path_var` holding a file of that name.
pub fn locate(prog: &str, path_var: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        return Some(PathBuf::from(prog));
    }
    path_var
        .split(':')
        .map(|d| Path::new(if d.is_empty() { "." } else { d }).join(prog))
        .find(|c| c.is_file())
}

/// The interpreter a script's `#!` line names (absolute), if any.
fn interpreter(script: &Path) -> Option<PathBuf> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut head = [0u8; 256];
    // Non-blocking, and only a regular file: a FIFO or a device named as
    // the program must not stop (or act on) the explanation.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(script)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let n = f.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = line.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let interp = line.split_whitespace().next()?;
    interp.starts_with('/').then(|| PathBuf::from(interp))
}

/// Why the kernel refused to exec `prog` (found in `path_var`), when the
/// plan is the reason: the program, or its script's interpreter, is not
/// covered by an exec rule. `None`: the rules allow both (the refusal is
/// the file's mode, a `noexec` mount, ...).
pub fn explain_exec(
    plan: &LandlockPlan,
    policy: &str,
    prog: &str,
    path_var: &str,
) -> Option<PolicyRefusal> {
    let file = std::fs::canonicalize(locate(prog, path_var)?).ok()?;
    let refusal = |file: PathBuf, interpreter: bool| PolicyRefusal {
        access: Access::Exec,
        path: prog.to_string(),
        policy: policy.to_string(),
        file,
        interpreter,
    };
    if !plan.grants_exec(&file) {
        return Some(refusal(file, false));
    }
    let interp = std::fs::canonicalize(interpreter(&file)?).ok()?;
    (!plan.grants_exec(&interp)).then(|| refusal(interp, true))
}

/// Arguments looked at by [`unreadable_args`]: a command line naming a
/// file usually does so early.
const ARGS_CHECKED: usize = 8;

/// Files the command line names (`python3 /app/main.py`) that exist as
/// regular files, cannot be opened for reading (`EACCES`) and that the
/// plan's rules do not cover: the program will fail to read them.
/// Call after the plan was applied, so the open sees what the process
/// will see. Cheap: a `stat` per argument, an `open` of existing files.
pub fn unreadable_args(
    plan: &LandlockPlan,
    policy: &PolicyRef,
    args: &[String],
) -> Vec<PolicyRefusal> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut out = Vec::new();
    if policy.brokered_reads {
        return out;
    }
    for arg in args.iter().skip(1).take(ARGS_CHECKED) {
        if arg.is_empty() || arg.starts_with('-') {
            continue;
        }
        let p = Path::new(arg);
        if !p.metadata().is_ok_and(|m| m.is_file()) {
            continue;
        }
        let open = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(p);
        let refused = matches!(&open, Err(e) if e.raw_os_error() == Some(libc::EACCES));
        let Some(file) = refused.then(|| std::fs::canonicalize(p).ok()).flatten() else {
            continue;
        };
        if !plan.grants_read(&file) {
            out.push(PolicyRefusal {
                access: Access::Read,
                path: arg.clone(),
                policy: policy.name.clone(),
                file,
                interpreter: false,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::landlock::NetPlan;
    use std::os::unix::fs::PermissionsExt;

    fn plan(read: &[&Path], exec: &[&Path]) -> LandlockPlan {
        LandlockPlan {
            read: read.iter().map(|p| p.to_path_buf()).collect(),
            write: vec![],
            exec: exec.iter().map(|p| p.to_path_buf()).collect(),
            exec_names: vec![],
            path_var: "/bin".into(),
            net: NetPlan::Unrestricted,
            filesystem: true,
            required: false,
        }
    }

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::canonicalize(p).unwrap()
    }

    /// Runs `f` on a thread; fails (rather than hangs) when it blocks.
    fn returns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .expect("blocked on a FIFO")
    }

    #[test]
    fn a_fifo_named_as_the_program_never_blocks() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("f");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        assert_eq!(returns(move || interpreter(&fifo)), None);
    }

    #[test]
    fn a_program_outside_the_exec_rules_is_named_with_its_directory() {
        let d = tempfile::tempdir().unwrap();
        let app = d.path().join("app");
        std::fs::create_dir(&app).unwrap();
        let run = script(&app, "run.sh", "#!/bin/sh\necho hi\n");
        let other = std::fs::canonicalize(d.path()).unwrap().join("bin");
        let r = explain_exec(&plan(&[], &[&other]), "default", run.to_str().unwrap(), "")
            .expect("refused by the rules");
        let app = std::fs::canonicalize(&app).unwrap();
        assert_eq!(
            r.to_string(),
            format!(
                "exec {:?} refused by policy \"default\" (filesystem.exec does not cover {})",
                run.display().to_string(),
                app.display()
            )
        );
        // Found in PATH by name, the same.
        let r = explain_exec(&plan(&[], &[&other]), "p", "run.sh", app.to_str().unwrap());
        assert_eq!(r.map(|r| r.file), Some(run.clone()));
        // Covered: not the policy's doing (when the interpreter is too).
        let sh = std::fs::canonicalize("/bin/sh").unwrap();
        assert_eq!(
            explain_exec(&plan(&[], &[&app, &sh]), "p", run.to_str().unwrap(), ""),
            None
        );
    }

    #[test]
    fn a_script_whose_interpreter_is_not_covered_names_the_interpreter() {
        let d = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(d.path()).unwrap();
        let run = script(&dir, "run.sh", "#!/bin/sh -e\necho hi\n");
        let r = explain_exec(&plan(&[], &[&dir]), "strict", run.to_str().unwrap(), "")
            .expect("interpreter refused");
        assert!(r.interpreter);
        let sh = std::fs::canonicalize("/bin/sh").unwrap();
        assert_eq!(r.file, sh);
        assert!(
            r.to_string().contains(&format!(
                "(its interpreter {}: filesystem.exec does not cover {})",
                sh.display(),
                sh.parent().unwrap().display()
            )),
            "{r}"
        );
    }

    #[test]
    fn missing_programs_are_not_explained() {
        assert_eq!(
            explain_exec(&plan(&[], &[]), "p", "/no/such/program", ""),
            None
        );
        assert_eq!(explain_exec(&plan(&[], &[]), "p", "no-such", "/bin"), None);
    }

    #[test]
    fn readable_arguments_are_not_reported() {
        let d = tempfile::tempdir().unwrap();
        let f = script(d.path(), "main.py", "print(1)\n");
        let args = vec!["python3".to_string(), f.display().to_string()];
        // Not under Landlock here: the open succeeds, nothing to report.
        let p = PolicyRef {
            name: "p".into(),
            brokered_reads: false,
        };
        assert!(unreadable_args(&plan(&[], &[]), &p, &args).is_empty());
        let r = PolicyRefusal {
            access: Access::Read,
            path: "/app/main.py".into(),
            policy: "p".into(),
            file: "/app/main.py".into(),
            interpreter: false,
        };
        assert_eq!(
            r.to_string(),
            "read \"/app/main.py\" refused by policy \"p\" (filesystem.read does not cover /app)"
        );
    }
}
