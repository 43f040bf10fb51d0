//! A notified call's arguments, read from the caller's memory, as an
//! [`Event`].

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use libseccomp::{ScmpNotifReq, ScmpSyscall};

use super::{Event, FileUse};
use crate::policy::normalize_path;

/// The observed calls' numbers on this architecture.
pub(crate) struct Calls {
    open: Option<i32>,
    openat: Option<i32>,
    openat2: Option<i32>,
    execve: Option<i32>,
    execveat: Option<i32>,
    connect: Option<i32>,
}

fn nr(name: &str) -> Option<i32> {
    ScmpSyscall::from_name(name).ok().map(i32::from)
}

impl Calls {
    pub(crate) fn new() -> Calls {
        Calls {
            // aarch64 has no open(2).
            open: nr("open").filter(|n| *n >= 0),
            openat: nr("openat"),
            openat2: nr("openat2"),
            execve: nr("execve"),
            execveat: nr("execveat"),
            connect: nr("connect"),
        }
    }

    pub(crate) fn decode(&self, req: &ScmpNotifReq) -> Option<Event> {
        let n = Some(i32::from(req.data.syscall));
        let a = req.data.args;
        let pid = req.pid;
        let mem = File::open(format!("/proc/{pid}/mem")).ok()?;
        if n == self.open {
            let path = resolve(pid, libc::AT_FDCWD, &read_cstr(&mem, a[0])?)?;
            Some(file_event(path, a[1]))
        } else if n == self.openat {
            let path = resolve(pid, a[0] as i32, &read_cstr(&mem, a[1])?)?;
            Some(file_event(path, a[2]))
        } else if n == self.openat2 {
            let path = resolve(pid, a[0] as i32, &read_cstr(&mem, a[1])?)?;
            let mut how = [0u8; 8];
            mem.read_exact_at(&mut how, a[2]).ok()?;
            Some(file_event(path, u64::from_ne_bytes(how)))
        } else if n == self.execve {
            let path = resolve(pid, libc::AT_FDCWD, &read_cstr(&mem, a[0])?)?;
            Some(Event::File {
                path,
                access: FileUse::Exec,
            })
        } else if n == self.execveat {
            let name = read_cstr(&mem, a[1])?;
            let path = if name.is_empty() && a[4] & libc::AT_EMPTY_PATH as u64 != 0 {
                fd_path(pid, a[0] as i32)?
            } else {
                resolve(pid, a[0] as i32, &name)?
            };
            Some(Event::File {
                path,
                access: FileUse::Exec,
            })
        } else if n == self.connect {
            read_sockaddr(&mem, a[1], a[2])
        } else {
            None
        }
    }
}

pub(super) fn file_event(path: PathBuf, flags: u64) -> Event {
    let flags = flags as i32;
    let access = if flags & libc::O_PATH != 0 {
        // O_PATH reads nothing; only its existence matters.
        FileUse::Read
    } else if flags & libc::O_CREAT != 0 {
        FileUse::Create
    } else if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
        FileUse::Write
    } else if flags & libc::O_DIRECTORY != 0 {
        FileUse::List
    } else {
        FileUse::Read
    };
    Event::File { path, access }
}

/// A NUL-terminated string from the process's memory (at most PATH_MAX).
fn read_cstr(mem: &File, addr: u64) -> Option<String> {
    const MAX: usize = 4096;
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < MAX {
        // Never across a page boundary in one read: the next page may be
        // unmapped while the string ends on this one.
        let room = 4096 - (at % 4096) as usize;
        let mut chunk = vec![0u8; room.min(256)];
        let got = mem.read_at(&mut chunk, at).ok()?;
        if got == 0 {
            return None;
        }
        if let Some(end) = chunk[..got].iter().position(|b| *b == 0) {
            out.extend_from_slice(&chunk[..end]);
            return String::from_utf8(out).ok();
        }
        out.extend_from_slice(&chunk[..got]);
        at += got as u64;
    }
    None
}

fn fd_path(pid: u32, fd: i32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()
}

/// `name` as the process would resolve it: against its cwd or `dirfd`.
/// buntime run binds host paths at the same place, so the sandbox's path
/// is the policy's.
fn resolve(pid: u32, dirfd: i32, name: &str) -> Option<PathBuf> {
    if name.is_empty() {
        return None;
    }
    let p = Path::new(name);
    if p.is_absolute() {
        return Some(normalize_path(p));
    }
    let base = if dirfd == libc::AT_FDCWD {
        std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?
    } else {
        fd_path(pid, dirfd)?
    };
    if !base.is_absolute() {
        return None;
    }
    Some(normalize_path(&base.join(p)))
}

fn read_sockaddr(mem: &File, addr: u64, len: u64) -> Option<Event> {
    let len = (len as usize).min(128);
    if len < 2 {
        return None;
    }
    let mut b = vec![0u8; len];
    mem.read_exact_at(&mut b, addr).ok()?;
    let family = i32::from(u16::from_ne_bytes([b[0], b[1]]));
    match family {
        libc::AF_INET if len >= 8 => {
            let port = u16::from_be_bytes([b[2], b[3]]);
            let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            Some(Event::Connect(SocketAddr::new(IpAddr::V4(ip), port)))
        }
        libc::AF_INET6 if len >= 24 => {
            let port = u16::from_be_bytes([b[2], b[3]]);
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[8..24]);
            Some(Event::Connect(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(o)),
                port,
            )))
        }
        libc::AF_UNIX => {
            let raw = &b[2..];
            let end = raw.iter().position(|c| *c == 0).unwrap_or(raw.len());
            // Abstract sockets (leading NUL) have no path.
            (end > 0).then(|| {
                Event::ConnectUnix(PathBuf::from(
                    String::from_utf8_lossy(&raw[..end]).into_owned(),
                ))
            })
        }
        _ => None,
    }
}
