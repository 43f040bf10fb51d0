//! The walk over what a run used: each event judged against the base
//! policy, then the grants cut to the least set and summarised.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::{
    addr_text, base_rule, fs, host_refusal, is_internal, minimal, net_rule, own_tree,
    writable_by_sandbox, Generalise, Grants, Learned, Link, NotGranted, Summary,
};
use crate::learn::observe::{Event, FileUse, Observed};
use crate::learn::LearnError;
use crate::policy::net::canonical_ip;
use crate::policy::paths::{covers, HOME_SECRETS, KNOWN_SECRETS};
use crate::policy::{normalize_path, FsAccess, FsPath, HostAddrs, NetDecision, NetMode, Policy};

/// What the walk has found so far.
#[derive(Default)]
struct Walk {
    g: Grants,
    summary: Summary,
    not_granted: BTreeSet<NotGranted>,
    /// Exact candidates not covered by the base: dir -> files.
    reads: BTreeMap<PathBuf, BTreeSet<PathBuf>>,
    hosts: BTreeSet<String>,
    dns: bool,
    unix: BTreeSet<PathBuf>,
}

impl Generalise {
    pub fn learn(&self, seen: &Observed) -> Result<Learned, LearnError> {
        let mut w = Walk::default();
        let own = HostAddrs::read().unwrap_or_default();
        for e in self.with_interpreters(seen) {
            match &e {
                Event::File { path, access } => self.file_use(&mut w, seen, path, *access),
                Event::Connect(addr) => self.connect(&mut w, &own, *addr),
                Event::Host(h) => self.host(&mut w, &own, h),
                Event::Proxied { host, addr } => self.proxied(&mut w, &own, host, *addr),
                Event::ConnectUnix(p) => {
                    if !self.implicit.iter().any(|i| p.starts_with(i)) {
                        w.unix.insert(p.clone());
                    }
                }
            }
        }
        self.grant_reads(&mut w);
        self.finish(w, seen)
    }

    fn connect(&self, w: &mut Walk, own: &HostAddrs, addr: SocketAddr) {
        match addr.port() {
            // Name lookups: the proxy resolves names under the
            // learned policy.
            53 => w.dns = true,
            0 => {}
            _ if addr.ip().is_unspecified() => {}
            _ if self
                .proxy
                .is_some_and(|p| canonical_ip(addr.ip()).is_loopback() && addr.port() == p) => {}
            _ => match host_refusal(&self.base, own, addr) {
                Ok(()) => {
                    w.hosts.insert(addr_text(addr));
                }
                Err(why) => {
                    w.not_granted.insert(NotGranted {
                        what: addr_text(addr),
                        why,
                    });
                }
            },
        }
    }

    /// A container's proxy was asked for it: an address is judged as a
    /// connect is (a name is the proxy's).
    fn host(&self, w: &mut Walk, own: &HostAddrs, h: &str) {
        match h
            .parse::<SocketAddr>()
            .map(|a| host_refusal(&self.base, own, a))
        {
            Ok(Err(why)) => {
                w.not_granted.insert(NotGranted {
                    what: h.to_string(),
                    why,
                });
            }
            _ => {
                w.hosts.insert(h.to_string());
            }
        }
    }

    /// A proxy was asked for `host` and reached (or refused) `addr` for
    /// it. A name is judged by its address too: one of an internal address
    /// is granted only when the base lets the sandbox reach both the name
    /// and the address, and then with the address's own entry (the proxy
    /// checks each address a name resolves to against entries naming
    /// addresses; a name entry alone never opens an internal one).
    fn proxied(&self, w: &mut Walk, own: &HostAddrs, host: &str, addr: SocketAddr) {
        if host.parse::<SocketAddr>().is_ok() {
            return self.host(w, own, host);
        }
        if !is_internal(own, addr.ip(), true) {
            w.hosts.insert(host.to_string());
            return;
        }
        let name_ok = host
            .rsplit_once(':')
            .and_then(|(n, p)| Some((n, p.parse::<u16>().ok()?)))
            .is_some_and(|(n, p)| self.base.network.decide(n, p) == NetDecision::Allow);
        let at = addr_text(addr);
        let why = match host_refusal(&self.base, own, addr) {
            Ok(()) if name_ok => {
                w.hosts.insert(host.to_string());
                w.hosts.insert(at.clone());
                w.summary.notes.push(format!(
                    "{at} is the address {host} reached: an internal address the base allows, granted with the name (the proxy checks a name's addresses)"
                ));
                return;
            }
            Ok(()) => format!(
                "it resolves to {at}, which the base allows by address, not by this name (--allow-net={host})"
            ),
            Err(why) => format!("it resolves to {at}, {why}"),
        };
        w.not_granted.insert(NotGranted {
            what: host.to_string(),
            why,
        });
    }

    fn file_use(&self, w: &mut Walk, seen: &Observed, path: &Path, used: FileUse) {
        if self.implicit.iter().any(|i| path.starts_with(i)) {
            return;
        }
        if let Some(why) = self.refused(path) {
            w.not_granted.insert(NotGranted::path(path, why));
            return;
        }
        let Some(target) = self.link_target(w, seen, path) else {
            return;
        };
        let access = match used {
            FileUse::Read | FileUse::List => FsAccess::Read,
            FileUse::Write | FileUse::Create => FsAccess::Write,
            FileUse::Exec => FsAccess::Exec,
        };
        let lists = self.base_lists(access);
        let lists: Vec<(&'static str, &[FsPath])> =
            lists.iter().map(|(n, l)| (*n, l.as_slice())).collect();
        // An exec of a program that is not there is a search along
        // PATH: nothing ran, nothing is granted (not even a base rule).
        if used == FileUse::Exec && !own_tree(path) && !self.exists(seen, path) {
            return;
        }
        // Through a symlink the base's rules do not cover: the target
        // is granted, never the link's name (which may lead elsewhere
        // later).
        let resolved;
        let path = match target {
            Some(t) if base_rule(&lists, path).is_none() => {
                w.summary.notes.push(format!(
                    "{} is a symlink to {}: granted as its target",
                    path.display(),
                    t.display()
                ));
                resolved = t;
                resolved.as_path()
            }
            _ => path,
        };
        if let Some((from, rule)) = base_rule(&lists, path) {
            let r = normalize_path(rule.as_path());
            w.g.from_base.insert(r.clone());
            w.g.add(from, r);
            return;
        }
        if access == FsAccess::Exec && self.base.may_exec(path, "") {
            // exec.allow names it; kept as an exact program.
            w.g.add("exec", path.to_path_buf());
            return;
        }
        // A path the run asked for that is not there was not used (a
        // search along PATH or sys.path); the sandbox's own trees are
        // never the host's.
        let exists = own_tree(path) || self.exists(seen, path);
        if self.write_refused_by_mode(seen, path, used) {
            w.summary.notes.push(format!(
                "a write to {} was refused by the file's mode: not granted",
                path.display()
            ));
            return;
        }
        self.grant(w, path, used, exists);
    }

    /// A symlink (planted by the run itself, perhaps: it could write)
    /// grants what it leads to: judged by its target. `None`: not granted
    /// (noted); `Some(None)`: no symlink on the way.
    fn link_target(&self, w: &mut Walk, seen: &Observed, path: &Path) -> Option<Option<PathBuf>> {
        match self.link(seen, path) {
            Link::None => Some(None),
            Link::Broken(l) => {
                w.not_granted.insert(NotGranted::path(
                    path,
                    format!(
                        "passes through the symlink {}, which leads nowhere",
                        l.display()
                    ),
                ));
                None
            }
            Link::To(t) => {
                if let Some(why) = self.refused(&t) {
                    w.not_granted.insert(NotGranted::path(
                        path,
                        format!("a symlink to {}: {why}", t.display()),
                    ));
                    return None;
                }
                Some(Some(t))
            }
        }
    }

    /// The base lists whose rules may cover a use of `access`. A base rule
    /// of `/` (or the home directory) is no least policy: what it covers
    /// is learned as if it were not there.
    fn base_lists(&self, access: FsAccess) -> Vec<(&'static str, Vec<FsPath>)> {
        let base = &self.base.filesystem;
        let lists: Vec<(&'static str, &[FsPath])> = match access {
            FsAccess::Read => vec![
                ("read", &base.read),
                ("write", &base.write),
                ("exec", &base.exec),
            ],
            FsAccess::Write => vec![("write", &base.write)],
            FsAccess::Exec => vec![("exec", &base.exec)],
        };
        lists
            .into_iter()
            .map(|(n, l)| {
                let narrow = l
                    .iter()
                    .filter(|r| !self.too_wide(&normalize_path(r.as_path())))
                    .cloned()
                    .collect();
                (n, narrow)
            })
            .collect()
    }

    /// A write the file's modes refused did not happen: granting it would
    /// widen the policy for nothing (an escape attempt, often). (A
    /// container's writes are judged by its policy alone: the uid it runs
    /// as is its image's.)
    fn write_refused_by_mode(&self, seen: &Observed, path: &Path, used: FileUse) -> bool {
        let target = match used {
            FileUse::Create => path.parent().unwrap_or(Path::new("/")),
            _ => path,
        };
        matches!(used, FileUse::Create | FileUse::Write)
            && !seen.in_container
            && !own_tree(path)
            && target.exists()
            && !writable_by_sandbox(target)
    }

    /// Grants a use no base rule covers.
    fn grant(&self, w: &mut Walk, path: &Path, used: FileUse, exists: bool) {
        match used {
            FileUse::Create => {
                // A file it may create (or replace): its directory.
                let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
                if self.too_wide(&dir) {
                    w.summary.notes.push(format!(
                        "{} is created in {}: granted as the file alone (learning never grants / or the home directory)",
                        path.display(),
                        dir.display()
                    ));
                    w.g.add("write", path.to_path_buf());
                } else {
                    w.g.add("write", dir);
                }
            }
            _ if !exists => {}
            FileUse::Write => w.g.add("write", path.to_path_buf()),
            FileUse::Exec => w.g.add("exec", path.to_path_buf()),
            FileUse::List if self.too_wide(path) => {
                w.summary.notes.push(format!(
                    "the run listed {}: not granted (learning never grants / or the home directory)",
                    path.display()
                ));
            }
            FileUse::List => w.g.add("read", path.to_path_buf()),
            FileUse::Read => {
                let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
                w.reads.entry(dir).or_default().insert(path.to_path_buf());
            }
        }
    }

    /// Files read: their directory from the threshold on, else each file.
    fn grant_reads(&self, w: &mut Walk) {
        for (dir, files) in std::mem::take(&mut w.reads) {
            if files.len() >= self.threshold.max(1) && !self.too_wide(&dir) && !own_tree(&dir) {
                w.g.add("read", dir);
            } else {
                if files.len() >= self.threshold.max(1) {
                    w.summary.notes.push(format!(
                        "{} files read in {}: granted one by one (learning never grants / or the home directory)",
                        files.len(),
                        dir.display()
                    ));
                }
                for f in files {
                    w.g.add("read", f);
                }
            }
        }
    }

    /// The least policy for the grants, and its summary.
    fn finish(&self, w: Walk, seen: &Observed) -> Result<Learned, LearnError> {
        let write = minimal(&w.g.write, &[]);
        let exec = minimal(&w.g.exec, &[]);
        let read = minimal(&w.g.read, &[&write, &exec]);
        let mut policy = self.base.clone();
        policy.filesystem.read = read.iter().map(|p| fs(p)).collect::<Result<_, _>>()?;
        policy.filesystem.write = write.iter().map(|p| fs(p)).collect::<Result<_, _>>()?;
        policy.filesystem.exec = exec.iter().map(|p| fs(p)).collect::<Result<_, _>>()?;
        policy.exec.allow.clear();
        // Credential files the grants would cover stay denied.
        let granted: Vec<&PathBuf> = read.iter().chain(&write).chain(&exec).collect();
        for deny in self.credential_denies(seen, &granted) {
            let d = fs(&deny)?;
            if !policy.filesystem.deny.contains(&d) {
                policy.filesystem.deny.push(d);
            }
        }
        policy.network.allow = w
            .hosts
            .iter()
            .map(|a| net_rule(a))
            .collect::<Result<_, _>>()?;
        policy.network.mode = if w.hosts.is_empty() {
            NetMode::None
        } else {
            NetMode::Proxy
        };
        if w.hosts.is_empty() {
            policy.network.deny.clear();
        }
        let summary = self.summarise(w, &policy, [&read, &write, &exec]);
        Ok(Learned { policy, summary })
    }

    /// The credential files (the system's, and those of every home) that
    /// the `granted` paths cover.
    fn credential_denies(&self, seen: &Observed, granted: &[&PathBuf]) -> Vec<PathBuf> {
        let mut denies: Vec<PathBuf> = KNOWN_SECRETS
            .iter()
            .filter(|(secret, _)| granted.iter().any(|r| covers(r, Path::new(secret))))
            .map(|(_, deny)| PathBuf::from(deny))
            .collect();
        for h in self.homes(seen, granted) {
            for rel in HOME_SECRETS {
                let secret = h.join(rel);
                if granted.iter().any(|r| covers(r, &secret)) {
                    denies.push(secret);
                }
            }
        }
        denies
    }

    /// The summary of `policy`, whose lists are `[read, write, exec]`.
    fn summarise(
        &self,
        w: Walk,
        policy: &Policy,
        [read, write, exec]: [&Vec<PathBuf>; 3],
    ) -> Summary {
        let Walk {
            g,
            mut summary,
            not_granted,
            dns,
            unix,
            ..
        } = w;
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
        summary
    }
}
