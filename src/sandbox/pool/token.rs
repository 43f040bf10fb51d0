//! A pooled run's token: a random secret in a 0600 file next to its
//! socket (`<pid>.token`), which CLAIM and DRAIN must carry. The socket's
//! peer checks cannot see an LSM label or a Landlock domain (and Landlock
//! does not govern connect() to a pathname socket), but reading the token
//! needs read access to the state root, which Landlock does enforce.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The token's length on the wire (hex digits of 16 random bytes).
pub const TOKEN_LEN: usize = 32;

/// Where the token of the pooled run listening at `socket` is.
pub fn path_of(socket: &Path) -> PathBuf {
    socket.with_extension("token")
}

/// A fresh token, written (0600, not replacing anything) next to `socket`.
pub fn create(socket: &Path) -> std::io::Result<[u8; TOKEN_LEN]> {
    let mut raw = [0u8; TOKEN_LEN / 2];
    random(&mut raw)?;
    let mut token = [0u8; TOKEN_LEN];
    for (i, b) in raw.iter().enumerate() {
        token[2 * i..2 * i + 2].copy_from_slice(format!("{b:02x}").as_bytes());
    }
    let path = path_of(socket);
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(&token)?;
    Ok(token)
}

/// The token of the pooled run at `socket`, as the client reads it.
pub fn read(socket: &Path) -> std::io::Result<[u8; TOKEN_LEN]> {
    let got = std::fs::read(path_of(socket))?;
    got.try_into()
        .map_err(|_| std::io::Error::other("a token of the wrong length"))
}

/// `a == b` in time independent of where they differ.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `buf` filled from getrandom(2).
fn random(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
            continue;
        }
        done += n as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_private_random_and_compared_whole() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("1.sock");
        let a = create(&sock).unwrap();
        assert_eq!(read(&sock).unwrap(), a);
        let mode = std::fs::metadata(path_of(&sock)).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        let b = create(&sock).unwrap();
        assert_ne!(a, b);
        assert!(same(&a, &a) && !same(&a, &b) && !same(&a, &a[..31]));
    }
}
