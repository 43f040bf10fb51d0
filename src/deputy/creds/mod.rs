//! Acting with the sandbox's rights: the broker opens files as the worker
//! that asked, never as the supervisor's root.
//!
//! The switch is per thread: `setfsuid`/`setfsgid` and `setgroups` as raw
//! system calls (glibc's `setgroups` would change every thread of the
//! process), and an empty effective capability set (capset is per thread
//! too). A nonzero fsuid alone would clear the file capabilities, but a
//! worker that is root on the host (an engine's container without a user
//! namespace) must lose CAP_DAC_OVERRIDE & co. as well, and /proc checks
//! look at CAP_SYS_PTRACE.
//!
//! A connection thread serves one worker for its whole life, and nothing
//! changes the supervisor's credentials but these guards (it never calls
//! glibc's process-wide set*id). So the thread takes the worker's rights
//! once, when the worker connects (`serve_as`), and keeps them: a request
//! costs no switch at all. What it must do as the supervisor (rotating the
//! audit log in the state directory, a NET_CONNECT's lookup and connect,
//! asking the approver, taking the sandbox's root late; an EXEC's program
//! lookup stays the worker's) runs in an `as_supervisor` section, which switches back for
//! that alone; failing to take the worker's rights again aborts the
//! process (docs/supervisor.md, "Files"). Other threads (learning's) take
//! another's rights for one guard (`SandboxCreds::assume`).

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::rc::Rc;

use raw::{set_fsgid, set_fsuid, set_thread_groups, Caps};

mod raw;
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
        if holding() != Holding::Own {
            return Err(busy());
        }
        let switch = Switch::plan(self.clone(), Saved::take()?);
        switch.apply()?;
        set_holding(Holding::Guard);
        Ok(Assumed {
            switch: Some(Held::Own(Box::new(switch))),
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
    static SERVING: RefCell<Option<Rc<Switch>>> = const { RefCell::new(None) };
    /// Whose rights the thread holds now.
    static HOLDING: Cell<Holding> = const { Cell::new(Holding::Own) };
}

/// Whose rights a thread holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Holding {
    /// Its own (the supervisor's).
    Own,
    /// The worker's it serves, for the connection's life (`serve_as`).
    Serving,
    /// Another's, for one guard (`assume`, or `assume_worker` inside an
    /// `as_supervisor` section).
    Guard,
}

fn holding() -> Holding {
    HOLDING.with(Cell::get)
}

fn set_holding(h: Holding) {
    HOLDING.with(|c| c.set(h));
}

fn busy() -> std::io::Error {
    // A second switch would put the wrong rights back when it ended,
    // under the first one's feet.
    std::io::Error::other("another credential switch is alive on this thread")
}

/// Takes the worker's rights on this connection thread for as long as
/// the returned guard lives (the connection's life): every request is
/// then carried out with them, without a switch, and what needs the
/// supervisor's rights runs in an [`as_supervisor`] section. The
/// thread's own credentials are read now, once. An error: the thread
/// holds its own rights, and the connection must not be served.
pub fn serve_as(creds: SandboxCreds) -> std::io::Result<Serving> {
    if holding() != Holding::Own || SERVING.with(|s| s.borrow().is_some()) {
        return Err(busy());
    }
    let switch = Rc::new(Switch::plan(creds, Saved::take()?));
    switch.apply()?;
    SERVING.with(|s| *s.borrow_mut() = Some(switch));
    set_holding(Holding::Serving);
    Ok(Serving(PhantomData))
}

/// The worker's rights on a connection thread (`serve_as`); the thread's
/// own are put back on drop, or the process aborts.
pub struct Serving(PhantomData<Rc<()>>);

impl Drop for Serving {
    fn drop(&mut self) {
        let switch = SERVING.with(|s| s.borrow_mut().take());
        match (switch, holding()) {
            (Some(s), Holding::Serving) => s.undo(),
            // Inside an `as_supervisor` section (leaked): its own already.
            (_, Holding::Own) => {}
            // A guard leaked inside: whose rights these are is unknown.
            _ => {
                tracing::error!(target: "supervisor", "cannot restore the supervisor's credentials");
                std::process::abort();
            }
        }
        set_holding(Holding::Own);
    }
}

/// The worker's rights for what the guard covers. On a serving thread
/// they are held already (nothing to do); inside an [`as_supervisor`]
/// section they are taken for the guard's life. An error (no worker
/// recorded, another guard alive, or the switch failed) means nothing may
/// be opened.
pub fn assume_worker() -> std::io::Result<Assumed> {
    match holding() {
        Holding::Serving => return Ok(Assumed { switch: None }),
        Holding::Guard => return Err(busy()),
        Holding::Own => {}
    }
    let switch = SERVING
        .with(|s| s.borrow().clone())
        .ok_or_else(|| std::io::Error::other("no worker credentials for this thread"))?;
    switch.apply()?;
    set_holding(Holding::Guard);
    Ok(Assumed {
        switch: Some(Held::Serving(switch)),
    })
}

enum Held {
    /// The connection thread's plan (`serve_as`).
    Serving(Rc<Switch>),
    /// One made for this guard (`SandboxCreds::assume`).
    Own(Box<Switch>),
}

/// Another's rights; the supervisor's own put back on drop (nothing
/// when the thread was serving its worker already).
pub struct Assumed {
    switch: Option<Held>,
}

impl Drop for Assumed {
    fn drop(&mut self) {
        match &self.switch {
            None => return,
            Some(Held::Serving(s)) => s.undo(),
            Some(Held::Own(s)) => s.undo(),
        }
        set_holding(Holding::Own);
    }
}

/// The supervisor's own rights for what the guard covers, on a thread
/// that serves a worker (its state directory, its sockets, a name lookup,
/// the approver); nothing to do on a thread holding its own. The worker's
/// rights come back on drop, or the process aborts: a connection thread
/// must never go on serving with the supervisor's.
pub fn as_supervisor() -> std::io::Result<AsSupervisor> {
    match holding() {
        Holding::Own => Ok(AsSupervisor(None)),
        Holding::Guard => Err(busy()),
        Holding::Serving => {
            let switch = SERVING
                .with(|s| s.borrow().clone())
                .ok_or_else(|| std::io::Error::other("no worker credentials for this thread"))?;
            // Aborts if the supervisor's rights cannot be had back whole.
            switch.undo();
            set_holding(Holding::Own);
            Ok(AsSupervisor(Some(switch)))
        }
    }
}

/// See [`as_supervisor`].
pub struct AsSupervisor(Option<Rc<Switch>>);

impl Drop for AsSupervisor {
    fn drop(&mut self) {
        let Some(switch) = &self.0 else { return };
        // A guard taken inside and leaked (mem::forget) would leave other
        // rights in place: the plan cannot be trusted to apply.
        if holding() != Holding::Own || switch.apply().is_err() {
            tracing::error!(target: "supervisor", "cannot take the worker's credentials back");
            std::process::abort();
        }
        set_holding(Holding::Serving);
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
mod tests;
