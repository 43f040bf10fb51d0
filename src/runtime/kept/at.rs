//! The directory of kept records used through its descriptor: opened with
//! `openat2(RESOLVE_NO_SYMLINKS)` (a symlink anywhere on its path is
//! refused, `Root::open` canonicalised the root), checked by `fstat` of
//! that descriptor, and every entry in it named, checked, read, written and
//! removed relative to it. What is checked is what is used: an entry is
//! moved aside under a temporary name before it is checked and removed, so
//! swapping a path component after a check changes nothing.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, openat2, renameat2, OFlag, OpenHow, RenameFlags, ResolveFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, FileStat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// The base directory of kept records, open.
pub(super) struct Base {
    fd: OwnedFd,
    path: PathBuf,
}

/// `st` is a directory of the runtime's user that nobody else may enter.
pub(super) fn private(st: &FileStat) -> bool {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    st.st_mode & libc::S_IFMT == libc::S_IFDIR && st.st_uid == me && st.st_mode & 0o077 == 0
}

fn not_private(what: &Path) -> io::Error {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    io::Error::other(format!(
        "{} is not a private directory of uid {me}",
        what.display()
    ))
}

fn owned(fd: std::os::fd::RawFd) -> OwnedFd {
    // SAFETY: a new descriptor returned by the kernel, owned from here on.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

impl Base {
    /// The base at `path`, `None` when there is none; an error when a
    /// symlink is on its path or it is not a private directory of ours (an
    /// operator should hear of a tampered base, not see it as empty).
    pub fn open(path: &Path) -> io::Result<Option<Base>> {
        let how = OpenHow::new()
            .flags(OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
            .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
        let fd = match openat2(libc::AT_FDCWD, path, how) {
            Ok(fd) => owned(fd),
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => {
                return Err(io::Error::other(format!(
                    "{}: refused (a symlink on its path, or not a directory): {e}",
                    path.display()
                )))
            }
        };
        if !private(&fstat(fd.as_raw_fd())?) {
            return Err(not_private(path));
        }
        Ok(Some(Base {
            fd,
            path: path.into(),
        }))
    }

    /// The base at `path`, created (mode 0700) when missing; one of ours
    /// that others may enter (a wide umask) is narrowed through its fd.
    pub fn create(path: &Path) -> io::Result<Base> {
        match mkdirat(None, path, Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
        let how = OpenHow::new()
            .flags(OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
            .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
        let fd = owned(openat2(libc::AT_FDCWD, path, how)?);
        let st = fstat(fd.as_raw_fd())?;
        // SAFETY: geteuid has no preconditions.
        let ours = st.st_uid == unsafe { libc::geteuid() };
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR && ours && st.st_mode & 0o077 != 0 {
            fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(0o700))?;
        }
        Base::open(path)?.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    /// Holds an exclusive lock on the base until it is dropped, so a
    /// `delete` keeping a record, its pruning and a `forget` do not
    /// interleave (list only reads and takes none).
    pub fn lock(&self) -> io::Result<()> {
        // SAFETY: flock on a descriptor we own; released when it closes.
        if unsafe { libc::flock(self.fd.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The names in the base (not `.`/`..`).
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        names_of(&self.fd)
    }

    /// `name`'s status; a symlink is not followed.
    pub fn stat(&self, name: &OsStr) -> io::Result<FileStat> {
        Ok(fstatat(
            Some(self.fd.as_raw_fd()),
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )?)
    }

    /// The directory `name`, opened without following a symlink, and its
    /// status; an error unless it is a private directory of ours.
    pub fn open_private(&self, name: &OsStr) -> io::Result<(OwnedFd, FileStat)> {
        let fd = owned(openat(
            Some(self.fd.as_raw_fd()),
            name,
            OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?);
        let st = fstat(fd.as_raw_fd())?;
        if !private(&st) {
            return Err(not_private(&self.path.join(name)));
        }
        Ok((fd, st))
    }

    /// Makes the new private directory `name` and opens it.
    pub fn mkdir(&self, name: &str) -> io::Result<OwnedFd> {
        mkdirat(
            Some(self.fd.as_raw_fd()),
            name,
            Mode::from_bits_truncate(0o700),
        )?;
        Ok(self.open_private(OsStr::new(name))?.0)
    }

    /// Renames `from` to `to` in the base, replacing `to` (a directory
    /// only when it is empty: the caller removes it first).
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let fd = Some(self.fd.as_raw_fd());
        Ok(renameat2(fd, from, fd, to, RenameFlags::empty())?)
    }

    /// Removes `name`, whatever it is, without following a symlink: it is
    /// moved aside to a temporary name first and removed there. With
    /// `private`, it is removed only when what was moved is a private
    /// directory of ours; otherwise it is moved back and refused.
    pub fn remove(&self, name: &OsStr, private: bool) -> io::Result<()> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let aside = format!(
            ".tmp-rm-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let fd = Some(self.fd.as_raw_fd());
        if self.stat(OsStr::new(&aside)).is_ok() {
            self.remove_all(&aside)?;
        }
        renameat2(fd, name, fd, aside.as_str(), RenameFlags::RENAME_NOREPLACE)?;
        if private {
            if let Err(e) = self.open_private(OsStr::new(&aside)) {
                let _ = renameat2(fd, aside.as_str(), fd, name, RenameFlags::RENAME_NOREPLACE);
                return Err(e);
            }
        }
        self.remove_all(&aside)
    }

    /// Removes `name` and all below it, relative to the base's descriptor
    /// (pathrs never follows a symlink out of it).
    fn remove_all(&self, name: &str) -> io::Result<()> {
        let st = self.stat(OsStr::new(name))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Ok(unlinkat(
                Some(self.fd.as_raw_fd()),
                name,
                UnlinkatFlags::NoRemoveDir,
            )?);
        }
        pathrs::RootRef::from_fd(self.fd.as_fd())
            .remove_all(name)
            .map_err(|e| {
                io::Error::other(format!("remove {}: {e}", self.path.join(name).display()))
            })
    }
}

/// The names in the directory `dir` (not `.`/`..`).
pub(super) fn names_of(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    let mut d = Dir::openat(
        Some(dir.as_raw_fd()),
        ".",
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut out = Vec::new();
    for e in d.iter() {
        let name = e?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            out.push(OsStr::from_bytes(&name).to_os_string());
        }
    }
    Ok(out)
}

/// Bytes of the entries of directory `dir` (none followed).
pub(super) fn bytes_of(dir: &OwnedFd) -> u64 {
    names_of(dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|n| {
            fstatat(
                Some(dir.as_raw_fd()),
                n.as_os_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .ok()
        })
        .map(|st| u64::try_from(st.st_size).unwrap_or(0))
        .sum()
}

/// The file `name` of directory `dir`: never through a symlink, never a
/// fifo's blocking open.
pub(super) fn open_file(dir: &OwnedFd, name: &str) -> io::Result<File> {
    let fd = openat(
        Some(dir.as_raw_fd()),
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    Ok(File::from(owned(fd)))
}

/// A new file `name` of directory `dir` (never an existing one, never
/// through a symlink), mode 0600.
pub(super) fn create_file(dir: &OwnedFd, name: &str) -> io::Result<File> {
    let fd = openat(
        Some(dir.as_raw_fd()),
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    Ok(File::from(owned(fd)))
}
