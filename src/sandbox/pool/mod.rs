//! A pool of ready, single-use sandboxes for `buntime run --pool`
//! (docs/run.md, "Pool").
//!
//! `buntime pool fill` starts pooled runs: each is a `buntime run` of one
//! command line, stopped before its script starts, listening on
//! `<state root>/pool/<key>/<pid>.sock`. `run --pool` with the same key
//! claims one (`claim`): it hands over its stdin, stdout and stderr and
//! gets the exit code back; the pooled run goes on exactly as a run and
//! ends. A pooled sandbox serves one claim, then is deleted.
//!
//! The key (`key`) is a hash of everything that shapes the sandbox and the
//! run, resolved, so that a claim gets exactly what a fresh run would
//! have made; the client sends it with CLAIM and the pooled run checks it.
//! CLAIM and DRAIN also carry the pooled run's token (`token`), read from
//! a 0600 file next to its socket.

pub mod claim;
mod key;
pub mod listen;
pub mod peer;
mod token;

pub use key::{key_of_call, KEY_LEN};

use std::path::{Path, PathBuf};

/// The client claims a pooled run: one byte, with its fds 0, 1, 2.
pub const CLAIM: u8 = b'C';
/// The client asks the pooled run to end unclaimed (`pool drain`).
pub const DRAIN: u8 = b'D';
/// The pooled run would take the claim: the client commits to it.
pub const ACK: u8 = b'A';
/// The client's answer to ACK: from here it waits for the exit code and
/// never falls back, so the script runs here or nowhere. Without it (EOF,
/// a client that gave up) the pooled run stays unclaimed.
pub const COMMIT: u8 = b'K';

/// Where the pooled runs of one state root listen.
pub fn pool_root(state_root: &Path) -> PathBuf {
    state_root.join("pool")
}

/// Where the pooled runs of `key` listen.
pub fn key_dir(state_root: &Path, key: &str) -> PathBuf {
    pool_root(state_root).join(key)
}

/// Makes `dir` and its parents up to the state root, private to the
/// caller.
pub fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Removes the key's directory and the pool's once empty (best effort: a
/// fill may be putting a socket there; it makes them again).
pub fn tidy(state_root: &Path, key: &str) {
    let _ = std::fs::remove_dir(key_dir(state_root, key));
    let _ = std::fs::remove_dir(pool_root(state_root));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::{RunRequest, Target};

    fn req(root: &str, cmd: &str) -> RunRequest {
        RunRequest {
            policy: Default::default(),
            origin: "test".into(),
            target: Target::Command {
                argv: vec![cmd.into()],
            },
            interpreter: None,
            state_root: PathBuf::from(root),
            ask_timeout: None,
            prompt: false,
            debug_ui: None,
            learn: None,
        }
    }

    #[test]
    fn keys_differ_by_arguments_and_are_stable() {
        let r = req("/run/x", "/bin/true");
        let a = key_of_call("a", &r).unwrap();
        assert_eq!(a, key_of_call("a", &r).unwrap());
        assert_ne!(a, key_of_call("b", &r).unwrap());
        assert_ne!(a, key_of_call("a", &req("/run/y", "/bin/true")).unwrap());
        assert_ne!(a, key_of_call("a", &req("/run/x", "/bin/false")).unwrap());
        assert_eq!(a.len(), KEY_LEN);
    }
}
