//! Opening paths as the container sees them, from the host, without letting
//! symlinks or `..` leave the tree the decision was about.
//!
//! The container's root is `/proc/<init>/root` (its mount namespace's view:
//! tmpfs on /tmp, masks, bind mounts). The granting tree (say `/data`) is
//! opened from that root without following any symlink, and the rest of the
//! path beneath it with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`, so a
//! symlink or `..` that would climb out of `/data` fails with EXDEV.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

/// `openat2(dir, path, flags, resolve)`; mode 0644 when creating.
pub fn openat2(
    dir: &impl AsRawFd,
    path: &Path,
    flags: i32,
    resolve: u64,
) -> std::io::Result<OwnedFd> {
    let rel = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    let c = CString::new(rel.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open_how is plain data; zeroed is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    if flags & libc::O_CREAT != 0 {
        how.mode = 0o644;
    }
    how.resolve = resolve;
    // SAFETY: valid dirfd, NUL-terminated path, how of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openat2 returned a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

const NO_LINKS: u64 = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;

/// Opens container path `tree/rest`: `tree` (absolute, normalised) from
/// `root` with no symlinks at all, `rest` beneath it (symlinks followed
/// only while they stay beneath `tree`, unless `follow` is false).
///
/// Most paths hold no symlink: one `openat2` of `tree/rest` from `root`
/// with no symlink at all and no `..` (`rest` is checked for it; `tree`
/// is normalised) walks literal entries only, so what it finds lies
/// beneath `tree` as surely as the two steps below find it (a rename
/// racing the walk moves a directory the same way under both). A symlink
/// anywhere fails it with ELOOP: then the two steps decide.
pub fn open_beneath(
    root: &File,
    tree: &Path,
    rest: &Path,
    flags: i32,
    follow: bool,
) -> std::io::Result<OwnedFd> {
    // Relative, and no `..`: joined to `tree`, it names a path beneath it.
    let plain = |c| matches!(c, Component::Normal(_) | Component::CurDir);
    // The granted path itself is never created: the steps refuse a missing
    // tree (a write to a missing `/data` must not make a file of it).
    let creates_tree = rest.as_os_str().is_empty() && flags & libc::O_CREAT != 0;
    if !creates_tree && rest.components().all(plain) {
        match open_literal(root, tree, rest, flags) {
            Err(e) if follow && e.raw_os_error() == Some(libc::ELOOP) => {}
            done => return done,
        }
    }
    open_in_steps(root, tree, rest, flags, follow)
}

/// `tree/rest` from `root`, no symlink and no magic link followed.
fn open_literal(root: &File, tree: &Path, rest: &Path, flags: i32) -> std::io::Result<OwnedFd> {
    let tree_rel = tree.strip_prefix("/").unwrap_or(tree);
    if rest.as_os_str().is_empty() {
        return openat2(root, tree_rel, flags, libc::RESOLVE_IN_ROOT | NO_LINKS);
    }
    openat2(
        root,
        &tree_rel.join(rest),
        flags,
        libc::RESOLVE_IN_ROOT | NO_LINKS,
    )
}

/// The tree first (no symlinks), then the rest beneath it.
fn open_in_steps(
    root: &File,
    tree: &Path,
    rest: &Path,
    flags: i32,
    follow: bool,
) -> std::io::Result<OwnedFd> {
    let tree_rel = tree.strip_prefix("/").unwrap_or(tree);
    let dir = openat2(
        root,
        tree_rel,
        libc::O_PATH | libc::O_DIRECTORY,
        libc::RESOLVE_IN_ROOT | NO_LINKS,
    );
    // The tree may be a file itself (a grant of one file).
    let dir = match dir {
        Ok(d) => d,
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) && rest.as_os_str().is_empty() => {
            return openat2(root, tree_rel, flags, libc::RESOLVE_IN_ROOT | NO_LINKS)
        }
        Err(e) => return Err(e),
    };
    let resolve = libc::RESOLVE_BENEATH
        | if follow {
            libc::RESOLVE_NO_MAGICLINKS
        } else {
            NO_LINKS
        };
    openat2(&dir, rest, flags, resolve)
}

/// A readable description of an open failure, for DENY reasons.
pub fn describe(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EXDEV) => "path escapes the allowed tree (symlink or ..)".into(),
        Some(libc::ELOOP) => "path contains a symbolic link".into(),
        Some(libc::ENOENT) => "no such file or directory".into(),
        Some(libc::EROFS) => "read-only file system".into(),
        // The broker acts with the worker's uid and no capabilities.
        Some(libc::EACCES) => "permission denied by the file's mode to the sandbox's uid".into(),
        _ => e.to_string(),
    }
}

/// Directory entries of an open directory, sorted, each name followed by
/// a NUL byte (`/` appended to directories' names).
pub fn list_dir(dir: &OwnedFd, limit: usize) -> std::io::Result<Vec<u8>> {
    let proc_path = format!("/proc/self/fd/{}", dir.as_raw_fd());
    let mut names = Vec::new();
    for e in std::fs::read_dir(proc_path)? {
        let e = e?;
        let mut n = e.file_name().as_bytes().to_vec();
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            n.push(b'/');
        }
        names.push(n);
    }
    names.sort();
    let mut out = Vec::new();
    for n in names {
        if out.len() + n.len() + 1 > limit {
            return Err(std::io::Error::other(format!(
                "listing exceeds {limit} bytes"
            )));
        }
        out.extend_from_slice(&n);
        out.push(0);
    }
    Ok(out)
}

/// The size of `fd` when it is a regular file, `None` otherwise (FIFOs and
/// devices are never brokered: opening or reading them could block or
/// reach hardware). One fstat for both questions.
pub fn regular_size(fd: &OwnedFd) -> Option<u64> {
    nix::sys::stat::fstat(fd.as_raw_fd())
        .ok()
        .filter(|s| s.st_mode & libc::S_IFMT == libc::S_IFREG)
        .map(|s| s.st_size as u64)
}

/// Clears O_NONBLOCK (files are opened non-blocking so a FIFO cannot hang
/// the open). `opened_with`: the open's flags, so that F_SETFL needs no
/// F_GETFL first (it only looks at the status flags among them).
pub fn clear_nonblock(fd: &OwnedFd, opened_with: i32) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        libc::fcntl(
            fd.as_raw_fd(),
            libc::F_SETFL,
            opened_with & !libc::O_NONBLOCK,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    /// A root with /data (a file, a subdirectory, symlinks that stay
    /// beneath it and symlinks that leave it) and /secret outside it.
    fn planted() -> (tempfile::TempDir, File) {
        let t = tempfile::tempdir().expect("tempdir");
        let r = t.path();
        std::fs::create_dir_all(r.join("data/sub")).expect("mkdir");
        std::fs::write(r.join("data/a.txt"), "a").expect("write");
        std::fs::write(r.join("data/sub/inner.txt"), "inner").expect("write");
        std::fs::write(r.join("secret"), "secret").expect("write");
        symlink("a.txt", r.join("data/in")).expect("symlink");
        symlink("sub", r.join("data/dirlink")).expect("symlink");
        symlink("/secret", r.join("data/abs")).expect("symlink");
        symlink("../secret", r.join("data/rel")).expect("symlink");
        symlink("..", r.join("data/up")).expect("symlink");
        symlink("data", r.join("treelink")).expect("symlink");
        let root = File::open(r).expect("open root");
        (t, root)
    }

    fn read(root: &File, tree: &str, rest: &str, follow: bool) -> std::io::Result<String> {
        let fd = open_beneath(
            root,
            Path::new(tree),
            Path::new(rest),
            libc::O_RDONLY,
            follow,
        )?;
        let mut s = String::new();
        File::from(fd).read_to_string(&mut s)?;
        Ok(s)
    }

    fn errno(r: std::io::Result<String>) -> Option<i32> {
        r.err().and_then(|e| e.raw_os_error())
    }

    #[test]
    fn plain_paths_open_in_one_step_and_symlinks_beneath_still_work() {
        let (_t, root) = planted();
        assert_eq!(
            read(&root, "/data", "a.txt", true).ok().as_deref(),
            Some("a")
        );
        assert_eq!(
            read(&root, "/data", "sub/inner.txt", false).ok().as_deref(),
            Some("inner")
        );
        // A grant of one file: the tree is the file.
        assert_eq!(
            read(&root, "/data/a.txt", "", false).ok().as_deref(),
            Some("a")
        );
        // Symlinks that stay beneath the tree, last or in the middle.
        assert_eq!(read(&root, "/data", "in", true).ok().as_deref(), Some("a"));
        assert_eq!(
            read(&root, "/data", "dirlink/inner.txt", true)
                .ok()
                .as_deref(),
            Some("inner")
        );
    }

    #[test]
    fn symlinks_that_leave_the_tree_or_are_not_to_be_followed_are_refused() {
        let (_t, root) = planted();
        for link in ["abs", "rel", "up/secret"] {
            assert_eq!(
                errno(read(&root, "/data", link, true)),
                Some(libc::EXDEV),
                "{link}"
            );
            assert_eq!(
                errno(read(&root, "/data", link, false)),
                Some(libc::ELOOP),
                "{link}"
            );
        }
        assert_eq!(errno(read(&root, "/data", "in", false)), Some(libc::ELOOP));
        assert_eq!(
            errno(read(&root, "/data", "dirlink/inner.txt", false)),
            Some(libc::ELOOP)
        );
        // The granting tree itself is never reached through a symlink.
        assert_eq!(
            errno(read(&root, "/treelink", "a.txt", true)),
            Some(libc::ELOOP)
        );
        // `..` in the rest never walks out either (the steps' check).
        assert_eq!(
            errno(read(&root, "/data", "../secret", true)),
            Some(libc::EXDEV)
        );
        assert_eq!(
            errno(read(&root, "/data", "missing", true)),
            Some(libc::ENOENT)
        );
    }

    /// A write may create a file beneath a granted tree, never the granted
    /// path itself.
    #[test]
    fn the_granted_path_itself_is_never_created() {
        let (t, root) = planted();
        let create = libc::O_WRONLY | libc::O_CREAT;
        for tree in ["/out.txt", "/newdir"] {
            let r = open_beneath(&root, Path::new(tree), Path::new(""), create, true);
            assert_eq!(r.err().and_then(|e| e.raw_os_error()), Some(libc::ENOENT));
            assert!(!t.path().join(&tree[1..]).exists(), "{tree} created");
        }
        open_beneath(
            &root,
            Path::new("/data"),
            Path::new("new.txt"),
            create,
            true,
        )
        .expect("a file beneath the tree");
        assert!(t.path().join("data/new.txt").is_file());
    }
}
