//! From what a learned run used to the least policy that lets the same run
//! pass: the base policy's rules where they already cover a use (system
//! paths stay as the base says them), exact files elsewhere, a directory
//! when a run touched many files under one, never `/` or the home
//! directory, credential files never.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::observe::{Event, FileUse, Observed};
use super::LearnError;
use crate::policy::net::{classify, AddrClass};
use crate::policy::paths::{covers, credential, home_of, HOME_SECRETS, KNOWN_SECRETS};
use crate::policy::{
    normalize_path, FsAccess, FsDecision, FsPath, HostAddrs, NetDecision, NetMode, NetRule, Policy,
};

/// How to generalise.
#[derive(Clone, Debug)]
pub struct Generalise {
    /// The policy the learned one is cut from (its deny list, env,
    /// resources and isolation are kept; its grants are kept where used).
    pub base: Policy,
    /// Files under one directory from which the directory is granted.
    pub threshold: usize,
    /// Never granted as a whole (nor `/`): the caller's home directory.
    pub home: Option<PathBuf>,
    /// Granted by `buntime run` itself (the script's directory, the worker
    /// files): left out.
    pub implicit: Vec<PathBuf>,
    /// A container's proxy port on its loopback: connects to it are the
    /// proxy's, the hosts asked for are in its audit log (`Event::Host`).
    pub proxy: Option<u16>,
}

/// A path (or `IP:port`) the run asked for that the learned policy does
/// not grant.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NotGranted {
    pub what: String,
    pub why: String,
}

impl NotGranted {
    fn path(p: &Path, why: String) -> NotGranted {
        NotGranted {
            what: p.display().to_string(),
            why,
        }
    }
}

/// Why the sandbox may never be granted `p` by learning or `policy
/// suggest`, if it may not: the base policy denies it, or it is a
/// credential file ([`credential`]: the system's, or one in a home).
/// `p` is normalised first, so `/srv/../etc/shadow` is `/etc/shadow`.
pub fn refusal(base: &Policy, p: &Path, home: Option<&Path>) -> Option<String> {
    let p = normalize_path(p);
    if let FsDecision::DeniedBy(d) = base.filesystem.decide(&p, FsAccess::Read) {
        return Some(format!("denied by the base policy ({})", d.display()));
    }
    credential(&p, home).map(|deny| format!("a credential file ({deny})"))
}

/// What resolving a path's symlinks on the host found.
#[derive(Debug, PartialEq, Eq)]
enum Link {
    /// No symlink on the way.
    None,
    /// The path is, or passes through, a symlink: where it leads.
    To(PathBuf),
    /// It passes through a symlink that leads nowhere (or loops): what it
    /// would create or open cannot be known.
    Broken(PathBuf),
}

/// Whether absolute `p` is, or passes through, a symlink on the host, and
/// its canonical target. Only `lstat` and `readlink` (no file is opened).
fn link_of(p: &Path) -> Link {
    let mut existing = p.to_path_buf();
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    loop {
        match std::fs::symlink_metadata(&existing) {
            Ok(m) if m.file_type().is_symlink() && !existing.exists() => {
                return Link::Broken(existing)
            }
            Ok(_) => break,
            Err(_) => match (existing.file_name(), existing.parent()) {
                (Some(name), Some(parent)) => {
                    rest.push(name.to_os_string());
                    existing = parent.to_path_buf();
                }
                _ => return Link::None,
            },
        }
    }
    let Ok(mut canon) = std::fs::canonicalize(&existing) else {
        return Link::Broken(existing);
    };
    if canon == existing {
        return Link::None;
    }
    for name in rest.into_iter().rev() {
        canon.push(name);
    }
    Link::To(canon)
}

/// Whether `ip:port` may be learned: a public address may; a loopback,
/// private, link-local, metadata or other special address, or one of the
/// host's own, only when the base policy already lets the sandbox reach
/// it. `Err` says why not.
fn host_refusal(base: &Policy, own: &HostAddrs, addr: SocketAddr) -> Result<(), String> {
    let ip = addr.ip();
    let class = classify(ip);
    let is_own = own.contains(ip);
    if class == AddrClass::Public && !is_own {
        return Ok(());
    }
    let text = ip.to_string();
    let n = &base.network;
    let allowed = match n.mode {
        NetMode::Proxy | NetMode::Pod => {
            n.decide_resolved(&text, addr.port(), &[ip], own) == NetDecision::Allow
        }
        NetMode::Host | NetMode::Bundle => n.decide(&text, addr.port()) == NetDecision::Allow,
        // The sandbox's own loopback, not the host's.
        NetMode::None => false,
    };
    if allowed {
        return Ok(());
    }
    let what = if is_own && class == AddrClass::Public {
        "one of the host's own addresses".to_string()
    } else {
        format!("a {} address", class.describe())
    };
    Err(format!(
        "{what}: learning grants it only when the base policy allows it (--allow-net={})",
        addr_text(addr)
    ))
}

/// What the learned policy grants, grouped for people.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub read: Vec<String>,
    pub written: Vec<String>,
    pub programs: Vec<String>,
    pub hosts: Vec<String>,
    pub not_granted: Vec<NotGranted>,
    pub notes: Vec<String>,
}

/// The learned policy and its summary.
#[derive(Clone, Debug)]
pub struct Learned {
    pub policy: Policy,
    pub summary: Summary,
}

/// The sandbox's own trees in `buntime run`: never the host's.
const OWN_TREES: &[&str] = &["/proc", "/dev", "/sys", "/tmp"];

fn own_tree(p: &Path) -> bool {
    OWN_TREES.iter().any(|t| p.starts_with(t))
}

fn fs(p: &Path) -> Result<FsPath, LearnError> {
    FsPath::try_from(p.to_string_lossy().into_owned())
        .map_err(|e| LearnError::Invalid(format!("learned path {}: {e}", p.display())))
}

/// The base rule covering `p`: from the first list that has one (reads
/// prefer `read` over `write` and `exec`), the most specific there.
fn base_rule<'a>(
    lists: &[(&'static str, &'a [FsPath])],
    p: &Path,
) -> Option<(&'static str, &'a FsPath)> {
    lists.iter().find_map(|(name, l)| {
        l.iter()
            .filter(|r| covers(&normalize_path(r.as_path()), p))
            .max_by_key(|r| r.as_str().len())
            .map(|r| (*name, r))
    })
}

/// Grants being collected: list name -> paths.
#[derive(Default)]
struct Grants {
    read: BTreeSet<PathBuf>,
    write: BTreeSet<PathBuf>,
    exec: BTreeSet<PathBuf>,
    /// Which of those came from the base policy.
    from_base: BTreeSet<PathBuf>,
}

impl Grants {
    fn add(&mut self, list: &str, p: PathBuf) {
        match list {
            "write" => self.write.insert(p),
            "exec" => self.exec.insert(p),
            _ => self.read.insert(p),
        };
    }
}

impl Generalise {
    fn too_wide(&self, dir: &Path) -> bool {
        dir == Path::new("/") || self.home.as_deref().is_some_and(|h| h.starts_with(dir))
    }

    /// Whether `p` exists: on the host, or for a container what was seen
    /// in its root.
    fn exists(&self, seen: &Observed, p: &Path) -> bool {
        if seen.in_container {
            seen.facts.get(p).is_some_and(|f| f.exists)
        } else {
            p.exists()
        }
    }

    /// Why `p` is never granted, if it is not.
    fn refused(&self, p: &Path) -> Option<String> {
        refusal(&self.base, p, self.home.as_deref())
    }

    /// Where a host path leads when it is, or passes through, a symlink
    /// (a container's paths are its own root's: not resolved here).
    fn link(&self, seen: &Observed, p: &Path) -> Link {
        if seen.in_container || own_tree(p) {
            Link::None
        } else {
            link_of(p)
        }
    }

    /// Homes whose credential files a grant could cover: the caller's,
    /// `/root`, and each `/home/NAME` (the host's, and any a path names).
    fn homes(&self, seen: &Observed, granted: &[&PathBuf]) -> BTreeSet<PathBuf> {
        let mut homes: BTreeSet<PathBuf> = self.home.iter().map(|h| normalize_path(h)).collect();
        homes.insert(PathBuf::from("/root"));
        if !seen.in_container {
            if let Ok(d) = std::fs::read_dir("/home") {
                homes.extend(d.filter_map(Result::ok).map(|e| e.path()));
            }
        }
        homes.extend(granted.iter().filter_map(|g| home_of(g, None)));
        homes
    }

    pub fn learn(&self, seen: &Observed) -> Result<Learned, LearnError> {
        let base = &self.base.filesystem;
        let mut g = Grants::default();
        let mut summary = Summary::default();
        let mut not_granted = BTreeSet::new();
        // Exact candidates not covered by the base: (list, dir) -> files.
        let mut reads: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
        let mut hosts = BTreeSet::new();
        let mut dns = false;
        let mut unix = BTreeSet::new();
        let own = HostAddrs::read().unwrap_or_default();
        for e in self.with_interpreters(seen) {
            let e = &e;
            let (path, used) = match e {
                Event::File { path, access } => (path, *access),
                Event::Connect(addr) => {
                    match addr.port() {
                        // Name lookups: the proxy resolves names under the
                        // learned policy.
                        53 => dns = true,
                        0 => {}
                        _ if addr.ip().is_unspecified() => {}
                        _ if self
                            .proxy
                            .is_some_and(|p| addr.ip().is_loopback() && addr.port() == p) => {}
                        _ => match host_refusal(&self.base, &own, *addr) {
                            Ok(()) => {
                                hosts.insert(addr_text(*addr));
                            }
                            Err(why) => {
                                not_granted.insert(NotGranted {
                                    what: addr_text(*addr),
                                    why,
                                });
                            }
                        },
                    }
                    continue;
                }
                Event::Host(h) => {
                    // A container's proxy was asked for it: an address
                    // is judged as a connect is (a name is the proxy's).
                    match h
                        .parse::<SocketAddr>()
                        .map(|a| host_refusal(&self.base, &own, a))
                    {
                        Ok(Err(why)) => {
                            not_granted.insert(NotGranted {
                                what: h.clone(),
                                why,
                            });
                        }
                        _ => {
                            hosts.insert(h.clone());
                        }
                    }
                    continue;
                }
                Event::ConnectUnix(p) => {
                    if !self.implicit.iter().any(|i| p.starts_with(i)) {
                        unix.insert(p.clone());
                    }
                    continue;
                }
            };
            if self.implicit.iter().any(|i| path.starts_with(i)) {
                continue;
            }
            if let Some(why) = self.refused(path) {
                not_granted.insert(NotGranted::path(path, why));
                continue;
            }
            // A symlink (planted by the run itself, perhaps: it could
            // write) grants what it leads to: judged by its target.
            let target = match self.link(seen, path) {
                Link::None => None,
                Link::Broken(l) => {
                    not_granted.insert(NotGranted::path(
                        path,
                        format!(
                            "passes through the symlink {}, which leads nowhere",
                            l.display()
                        ),
                    ));
                    continue;
                }
                Link::To(t) => {
                    if let Some(why) = self.refused(&t) {
                        not_granted.insert(NotGranted::path(
                            path,
                            format!("a symlink to {}: {why}", t.display()),
                        ));
                        continue;
                    }
                    Some(t)
                }
            };
            let access = match used {
                FileUse::Read | FileUse::List => FsAccess::Read,
                FileUse::Write | FileUse::Create => FsAccess::Write,
                FileUse::Exec => FsAccess::Exec,
            };
            let lists: Vec<(&'static str, &[FsPath])> = match access {
                FsAccess::Read => vec![
                    ("read", &base.read),
                    ("write", &base.write),
                    ("exec", &base.exec),
                ],
                FsAccess::Write => vec![("write", &base.write)],
                FsAccess::Exec => vec![("exec", &base.exec)],
            };
            // A base rule of `/` (or the home directory) is no least
            // policy: what it covers is learned as if it were not there.
            let lists: Vec<(&'static str, Vec<FsPath>)> = lists
                .into_iter()
                .map(|(n, l)| {
                    let narrow = l
                        .iter()
                        .filter(|r| !self.too_wide(&normalize_path(r.as_path())))
                        .cloned()
                        .collect();
                    (n, narrow)
                })
                .collect();
            let lists: Vec<(&'static str, &[FsPath])> =
                lists.iter().map(|(n, l)| (*n, l.as_slice())).collect();
            // An exec of a program that is not there is a search along
            // PATH: nothing ran, nothing is granted (not even a base rule).
            if used == FileUse::Exec && !own_tree(path) && !self.exists(seen, path) {
                continue;
            }
            // Through a symlink the base's rules do not cover: the target
            // is granted, never the link's name (which may lead elsewhere
            // later).
            let resolved;
            let path = match target {
                Some(t) if base_rule(&lists, path).is_none() => {
                    summary.notes.push(format!(
                        "{} is a symlink to {}: granted as its target",
                        path.display(),
                        t.display()
                    ));
                    resolved = t;
                    &resolved
                }
                _ => path,
            };
            if let Some((from, rule)) = base_rule(&lists, path) {
                let r = normalize_path(rule.as_path());
                g.from_base.insert(r.clone());
                g.add(from, r);
                continue;
            }
            if access == FsAccess::Exec && self.base.may_exec(path, "") {
                // exec.allow names it; kept as an exact program.
                g.add("exec", path.clone());
                continue;
            }
            // A path the run asked for that is not there was not used (a
            // search along PATH or sys.path); the sandbox's own trees are
            // never the host's.
            let exists = own_tree(path) || self.exists(seen, path);
            // A write the file's modes refused did not happen: granting it
            // would widen the policy for nothing (an escape attempt, often).
            let target = match used {
                FileUse::Create => path.parent().unwrap_or(Path::new("/")),
                _ => path.as_path(),
            };
            // (A container's writes are judged by its policy alone: the
            // uid it runs as is its image's.)
            if matches!(used, FileUse::Create | FileUse::Write)
                && !seen.in_container
                && !own_tree(path)
                && target.exists()
                && !writable_by_sandbox(target)
            {
                summary.notes.push(format!(
                    "a write to {} was refused by the file's mode: not granted",
                    path.display()
                ));
                continue;
            }
            match used {
                FileUse::Create => {
                    // A file it may create (or replace): its directory.
                    let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
                    if self.too_wide(&dir) {
                        summary.notes.push(format!(
                            "{} is created in {}: granted as the file alone (learning never grants / or the home directory)",
                            path.display(),
                            dir.display()
                        ));
                        g.add("write", path.clone());
                    } else {
                        g.add("write", dir);
                    }
                }
                _ if !exists => {}
                FileUse::Write => g.add("write", path.clone()),
                FileUse::Exec => g.add("exec", path.clone()),
                FileUse::List if self.too_wide(path) => {
                    summary.notes.push(format!(
                        "the run listed {}: not granted (learning never grants / or the home directory)",
                        path.display()
                    ));
                }
                FileUse::List => g.add("read", path.clone()),
                FileUse::Read => {
                    let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
                    reads.entry(dir).or_default().insert(path.clone());
                }
            }
        }
        for (dir, files) in reads {
            if files.len() >= self.threshold.max(1) && !self.too_wide(&dir) && !own_tree(&dir) {
                g.add("read", dir);
            } else {
                if files.len() >= self.threshold.max(1) {
                    summary.notes.push(format!(
                        "{} files read in {}: granted one by one (learning never grants / or the home directory)",
                        files.len(),
                        dir.display()
                    ));
                }
                for f in files {
                    g.add("read", f);
                }
            }
        }
        let write = minimal(&g.write, &[]);
        let exec = minimal(&g.exec, &[]);
        let read = minimal(&g.read, &[&write, &exec]);
        let mut policy = self.base.clone();
        policy.filesystem.read = read.iter().map(|p| fs(p)).collect::<Result<_, _>>()?;
        policy.filesystem.write = write.iter().map(|p| fs(p)).collect::<Result<_, _>>()?;
        policy.filesystem.exec = exec.iter().map(|p| fs(p)).collect::<Result<_, _>>()?;
        policy.exec.allow.clear();
        // Credential files the grants would cover stay denied.
        let granted: Vec<&PathBuf> = read.iter().chain(&write).chain(&exec).collect();
        let mut denies: Vec<PathBuf> = KNOWN_SECRETS
            .iter()
            .filter(|(secret, _)| granted.iter().any(|r| covers(r, Path::new(secret))))
            .map(|(_, deny)| PathBuf::from(deny))
            .collect();
        for h in self.homes(seen, &granted) {
            for rel in HOME_SECRETS {
                let secret = h.join(rel);
                if granted.iter().any(|r| covers(r, &secret)) {
                    denies.push(secret);
                }
            }
        }
        for deny in denies {
            let d = fs(&deny)?;
            if !policy.filesystem.deny.contains(&d) {
                policy.filesystem.deny.push(d);
            }
        }
        policy.network.allow = hosts
            .iter()
            .map(|a| net_rule(a))
            .collect::<Result<_, _>>()?;
        policy.network.mode = if hosts.is_empty() {
            NetMode::None
        } else {
            NetMode::Proxy
        };
        if hosts.is_empty() {
            policy.network.deny.clear();
        }
        let in_base =
            |p: &PathBuf, l: &[FsPath]| l.iter().any(|r| normalize_path(r.as_path()) == *p);
        let label = |p: &PathBuf| {
            let listed = in_base(p, &self.base.filesystem.read)
                || in_base(p, &self.base.filesystem.write)
                || in_base(p, &self.base.filesystem.exec);
            if g.from_base.contains(p) && listed {
                format!("{} (base policy)", p.display())
            } else {
                p.display().to_string()
            }
        };
        summary.read = read.iter().map(label).collect();
        summary.written = write.iter().map(label).collect();
        summary.programs = exec.iter().map(label).collect();
        summary.hosts = policy.network.allow.iter().map(|r| r.to_string()).collect();
        if dns {
            summary.notes.push(
                "name lookups (port 53) are the proxy's under the learned policy: not granted"
                    .into(),
            );
        }
        if !unix.is_empty() {
            summary.notes.push(format!(
                "UNIX sockets connected to (not part of a policy): {}",
                unix.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        summary.not_granted = not_granted.into_iter().collect();
        Ok(Learned { policy, summary })
    }
}

/// Whether the sandbox's uid may write `p`: as root's run an uid of its
/// own, so only what others may write; rootless, the caller's access.
fn writable_by_sandbox(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    if nix::unistd::geteuid().is_root() {
        std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o002 != 0)
    } else {
        nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_ok()
    }
}

impl Generalise {
    /// The events plus what the kernel opens for an exec without a call
    /// of the program's own: an ELF program's dynamic loader (`PT_INTERP`)
    /// and a script's `#!` interpreter.
    fn with_interpreters(&self, seen: &Observed) -> Vec<Event> {
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
fn interpreter(program: &Path) -> Option<(PathBuf, bool)> {
    if own_tree(program) {
        return None;
    }
    let canon = std::fs::canonicalize(program).ok()?;
    if own_tree(&canon) {
        return None;
    }
    let _as_sandbox = if nix::unistd::geteuid().is_root() {
        let (uid, gid) = crate::sandbox::sandbox_host_ids();
        let creds = crate::supervisor::creds::SandboxCreds {
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

/// `set` without the paths another of its entries (or of `wider`) covers.
fn minimal(set: &BTreeSet<PathBuf>, wider: &[&Vec<PathBuf>]) -> Vec<PathBuf> {
    set.iter()
        .filter(|p| {
            let by_self = set.iter().any(|q| q != *p && p.starts_with(q));
            let by_wider = wider.iter().any(|w| w.iter().any(|q| p.starts_with(q)));
            !by_self && !by_wider
        })
        .cloned()
        .collect()
}

fn addr_text(a: SocketAddr) -> String {
    match a {
        SocketAddr::V4(v) => format!("{}:{}", v.ip(), v.port()),
        SocketAddr::V6(v) => format!("[{}]:{}", v.ip(), v.port()),
    }
}

fn net_rule(s: &str) -> Result<NetRule, LearnError> {
    NetRule::parse(s).map_err(|e| LearnError::Invalid(format!("learned host {s}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(p: &str, access: FileUse) -> Event {
        Event::File {
            path: PathBuf::from(p),
            access,
        }
    }

    fn gen(threshold: usize) -> Generalise {
        Generalise {
            base: crate::policy::builtin_run_default(),
            threshold,
            home: Some(PathBuf::from("/home/u")),
            implicit: vec![PathBuf::from("/opt/buntime")],
            proxy: None,
        }
    }

    #[test]
    fn base_rules_stay_credentials_never_granted() {
        let seen = Observed {
            events: vec![
                file("/usr/lib/python3/os.py", FileUse::Read),
                file("/etc/shadow", FileUse::Read),
                file("/opt/buntime/python/x.py", FileUse::Read),
                file("/usr/bin/python3", FileUse::Exec),
                Event::Connect("203.0.113.7:8080".parse().unwrap()),
                Event::Connect("10.0.0.2:53".parse().unwrap()),
            ],
            attached: true,
            ..Observed::default()
        };
        let l = gen(3).learn(&seen).unwrap();
        let read: Vec<&str> = l
            .policy
            .filesystem
            .read
            .iter()
            .map(|p| p.as_str())
            .collect();
        assert!(
            read.contains(&"/usr") && !read.contains(&"/etc"),
            "{read:?}"
        );
        let exec: Vec<&str> = l
            .policy
            .filesystem
            .exec
            .iter()
            .map(|p| p.as_str())
            .collect();
        assert_eq!(exec, ["/usr/bin"]);
        assert!(l
            .summary
            .not_granted
            .iter()
            .any(|n| n.what == "/etc/shadow"));
        assert_eq!(l.summary.hosts, ["203.0.113.7:8080"]);
        assert_eq!(l.policy.network.mode, NetMode::Proxy);
        assert!(l.policy.filesystem.write.is_empty());
    }

    #[test]
    fn many_files_make_a_directory_but_never_home() {
        let d = std::env::temp_dir().join(format!("learn-gen-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let mut events = Vec::new();
        for i in 0..4 {
            let f = d.join(format!("f{i}"));
            std::fs::write(&f, "x").unwrap();
            events.push(Event::File {
                path: f,
                access: FileUse::Read,
            });
        }
        events.push(file("/nonexistent/learn/x", FileUse::Read));
        let seen = Observed {
            events,
            attached: true,
            ..Observed::default()
        };
        let mut g = gen(3);
        // The temp dir is below /tmp, the sandbox's own: use another base.
        g.base.filesystem.read.clear();
        g.base.filesystem.write.clear();
        let l = g.learn(&seen).unwrap();
        let read: Vec<&str> = l
            .policy
            .filesystem
            .read
            .iter()
            .map(|p| p.as_str())
            .collect();
        if d.starts_with("/tmp") {
            assert_eq!(read.len(), 4, "{read:?}");
        } else {
            assert_eq!(read, [d.to_str().unwrap()]);
        }
        g.home = Some(d.clone());
        let l = g.learn(&seen).unwrap();
        assert_eq!(l.policy.filesystem.read.len(), 4);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_elf_program_brings_its_loader() {
        let i = interpreter(Path::new("/bin/sh")).expect("/bin/sh has an interpreter");
        assert!(i.0.to_string_lossy().contains("ld-"), "{i:?}");
        assert!(!i.1);
    }

    /// A directory outside /tmp (the sandbox's own tree).
    fn workdir(tag: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("learn-gen-{tag}-"))
            .tempdir_in("/var/tmp")
            .unwrap()
    }

    #[test]
    fn a_fifo_or_a_device_run_as_a_program_is_never_opened() {
        let d = workdir("fifo");
        let fifo = d.path().join("f");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o777)).unwrap();
        let seen = Observed {
            events: vec![
                Event::File {
                    path: fifo,
                    access: FileUse::Exec,
                },
                file("/dev/watchdog", FileUse::Exec),
                file("/proc/self/exe", FileUse::Exec),
            ],
            attached: true,
            ..Observed::default()
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let g = gen(3);
        std::thread::spawn(move || {
            let _ = tx.send(g.with_interpreters(&seen).len());
        });
        let n = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("blocked opening a FIFO");
        assert_eq!(n, 3, "no interpreter read from any of them");
    }

    #[test]
    fn only_what_the_sandbox_may_read_is_read_for_it() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let d = workdir("mode");
        let prog = d.path().join("prog");
        std::fs::write(&prog, "#!/opt/secret/interp\n").unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(
            interpreter(&prog),
            None,
            "root's own file read for the sandbox"
        );
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            interpreter(&prog),
            Some((PathBuf::from("/opt/secret/interp"), true))
        );
        // Nor through a directory it may not search.
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(interpreter(&prog), None);
        // Root's credentials are back on this thread.
        assert!(std::fs::File::open(&prog).is_ok());
    }

    #[test]
    fn home_credentials_are_asked_for_not_granted() {
        let seen = Observed {
            events: vec![
                file("/home/u/.ssh/id_ed25519", FileUse::Read),
                file("/home/bob/.aws/credentials", FileUse::Read),
                file("/root/.kube/config", FileUse::Read),
                file("/home/bob/.docker/config.json", FileUse::Read),
                file("/home/bob/.netrc", FileUse::Read),
                file("/home/bob/.git-credentials", FileUse::Read),
                file("/home/bob/.config/gcloud/credentials.db", FileUse::Read),
                file("/home/bob/.gnupg/private-keys-v1.d", FileUse::List),
            ],
            attached: true,
            ..Observed::default()
        };
        let l = gen(3).learn(&seen).unwrap();
        assert_eq!(
            l.summary.not_granted.len(),
            8,
            "{:?}",
            l.summary.not_granted
        );
        assert!(
            l.policy.filesystem.read.is_empty(),
            "{:?}",
            l.policy.filesystem.read
        );
    }

    #[test]
    fn a_grant_covering_a_home_keeps_its_credentials_denied() {
        let mut g = gen(3);
        g.base.filesystem.read = vec![FsPath::new("/home/bob").unwrap()];
        let seen = Observed {
            events: vec![file("/home/bob/notes.txt", FileUse::Read)],
            attached: true,
            ..Observed::default()
        };
        let l = g.learn(&seen).unwrap();
        let deny: Vec<&str> = l
            .policy
            .filesystem
            .deny
            .iter()
            .map(|d| d.as_str())
            .collect();
        assert!(deny.contains(&"/home/bob/.ssh"), "{deny:?}");
        assert!(deny.contains(&"/home/bob/.aws"), "{deny:?}");
    }

    #[test]
    fn a_symlink_is_judged_by_its_target() {
        let d = workdir("link");
        let base = d.path();
        std::fs::create_dir_all(base.join("home/.ssh")).unwrap();
        std::fs::write(base.join("home/.ssh/id_ed25519"), "key").unwrap();
        std::fs::create_dir_all(base.join("data")).unwrap();
        std::fs::write(base.join("data/real.txt"), "x").unwrap();
        std::fs::create_dir_all(base.join("work")).unwrap();
        let link = |name: &str, to: &Path| {
            std::os::unix::fs::symlink(to, base.join("work").join(name)).unwrap();
            base.join("work").join(name)
        };
        let notes = link("notes.txt", &base.join("home/.ssh/id_ed25519"));
        let keys = link("keys", &base.join("home/.ssh"));
        let fine = link("fine.txt", &base.join("data/real.txt"));
        let broken = link("broken", &base.join("nowhere"));
        let mut g = gen(8);
        g.home = Some(base.join("home"));
        g.base.filesystem.read.clear();
        g.base.filesystem.write.clear();
        let seen = Observed {
            events: vec![
                Event::File {
                    path: notes.clone(),
                    access: FileUse::Read,
                },
                Event::File {
                    path: keys.join("id_ed25519"),
                    access: FileUse::Read,
                },
                Event::File {
                    path: fine.clone(),
                    access: FileUse::Read,
                },
                Event::File {
                    path: broken.join("x"),
                    access: FileUse::Create,
                },
            ],
            attached: true,
            ..Observed::default()
        };
        let l = g.learn(&seen).unwrap();
        let read: Vec<&str> = l
            .policy
            .filesystem
            .read
            .iter()
            .map(|p| p.as_str())
            .collect();
        let real = std::fs::canonicalize(base.join("data/real.txt")).unwrap();
        assert_eq!(read, [real.to_str().unwrap()], "{:?}", l.summary);
        assert!(l.policy.filesystem.write.is_empty(), "{:?}", l.summary);
        let refused: Vec<&str> = l
            .summary
            .not_granted
            .iter()
            .map(|n| n.what.as_str())
            .collect();
        for p in [&notes, &keys.join("id_ed25519"), &broken.join("x")] {
            assert!(
                refused.contains(&p.to_str().unwrap()),
                "{p:?} in {refused:?}"
            );
        }
    }

    #[test]
    fn internal_addresses_only_when_the_base_allows_them() {
        let seen = Observed {
            events: vec![
                Event::Connect("127.0.0.1:8080".parse().unwrap()),
                Event::Connect("10.1.2.3:443".parse().unwrap()),
                Event::Connect("169.254.169.254:80".parse().unwrap()),
                Event::Connect("[fe80::1]:22".parse().unwrap()),
                Event::Connect("192.168.1.1:80".parse().unwrap()),
                Event::Connect("1.1.1.1:443".parse().unwrap()),
            ],
            attached: true,
            ..Observed::default()
        };
        let l = gen(3).learn(&seen).unwrap();
        assert_eq!(l.summary.hosts, ["1.1.1.1:443"]);
        assert_eq!(
            l.summary.not_granted.len(),
            5,
            "{:?}",
            l.summary.not_granted
        );
        let mut g = gen(3);
        g.base.network.mode = NetMode::Proxy;
        g.base.network.allow = vec![NetRule::parse("127.0.0.1:8080").unwrap()];
        let l = g.learn(&seen).unwrap();
        assert_eq!(l.summary.hosts, ["1.1.1.1:443", "127.0.0.1:8080"]);
    }

    #[test]
    fn created_files_grant_their_directory() {
        let seen = Observed {
            events: vec![file("/srv/out/result.txt", FileUse::Create)],
            attached: true,
            ..Observed::default()
        };
        let l = gen(3).learn(&seen).unwrap();
        let write: Vec<&str> = l
            .policy
            .filesystem
            .write
            .iter()
            .map(|p| p.as_str())
            .collect();
        assert_eq!(write, ["/srv/out"]);
    }
}
