//! After a run: why it ended (timeout, memory limit) and a one-line
//! summary of what the sandbox was refused, from its audit log.

use crate::audit::{AuditRecord, Kind, Verdict};

/// Did the supervisor kill the sandbox for `resources.timeout`?
pub fn timed_out(records: &[AuditRecord]) -> bool {
    records
        .iter()
        .any(|r| r.kind == Kind::Timeout && r.decision == Verdict::Kill)
}

/// `buntime: 2 requests denied: read /etc/shadow (…); connect to x:443 (…)`,
/// or `None` when nothing was denied. At most three are named; the count
/// includes refusals the audit quota only counted (lines with `count`).
pub fn denied_summary(records: &[AuditRecord]) -> Option<String> {
    let denied: Vec<&AuditRecord> = records
        .iter()
        .filter(|r| r.decision == Verdict::Deny && r.kind != Kind::Stdout)
        .collect();
    if denied.is_empty() {
        return None;
    }
    let n: u64 = denied.iter().map(|r| r.events()).sum();
    let named: Vec<String> = denied
        .iter()
        .filter(|r| r.count.is_none())
        .take(3)
        .map(|r| {
            let what = r.kind.verb();
            let subject: String = r
                .subject
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .take(120)
                .collect();
            if r.reason.is_empty() {
                format!("{what} {subject}")
            } else {
                format!("{what} {subject} ({})", r.reason)
            }
        })
        .collect();
    let more = if n > named.len() as u64 {
        format!("; and {} more", n - named.len() as u64)
    } else {
        String::new()
    };
    Some(format!(
        "buntime: {n} request{} denied: {}{more}",
        if n == 1 { "" } else { "s" },
        named.join("; ")
    ))
}

/// How many times the kernel's OOM killer acted in the container's memory
/// cgroup (v1 `memory.oom_control` or v2 `memory.events`).
pub fn oom_kills(cgroup: &str) -> u64 {
    let rel = cgroup.trim_start_matches('/');
    let candidates = [
        format!("/sys/fs/cgroup/memory/{rel}/memory.oom_control"),
        format!("/sys/fs/cgroup/{rel}/memory.events"),
        format!("/sys/fs/cgroup/unified/{rel}/memory.events"),
    ];
    candidates
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter_map(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
            })
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: &str, subject: &str, decision: &str, reason: &str) -> AuditRecord {
        let mut r = AuditRecord::new("c", 1, kind.parse().unwrap(), subject);
        r.decision = decision.parse().unwrap();
        r.reason = reason.into();
        r
    }

    #[test]
    fn summary_names_the_first_denials() {
        assert_eq!(denied_summary(&[rec("fs_read", "/a", "allow", "")]), None);
        let s = denied_summary(&[
            rec(
                "fs_read",
                "/etc/shadow",
                "deny",
                "denied by filesystem.deny /etc/shadow",
            ),
            rec(
                "proxy",
                "x.com:443",
                "deny",
                "no network.allow entry matches",
            ),
        ])
        .unwrap();
        assert_eq!(
            s,
            "buntime: 2 requests denied: read /etc/shadow (denied by filesystem.deny /etc/shadow); connect to x.com:443 (no network.allow entry matches)"
        );
        let many: Vec<AuditRecord> = (0..5)
            .map(|i| rec("exec", &format!("/bin/x{i}\n"), "deny", ""))
            .collect();
        let s = denied_summary(&many).unwrap();
        assert!(
            s.starts_with("buntime: 5 requests denied: run /bin/x0?;"),
            "{s}"
        );
        assert!(s.ends_with("; and 2 more"), "{s}");
        let mut counted = rec("fs_read", "(not recorded)", "deny", "");
        counted.count = Some(1000);
        let s = denied_summary(&[rec("fs_read", "/a", "deny", ""), counted]).unwrap();
        assert_eq!(s, "buntime: 1001 requests denied: read /a; and 1000 more");
    }

    #[test]
    fn timeouts_are_found() {
        let mut r = rec("timeout", "container init", "kill", "");
        assert!(timed_out(std::slice::from_ref(&r)));
        r.decision = Verdict::Error;
        assert!(!timed_out(&[r]));
    }
}
