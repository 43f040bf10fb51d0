//! "An annotation policy may only take rights away": compare the effective
//! spec derived from it with the bundle's own spec and refuse anything the
//! bundle did not already have.

use std::fmt;
use std::path::Path;

use libcontainer::oci_spec::runtime::{Linux, LinuxNamespace, Mount, Spec};

/// The rights an effective spec would add to the bundle's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarrowingError {
    pub violations: Vec<String>,
}

impl fmt::Display for NarrowingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "an annotation policy may only take rights away from the bundle, but it would add: {}",
            self.violations.join("; ")
        )
    }
}

impl std::error::Error for NarrowingError {}

fn is_host_mount(m: &Mount) -> bool {
    // Binds expose host paths; so does any mount whose source is an
    // absolute host path with a non-virtual type.
    let bind = super::is_bind(m);
    let virtual_fs = matches!(
        m.typ().as_deref(),
        Some("tmpfs" | "proc" | "sysfs" | "devpts" | "mqueue" | "cgroup" | "cgroup2" | "shm")
    );
    bind || (!virtual_fs && m.source().as_ref().is_some_and(|s| s.is_absolute()))
}

fn read_only(m: &Mount) -> bool {
    m.options().iter().flatten().any(|o| o == "ro")
}

/// Refuse an `effective` spec that has a host mount, device, capability,
/// shared namespace (host networking included) or weaker process setting
/// that `bundle` did not already have.
pub fn check_only_narrows(bundle: &Spec, effective: &Spec) -> Result<(), NarrowingError> {
    let mut v: Vec<String> = Vec::new();
    host_mounts(bundle, effective, &mut v);
    root_filesystem(bundle, effective, &mut v);
    let bl = bundle.linux().clone().unwrap_or_default();
    let el = effective.linux().clone().unwrap_or_default();
    devices(&bl, &el, &mut v);
    namespaces(&bl, &el, &mut v);
    sysctls(&bl, &el, &mut v);
    if effective.hooks() != bundle.hooks() {
        // Hooks run with the runtime's rights.
        v.push("changed hooks".into());
    }
    masks(&bl, &el, &mut v);
    process(bundle, effective, &mut v);
    if v.is_empty() {
        Ok(())
    } else {
        Err(NarrowingError { violations: v })
    }
}

fn host_mounts(bundle: &Spec, effective: &Spec, v: &mut Vec<String>) {
    // Host mounts.
    let bmounts = bundle.mounts().clone().unwrap_or_default();
    for m in effective
        .mounts()
        .iter()
        .flatten()
        .filter(|m| is_host_mount(m))
    {
        let same = bmounts.iter().find(|b| {
            b.destination() == m.destination() && b.source() == m.source() && is_host_mount(b)
        });
        match same {
            None => v.push(format!(
                "host mount {} -> {}",
                m.source().as_deref().unwrap_or(Path::new("?")).display(),
                m.destination().display()
            )),
            Some(b) if read_only(b) && !read_only(m) => v.push(format!(
                "write access to mount {}",
                m.destination().display()
            )),
            Some(_) => {}
        }
    }
}

fn root_filesystem(bundle: &Spec, effective: &Spec, v: &mut Vec<String>) {
    // Root filesystem writability.
    let ro = |s: &Spec| {
        s.root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false)
    };
    if ro(bundle) && !ro(effective) {
        v.push("a writable root filesystem".into());
    }
}

fn devices(bl: &Linux, el: &Linux, v: &mut Vec<String>) {
    let bdev = bl.devices().clone().unwrap_or_default();
    for d in el.devices().iter().flatten() {
        if !bdev.iter().any(|b| b == d) {
            v.push(format!("device {}", d.path().display()));
        }
    }
    let bcg = bl
        .resources()
        .as_ref()
        .and_then(|r| r.devices().clone())
        .unwrap_or_default();
    for d in el
        .resources()
        .as_ref()
        .and_then(|r| r.devices().clone())
        .unwrap_or_default()
    {
        if d.allow() && !bcg.contains(&d) {
            v.push(format!(
                "device cgroup rule allowing {:?} {:?}:{:?} {:?}",
                d.typ(),
                d.major(),
                d.minor(),
                d.access()
            ));
        }
    }
}

/// Namespaces: each one the bundle has must stay, unchanged; dropping one
/// would share the host's (network included).
fn namespaces(bl: &Linux, el: &Linux, v: &mut Vec<String>) {
    let ens: Vec<LinuxNamespace> = el.namespaces().clone().unwrap_or_default();
    for b in bl.namespaces().iter().flatten() {
        match ens.iter().find(|e| e.typ() == b.typ()) {
            None => v.push(format!("the host's {} namespace", b.typ())),
            Some(e) if b.path().is_none() && e.path().is_some() => v.push(format!(
                "joining the existing {} namespace {}",
                e.typ(),
                e.path().as_deref().unwrap_or(Path::new("?")).display()
            )),
            _ => {}
        }
    }
    for e in &ens {
        if let Some(p) = e.path() {
            let known = bl
                .namespaces()
                .iter()
                .flatten()
                .any(|b| b.typ() == e.typ() && b.path().as_ref() == Some(p));
            if !known && bl.namespaces().iter().flatten().any(|b| b.typ() == e.typ()) {
                v.push(format!("joining the {} namespace {}", e.typ(), p.display()));
            }
        }
    }
}

/// Kernel tunables run with the runtime's rights.
fn sysctls(bl: &Linux, el: &Linux, v: &mut Vec<String>) {
    for (k, val) in el.sysctl().iter().flatten() {
        if bl.sysctl().as_ref().and_then(|s| s.get(k)) != Some(val) {
            v.push(format!("sysctl {k}={val}"));
        }
    }
}

/// Masking and read-only paths only grow; the bundle's seccomp profile
/// stays.
fn masks(bl: &Linux, el: &Linux, v: &mut Vec<String>) {
    for p in bl.masked_paths().iter().flatten() {
        if !el.masked_paths().iter().flatten().any(|e| e == p) {
            v.push(format!("unmasking {p}"));
        }
    }
    for p in bl.readonly_paths().iter().flatten() {
        if !el.readonly_paths().iter().flatten().any(|e| e == p) {
            v.push(format!("write access to read-only path {p}"));
        }
    }
    if bl.seccomp().is_some() && el.seccomp() != bl.seccomp() {
        v.push("a different seccomp profile than the bundle's".into());
    }
}

/// Process: identity, capabilities, privileges, limits.
fn process(bundle: &Spec, effective: &Spec, v: &mut Vec<String>) {
    if let (Some(bp), Some(ep)) = (bundle.process(), effective.process()) {
        if bp.user() != ep.user() {
            v.push("a different user".into());
        }
        let (buid, euid) = (bp.user().uid(), ep.user().uid());
        for ((name, b), (_, e)) in super::capabilities::held(bp.capabilities().as_ref(), buid)
            .iter()
            .zip(super::capabilities::held(ep.capabilities().as_ref(), euid).iter())
        {
            let mut extra: Vec<String> = e
                .difference(b)
                .map(|c| {
                    let n = c.to_string();
                    if n.starts_with("CAP_") {
                        n
                    } else {
                        format!("CAP_{n}")
                    }
                })
                .collect();
            extra.sort();
            if !extra.is_empty() {
                v.push(format!("{name} capabilities {}", extra.join(",")));
            }
        }
        if bp.no_new_privileges() == Some(true) && ep.no_new_privileges() != Some(true) {
            v.push("gaining privileges (noNewPrivileges off)".into());
        }
        for br in bp.rlimits().iter().flatten() {
            if let Some(er) = ep.rlimits().iter().flatten().find(|r| r.typ() == br.typ()) {
                if er.hard() > br.hard() {
                    v.push(format!("a higher {:?} limit", br.typ()));
                }
            }
        }
        if bp.apparmor_profile().is_some() && ep.apparmor_profile() != bp.apparmor_profile() {
            v.push("a different AppArmor profile".into());
        }
        if bp.selinux_label().is_some() && ep.selinux_label() != bp.selinux_label() {
            v.push("a different SELinux label".into());
        }
    }
}
