//! The raw, per-thread system calls of a switch: capget/capset without
//! the `caps` crate's sets, setfsuid/setfsgid read back, setgroups of one
//! thread (glibc's would change every thread of the process).

/// The calling thread's capability sets as capget/capset see them (64
/// bits in two 32-bit words each), without the `caps` crate's sets: the
/// switch is one capset each way.
#[derive(Clone, Copy)]
pub(super) struct Caps([CapData; 2]);

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

const CAP_V3: u32 = 0x2008_0522;

impl Caps {
    pub(super) fn get() -> std::io::Result<Caps> {
        let mut hdr = CapHeader {
            version: CAP_V3,
            pid: 0,
        };
        let mut data = [CapData::default(); 2];
        // SAFETY: a v3 header and two data structs, as the kernel expects.
        let r = unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Caps(data))
    }

    pub(super) fn set(&self) -> std::io::Result<()> {
        let mut hdr = CapHeader {
            version: CAP_V3,
            pid: 0,
        };
        // SAFETY: as in `get`; pid 0 is the calling thread.
        let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, self.0.as_ptr()) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    pub(super) fn effective(&self) -> u64 {
        u64::from(self.0[0].effective) | u64::from(self.0[1].effective) << 32
    }

    pub(super) fn without_effective(&self) -> Caps {
        let mut c = *self;
        c.0[0].effective = 0;
        c.0[1].effective = 0;
        c
    }
}

/// setfsuid and setfsgid do not report failure: they return the previous
/// value either way, so the new one is read back.
fn set_fs_id(call: libc::c_long, id: u32) -> std::io::Result<()> {
    // SAFETY: plain system calls on the calling thread.
    let now = unsafe {
        libc::syscall(call, id);
        libc::syscall(call, u32::MAX)
    } as u32;
    if now == id {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(libc::EPERM))
    }
}

pub(super) fn set_fsuid(uid: u32) -> std::io::Result<()> {
    set_fs_id(libc::SYS_setfsuid, uid)
}

pub(super) fn set_fsgid(gid: u32) -> std::io::Result<()> {
    set_fs_id(libc::SYS_setfsgid, gid)
}

/// The raw system call changes the calling thread only.
pub(super) fn set_thread_groups(groups: &[u32]) -> std::io::Result<()> {
    // SAFETY: a valid array of `len` gids.
    let r = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
