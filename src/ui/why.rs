//! "Why denied": for a refused decision of the audit log, the rule that
//! refused it in words, and the policy entry that would allow it next time
//! (shown with a copy button; the UI never edits a policy).

use serde::Serialize;

use crate::audit::AuditRecord;
use crate::policy::{NetMode, Policy};

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
fn grant(kind: &str, subject: &str, policy: Option<&Policy>) -> Option<(String, Option<String>)> {
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
        "fs_read" | "list_dir" => Some((
            pretty(serde_json::json!({ "filesystem": { "read": [subject] } })),
            Some(format!("--allow-read={}", quoted(subject))),
        )),
        "fs_write" => Some((
            pretty(serde_json::json!({ "filesystem": { "write": [subject] } })),
            Some(format!("--allow-write={}", quoted(subject))),
        )),
        "exec" => Some((
            pretty(serde_json::json!({ "exec": { "allow": [subject] } })),
            Some(format!("--allow-run={}", quoted(subject))),
        )),
        "net_connect" | "proxy" => {
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

/// Explains a refusal; None for decisions that are not refusals.
pub fn why(r: &AuditRecord, policy: Option<&Policy>) -> Option<Why> {
    if r.decision == "allow" {
        return None;
    }
    let mut w = Why {
        rule: r.rule.clone(),
        reason: r.reason.clone(),
        explanation: String::new(),
        entry: None,
        flag: None,
    };
    let rule = r.rule.as_str();
    if let Some(d) = rule
        .strip_prefix("filesystem.deny ")
        .or_else(|| rule.strip_prefix("network.deny "))
    {
        let section = if rule.starts_with("filesystem") {
            "filesystem.deny"
        } else {
            "network.deny"
        };
        w.explanation = format!(
            "An explicit deny entry ({section} {d:?}) refused it. A deny beats every allow: \
             no entry can be added to allow this; only removing {d:?} from {section} would, \
             and the policy's author put it there on purpose."
        );
        return Some(w);
    }
    match (r.kind.as_str(), rule) {
        (_, crate::audit::RULE_QUOTA) => {
            w.explanation = "The sandbox caused more audit records than its quota allows; \
                 these were counted (see `count`), not written one by one, so that a flood \
                 cannot push earlier decisions out of the log. No policy entry is about this."
                .into();
            return Some(w);
        }
        ("connect" | "protocol", _) => {
            w.explanation = "A connection to the supervisor was refused or closed for breaking \
                 the protocol (a process outside the sandbox, or a misbehaving worker). \
                 No policy entry is about this."
                .into();
            return Some(w);
        }
        ("timeout", _) => {
            let cur = policy.and_then(|p| p.resources.timeout).map(|t| t.millis());
            let next = crate::policy::TimeSpan(doubled(cur, 60_000));
            w.explanation = "The sandbox ran past its wall-clock limit and was killed.".into();
            w.entry = Some(pretty(
                serde_json::json!({ "resources": { "timeout": next.to_string() } }),
            ));
            w.flag = Some(format!("--timeout={next}"));
            return Some(w);
        }
        (_, "resources.output") => {
            let cur = policy.and_then(|p| p.resources.output).map(|b| b.bytes());
            let next = crate::policy::ByteSize(doubled(cur, 1 << 20));
            w.explanation =
                "The sandbox wrote more output than resources.output allows; the rest was dropped."
                    .into();
            w.entry = Some(pretty(
                serde_json::json!({ "resources": { "output": next.to_string() } }),
            ));
            w.flag = Some(format!("--output={next}"));
            return Some(w);
        }
        _ => {}
    }
    let granted_statically = rule.starts_with("filesystem.read ")
        || rule.starts_with("filesystem.write ")
        || rule.starts_with("filesystem.exec ")
        || rule.starts_with("network.allow")
        || rule == "exec rules"
        || rule.ends_with("=allow");
    if granted_statically {
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
    let asked = rule.starts_with("broker.") && rule.ends_with("=ask");
    w.explanation = if rule == "network" {
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
    if let Some((entry, flag)) = grant(&r.kind, &r.subject, policy) {
        w.entry = Some(entry);
        w.flag = flag;
    }
    Some(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: &str, subject: &str, decision: &str, rule: &str, reason: &str) -> AuditRecord {
        let mut r = AuditRecord::new("c", 1, kind, subject);
        r.decision = decision.into();
        r.rule = rule.into();
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
