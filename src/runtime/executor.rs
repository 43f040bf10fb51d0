//! What runs inside the container right before exec, for init and for
//! processes started by `exec` alike.
//!
//! The container's seccomp profiles arrive precompiled (`seccomp_bpf`):
//! the bundle's, when libcontainer was not left to apply it, and the
//! policy's, stacked on it (the kernel then allows only what both allow).
//! They load here, last before exec, for init and exec'd processes alike
//! (libcontainer drops `linux.seccomp` for exec'd processes; a profile it
//! kept for init is applied here to exec'd processes from the spec; one
//! with a notify action, a learning container's observing profile, goes
//! last and its listener fd to `exec`: `exec_learn`). This runs after
//! capabilities were dropped, so without CAP_SYS_ADMIN it sets
//! no_new_privs first (the kernel requires one or the other).
//!
//! Landlock (the policy's filesystem and TCP rules) is applied here too,
//! before seccomp, so that no seccomp profile can refuse its syscalls. An
//! exec the rules refuse fails naming the policy and the rule (`refusal`).

use std::ffi::CString;

use libcontainer::oci_spec::runtime::{LinuxSeccomp, Spec};
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

use super::refusal;
use super::seccomp_bpf::Program;
use crate::landlock::LandlockPlan;

/// Our libcontainer executor.
#[derive(Clone, Default)]
pub struct BuntimeExecutor {
    /// A profile libcontainer applies to init but not to exec'd processes
    /// (one with a notify action): applied here for those (None for init).
    pub tenant_seccomp: Option<LinuxSeccomp>,
    /// The policy's Landlock rules, applied to every process.
    pub landlock: Option<LandlockPlan>,
    /// Precompiled seccomp programs, loaded in order.
    pub programs: Vec<Program>,
    /// The policy, for errors saying which rule refused.
    pub policy: refusal::PolicyRef,
    /// A learning container's exec: where the observing filter's listener
    /// fd goes (`exec_learn`). Without it a notify profile is refused.
    pub learn_channel: Option<std::os::fd::RawFd>,
}

impl BuntimeExecutor {
    /// The executor for a container's init process.
    pub fn for_init(
        landlock: Option<LandlockPlan>,
        programs: Vec<Program>,
        policy: refusal::PolicyRef,
    ) -> Self {
        Self {
            tenant_seccomp: None,
            landlock,
            programs,
            policy,
            learn_channel: None,
        }
    }

    /// The executor for a process exec'd into a container whose effective
    /// spec (as given to libcontainer) is `spec`.
    pub fn for_exec(
        spec: &Spec,
        landlock: Option<LandlockPlan>,
        programs: Vec<Program>,
        policy: refusal::PolicyRef,
    ) -> Self {
        Self {
            tenant_seccomp: spec.linux().as_ref().and_then(|l| l.seccomp().clone()),
            landlock,
            programs,
            policy,
            learn_channel: None,
        }
    }

    /// libcontainer 0.7 re-points stdio that was the host's /dev/null at the
    /// container's, but opens it read-only, so writing to stdout or stderr
    /// fails with EBADF. Give fds 1 and 2 a writable /dev/null again.
    fn fix_null_stdio() -> Result<(), ExecutorError> {
        use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
        use nix::sys::stat::{fstat, Mode};
        let Ok(null) = rdev_of("/dev/null") else {
            return Ok(());
        };
        for fd in [1, 2] {
            let Ok(st) = fstat(fd) else { continue };
            let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) else {
                continue;
            };
            let read_only = OFlag::from_bits_truncate(flags) & OFlag::O_ACCMODE == OFlag::O_RDONLY;
            if st.st_rdev == null && st.st_mode & libc::S_IFMT == libc::S_IFCHR && read_only {
                let new = open(
                    "/dev/null",
                    OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| ExecutorError::Other(format!("reopen /dev/null: {e}")))?;
                nix::unistd::dup2(new, fd)
                    .map_err(|e| ExecutorError::Other(format!("dup2 /dev/null: {e}")))?;
                let _ = nix::unistd::close(new);
            }
        }
        Ok(())
    }

    /// Loading a seccomp filter needs CAP_SYS_ADMIN or no_new_privs.
    fn allow_filter_load() -> Result<(), ExecutorError> {
        let has_admin = caps::has_cap(
            None,
            caps::CapSet::Effective,
            caps::Capability::CAP_SYS_ADMIN,
        )
        .unwrap_or(false);
        if !has_admin {
            nix::sys::prctl::set_no_new_privs()
                .map_err(|e| ExecutorError::Other(format!("set no_new_privs: {e}")))?;
        }
        Ok(())
    }

    fn apply_seccomp(profile: &LinuxSeccomp) -> Result<(), ExecutorError> {
        Self::allow_filter_load()?;
        match libcontainer::seccomp::initialize_seccomp(profile) {
            Ok(None) => Ok(()),
            // A notify listener belongs to init; an exec'd process has no
            // one to hand the fd to, so refuse rather than run unconfined.
            Ok(Some(fd)) => {
                let _ = nix::unistd::close(fd);
                Err(ExecutorError::Other(
                    "seccomp profile uses SCMP_ACT_NOTIFY, not supported for exec".into(),
                ))
            }
            Err(e) => Err(ExecutorError::Other(format!("apply seccomp: {e}"))),
        }
    }
}

impl BuntimeExecutor {
    /// A learning container's observing profile (the container's, the
    /// observed calls notifying): loaded, its listener fd handed to
    /// `exec` for the supervisor (`exec_learn`). Any failure stops the
    /// process: it never runs less confined, nor unobserved.
    fn observe(&self, profile: &LinuxSeccomp) -> Result<(), ExecutorError> {
        let Some(channel) = self.learn_channel else {
            // A notify listener with no one to hand the fd to: refuse
            // rather than run unconfined.
            return Err(ExecutorError::Other(
                "seccomp profile uses SCMP_ACT_NOTIFY, not supported for exec".into(),
            ));
        };
        Self::allow_filter_load()?;
        match libcontainer::seccomp::initialize_seccomp(profile) {
            Ok(Some(fd)) => super::exec_learn::send_listener(channel, fd).map_err(|e| {
                ExecutorError::Other(format!("hand the learning filter to the observer: {e}"))
            }),
            Ok(None) => Err(ExecutorError::Other(
                "the learning profile gave no listener".into(),
            )),
            Err(e) => Err(ExecutorError::Other(format!("apply seccomp: {e}"))),
        }
    }
}

impl Executor for BuntimeExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        let result = self.confine_and_exec(spec);
        if let Err(e) = &result {
            // libcontainer has already closed its channel to the runtime by
            // now, so this is the only place the reason can still be seen
            // (podman and containerd show the container's stderr).
            eprintln!("buntime-runc: {e}");
        }
        result
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        libcontainer::workload::default::get_executor().validate(spec)
    }
}

impl BuntimeExecutor {
    fn confine_and_exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        let args = spec
            .process()
            .as_ref()
            .and_then(|p| p.args().as_ref())
            .filter(|a| !a.is_empty())
            .ok_or(ExecutorError::InvalidArg)?;
        let argv: Vec<CString> = args
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(|_| ExecutorError::Other("argument contains a NUL byte".into()))?;
        Self::fix_null_stdio()?;
        if let Some(plan) = &self.landlock {
            // Fail closed: a process the policy could not confine never runs.
            plan.apply()
                .map_err(|e| ExecutorError::Other(format!("apply landlock: {e}")))?;
        }
        let (observing, tenant) = match &self.tenant_seccomp {
            Some(p) if libcontainer::seccomp::is_notify(p) => (Some(p), None),
            other => (None, other.as_ref()),
        };
        if let Some(profile) = tenant {
            Self::apply_seccomp(profile)?;
        }
        if !self.programs.is_empty() {
            Self::allow_filter_load()?;
        }
        for p in &self.programs {
            p.install()
                .map_err(|e| ExecutorError::Other(format!("load seccomp filter: {e}")))?;
        }
        if let Some(profile) = observing {
            // Last: the container's own filters are whole before it.
            self.observe(profile)?;
        }
        if let Some(plan) = &self.landlock {
            // Not fatal: the program may never open them; a note right
            // before its own "Permission denied" says which rule it is.
            for r in refusal::unreadable_args(plan, &self.policy, args) {
                eprintln!("buntime-runc: note: {r}");
            }
        }
        let err = match nix::unistd::execvp(&argv[0], &argv) {
            Ok(never) => match never {},
            Err(e) => e,
        };
        Err(ExecutorError::Other(self.exec_error(spec, &args[0], err)))
    }

    /// The message of a failed exec: the policy and the rule when the
    /// Landlock rules are why the kernel said `EACCES`.
    fn exec_error(&self, spec: &Spec, prog: &str, err: nix::errno::Errno) -> String {
        let explained = match (&self.landlock, err) {
            (Some(plan), nix::errno::Errno::EACCES) => {
                refusal::explain_exec(plan, &self.policy.name, prog, &process_path(spec))
            }
            _ => None,
        };
        match explained {
            Some(r) => format!("{r}: {err}"),
            None => format!("exec {prog:?}: {err}"),
        }
    }
}

/// The PATH `execvp` searches: the process's own (libcontainer set the
/// environment from it).
fn process_path(spec: &Spec) -> String {
    std::env::var("PATH").unwrap_or_else(|_| crate::landlock::env_path(spec))
}

/// The device number of the device file at `path`.
fn rdev_of(path: &str) -> nix::Result<libc::dev_t> {
    nix::sys::stat::stat(path).map(|st| st.st_rdev)
}
