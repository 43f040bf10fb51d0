//! "Why denied": for a refused decision of the audit log, the rule that
//! refused it in words, and the policy entry that would allow it next time
//! (shown with a copy button; the UI never edits a policy).

use serde::Serialize;

use crate::audit::{AuditRecord, Kind, Verdict};
use crate::policy::{BrokerRule, NetMode, Policy, RuleRef};

/// The explanation of one refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Why {
    /// The rule that decided (as audited).
    pub rule: String,
    /// The supervisor's reason (as audited).
    pub reason: String,
    /// What happened, in a sentence or two.
    pub explanation: String,
    /// A policy fragment (JSON) that would allow it, to merge by hand.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// The `buntime run` flag that would allow it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flag: Option<String>,
}

/// Splits `host:port` (or `[v6]:port`).
fn host_port(subject: &str) -> Option<(String, u16)> {
    let (host, port) = subject.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port))
}

fn pretty(v: serde_json::Value) -> String {
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// Doubles a limit for the suggestion, at least `min`.
fn doubled(current: Option<u64>, min: u64) -> u64 {
    current.map(|c| c.saturating_mul(2)).unwrap_or(min).max(min)
}

/// The entry (and flag) that grants `kind` on `subject`, or None when no
/// policy entry is about it.
fn grant(kind: Kind, subject: &str, policy: Option<&Policy>) -> Option<(String, Option<String>)> {
    let quoted = |s: &str| {
        if s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:+@=".contains(c))
        {
            s.to_string()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    match kind {
        Kind::FsRead | Kind::ListDir => Some((
            pretty(serde_json::json!({ "filesystem": { "read": [subject] } })),
            Some(format!("--allow-read={}", quoted(subject))),
        )),
        Kind::FsWrite => Some((
            pretty(serde_json::json!({ "filesystem": { "write": [subject] } })),
            Some(format!("--allow-write={}", quoted(subject))),
        )),
        Kind::Exec => Some((
            pretty(serde_json::json!({ "exec": { "allow": [subject] } })),
            Some(format!("--allow-run={}", quoted(subject))),
        )),
        Kind::NetConnect | Kind::Proxy => {
            let (host, port) = host_port(subject)?;
            let rule = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            let none = policy.is_some_and(|p| p.network.mode == NetMode::None);
            let v = if none {
                serde_json::json!({ "network": { "mode": "proxy", "allow": [rule] } })
            } else {
                serde_json::json!({ "network": { "allow": [rule] } })
            };
            Some((pretty(v), Some(format!("--allow-net={}", quoted(&rule)))))
        }
        _ => None,
    }
}

/// An explicit deny entry refused it: nothing can be added to allow it.
fn explicit(section: &str, entry: &str) -> String {
    format!(
        "An explicit deny entry ({section} {entry:?}) refused it. A deny beats every allow: \
         no entry can be added to allow this; only removing {entry:?} from {section} would, \
         and the policy's author put it there on purpose."
    )
}

/// Refusals no policy entry grants, and the limits: their explanation,
/// entry and flag, when `r` is one.
fn not_a_grant(r: &AuditRecord, policy: Option<&Policy>, w: &mut Why) -> bool {
    match (r.kind, &r.rule) {
        (_, RuleRef::FsDeny(p)) => {
            w.explanation = explicit("filesystem.deny", &p.to_string_lossy())
        }
        (_, RuleRef::NetDeny(n)) => w.explanation = explicit("network.deny", &n.to_string()),
        (_, RuleRef::AuditQuota) => {
            w.explanation = "The sandbox caused more audit records than its quota allows; \
                 these were counted (see `count`), not written one by one, so that a flood \
                 cannot push earlier decisions out of the log. No policy entry is about this."
                .into();
        }
        (Kind::Connect | Kind::Protocol, _) => {
            w.explanation = "A connection to the supervisor was refused or closed for breaking \
                 the protocol (a process outside the sandbox, or a misbehaving worker). \
                 No policy entry is about this."
                .into();
        }
        (Kind::Timeout, _) => {
            let cur = policy.and_then(|p| p.resources.timeout).map(|t| t.millis());
            let next = crate::policy::TimeSpan(doubled(cur, 60_000));
            w.explanation = "The sandbox ran past its wall-clock limit and was killed.".into();
            w.entry = Some(pretty(
                serde_json::json!({ "resources": { "timeout": next.to_string() } }),
            ));
            w.flag = Some(format!("--timeout={next}"));
        }
        (_, RuleRef::ResourcesOutput) => {
            let cur = policy.and_then(|p| p.resources.output).map(|b| b.bytes());
            let next = crate::policy::ByteSize(doubled(cur, 1 << 20));
            w.explanation =
                "The sandbox wrote more output than resources.output allows; the rest was dropped."
                    .into();
            w.entry = Some(pretty(
                serde_json::json!({ "resources": { "output": next.to_string() } }),
            ));
            w.flag = Some(format!("--output={next}"));
        }
        _ => return false,
    }
    true
}

/// Explains a refusal; None for decisions that are not refusals.
pub fn why(r: &AuditRecord, policy: Option<&Policy>) -> Option<Why> {
    if r.decision == Verdict::Allow {
        return None;
    }
    let mut w = Why {
        rule: r.rule.to_string(),
        reason: r.reason.clone(),
        explanation: String::new(),
        entry: None,
        flag: None,
    };
    if not_a_grant(r, policy, &mut w) {
        return Some(w);
    }
    let rule = &r.rule;
    if rule.grants() {
        w.explanation = format!(
            "The policy allowed it ({rule}), but the operation itself failed: {}. \
             A policy entry would not change that.",
            if r.reason.is_empty() {
                "no reason recorded"
            } else {
                &r.reason
            }
        );
        return Some(w);
    }
    let asked = matches!(
        rule,
        RuleRef::Broker {
            rule: BrokerRule::Ask,
            ..
        }
    );
    w.explanation = if *rule == RuleRef::Network {
        format!(
            "{} resolves to a special address (loopback, private, link-local or cloud \
             metadata: {}). Such addresses are refused unless an allow entry names the \
             address itself (an IP or CIDR entry) as well as the name.",
            r.subject, r.reason
        )
    } else if asked && r.reason.contains("no answer") {
        format!(
            "The policy says to ask ({rule}), and no approver answered in time. \
             Answer it in this UI next time, or grant it in the policy:"
        )
    } else if asked {
        format!("The policy says to ask ({rule}), and the approver said no. To grant it without asking:")
    } else {
        "No rule of the policy grants it, and the broker section does not allow it (deny by \
         default). This entry would grant exactly this:"
            .into()
    };
    if let Some((entry, flag)) = grant(r.kind, &r.subject, policy) {
        w.entry = Some(entry);
        w.flag = flag;
    }
    Some(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: &str, subject: &str, decision: &str, rule: &str, reason: &str) -> AuditRecord {
        let mut r = AuditRecord::new("c", 1, kind.parse().unwrap(), subject);
        r.decision = decision.parse().unwrap();
        r.rule = rule.parse().unwrap();
        r.reason = reason.into();
        r.latency_us = 1;
        r
    }

    fn entry(w: &Why) -> serde_json::Value {
        serde_json::from_str(w.entry.as_deref().expect("an entry")).expect("entry is JSON")
    }

    #[test]
    fn allowed_decisions_need_no_explanation() {
        assert!(why(&rec("fs_read", "/x", "allow", "default", ""), None).is_none());
    }

    #[test]
    fn default_denials_offer_the_exact_entry() {
        let w = why(&rec("fs_read", "/opt/x y", "deny", "default", "no"), None).unwrap();
        assert_eq!(
            entry(&w),
            serde_json::json!({"filesystem": {"read": ["/opt/x y"]}})
        );
        assert_eq!(w.flag.as_deref(), Some("--allow-read='/opt/x y'"));
        let w = why(&rec("fs_write", "/tmp/o", "deny", "default", ""), None).unwrap();
        assert_eq!(
            entry(&w),
            serde_json::json!({"filesystem": {"write": ["/tmp/o"]}})
        );
        let w = why(&rec("exec", "/bin/ls", "deny", "default", ""), None).unwrap();
        assert_eq!(
            entry(&w),
            serde_json::json!({"exec": {"allow": ["/bin/ls"]}})
        );
        assert_eq!(w.flag.as_deref(), Some("--allow-run=/bin/ls"));
    }

    #[test]
    fn network_denials_name_host_and_port_and_the_mode() {
        let none =
            crate::policy::parse_policy(r#"{"version":1,"network":{"mode":"none"}}"#, "p.json")
                .unwrap();
        let w = why(
            &rec("net_connect", "pypi.org:443", "deny", "default", ""),
            Some(&none),
        )
        .unwrap();
        assert_eq!(
            entry(&w),
            serde_json::json!({"network": {"mode": "proxy", "allow": ["pypi.org:443"]}})
        );
        assert_eq!(w.flag.as_deref(), Some("--allow-net=pypi.org:443"));
        let w = why(
            &rec("proxy", "[::1]:80", "deny", "network", "loopback"),
            None,
        )
        .unwrap();
        assert!(w.explanation.contains("special address"), "{w:?}");
        assert_eq!(
            entry(&w),
            serde_json::json!({"network": {"allow": ["[::1]:80"]}})
        );
    }

    #[test]
    fn explicit_denies_offer_no_entry() {
        let w = why(
            &rec(
                "fs_read",
                "/data/secret",
                "deny",
                "filesystem.deny /data/secret",
                "",
            ),
            None,
        )
        .unwrap();
        assert!(w.entry.is_none());
        assert!(w.explanation.contains("deny beats every allow"), "{w:?}");
    }

    #[test]
    fn failures_after_a_grant_are_not_policy_matters() {
        let w = why(
            &rec(
                "fs_read",
                "/data/x",
                "deny",
                "filesystem.read /data",
                "no such file",
            ),
            None,
        )
        .unwrap();
        assert!(w.entry.is_none());
        assert!(w.explanation.contains("no such file"));
    }

    #[test]
    fn asks_limits_and_protocol() {
        let w = why(
            &rec(
                "fs_read",
                "/o",
                "deny",
                "broker.fs_read=ask",
                "denied by the approver",
            ),
            None,
        )
        .unwrap();
        assert!(w.explanation.contains("approver said no"));
        assert!(w.entry.is_some());
        let w = why(&rec("stdout", "", "deny", "resources.output", ""), None).unwrap();
        assert_eq!(
            entry(&w),
            serde_json::json!({"resources": {"output": "1M"}})
        );
        let w = why(&rec("timeout", "", "kill", "resources.timeout", ""), None).unwrap();
        assert_eq!(
            entry(&w),
            serde_json::json!({"resources": {"timeout": "1m"}})
        );
        let w = why(&rec("protocol", "bad", "close", "default", ""), None).unwrap();
        assert!(w.entry.is_none());
    }
}
