//! From what a learned run used to the least policy that lets the same run
//! pass: the base policy's rules where they already cover a use (system
//! paths stay as the base says them), exact files elsewhere, a directory
//! when a run touched many files under one, never `/` or the home
//! directory, credential files never.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::observe::Observed;
use super::LearnError;
use crate::policy::net::{classify, AddrClass};
use crate::policy::paths::{covers, credential, home_of};
use crate::policy::{
    normalize_path, FsAccess, FsDecision, FsPath, HostAddrs, NetDecision, NetMode, NetRule, Policy,
};

mod interp;
mod walk;

pub(crate) use interp::interpreter_of;

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
/// it; a documentation address (192.0.2.0/24, 2001:db8::/32, …) too.
/// `Err` says why not.
fn host_refusal(base: &Policy, own: &HostAddrs, addr: SocketAddr) -> Result<(), String> {
    match internal(base, own, addr, true) {
        None => Ok(()),
        Some(what) => Err(format!(
            "{what}: learning grants it only when the base policy allows it (--allow-net={})",
            addr_text(addr)
        )),
    }
}

/// What `addr` is when it is an internal address (loopback, private,
/// link-local, metadata, another special class, or one of the host's own;
/// with `doc_too`, a documentation address as well) that the base policy
/// does not let the sandbox reach; `None` when it may be reached. The
/// learning proxy refuses the same set (`learn::proxy`): learning never
/// grants such an address without the base's say.
pub(crate) fn internal(
    base: &Policy,
    own: &HostAddrs,
    addr: SocketAddr,
    doc_too: bool,
) -> Option<String> {
    let ip = addr.ip();
    if !is_internal(own, ip, doc_too) {
        return None;
    }
    let class = classify(ip);
    let is_own = own.contains(ip);
    let doc = doc_too && documentation(ip);
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
        return None;
    }
    Some(if doc {
        "a documentation address (reserved, never routed)".to_string()
    } else if is_own && class == AddrClass::Public {
        "one of the host's own addresses".to_string()
    } else {
        format!("a {} address", class.describe())
    })
}

/// Whether `ip` is internal: not public (loopback, private, link-local,
/// metadata, another special class), one of the host's own, or, with
/// `doc_too`, a documentation address. Documentation addresses are reserved
/// never to be routed (RFC 5737, 3849): a connect there is no use a run
/// needs (showcase.py's probe around the proxy), and a continued call's
/// failure is not seen.
pub(super) fn is_internal(own: &HostAddrs, ip: std::net::IpAddr, doc_too: bool) -> bool {
    classify(ip) != AddrClass::Public || own.contains(ip) || (doc_too && documentation(ip))
}

/// 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24 (RFC 5737), 2001:db8::/32
/// (RFC 3849) and 3fff::/20 (RFC 9637), after the canonicalisation the
/// classifier uses (`::ffff:` mapped and `64:ff9b::` NAT64 forms reach the
/// IPv4 address they carry).
fn documentation(ip: std::net::IpAddr) -> bool {
    match crate::policy::net::canonical_ip(ip) {
        std::net::IpAddr::V4(v4) => matches!(
            v4.octets(),
            [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _]
        ),
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            s[..2] == [0x2001, 0x0db8] || (s[0] == 0x3fff && s[1] & 0xf000 == 0)
        }
    }
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
mod tests;
