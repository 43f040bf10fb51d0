//! `buntime policy diff A B` (what B allows that A does not, in plain
//! words) and `buntime policy suggest --from-audit FILE` (the smallest
//! change to a policy that would have allowed the denials of an audit log).

use crate::policy::intersect::mode_rank;
use std::path::{Path, PathBuf};

use super::generalise::refusal;
use super::LearnError;
use crate::audit::{AuditRecord, Kind, Verdict};
use crate::policy::{normalize_path, FsAccess, FsDecision, FsPath, NetMode, NetRule, Policy};

/// A policy by shipped name (`default`, `strict`, …) or file.
pub fn load(name: &str) -> Result<Policy, LearnError> {
    if !name.contains('/') && !name.ends_with(".json") {
        if let Some(p) = crate::policy::builtin_policy(name) {
            return p.map_err(|e| LearnError::Invalid(e.to_string()));
        }
    }
    crate::policy::load_policy_file(Path::new(name)).map_err(|e| LearnError::Invalid(e.to_string()))
}

/// What `b` allows that `a` does not, one plain sentence a line.
pub fn diff(a: &Policy, b: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    let fs_lists = [
        (&b.filesystem.read, FsAccess::Read, "read"),
        (&b.filesystem.write, FsAccess::Write, "write"),
        (&b.filesystem.exec, FsAccess::Exec, "run programs under"),
    ];
    for (list, access, verb) in fs_lists {
        for p in list {
            let path = normalize_path(p.as_path());
            if a.filesystem.decide(&path, access) != FsDecision::Allow {
                out.push(format!("may {verb} {}", path.display()));
            }
        }
    }
    for d in &a.filesystem.deny {
        if !b.filesystem.deny.contains(d) {
            out.push(format!("no longer denies {d}", d = d.as_str()));
        }
    }
    for prog in &b.exec.allow {
        if !a.exec.allow.contains(prog) {
            out.push(format!("may run the program {}", prog.as_str()));
        }
    }
    if mode_rank(b.network.mode) > mode_rank(a.network.mode) {
        out.push(format!(
            "network mode {} (was {})",
            b.network.mode.as_str(),
            a.network.mode.as_str()
        ));
    }
    if b.network.mode != NetMode::None {
        for r in &b.network.allow {
            if !a.network.allow.contains(r) || a.network.mode == NetMode::None {
                out.push(format!("may connect to {r}"));
            }
        }
    }
    for r in &a.network.deny {
        if !b.network.deny.contains(r) {
            out.push(format!("no longer refuses {r}"));
        }
    }
    for p in &b.env.pass {
        if !a.env.pass.contains(p) {
            out.push(format!("passes the environment variables {}", p.as_str()));
        }
    }
    diff_limits(a, b, &mut out);
    diff_isolation(a, b, &mut out);
    out
}

/// Resource limits `b` lifts or raises, and broker defaults it widens.
fn diff_limits(a: &Policy, b: &Policy, out: &mut Vec<String>) {
    let (ra, rb) = (&a.resources, &b.resources);
    let more = |what: &str, x: Option<String>, y: Option<String>, bigger: bool| match (x, y) {
        (Some(x), None) => Some(format!("no {what} limit (was {x})")),
        (Some(x), Some(y)) if bigger => Some(format!("{what} limit {y} (was {x})")),
        _ => None,
    };
    let s = |v: Option<String>| v;
    out.extend(more(
        "memory",
        s(ra.memory.map(|m| m.to_string())),
        s(rb.memory.map(|m| m.to_string())),
        rb.memory.map(|m| m.bytes()) > ra.memory.map(|m| m.bytes()),
    ));
    out.extend(more(
        "time",
        s(ra.timeout.map(|t| t.to_string())),
        s(rb.timeout.map(|t| t.to_string())),
        rb.timeout.map(|t| t.millis()) > ra.timeout.map(|t| t.millis()),
    ));
    out.extend(more(
        "process",
        s(ra.pids.map(|t| t.to_string())),
        s(rb.pids.map(|t| t.to_string())),
        rb.pids > ra.pids,
    ));
    out.extend(more(
        "output",
        s(ra.output.map(|t| t.to_string())),
        s(rb.output.map(|t| t.to_string())),
        rb.output.map(|t| t.bytes()) > ra.output.map(|t| t.bytes()),
    ));
    let broker = [
        ("fs_read", a.broker.fs_read, b.broker.fs_read),
        ("fs_write", a.broker.fs_write, b.broker.fs_write),
        ("list_dir", a.broker.list_dir, b.broker.list_dir),
        ("net_connect", a.broker.net_connect, b.broker.net_connect),
        ("exec", a.broker.exec, b.broker.exec),
    ];
    for (kind, x, y) in broker {
        if y > x {
            out.push(format!(
                "the broker may {} {kind} (was {})",
                y.as_str(),
                x.as_str()
            ));
        }
    }
}

/// Kernel isolation `b` gives up.
fn diff_isolation(a: &Policy, b: &Policy, out: &mut Vec<String>) {
    let (ia, ib) = (&a.isolation, &b.isolation);
    if ia.read_only_root && !ib.read_only_root {
        out.push("the root filesystem is not read-only".into());
    }
    if ia.no_new_privileges && !ib.no_new_privileges {
        out.push("no_new_privileges is not set".into());
    }
    if ia.seccomp != ib.seccomp {
        out.push("buntime's seccomp profile is not applied".into());
    }
    if ia.capabilities.restricts() && !ib.capabilities.restricts() {
        out.push("capabilities are the bundle's".into());
    }
    if b.landlock.rank() < a.landlock.rank() {
        out.push(format!(
            "landlock {} (was {})",
            b.landlock.as_str(),
            a.landlock.as_str()
        ));
    }
}

/// The smallest change to `base` that would have allowed the denials in
/// `records`: exact paths, `host:port`, exact programs; credential files
/// are never suggested (returned as the second value).
pub fn suggest(
    base: &Policy,
    records: &[AuditRecord],
) -> Result<(Policy, Vec<String>), LearnError> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let home = home.as_deref();
    let mut p = base.clone();
    let mut refused = Vec::new();
    let fs = |s: &str| {
        FsPath::try_from(normalize_path(Path::new(s)).to_string_lossy().into_owned())
            .map_err(|e| LearnError::Invalid(format!("audit path {s:?}: {e}")))
    };
    for r in records.iter().filter(|r| r.decision == Verdict::Deny) {
        match r.kind {
            Kind::FsRead | Kind::ListDir | Kind::FsWrite | Kind::Exec => {
                let path = match r.kind {
                    Kind::Exec => r.subject.split_whitespace().next().unwrap_or_default(),
                    _ => r.subject.as_str(),
                };
                if !path.starts_with('/') {
                    continue;
                }
                // Judged as it would be granted: normalised
                // (`/srv/../root/.ssh/id_rsa` is `/root/.ssh/id_rsa`).
                let pb = normalize_path(Path::new(path));
                if let Some(why) = refusal(&p, &pb, home) {
                    refused.push(format!("{} ({why})", pb.display()));
                    continue;
                }
                let (list, access) = match r.kind {
                    Kind::FsWrite => (&mut p.filesystem.write, FsAccess::Write),
                    Kind::Exec => (&mut p.filesystem.exec, FsAccess::Exec),
                    _ => (&mut p.filesystem.read, FsAccess::Read),
                };
                if base.filesystem.decide(&pb, access) != FsDecision::Allow {
                    let e = fs(&pb.to_string_lossy())?;
                    if !list.contains(&e) {
                        list.push(e);
                    }
                }
            }
            Kind::NetConnect | Kind::Proxy => {
                let rule = NetRule::parse(&r.subject)
                    .map_err(|e| LearnError::Invalid(format!("audit host {:?}: {e}", r.subject)))?;
                if !p.network.allow.contains(&rule) {
                    p.network.allow.push(rule);
                }
                if p.network.mode == NetMode::None {
                    p.network.mode = NetMode::Proxy;
                }
            }
            _ => {}
        }
    }
    Ok((p, refused))
}

/// Audit records from a file (`audit.log`, one JSON object a line; lines
/// that are not records are skipped).
pub fn read_audit(file: &Path) -> Result<Vec<AuditRecord>, LearnError> {
    let s = std::fs::read_to_string(file).map_err(|e| {
        LearnError::Invalid(format!(
            "{}: cannot read the audit log: {e}",
            file.display()
        ))
    })?;
    Ok(s.lines()
        .filter_map(|l| serde_json::from_str::<AuditRecord>(l).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_what_b_adds() {
        let a = crate::policy::builtin_run_default();
        let mut b = a.clone();
        b.filesystem
            .read
            .push(FsPath::try_from("/srv/data".to_string()).unwrap());
        b.network.mode = NetMode::Proxy;
        b.network
            .allow
            .push(NetRule::parse("pypi.org:443").unwrap());
        let d = diff(&a, &b);
        assert!(d.contains(&"may read /srv/data".to_string()), "{d:?}");
        assert!(
            d.contains(&"may connect to pypi.org:443".to_string()),
            "{d:?}"
        );
        assert!(
            d.iter().any(|l| l.starts_with("network mode proxy")),
            "{d:?}"
        );
        assert!(diff(&b, &a).iter().all(|l| !l.contains("/srv")));
        assert!(diff(&a, &a).is_empty());
    }

    #[test]
    fn suggest_adds_denials_but_never_credentials() {
        let base = crate::policy::builtin_run_default();
        let mut recs = Vec::new();
        for (kind, subject) in [
            ("fs_read", "/srv/data/x.csv"),
            ("fs_read", "/etc/shadow"),
            ("net_connect", "example.com:443"),
        ] {
            let mut r = AuditRecord::new("c", 1, kind.parse().unwrap(), subject);
            r.decision = Verdict::Deny;
            recs.push(r);
        }
        let (p, refused) = suggest(&base, &recs).unwrap();
        assert!(p
            .filesystem
            .read
            .iter()
            .any(|r| r.as_str() == "/srv/data/x.csv"));
        assert!(!p
            .filesystem
            .read
            .iter()
            .any(|r| r.as_str().starts_with("/etc/shadow")));
        assert_eq!(refused.len(), 1, "{refused:?}");
        // A path is judged as it would be granted: normalised first; and
        // credential files in any home are never suggested.
        let mut recs = Vec::new();
        for subject in [
            "/srv/../root/.ssh/id_rsa",
            "/srv/../etc/shadow",
            "/home/bob/.aws/credentials",
            "/home/bob/./.ssh/../.kube/config",
        ] {
            let mut r = AuditRecord::new("c", 1, Kind::FsRead, subject);
            r.decision = Verdict::Deny;
            recs.push(r);
        }
        // (With no deny list of its own: the credential list refuses.)
        let mut open = base.clone();
        open.filesystem.deny.clear();
        let (p2, refused) = suggest(&open, &recs).unwrap();
        assert_eq!(refused.len(), 4, "{refused:?}");
        assert_eq!(p2.filesystem.read, open.filesystem.read);
        assert_eq!(p.network.mode, NetMode::Proxy);
        let d = diff(&base, &p);
        assert!(d.contains(&"may read /srv/data/x.csv".to_string()), "{d:?}");
    }
}
