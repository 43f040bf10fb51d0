//! Sealing the running binary against CVE-2019-5736-style overwrites.
//!
//! A process that enters a container (the init and every `exec`'d process
//! are clones of `create`/`run`/`exec`) starts with the runtime's binary as
//! its `/proc/self/exe`. If the container's code can get the kernel to run
//! that binary in the container (`#!/proc/self/exe` as the interpreter of a
//! program that `exec` runs) or catch such a process before its exec, it can
//! open `/proc/PID/exe` and, once the process is gone, reopen the magic link
//! for writing: the host's `buntime-runc` would run attacker code next time.
//!
//! [`ensure_sealed`] re-executes the process, once, from a copy of itself
//! that cannot be written, before anything enters a container. As runc 1.2
//! does (`libcontainer/exeseal`), the cheap way first: a private read-only
//! overlayfs mount with the binary's directory as its top lower layer,
//! made with `fsopen`/`fsmount` and never attached anywhere, so nobody can
//! remount it writable. The file read through it is the original's pages
//! (no copy, no memory). Where that is not possible (rootless: the host's
//! mount namespace is not ours; no overlayfs) a sealed memfd copy
//! (`F_SEAL_SEAL|SHRINK|GROW|WRITE`) is used, as runc did before 1.2 and
//! youki's CLI does.
//!
//! The re-executed process checks `/proc/self/exe` itself (sealed memfd, or
//! a read-only mount) rather than trusting its environment; the marker
//! variable only carries the original path (for finding files next to the
//! binary) and stops a loop when sealing did not take.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Set on the re-executed process to the original binary's path; removed
/// from the environment first thing, so children never see it.
pub const MARKER: &str = "_BUNTIME_SEALED_FROM";

/// The seals a memfd copy must carry.
const MEMFD_SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
/// `F_SEAL_EXEC` (Linux 6.3): the copy's mode bits cannot be changed.
const F_SEAL_EXEC: libc::c_int = 0x20;
/// `MFD_EXEC` (Linux 6.3): an executable memfd where `vm.memfd_noexec`
/// would otherwise make it non-executable.
const MFD_EXEC: libc::c_uint = 0x10;

// The new mount API (Linux 5.2); not all of it is in the libc crate.
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: libc::c_uint = 0x1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;

/// Root-owned, mode 0700: the overlay mounts, one per binary directory,
/// and `empty`, the layer under the binary's directory (overlayfs needs
/// two lower layers to be read-only; runc uses a temporary one).
const SEAL_DIR: &str = "/run/buntime-exeseal";
const EMPTY_LOWER: &str = "/run/buntime-exeseal/empty";
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("sealing the runtime binary: {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("sealing the runtime binary: re-executed from a sealed copy, but /proc/self/exe is still a writable file")]
    NotSealed,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SealError {
    let what = what.into();
    move |source| SealError::Io { what, source }
}

/// How `/proc/self/exe` is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sealed {
    /// A memfd carrying every write seal.
    Memfd,
    /// A file on a read-only mount (our private overlayfs, or a binary
    /// installed on a read-only filesystem).
    ReadOnlyMount,
}

static STATE: OnceLock<(Sealed, Option<PathBuf>)> = OnceLock::new();

/// Makes sure this process runs from a binary that cannot be written
/// through `/proc/self/exe`, re-executing it (same argv and environment)
/// when not. Call first thing in `main`, before any thread is started,
/// in the commands whose processes enter a container.
pub fn ensure_sealed() -> Result<Sealed, SealError> {
    let from = std::env::var_os(MARKER);
    if from.is_some() {
        // Single-threaded still (see above): no one reads the environment
        // concurrently.
        std::env::remove_var(MARKER);
    }
    if let Some(kind) = self_exe_sealed()? {
        let _ = STATE.set((kind, from.map(PathBuf::from)));
        return Ok(kind);
    }
    if from.is_some() {
        // We were re-executed and it did not take: fail closed, no loop.
        return Err(SealError::NotSealed);
    }
    let original = std::fs::read_link("/proc/self/exe").map_err(io("readlink /proc/self/exe"))?;
    let fd = match overlay_copy(&original) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::debug!(target: "cli", "exeseal: no private overlayfs ({e}); using a sealed memfd copy");
            memfd_copy()?
        }
    };
    reexec(&fd, &original)
}

/// How this process was sealed, if [`ensure_sealed`] ran and found it so.
pub fn sealed() -> Option<Sealed> {
    STATE.get().map(|(k, _)| *k)
}

/// The path of the binary on disk: where the sealed copy came from, else
/// `current_exe` (whose answer for a sealed copy names no real file).
pub fn exe_path() -> std::io::Result<PathBuf> {
    match STATE.get() {
        Some((_, Some(p))) => Ok(p.clone()),
        _ => std::env::current_exe(),
    }
}

/// What to execute to start another copy of ourselves (the supervisor):
/// the sealed file itself when this process is sealed, so that the child
/// is sealed too at no cost, else the binary's path.
pub fn self_for_exec() -> std::io::Result<PathBuf> {
    match sealed() {
        Some(_) => Ok(PathBuf::from("/proc/self/exe")),
        None => exe_path(),
    }
}

/// Is `/proc/self/exe` a sealed memfd or a file on a read-only mount?
pub fn self_exe_sealed() -> Result<Option<Sealed>, SealError> {
    let f = File::open("/proc/self/exe").map_err(io("open /proc/self/exe"))?;
    Ok(file_sealed(&f))
}

/// The same check for any open file.
pub fn file_sealed(f: &File) -> Option<Sealed> {
    // SAFETY: F_GET_SEALS on a descriptor we own; fails (EINVAL) on
    // anything but a memfd.
    let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    if seals >= 0 && seals & MEMFD_SEALS == MEMFD_SEALS {
        return Some(Sealed::Memfd);
    }
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: fstatvfs fills `st` on success.
    let r = unsafe { libc::fstatvfs(f.as_raw_fd(), st.as_mut_ptr()) };
    if r == 0 {
        // SAFETY: initialised by the successful call.
        let st = unsafe { st.assume_init() };
        // The mount's flags: a container cannot remount a host mount.
        if st.f_flag & libc::ST_RDONLY != 0 {
            return Some(Sealed::ReadOnlyMount);
        }
    }
    None
}

fn last_err(what: &str) -> SealError {
    SealError::Io {
        what: what.to_string(),
        source: std::io::Error::last_os_error(),
    }
}

fn cstr(b: &[u8], what: &str) -> Result<CString, SealError> {
    CString::new(b).map_err(|_| SealError::Io {
        what: format!("{what}: contains a NUL byte"),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })
}

/// overlayfs escapes in `lowerdir`: `\` and `:`.
fn escape_lower(p: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in p.as_os_str().as_bytes() {
        if b == b'\\' || b == b':' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// An `O_PATH` handle on the binary through a read-only overlayfs whose
/// only layers are the binary's directory and an empty one: no upper layer,
/// so the superblock itself is read-only and no clone of the mount
/// (`open_tree`) can be made writable, even by a process that owns its
/// mount namespace. Unlike runc, which makes a detached mount per use, the
/// mount is made once per binary directory and kept (at
/// `/run/buntime-exeseal/mnt-HASH`): the last reference to a mount going
/// away costs an RCU grace period (milliseconds) at every exit otherwise.
fn overlay_copy(original: &Path) -> Result<OwnedFd, SealError> {
    let (Some(dir), Some(name)) = (original.parent(), original.file_name()) else {
        return Err(SealError::Io {
            what: format!("{} has no directory", original.display()),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        });
    };
    if name.as_bytes().ends_with(b" (deleted)") {
        // Replaced while running: the name now means another file.
        return Err(SealError::Io {
            what: format!("{} was replaced", original.display()),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    let want = std::fs::metadata(original).map_err(io(format!("stat {}", original.display())))?;
    let target = mount_point(dir);
    if let Some(fd) = open_through(&target, name, &want) {
        return Ok(fd);
    }
    make_dirs(&target)?;
    // A stale mount (the binary was replaced since) goes first.
    if is_overlay(&target) {
        let t = cstr(target.as_os_str().as_bytes(), "mount point")?;
        // SAFETY: umount2 with a valid path.
        unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
    }
    let mnt = new_overlay(dir)?;
    let t = cstr(target.as_os_str().as_bytes(), "mount point")?;
    let empty = cstr(b"", "path")?;
    // SAFETY: move_mount of our detached mount onto a valid path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(last_err("attach the overlay"));
    }
    open_through(&target, name, &want).ok_or_else(|| SealError::Io {
        what: format!(
            "{} through the overlay is not the binary",
            name.to_string_lossy()
        ),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })
}

/// `/run/buntime-exeseal/mnt-` and 16 hex digits of the directory's hash.
fn mount_point(dir: &Path) -> PathBuf {
    use sha2::Digest;
    let h = sha2::Sha256::digest(dir.as_os_str().as_bytes());
    let hex: String = h[..8].iter().map(|b| format!("{b:02x}")).collect();
    Path::new(SEAL_DIR).join(format!("mnt-{hex}"))
}

fn is_overlay(p: &Path) -> bool {
    nix::sys::statfs::statfs(p)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::OVERLAYFS_SUPER_MAGIC)
}

/// The binary through the read-only overlay at `target`, if one is there
/// and shows the same file as the original path (same inode, size and
/// modification time: a replaced binary makes the mount stale).
fn open_through(
    target: &Path,
    name: &std::ffi::OsStr,
    want: &std::fs::Metadata,
) -> Option<OwnedFd> {
    use std::os::unix::fs::MetadataExt;
    if !is_overlay(target) {
        return None;
    }
    let p = cstr(target.join(name).as_os_str().as_bytes(), "binary").ok()?;
    // SAFETY: open with a valid path; a new descriptor or -1.
    let fd = unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh descriptor that we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let f = File::from(fd);
    let m = f.metadata().ok()?;
    let same = m.is_file()
        && m.ino() == want.ino()
        && m.size() == want.size()
        && m.mtime() == want.mtime()
        && m.mtime_nsec() == want.mtime_nsec();
    let mut vfs = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: fstatvfs fills `vfs` on success.
    let ro = unsafe { libc::fstatvfs(f.as_raw_fd(), vfs.as_mut_ptr()) } == 0
        // SAFETY: initialised by the successful call.
        && unsafe { vfs.assume_init() }.f_flag & libc::ST_RDONLY != 0;
    (same && ro).then(|| OwnedFd::from(f))
}

/// A new detached read-only overlay of `dir` over the empty directory.
fn new_overlay(dir: &Path) -> Result<OwnedFd, SealError> {
    let fs_name = cstr(b"overlay", "fs name")?;
    // SAFETY: fsopen with a valid string; returns a new descriptor or -1.
    let ctx = unsafe { libc::syscall(libc::SYS_fsopen, fs_name.as_ptr(), FSOPEN_CLOEXEC) };
    if ctx < 0 {
        return Err(last_err("fsopen overlay"));
    }
    // SAFETY: a fresh descriptor that we own from here on.
    let ctx = unsafe { OwnedFd::from_raw_fd(ctx as RawFd) };
    let mut lower = escape_lower(dir);
    lower.push(b':');
    lower.extend(escape_lower(Path::new(EMPTY_LOWER)));
    set_string(&ctx, "lowerdir", &lower)?;
    // xino would only add kernel log noise across filesystems.
    let _ = set_string(&ctx, "xino", b"off");
    // SAFETY: fsconfig CMD_CREATE on our context.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            ctx.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if r < 0 {
        return Err(last_err("fsconfig create overlay"));
    }
    // SAFETY: fsmount on our context; returns a detached mount's fd.
    let mnt = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            ctx.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        )
    };
    if mnt < 0 {
        return Err(last_err("fsmount overlay"));
    }
    // SAFETY: a fresh descriptor that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(mnt as RawFd) })
}

fn set_string(ctx: &OwnedFd, key: &str, value: &[u8]) -> Result<(), SealError> {
    let k = cstr(key.as_bytes(), key)?;
    let v = cstr(value, key)?;
    // SAFETY: fsconfig SET_STRING with two valid strings.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            ctx.as_raw_fd(),
            FSCONFIG_SET_STRING,
            k.as_ptr(),
            v.as_ptr(),
            0,
        )
    };
    if r < 0 {
        return Err(last_err(&format!("fsconfig overlay {key}")));
    }
    Ok(())
}

/// `SEAL_DIR`, `empty` and the mount point, root-owned 0700. What is in
/// `empty` could only add files next to the binary, never replace it (the
/// binary's directory is the top layer), but keep it ours anyway.
fn make_dirs(target: &Path) -> Result<(), SealError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    for d in [Path::new(SEAL_DIR), Path::new(EMPTY_LOWER), target] {
        match std::fs::DirBuilder::new().mode(0o700).create(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(format!("mkdir {}", d.display()))(e)),
        }
        let m = std::fs::symlink_metadata(d).map_err(io(format!("stat {}", d.display())))?;
        if !m.is_dir() || m.uid() != nix::unistd::geteuid().as_raw() {
            return Err(SealError::Io {
                what: format!("{} is not a directory of ours", d.display()),
                source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            });
        }
    }
    Ok(())
}

/// A sealed memfd holding a copy of `/proc/self/exe`.
fn memfd_copy() -> Result<OwnedFd, SealError> {
    let src = File::open("/proc/self/exe").map_err(io("open /proc/self/exe"))?;
    let size = src.metadata().map_err(io("stat /proc/self/exe"))?.len();
    let name = cstr(b"buntime-sealed", "memfd name")?;
    let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: memfd_create with a valid name; returns a new fd or -1.
    let mut fd = unsafe { libc::memfd_create(name.as_ptr(), base | MFD_EXEC) };
    if fd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // Before Linux 6.3 there is no MFD_EXEC (and memfds are executable).
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(name.as_ptr(), base) };
    }
    if fd < 0 {
        return Err(last_err("memfd_create"));
    }
    // SAFETY: a fresh descriptor that we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut copied: u64 = 0;
    while copied < size {
        let left = (size - copied).min(1 << 30) as usize;
        // SAFETY: sendfile between two descriptors we own, the source's
        // own offset advancing.
        let n =
            unsafe { libc::sendfile(fd.as_raw_fd(), src.as_raw_fd(), std::ptr::null_mut(), left) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(last_err("copy the binary into the memfd"));
        }
        if n == 0 {
            break;
        }
        copied += n as u64;
    }
    if copied != size {
        return Err(SealError::Io {
            what: format!("copied {copied} of {size} bytes of the binary"),
            source: std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
        });
    }
    // Best effort: F_SEAL_EXEC is newer than the others.
    // SAFETY: fcntl on our memfd.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, F_SEAL_EXEC) };
    // SAFETY: fcntl on our memfd.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, MEMFD_SEALS) } < 0 {
        return Err(last_err("seal the memfd"));
    }
    Ok(fd)
}

/// `execveat(fd, "", argv, env + MARKER)`: returns only on failure.
fn reexec(fd: &OwnedFd, original: &Path) -> Result<Sealed, SealError> {
    let argv: Vec<CString> = std::env::args_os()
        .map(|a| cstr(a.as_bytes(), "argument"))
        .collect::<Result<_, _>>()?;
    let mut envp: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            cstr(kv.as_bytes(), "environment")
        })
        .collect::<Result<_, _>>()?;
    let mut marker = OsString::from(MARKER);
    marker.push("=");
    marker.push(original.as_os_str());
    envp.push(cstr(marker.as_bytes(), "binary path")?);
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    let empty = cstr(b"", "path")?;
    // SAFETY: NULL-terminated arrays of valid C strings that outlive the
    // call; on success the call does not return.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd.as_raw_fd(),
            empty.as_ptr(),
            argv_p.as_ptr(),
            envp_p.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    Err(last_err("re-execute from the sealed copy"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowerdir_escapes() {
        assert_eq!(escape_lower(Path::new("/a:b\\c")), b"/a\\:b\\\\c".to_vec());
    }

    #[test]
    fn memfd_copy_is_sealed_against_writes() {
        let fd = memfd_copy().expect("memfd copy");
        let f = File::from(fd);
        assert_eq!(file_sealed(&f), Some(Sealed::Memfd));
        // Through the magic link, as an attacker would: the open works, no
        // write does (F_SEAL_WRITE, F_SEAL_GROW).
        let path = format!("/proc/self/fd/{}", f.as_raw_fd());
        let w = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open for writing");
        use std::os::unix::fs::FileExt;
        let err = w
            .write_at(b"\x7f", 0)
            .expect_err("a sealed memfd must not be written");
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
        let err = w.set_len(1).expect_err("nor truncated");
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    }

    #[test]
    fn overlay_copy_is_read_only() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: needs root");
            return;
        }
        let exe = std::fs::read_link("/proc/self/exe").expect("exe");
        let fd = overlay_copy(&exe).expect("overlay");
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let f = File::open(&path).expect("reopen for reading");
        assert_eq!(file_sealed(&f), Some(Sealed::ReadOnlyMount));
        let err = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect_err("the overlay copy must not open for writing");
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    }
}
