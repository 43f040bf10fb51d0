//! The UI's endpoints below `/api`: a sandbox's detail, audit, events
//! stream, learned policy; answers to asks; the approver link.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;
use tiny_http::Request;

use super::http::{self, download, error, json, Query, Sse};
use super::state;
use super::{row, why, AnswerError, Ctx, Sandbox, Verdict, MAX_BODY, POLL_EVERY};

pub(super) fn info(ctx: &Ctx, req: Request) {
    json(
        req,
        200,
        &serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "listen": ctx.listen.to_string(),
            "roots": ctx.roots.paths(),
            "only": ctx.roots.only(),
            "token_required": ctx.guard.token().is_some(),
        }),
    )
}

/// A learning container's learned policy so far (`buntime.dev/learn`,
/// docs/learn.md): the summary for the page, or why there is none.
fn learned_json(sb: &Sandbox) -> serde_json::Value {
    let learning = sb.root.state_dir(&sb.id).learn_record().is_file();
    if !learning {
        return serde_json::Value::Null;
    }
    match crate::runtime::learned::learned(&sb.root, &sb.id, crate::learn::DEFAULT_THRESHOLD) {
        Ok(c) => serde_json::json!({
            "summary": crate::learn::container::summary_text(&sb.id, &c),
            "incomplete": c.incomplete,
            "download": format!("/api/sandboxes/{}/learned-policy", sb.id),
        }),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    }
}

/// `id` with nothing but `[A-Za-z0-9._-]` (others become `_`): a file
/// name safe in a header.
fn file_name(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The learned policy as a file to save.
pub(super) fn learned_policy(req: Request, sb: &Sandbox) {
    match crate::runtime::learned::learned(&sb.root, &sb.id, crate::learn::DEFAULT_THRESHOLD) {
        Ok(c) => download(
            req,
            &format!("{}.learned.policy.json", file_name(&sb.id)),
            "application/json",
            c.learned.policy.to_pretty_json().into_bytes(),
        ),
        Err(e) => error(req, 404, &e.to_string()),
    }
}

pub(super) fn detail(ctx: &Ctx, req: Request, sb: &Sandbox) {
    let meta = sb.meta();
    let policy = sb.policy();
    let body = serde_json::json!({
        "sandbox": row(ctx, sb),
        "bundle": meta.bundle,
        "annotations": meta.annotations,
        "policy_text": policy.as_ref().map(crate::policy::explain),
        "policy": sb.policy_json(),
        "ask_timeout_ms": sb.ask_timeout().as_millis() as u64,
        "pending": ctx.approvals.pending(Some(&sb.id)),
        "always": ctx.approvals.always(&sb.id),
        "learned": learned_json(sb),
    });
    json(req, 200, &body)
}

/// Whether a record passes the `kind`/`decision` filters.
fn wanted(r: &crate::audit::AuditRecord, query: &Query) -> bool {
    query.text("kind").is_none_or(|k| k == r.kind.as_str())
        && query
            .text("decision")
            .is_none_or(|d| d == r.decision.as_str())
}

/// One decision as the page gets it: the record, where it ends in the
/// log, and for refusals the explanation.
fn decision_json(
    off: u64,
    r: &crate::audit::AuditRecord,
    policy: Option<&crate::policy::Policy>,
) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("offset".into(), off.into());
        if let Some(w) = why(r, policy) {
            o.insert("why".into(), serde_json::to_value(w).unwrap_or_default());
        }
    }
    v
}

/// The audit log (its last part), filtered, with counts of everything.
pub(super) fn audit(req: Request, sb: &Sandbox, query: &Query) {
    let path = sb.audit_path();
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(1000)
        .clamp(1, 10_000);
    let mut tail = state::AuditTail::new(path.clone(), state::start_offset(&path, None));
    let policy = sb.policy();
    let mut counts = Counts::default();
    let mut records = std::collections::VecDeque::new();
    loop {
        let batch = tail.read_new();
        if batch.is_empty() {
            break;
        }
        for (off, r) in batch {
            counts.add(&r);
            if wanted(&r, query) {
                if records.len() == limit {
                    records.pop_front();
                }
                records.push_back(decision_json(off, &r, policy.as_ref()));
            }
        }
    }
    json(
        req,
        200,
        &serde_json::json!({ "records": records, "counts": counts }),
    )
}

#[derive(Default, Serialize)]
struct Counts {
    total: u64,
    decision: std::collections::BTreeMap<String, u64>,
    kind: std::collections::BTreeMap<String, u64>,
}

impl Counts {
    fn add(&mut self, r: &crate::audit::AuditRecord) {
        // A line may stand for many events (an output tally, records the
        // audit quota only counted).
        let n = r.events();
        self.total += n;
        *self.decision.entry(r.decision.to_string()).or_default() += n;
        *self.kind.entry(r.kind.to_string()).or_default() += n;
    }
}

/// Server-sent events: `decision` per audit record (replayed from the
/// log's last part, or from `Last-Event-ID`/`?from=`, then live), `asks`
/// whenever the pending questions change, `end` once the supervisor is
/// gone and the log is drained.
pub(super) fn events(ctx: &Ctx, req: Request, sb: &Sandbox, query: &Query) {
    let resume = http::header(&req, "Last-Event-ID")
        .or_else(|| query.get("from"))
        .and_then(|v| v.trim().parse::<u64>().ok());
    let path = sb.audit_path();
    let mut tail = state::AuditTail::new(path.clone(), state::start_offset(&path, resume));
    let policy = sb.policy();
    let Ok(mut sse) = Sse::start(req) else {
        return;
    };
    tracing::debug!(target: "ui", id = %sb.id, "event stream opened");
    let mut seen_gen = None;
    let mut last_write = Instant::now();
    let mut draining = false;
    let result = loop {
        if ctx.stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        let mut sent = Ok(());
        for (off, r) in tail.read_new() {
            if wanted(&r, query) {
                let v = decision_json(off, &r, policy.as_ref());
                sent = sse.event("decision", Some(off), &v.to_string());
                last_write = Instant::now();
                if sent.is_err() {
                    break;
                }
            }
        }
        if let Err(e) = sent {
            break Err(e);
        }
        let generation = ctx.approvals.generation();
        if seen_gen != Some(generation) {
            seen_gen = Some(generation);
            let v = serde_json::json!({
                "pending": ctx.approvals.pending(Some(&sb.id)),
                "approver": ctx.approvals.link(&sb.id),
                "always": ctx.approvals.always(&sb.id),
            });
            if let Err(e) = sse.event("asks", None, &v.to_string()) {
                break Err(e);
            }
            last_write = Instant::now();
        }
        if last_write.elapsed() > Duration::from_secs(10) {
            if let Err(e) = sse.ping() {
                break Err(e);
            }
            last_write = Instant::now();
        }
        if sb.finished(&sb.meta()) {
            // One more read after noticing, for lines written just before
            // the supervisor exited.
            if draining {
                let _ = sse.event("end", None, r#"{"reason":"the supervisor is gone"}"#);
                break Ok(());
            }
            draining = true;
            continue;
        }
        ctx.approvals.wait_change(generation, POLL_EVERY);
    };
    if let Err(e) = result {
        tracing::debug!(target: "ui", id = %sb.id, "event stream closed: {e}");
        return;
    }
    sse.finish();
}

fn read_body(req: &mut Request) -> Result<Vec<u8>, &'static str> {
    use std::io::Read;
    let mut body = Vec::new();
    req.as_reader()
        .take(MAX_BODY + 1)
        .read_to_end(&mut body)
        .map_err(|_| "could not read the request body")?;
    if body.len() as u64 > MAX_BODY {
        return Err("request body too large");
    }
    Ok(body)
}

/// POSTs carry JSON: a cross-site form cannot send that without a CORS
/// preflight, which this server never grants.
fn json_body(req: &mut Request) -> Result<serde_json::Value, (u16, &'static str)> {
    let ct = http::header(req, "Content-Type").unwrap_or_default();
    if !ct
        .trim()
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        return Err((415, "Content-Type must be application/json"));
    }
    let body = read_body(req).map_err(|m| (400, m))?;
    serde_json::from_slice(&body).map_err(|_| (400, "the body is not JSON"))
}

pub(super) fn answer(ctx: &Ctx, mut req: Request, id: &str, ask: &str) {
    let body = match json_body(&mut req) {
        Ok(b) => b,
        Err((status, m)) => return error(req, status, m),
    };
    let Some(verdict) = body["result"].as_str().and_then(Verdict::parse) else {
        return error(req, 400, "result must be \"allow\", \"deny\" or \"always\"");
    };
    let Ok(ask) = ask.parse::<u64>() else {
        return error(req, 400, "the question id must be a number");
    };
    if ctx.roots.find(id).is_none() {
        return error(req, 404, "no such sandbox");
    }
    match ctx.approvals.answer(id, ask, verdict) {
        Ok(()) => json(
            req,
            200,
            &serde_json::json!({ "ok": true, "result": body["result"] }),
        ),
        Err(e @ AnswerError::NotPending { .. }) => error(req, 404, &e.to_string()),
        Err(e @ AnswerError::Closed(_)) => error(req, 409, &e.to_string()),
        Err(e @ AnswerError::Write { .. }) => error(req, 502, &e.to_string()),
    }
}

/// Takes the approver role back (after another approver replaced the UI).
pub(super) fn reconnect(ctx: &Ctx, mut req: Request, sb: &Sandbox) {
    if let Err((status, m)) = json_body(&mut req) {
        return error(req, status, m);
    }
    let meta = sb.meta();
    let sock = sb.approver_path();
    let (Some(pid), true) = (
        meta.supervisor_pid,
        sb.supervisor_alive(&meta) && sock.exists(),
    ) else {
        return error(req, 409, "the sandbox has no live supervisor");
    };
    if !ctx.approvals.reconnect(&sb.id) {
        ctx.approvals.watch(&sb.id, pid, &sock, || sb.ask_timeout());
    }
    json(
        req,
        200,
        &serde_json::json!({ "approver": ctx.approvals.link(&sb.id) }),
    )
}
