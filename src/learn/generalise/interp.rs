//! What the kernel opens for an exec besides the program: an ELF
//! program's dynamic loader and a script's `#!` interpreter.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{own_tree, Generalise};
use crate::learn::observe::{Event, FileUse, Observed};

impl Generalise {
    /// The events plus what the kernel opens for an exec without a call
    /// of the program's own: an ELF program's dynamic loader (`PT_INTERP`)
    /// and a script's `#!` interpreter.
    pub(super) fn with_interpreters(&self, seen: &Observed) -> Vec<Event> {
        let events = &seen.events;
        let mut out = Vec::with_capacity(events.len());
        let mut done = BTreeSet::new();
        for e in events {
            out.push(e.clone());
            if let Event::File {
                path,
                access: FileUse::Exec,
            } = e
            {
                if !done.insert(path.clone()) {
                    continue;
                }
                let found = if seen.in_container {
                    seen.facts.get(path).and_then(|f| f.interpreter.clone())
                } else if self.implicit.iter().any(|i| path.starts_with(i))
                    || self.refused(path).is_some()
                {
                    // buntime's own files, and files never granted, are
                    // not read on the sandbox's behalf.
                    None
                } else {
                    interpreter(path)
                };
                if let Some(interp) = found {
                    let access = if interp.1 {
                        FileUse::Exec
                    } else {
                        FileUse::Read
                    };
                    out.push(Event::File {
                        path: interp.0,
                        access,
                    });
                }
            }
        }
        out
    }
}

/// A host program's interpreter: (path, whether it is exec'd as a
/// program). The path is the sandbox's to choose (a FIFO, a device, a
/// file only root may read), so it is read as the sandbox's uid would
/// read it, and only when it is a regular file outside the sandbox's own
/// trees: an open never blocks nor reaches a device.
pub(super) fn interpreter(program: &Path) -> Option<(PathBuf, bool)> {
    if own_tree(program) {
        return None;
    }
    let canon = std::fs::canonicalize(program).ok()?;
    if own_tree(&canon) {
        return None;
    }
    let _as_sandbox = if nix::unistd::geteuid().is_root() {
        let (uid, gid) = crate::deputy::ids::sandbox_host_ids();
        let creds = crate::deputy::creds::SandboxCreds {
            uid,
            gid,
            groups: Vec::new(),
        };
        Some(creds.assume().ok()?)
    } else {
        None
    };
    interpreter_of(open_regular(&canon)?)
}

/// `p` opened for reading when it is a regular file: never follows a last
/// symlink, never blocks (a FIFO) and never becomes a terminal.
pub(crate) fn open_regular(p: &Path) -> Option<std::fs::File> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_RDONLY
        | OFlag::O_NONBLOCK
        | OFlag::O_NOFOLLOW
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    let fd = nix::fcntl::open(p, flags, nix::sys::stat::Mode::empty()).ok()?;
    // SAFETY: `open` just returned this fd; nothing else owns it.
    let f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    f.metadata().ok().filter(|m| m.is_file()).map(|_| f)
}

/// The interpreter of the program open as `f`.
pub(crate) fn interpreter_of(mut f: std::fs::File) -> Option<(PathBuf, bool)> {
    use std::io::Read;
    let mut head = vec![0u8; 4096];
    let n = f.read(&mut head).ok()?;
    head.truncate(n);
    if let Some(rest) = head.strip_prefix(b"#!") {
        let line = rest.split(|b| *b == b'\n').next()?;
        let line = String::from_utf8_lossy(line);
        let interp = line.split_whitespace().next()?;
        return interp
            .starts_with('/')
            .then(|| (PathBuf::from(interp), true));
    }
    elf_interp(&mut f, &head).map(|p| (p, false))
}

/// `PT_INTERP` of a 64-bit little-endian ELF file.
fn elf_interp(f: &mut std::fs::File, head: &[u8]) -> Option<PathBuf> {
    use std::os::unix::fs::FileExt;
    if head.len() < 64 || &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| u16::from_le_bytes([head[o], head[o + 1]]) as u64;
    let phoff = u64::from_le_bytes(head[32..40].try_into().ok()?);
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    for i in 0..phnum.min(64) {
        let mut ph = [0u8; 56];
        f.read_exact_at(&mut ph, phoff + i * phentsize).ok()?;
        if u32::from_le_bytes(ph[0..4].try_into().ok()?) != 3 {
            continue;
        }
        let off = u64::from_le_bytes(ph[8..16].try_into().ok()?);
        let size = u64::from_le_bytes(ph[32..40].try_into().ok()?).min(4096) as usize;
        let mut name = vec![0u8; size];
        f.read_exact_at(&mut name, off).ok()?;
        let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
        let s = String::from_utf8(name[..end].to_vec()).ok()?;
        return s.starts_with('/').then(|| PathBuf::from(s));
    }
    None
}
