//! The sealed copy the command re-executes from: a detached read-only
//! overlay of the binary's directory, or a sealed memfd.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{file_sealed, io, SealError, Sealed, F_SEAL_EXEC, MEMFD_SEALS, MFD_EXEC};

pub(super) fn last_err(what: &str) -> SealError {
    SealError::Io {
        what: what.to_string(),
        source: std::io::Error::last_os_error(),
    }
}

pub(super) fn cstr(b: &[u8], what: &str) -> Result<CString, SealError> {
    CString::new(b).map_err(|_| SealError::Io {
        what: format!("{what}: contains a NUL byte"),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })
}

// The new mount API (linux/mount.h), for the overlay below.
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: libc::c_uint = 0x1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;

/// A detached mount (attached nowhere: no path reaches it) of `fstype`
/// with these string options, read-only.
pub(super) fn detached_mount(fstype: &str, opts: &[(&str, &str)]) -> Result<OwnedFd, SealError> {
    let name = cstr(fstype.as_bytes(), "filesystem type")?;
    // SAFETY: fsopen with a valid C string; returns a new fd or -1.
    let fs = unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) };
    if fs < 0 {
        return Err(last_err("fsopen"));
    }
    // SAFETY: a fresh descriptor that we own.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as RawFd) };
    for (k, v) in opts {
        let (k, v) = (cstr(k.as_bytes(), "option")?, cstr(v.as_bytes(), "option")?);
        // SAFETY: fsconfig on our context with valid C strings.
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_STRING,
                k.as_ptr(),
                v.as_ptr(),
                0,
            )
        };
        if r < 0 {
            return Err(last_err("fsconfig"));
        }
    }
    // SAFETY: fsconfig's create command takes no key or value.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if r < 0 {
        return Err(last_err("fsconfig create"));
    }
    let attrs = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    // SAFETY: fsmount on our configured context; returns a new fd or -1.
    let m = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) };
    if m < 0 {
        return Err(last_err("fsmount"));
    }
    // SAFETY: a fresh descriptor that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(m as RawFd) })
}

/// The binary, opened through a detached read-only overlay of its
/// directory (as runc from 1.2 does): nothing is copied, so the page cache
/// is the binary's own, shared by every process running it, where the
/// memfd copy costs a 14 MB copy at every start and 14 MB of shmem for as
/// long as the supervisor runs. An overlay without an upper layer has no
/// place to write: `/proc/PID/exe` reopened for writing or truncation
/// fails (EROFS) however the mount's flags are changed, and the mount is
/// attached nowhere. The second lower layer (overlayfs wants two without
/// an upper one) is an empty detached tmpfs. Needs the right to mount
/// (root); any failure falls back to the memfd copy.
pub(super) fn overlay_open(original: &Path) -> Result<File, SealError> {
    let unusable = |what: &str| SealError::Io {
        what: what.to_string(),
        source: std::io::Error::from(std::io::ErrorKind::Unsupported),
    };
    let (Some(dir), Some(name)) = (original.parent(), original.file_name()) else {
        return Err(unusable("the binary's path has no directory"));
    };
    let dir_bytes = dir.as_os_str().as_bytes();
    // overlayfs separates layers with ':' and escapes with '\\'.
    if !original.is_absolute() || dir_bytes.iter().any(|b| matches!(b, b':' | b'\\' | b',')) {
        return Err(unusable(
            "the binary's directory cannot name an overlay layer",
        ));
    }
    let empty = detached_mount("tmpfs", &[("size", "4k"), ("mode", "0555")])?;
    let lower = format!("{}:/proc/self/fd/{}", dir.display(), empty.as_raw_fd());
    let ovl = detached_mount("overlay", &[("lowerdir", &lower)])?;
    let name = cstr(name.as_bytes(), "binary name")?;
    // SAFETY: openat beneath our mount's root with a valid C string.
    let fd = unsafe {
        libc::openat(
            ovl.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    };
    if fd < 0 {
        return Err(last_err("open the binary in the overlay"));
    }
    // SAFETY: a fresh descriptor that we own.
    let f = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    // The same file this process runs (not one replaced on disk since),
    // and really read-only.
    let now = File::open("/proc/self/exe")
        .and_then(|e| e.metadata())
        .map_err(io("stat /proc/self/exe"))?;
    let there = f.metadata().map_err(io("stat the overlay's binary"))?;
    let same = there.is_file()
        && there.len() == now.len()
        && there.mtime() == now.mtime()
        && there.mtime_nsec() == now.mtime_nsec()
        && there.ctime() == now.ctime()
        && there.ctime_nsec() == now.ctime_nsec();
    if !same {
        return Err(unusable("the binary on disk is not the one running"));
    }
    if file_sealed(&f) != Some(Sealed::ReadOnlyMount) {
        return Err(unusable("the overlay is not read-only"));
    }
    Ok(f)
}

/// A sealed memfd holding a copy of `/proc/self/exe`.
pub(super) fn memfd_copy() -> Result<OwnedFd, SealError> {
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
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
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
