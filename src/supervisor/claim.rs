//! A pooled run's sandbox before its claim (`buntime.dev/timeout-from:
//! claim`, docs/run.md "Pool"): `resources.timeout` counts from the claim,
//! which the pooled run marks in `CLAIMED_FILE`; until then the sandbox is
//! bound by the pooled run's life, so a pooled run killed before its claim
//! (SIGKILL, the OOM killer) leaves no sandbox waiting forever.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// Where an unclaimed sandbox stands.
pub(super) enum Claim {
    /// Not claimed yet; its pooled run still lives.
    Waiting,
    /// Claimed: `resources.timeout` counts from this instant.
    Claimed(Instant),
    /// Its pooled run is gone before any claim: nobody will claim it.
    Orphaned,
}

/// The pooled run that made this sandbox (our parent: `create` spawned us
/// from it), watched through a pidfd.
pub(super) struct Unclaimed {
    owner: Option<OwnedFd>,
}

impl Unclaimed {
    /// `parent` is our parent's pid as first seen (before the handover,
    /// while `create` was still waiting on us, so it was the pooled run).
    pub(super) fn watch(parent: i32) -> Unclaimed {
        let owner = match super::pidfd_open(parent) {
            // Still our parent after the pidfd was taken: the pidfd is the
            // pooled run's, not a recycled pid's. Else it died meanwhile.
            Ok(fd) if nix::unistd::getppid().as_raw() == parent => Some(fd),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(target: "supervisor", "pidfd of the pooled run {parent}: {e}");
                None
            }
        };
        Unclaimed { owner }
    }

    /// The claim (in our working directory, the state directory), else
    /// whether the pooled run still lives.
    pub(super) fn check(&self) -> Claim {
        if let Some(at) = claimed_at(Path::new(".")) {
            return Claim::Claimed(at);
        }
        match &self.owner {
            Some(fd) if alive(fd) => Claim::Waiting,
            _ => Claim::Orphaned,
        }
    }
}

/// When the sandbox was claimed, if it was. A `claimed` that cannot be
/// read or parsed is taken as claimed now: the timeout fails closed.
fn claimed_at(state: &Path) -> Option<Instant> {
    let text = match std::fs::read_to_string(state.join(crate::statedir::CLAIMED_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(target: "supervisor", "read {}: {e}: claimed now", crate::statedir::CLAIMED_FILE);
            return Some(Instant::now());
        }
    };
    let Ok(at) = text.trim().parse::<u64>() else {
        tracing::warn!(target: "supervisor", "{} unparseable: claimed now", crate::statedir::CLAIMED_FILE);
        return Some(Instant::now());
    };
    let since = Duration::from_nanos(crate::statedir::monotonic_ns().saturating_sub(at));
    Some(
        Instant::now()
            .checked_sub(since)
            .unwrap_or_else(Instant::now),
    )
}

/// Is the process behind `pidfd` still running (its pidfd not readable)?
fn alive(pidfd: &OwnedFd) -> bool {
    let mut fd = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let r = unsafe { libc::poll(&mut fd, 1, 0) };
    // An interrupted poll says nothing: alive.
    r <= 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_that_cannot_be_read_counts_as_made_now() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(claimed_at(dir.path()).is_none(), "no file: unclaimed");
        let file = dir.path().join(crate::statedir::CLAIMED_FILE);
        std::fs::write(&file, "not a time").expect("write");
        let before = Instant::now();
        assert!(claimed_at(dir.path()).is_some_and(|at| at >= before));
        // A directory in its place cannot be read: claimed too.
        std::fs::remove_file(&file).expect("rm");
        std::fs::create_dir(&file).expect("mkdir");
        assert!(claimed_at(dir.path()).is_some());
        std::fs::remove_dir(&file).expect("rmdir");
        let past = crate::statedir::monotonic_ns().saturating_sub(2_000_000_000);
        std::fs::write(&file, past.to_string()).expect("write");
        assert!(
            claimed_at(dir.path()).is_some_and(|at| at + Duration::from_secs(1) < Instant::now())
        );
    }
}
