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
//! The key is a hash of everything that shapes the sandbox and the run,
//! so that a claim gets exactly what a fresh run would have made.

pub mod claim;
pub mod listen;
pub mod peer;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::relay::Shape;

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

/// The key of a run: `args` is the run's arguments in a canonical form
/// (what the CLI parsed, `--pool` left out); the rest is read here: the
/// effective uid, the current directory, the whole environment, what the
/// caller's stdio are (the relay's plumbing is chosen at create), the
/// state root and this executable.
pub fn key_of_call(args: &str, state_root: &Path) -> std::io::Result<String> {
    use std::io::IsTerminal;
    use std::os::unix::ffi::OsStrExt;
    let mut h = Sha256::new();
    let mut part = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    part(&nix::unistd::geteuid().as_raw().to_le_bytes());
    part(std::env::current_dir()?.as_os_str().as_bytes());
    part(state_root.as_os_str().as_bytes());
    part(crate::exeseal::exe_path()?.as_os_str().as_bytes());
    part(args.as_bytes());
    part(Shape::of_own().encode().as_bytes());
    part(&[u8::from(std::io::stdin().is_terminal())]);
    // All of it but `_`, the shell's note of the command it ran (`time
    // buntime …` would differ from `buntime …`).
    let mut env: Vec<_> = std::env::vars_os().filter(|(k, _)| k != "_").collect();
    env.sort();
    for (k, v) in env {
        part(k.as_bytes());
        part(v.as_bytes());
    }
    let digest = h.finalize();
    Ok(digest[..16].iter().map(|b| format!("{b:02x}")).collect())
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

    #[test]
    fn keys_differ_by_arguments_and_are_stable() {
        let root = Path::new("/run/x");
        let a = key_of_call("a", root).unwrap();
        assert_eq!(a, key_of_call("a", root).unwrap());
        assert_ne!(a, key_of_call("b", root).unwrap());
        assert_ne!(a, key_of_call("a", Path::new("/run/y")).unwrap());
        assert_eq!(a.len(), 32);
    }
}
