//! Acting with the sandbox's rights: the broker opens files as the worker
//! that asked, never as the supervisor's root.
//!
//! The switch is per thread and per request: `setfsuid`/`setfsgid` and
//! `setgroups` as raw system calls (glibc's `setgroups` would change every
//! thread of the process), and an empty effective capability set (capset
//! is per thread too). A nonzero fsuid alone would clear the file
//! capabilities, but a worker that is root on the host (an engine's
//! container without a user namespace) must lose CAP_DAC_OVERRIDE & co.
//! as well, and /proc checks look at CAP_SYS_PTRACE. The guard puts the
//! supervisor's own credentials back, so the thread can go on writing its
//! state directory (audit rotation) afterwards.
//!
//! A connection thread serves one worker for its whole life, and nothing
//! changes the supervisor's credentials but these guards (it never calls
//! glibc's process-wide set*id), so `serve_as` reads the thread's own
//! credentials once and works out which steps differ: a request then costs
//! only the switches themselves (docs/supervisor.md, "Files").

use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, BorrowedFd};

/// Whose rights a request is carried out with: the connecting worker's
/// host uid, gid and supplementary groups, as the kernel reported them
/// (SO_PEERCRED, SO_PEERGROUPS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxCreds {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl SandboxCreds {
    /// The peer of a connected Unix socket.
    pub fn of_peer(sock: BorrowedFd<'_>, uid: u32, gid: u32) -> std::io::Result<SandboxCreds> {
        Ok(SandboxCreds {
            uid,
            gid,
            groups: peer_groups(sock)?,
        })
    }

    /// The filesystem uid and gid and the supplementary groups of process
    /// `pid` (host ids, from `/proc/PID/status`): whose rights a call that
    /// process is making would be checked with.
    pub fn of_pid(pid: u32) -> std::io::Result<SandboxCreds> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "/proc/PID/status");
        let field = |name: &str| -> std::io::Result<Vec<u32>> {
            let line = status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .ok_or_else(bad)?;
            line.split_whitespace()
                .map(|v| v.parse::<u32>().map_err(|_| bad()))
                .collect()
        };
        // `Uid:`/`Gid:` are real, effective, saved and filesystem ids.
        let fs_id = |v: Vec<u32>| v.get(3).copied().ok_or_else(bad);
        Ok(SandboxCreds {
            uid: fs_id(field("Uid:")?)?,
            gid: fs_id(field("Gid:")?)?,
            groups: field("Groups:")?,
        })
    }

    /// Takes these credentials on the calling thread until the guard drops
    /// (reading the thread's own first: for threads that switch once, like
    /// learning's). Fails closed: an error means nothing may be opened.
    /// Refused while another guard is alive on the thread, as
    /// [`assume_worker`] is: an inner guard's undo would bring back the
    /// wrong rights under the outer one's feet.
    pub fn assume(&self) -> std::io::Result<Assumed> {
        let taking = Taking::begin()?;
        let switch = Switch::plan(self.clone(), Saved::take()?);
        switch.apply()?;
        taking.keep();
        Ok(Assumed {
            switch: Held::Own(Box::new(switch)),
        })
    }
}

/// The steps of a switch that change something (planned), or that were
/// taken (a failed `apply`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Steps {
    groups: bool,
    fsgid: bool,
    fsuid: bool,
    caps: bool,
}

/// The switch between the supervisor's credentials and a worker's on one
/// thread: only the steps that change something are taken (and undone):
/// a rootless supervisor is the sandbox's own uid and may not call
/// setgroups.
struct Switch {
    worker: SandboxCreds,
    saved: Saved,
    plan: Steps,
}

impl Switch {
    fn plan(worker: SandboxCreds, saved: Saved) -> Switch {
        Switch {
            plan: Steps {
                groups: !same_groups(&worker.groups, &saved.groups),
                fsgid: worker.gid != saved.fsgid,
                fsuid: worker.uid != saved.fsuid,
                caps: saved.caps.effective() != 0,
            },
            worker,
            saved,
        }
    }

    /// To the worker's rights. A step that fails leaves the ones before it
    /// taken: the caller's guard is never made, so those, and only those,
    /// are undone here (undoing one never taken can fail where it was
    /// never needed: setgroups wants CAP_SETGID even for the same list).
    fn apply(&self) -> std::io::Result<()> {
        let mut done = Steps::default();
        let r = self.apply_steps(&mut done);
        if r.is_err() {
            self.undo_steps(done);
        }
        r
    }

    fn apply_steps(&self, done: &mut Steps) -> std::io::Result<()> {
        let p = self.plan;
        if p.groups {
            set_thread_groups(&self.worker.groups)?;
            done.groups = true;
        }
        if p.fsgid {
            set_fsgid(self.worker.gid)?;
            done.fsgid = true;
        }
        if p.fsuid {
            set_fsuid(self.worker.uid)?;
            done.fsuid = true;
        }
        if p.caps {
            self.saved.caps.without_effective().set()?;
            done.caps = true;
        }
        Ok(())
    }

    /// Back to the supervisor's rights (a guard's drop: every planned
    /// step), or the thread aborts.
    fn undo(&self) {
        self.undo_steps(self.plan);
    }

    fn undo_steps(&self, steps: Steps) {
        // The order matters: fsuid 0 gives the file capabilities back
        // (when permitted), then the rest of the effective set, which
        // setgroups needs (CAP_SETGID).
        let s = &self.saved;
        let ok = (!steps.fsuid || set_fsuid(s.fsuid).is_ok())
            && (!steps.fsgid || set_fsgid(s.fsgid).is_ok())
            && (!steps.caps || s.caps.set().is_ok())
            && (!steps.groups || set_thread_groups(&s.groups).is_ok());
        if !ok {
            // A thread that cannot be its old self must not serve again:
            // the supervisor would act with the wrong rights either way.
            tracing::error!(target: "supervisor", "cannot restore the supervisor's credentials");
            std::process::abort();
        }
    }
}

fn same_groups(a: &[u32], b: &[u32]) -> bool {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort_unstable();
    a.dedup();
    b.sort_unstable();
    b.dedup();
    a == b
}

thread_local! {
    /// The worker a connection thread serves (one thread a connection),
    /// with the thread's own credentials as they were when it started.
    static SERVING: RefCell<Option<std::rc::Rc<Switch>>> = const { RefCell::new(None) };
    /// A guard (of `assume_worker` or `SandboxCreds::assume`) is alive on
    /// this thread.
    static ASSUMED: Cell<bool> = const { Cell::new(false) };
}

/// The thread's one guard being made: refused when one is alive already;
/// the mark is cleared again unless the guard was made (`keep`).
struct Taking(bool);

impl Taking {
    fn begin() -> std::io::Result<Taking> {
        // A second guard would put the supervisor's rights back when it
        // dropped, under the first one's feet.
        if ASSUMED.with(|a| a.replace(true)) {
            return Err(std::io::Error::other(
                "another credential switch is alive on this thread",
            ));
        }
        Ok(Taking(false))
    }

    fn keep(mut self) {
        self.0 = true;
    }
}

impl Drop for Taking {
    fn drop(&mut self) {
        if !self.0 {
            ASSUMED.with(|a| a.set(false));
        }
    }
}

/// Records whose rights this connection thread acts with, and the thread's
/// own credentials to come back to (read now, once).
pub fn serve_as(creds: SandboxCreds) -> std::io::Result<()> {
    let switch = Switch::plan(creds, Saved::take()?);
    SERVING.with(|s| *s.borrow_mut() = Some(std::rc::Rc::new(switch)));
    Ok(())
}

/// Takes the rights of the worker this thread serves; an error (no worker
/// recorded, a guard already alive, or the switch failed) means nothing
/// may be opened.
pub fn assume_worker() -> std::io::Result<Assumed> {
    let switch = SERVING
        .with(|s| s.borrow().clone())
        .ok_or_else(|| std::io::Error::other("no worker credentials for this thread"))?;
    let taking = Taking::begin()?;
    switch.apply()?;
    taking.keep();
    Ok(Assumed {
        switch: Held::Serving(switch),
    })
}

enum Held {
    /// The connection thread's plan (`serve_as`).
    Serving(std::rc::Rc<Switch>),
    /// One made for this guard (`SandboxCreds::assume`).
    Own(Box<Switch>),
}

/// The supervisor's own credentials, put back on drop.
pub struct Assumed {
    switch: Held,
}

impl Drop for Assumed {
    fn drop(&mut self) {
        match &self.switch {
            Held::Serving(s) => s.undo(),
            Held::Own(s) => s.undo(),
        }
        ASSUMED.with(|a| a.set(false));
    }
}

struct Saved {
    fsuid: u32,
    fsgid: u32,
    groups: Vec<u32>,
    caps: Caps,
}

impl Saved {
    fn take() -> std::io::Result<Saved> {
        Ok(Saved {
            // SAFETY: setfs[ug]id(-1) changes nothing and returns the
            // current value.
            fsuid: unsafe { libc::syscall(libc::SYS_setfsuid, u32::MAX) } as u32,
            fsgid: unsafe { libc::syscall(libc::SYS_setfsgid, u32::MAX) } as u32,
            groups: nix::unistd::getgroups()
                .map_err(std::io::Error::from)?
                .into_iter()
                .map(|g| g.as_raw())
                .collect(),
            caps: Caps::get()?,
        })
    }
}

/// The calling thread's capability sets as capget/capset see them (64
/// bits in two 32-bit words each), without the `caps` crate's sets: the
/// switch is one capset each way.
#[derive(Clone, Copy)]
struct Caps([CapData; 2]);

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
    fn get() -> std::io::Result<Caps> {
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

    fn set(&self) -> std::io::Result<()> {
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

    fn effective(&self) -> u64 {
        u64::from(self.0[0].effective) | u64::from(self.0[1].effective) << 32
    }

    fn without_effective(&self) -> Caps {
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

fn set_fsuid(uid: u32) -> std::io::Result<()> {
    set_fs_id(libc::SYS_setfsuid, uid)
}

fn set_fsgid(gid: u32) -> std::io::Result<()> {
    set_fs_id(libc::SYS_setfsgid, gid)
}

/// The raw system call changes the calling thread only.
fn set_thread_groups(groups: &[u32]) -> std::io::Result<()> {
    // SAFETY: a valid array of `len` gids.
    let r = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// SO_PEERGROUPS: the peer's supplementary groups at connect time.
fn peer_groups(sock: BorrowedFd<'_>) -> std::io::Result<Vec<u32>> {
    let mut groups = vec![0u32; 64];
    loop {
        let mut len = (groups.len() * 4) as libc::socklen_t;
        // SAFETY: the buffer holds `len` bytes.
        let r = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if r == 0 {
            groups.truncate(len as usize / 4);
            return Ok(groups);
        }
        let e = std::io::Error::last_os_error();
        // ERANGE: `len` now says how much room is needed.
        if e.raw_os_error() == Some(libc::ERANGE) && (len as usize) / 4 > groups.len() {
            groups.resize(len as usize / 4, 0);
            continue;
        }
        return Err(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn of_pid_reads_the_filesystem_ids_and_groups() {
        let c = SandboxCreds::of_pid(std::process::id()).expect("own status");
        assert_eq!(c.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(c.gid, nix::unistd::getegid().as_raw());
        let mut want: Vec<u32> = nix::unistd::getgroups()
            .expect("getgroups")
            .iter()
            .map(|g| g.as_raw())
            .collect();
        let mut got = c.groups.clone();
        want.sort();
        got.sort();
        assert_eq!(got, want);
        assert!(SandboxCreds::of_pid(u32::MAX).is_err());
    }

    #[test]
    fn any_second_guard_on_a_thread_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        std::thread::spawn(|| {
            let nobody = SandboxCreds {
                uid: 65534,
                gid: 65534,
                groups: vec![],
            };
            serve_as(nobody.clone()).unwrap();
            let g = nobody.assume().unwrap();
            assert!(nobody.assume().is_err());
            assert!(assume_worker().is_err());
            drop(g);
            let w = assume_worker().unwrap();
            assert!(nobody.assume().is_err());
            drop(w);
            drop(nobody.assume().unwrap());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_failed_switch_undoes_only_the_steps_taken() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        std::thread::spawn(|| {
            // No effective capabilities: setgroups fails, and so would
            // putting the same groups back (the abort of old).
            let own = Caps::get().unwrap();
            own.without_effective().set().unwrap();
            let before = Saved::take().unwrap();
            let other = SandboxCreds {
                uid: before.fsuid,
                gid: before.fsgid,
                groups: vec![4242],
            };
            assert!(other.assume().is_err());
            let after = Saved::take().unwrap();
            assert_eq!(after.groups, before.groups);
            // The thread's mark is cleared: a switch that needs nothing
            // may be made.
            let same = SandboxCreds {
                groups: before.groups.clone(),
                ..other
            };
            drop(same.assume().unwrap());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_serving_thread_switches_each_request_and_refuses_a_second_guard() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "x").unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        std::thread::spawn(move || {
            // No worker recorded: nothing may be opened.
            assert!(assume_worker().is_err());
            serve_as(SandboxCreds {
                uid: 65534,
                gid: 65534,
                groups: vec![65534],
            })
            .unwrap();
            let before = Saved::take().unwrap();
            for _ in 0..3 {
                let g = assume_worker().unwrap();
                let e = std::fs::read(&secret).unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::EACCES));
                // A second guard would give the supervisor's rights back
                // when it dropped, under the first one's feet.
                assert!(assume_worker().is_err());
                assert!(std::fs::read(&secret).is_err());
                drop(g);
                assert_eq!(std::fs::read(&secret).unwrap(), b"x");
                let after = Saved::take().unwrap();
                assert_eq!((after.fsuid, after.fsgid), (before.fsuid, before.fsgid));
                assert_eq!(after.groups, before.groups);
                assert_eq!(after.caps.effective(), before.caps.effective());
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn assumed_credentials_apply_to_opens_and_are_given_back() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "x").unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        // A thread of its own: the switch must not leak to the test runner.
        let secret2 = secret.clone();
        std::thread::spawn(move || {
            let nobody = SandboxCreds {
                uid: 65534,
                gid: 65534,
                groups: vec![],
            };
            {
                let _g = nobody.assume().unwrap();
                let e = std::fs::read(&secret2).unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::EACCES));
            }
            // Root again: the file opens.
            assert_eq!(std::fs::read(&secret2).unwrap(), b"x");
            // Root on the host without capabilities: file modes of other
            // owners apply.
            let root_nocaps = SandboxCreds {
                uid: 0,
                gid: 0,
                groups: vec![],
            };
            let other = secret2.with_file_name("other");
            std::fs::write(&other, "y").unwrap();
            nix::unistd::chown(&other, Some(nix::unistd::Uid::from_raw(1234)), None).unwrap();
            std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            {
                let _g = root_nocaps.assume().unwrap();
                assert!(std::fs::read(&other).is_err());
            }
            assert_eq!(std::fs::read(&other).unwrap(), b"y");
        })
        .join()
        .unwrap();
    }
}
