//! Waiting for a container process in the foreground (`run`, `exec`):
//! forwarding the signals we receive to it and returning its exit code.
//!
//! libcontainer forks an intermediate process that exits, so the container
//! process is our grandchild; becoming a child subreaper makes it ours to
//! wait for.

use nix::errno::Errno;
use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::error::{Result, RuntimeError};

/// Makes this process the reaper of its orphaned descendants.
pub fn become_subreaper() -> Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes one integer argument
    // and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(RuntimeError::io(
            "become child subreaper",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// The signals we take over: everything but the ones the kernel raises for
/// our own faults, which must keep their default action.
fn forwarded_set() -> SigSet {
    let mut set = SigSet::all();
    for s in [
        Signal::SIGSEGV,
        Signal::SIGBUS,
        Signal::SIGFPE,
        Signal::SIGILL,
        Signal::SIGKILL,
        Signal::SIGSTOP,
    ] {
        set.remove(s);
    }
    set
}

/// Blocks the forwarded signals so that they queue for `wait_forward`.
/// Call after the container process was forked (it must not inherit the
/// mask) and before it can exit.
pub fn block_signals() -> Result<SigSet> {
    let set = forwarded_set();
    signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(|e| RuntimeError::Invalid(format!("block signals: {e}")))?;
    Ok(set)
}

/// The shell convention for an exit status: the code, or 128+N for signal N.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Reaps every exited child; returns the exit code of `target` if it was
/// among them.
fn reap(target: Pid) -> Result<Option<i32>> {
    let mut found = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return Ok(found),
            Ok(status) => {
                if status.pid() == Some(target) {
                    if let Some(code) = exit_code(status) {
                        found = Some(code);
                    }
                }
            }
            Err(Errno::ECHILD) => {
                return match found {
                    Some(code) => Ok(Some(code)),
                    None => Err(RuntimeError::Invalid(format!(
                        "lost track of container process {target}"
                    ))),
                }
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(RuntimeError::Invalid(format!("waitpid: {e}"))),
        }
    }
}

/// Forwards signals to `target` until it exits; returns its exit code.
/// `set` is what `block_signals` returned.
pub fn wait_forward(target: Pid, set: &SigSet) -> Result<i32> {
    // The process may already have exited before the mask was in place, in
    // which case its SIGCHLD was discarded: reap once before waiting.
    if let Some(code) = reap(target)? {
        return Ok(code);
    }
    loop {
        let sig = set
            .wait()
            .map_err(|e| RuntimeError::Invalid(format!("sigwait: {e}")))?;
        if sig == Signal::SIGCHLD {
            if let Some(code) = reap(target)? {
                return Ok(code);
            }
            continue;
        }
        match signal::kill(target, sig) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => tracing::warn!(target: "cli", "forward {sig} to {target}: {e}"),
        }
    }
}

/// Restores the signal mask (before returning to a caller that goes on).
pub fn unblock_signals(set: &SigSet) {
    let _ = signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(set), None);
}
