//! The debug UI: a small web page served by the binary (`buntime ui`, and
//! `buntime run --debug-ui` for one run) that lists sandboxes, streams a
//! sandbox's decisions from its audit log (server-sent events), shows its
//! policy and output, answers its pending `ask`s through the supervisor's
//! approver socket, and explains refusals. See docs/ui.md.
//!
//! The server is `tiny_http`: small, blocking, threads, no async runtime
//! to pull in for a page that serves one person. Each request gets a
//! thread of its own (bounded); a server-sent events stream keeps its
//! thread and is written as chunks on the raw connection. The page, its
//! script and style are compiled in (`include_str!`): nothing is fetched
//! from elsewhere.
//!
//! Who may talk to it: it listens on loopback by default; the `Host` header
//! must name the listener there (no DNS rebinding), an `Origin` must be
//! this server, POSTs must carry one and a JSON body; on any other address
//! the API also needs the token printed at start. Everything the page shows
//! from a sandbox is inserted as text, never as markup.

mod approve;
mod http;
mod peer;
mod state;
mod why;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use tiny_http::{Method, Request};

pub use approve::{AnswerError, Ask, Link, Verdict};
pub use state::{policy_name, Sandbox, Summary};
pub use why::{why, Why};

use approve::Approvals;
use http::{download, error, json, send, Guard, Query, Sse};
use state::Roots;

/// Where `buntime ui` listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7437";

/// The state roots looked at by default: `buntime-runc`'s and `buntime
/// run`'s.
pub fn default_roots() -> Vec<PathBuf> {
    vec![
        PathBuf::from(crate::runtime::DEFAULT_ROOT),
        PathBuf::from(crate::sandbox::DEFAULT_STATE_ROOT),
    ]
}

const PAGE_HTML: &str = include_str!("page.html");
const PAGE_JS: &str = include_str!("page.js");
const PAGE_CSS: &str = include_str!("page.css");

/// Most requests served at once (each SSE stream holds one).
const MAX_HANDLERS: usize = 64;
/// Largest request body read.
const MAX_BODY: u64 = 4096;
/// How often the watcher looks for sandboxes to approve for.
const WATCH_EVERY: Duration = Duration::from_millis(250);
/// How often an event stream looks at the audit log.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// What to serve.
#[derive(Debug, Clone)]
pub struct UiOptions {
    /// Where to listen (port 0: any free port; see [`UiHandle::addr`]).
    pub listen: SocketAddr,
    /// State roots to look in (ids found in two: the first root's).
    pub roots: Vec<PathBuf>,
    /// Show only this sandbox (`buntime run --debug-ui`).
    pub only: Option<String>,
    /// Require this token on the API (`X-Buntime-Token` or `?token=`).
    /// None: none on loopback, a random one elsewhere.
    pub token: Option<String>,
}

impl Default for UiOptions {
    fn default() -> Self {
        UiOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 7437)),
            roots: default_roots(),
            only: None,
            token: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("listen on {addr}: {message}")]
    Bind { addr: SocketAddr, message: String },
    #[error("no state root to look in")]
    NoRoots,
    #[error("invalid sandbox id {0:?}")]
    BadOnly(String),
    #[error("the token must be 16 to 256 letters, digits, '-' or '_'")]
    BadToken,
    #[error("make a random token: {0}")]
    Random(std::io::Error),
    #[error("start the UI's {what} thread: {source}")]
    Thread {
        what: &'static str,
        source: std::io::Error,
    },
}

/// A running UI. Dropping it stops the server.
pub struct UiHandle {
    addr: SocketAddr,
    token: Option<String>,
    stop: Arc<AtomicBool>,
    server: Arc<tiny_http::Server>,
    threads: Vec<JoinHandle<()>>,
}

impl UiHandle {
    /// The address it listens on (the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The token the API needs, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The page's address, with the token when one is needed.
    pub fn url(&self) -> String {
        match &self.token {
            Some(t) => format!("http://{}/?token={t}", self.addr),
            None => format!("http://{}/", self.addr),
        }
    }

    /// Serves until [`UiHandle::stop`] is called from elsewhere (or
    /// forever).
    pub fn wait(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Stops serving: no new requests; streams end within a poll.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.server.unblock();
    }
}

impl Drop for UiHandle {
    fn drop(&mut self) {
        self.stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What every request handler shares.
struct Ctx {
    roots: Roots,
    guard: Guard,
    approvals: Arc<Approvals>,
    stop: Arc<AtomicBool>,
    listen: SocketAddr,
}

fn random_token() -> Result<String, UiError> {
    use std::io::Read;
    let mut b = [0u8; 18];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(UiError::Random)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn valid_token(t: &str) -> bool {
    (16..=256).contains(&t.len())
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn spawn(what: &'static str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, UiError> {
    std::thread::Builder::new()
        .name(format!("ui-{what}"))
        .spawn(f)
        .map_err(|source| UiError::Thread { what, source })
}

/// Binds and serves on threads of its own; returns at once with the bound
/// address (and token). For `buntime run --debug-ui`, with `only` set to
/// the run's sandbox id, while another thread runs the sandbox.
pub fn serve_background(opts: UiOptions) -> Result<UiHandle, UiError> {
    if opts.roots.is_empty() {
        return Err(UiError::NoRoots);
    }
    if let Some(id) = &opts.only {
        crate::runtime::state::validate_id(id).map_err(|_| UiError::BadOnly(id.clone()))?;
    }
    let token = match opts.token {
        Some(t) if valid_token(&t) => Some(t),
        Some(_) => return Err(UiError::BadToken),
        None if opts.listen.ip().is_loopback() => None,
        None => Some(random_token()?),
    };
    let server = tiny_http::Server::http(opts.listen).map_err(|e| UiError::Bind {
        addr: opts.listen,
        message: e.to_string(),
    })?;
    let addr = server.server_addr().to_ip().ok_or_else(|| UiError::Bind {
        addr: opts.listen,
        message: "not an IP listener".into(),
    })?;
    let server = Arc::new(server);
    let stop = Arc::new(AtomicBool::new(false));
    let ctx = Arc::new(Ctx {
        roots: Roots::new(opts.roots, opts.only),
        guard: Guard::new(addr, token.clone()),
        approvals: Approvals::new(Arc::clone(&stop)),
        stop: Arc::clone(&stop),
        listen: addr,
    });
    tracing::info!(target: "ui", %addr, token = token.is_some(), "debug UI listening");
    let watcher = {
        let ctx = Arc::clone(&ctx);
        spawn("watch", move || watch(&ctx))?
    };
    let accept = {
        let ctx = Arc::clone(&ctx);
        let server = Arc::clone(&server);
        spawn("accept", move || accept(&ctx, &server))?
    };
    Ok(UiHandle {
        addr,
        token,
        stop,
        server,
        threads: vec![accept, watcher],
    })
}

/// Serves until the process ends (`buntime ui`); prints the address (and
/// token) on stdout first.
pub fn serve(opts: UiOptions) -> Result<(), UiError> {
    let h = serve_background(opts)?;
    println!("buntime ui: {}", h.url());
    if let Some(t) = h.token() {
        println!(
            "buntime ui: token {t} (send it as ?token= or the {} header)",
            http::TOKEN_HEADER
        );
    }
    h.wait();
    Ok(())
}

/// Connects the UI as approver of every live sandbox.
fn watch(ctx: &Arc<Ctx>) {
    while !ctx.stop.load(Ordering::Relaxed) {
        for sb in ctx.roots.list() {
            let meta = sb.meta();
            let Some(pid) = meta.supervisor_pid else {
                continue;
            };
            let sock = sb.approver_path();
            if sb.supervisor_alive(&meta) && sock.exists() {
                ctx.approvals.watch(&sb.id, pid, &sock, || sb.ask_timeout());
            }
        }
        std::thread::sleep(WATCH_EVERY);
    }
}

/// Hands each request to a thread of its own.
fn accept(ctx: &Arc<Ctx>, server: &tiny_http::Server) {
    let active = Arc::new(AtomicUsize::new(0));
    while !ctx.stop.load(Ordering::Relaxed) {
        let req = match server.recv_timeout(Duration::from_millis(500)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(target: "ui", "accept: {e}");
                continue;
            }
        };
        if active.load(Ordering::Relaxed) >= MAX_HANDLERS {
            error(req, 503, "too many requests at once");
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let done = Arc::clone(&active);
        let c = Arc::clone(ctx);
        let spawned = std::thread::Builder::new()
            .name("ui-request".into())
            .spawn(move || {
                handle(&c, req);
                done.fetch_sub(1, Ordering::Relaxed);
            });
        if let Err(e) = spawned {
            active.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(target: "ui", "request thread: {e}");
        }
    }
}

/// The list row plus what the UI knows as approver.
#[derive(Serialize)]
struct Row {
    #[serde(flatten)]
    summary: Summary,
    approver: Option<Link>,
    pending: usize,
}

fn row(ctx: &Ctx, sb: &Sandbox) -> Row {
    Row {
        summary: sb.summary(),
        approver: ctx.approvals.link(&sb.id),
        pending: ctx.approvals.pending(Some(&sb.id)).len(),
    }
}

fn handle(ctx: &Ctx, req: Request) {
    let url = req.url().to_string();
    let (segs, query) = http::split_url(&url);
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let api = segs.first() == Some(&"api");
    if let Err(r) = ctx.guard.check(&req, &query, api) {
        // The path only: the query may hold a (wrong) token.
        let path = url.split('?').next().unwrap_or_default();
        tracing::warn!(target: "ui", method = %req.method(), path,
            remote = ?req.remote_addr(), "refused: {}", r.message);
        return error(req, r.status, r.message);
    }
    let get = matches!(req.method(), Method::Get | Method::Head);
    let post = *req.method() == Method::Post;
    match segs.as_slice() {
        [] if get => send(req, 200, "text/html; charset=utf-8", PAGE_HTML.into()),
        ["page.js"] if get => send(req, 200, "text/javascript; charset=utf-8", PAGE_JS.into()),
        ["page.css"] if get => send(req, 200, "text/css; charset=utf-8", PAGE_CSS.into()),
        ["api", "info"] if get => info(ctx, req),
        ["api", "sandboxes"] if get => {
            let rows: Vec<Row> = ctx.roots.list().iter().map(|s| row(ctx, s)).collect();
            json(req, 200, &rows)
        }
        ["api", "asks"] if get => json(req, 200, &ctx.approvals.pending(None)),
        ["api", "asks", id, ask] if post => answer(ctx, req, id, ask),
        ["api", "sandboxes", id, rest @ ..] => {
            let Some(sb) = ctx.roots.find(id) else {
                return error(req, 404, "no such sandbox");
            };
            match rest {
                [] if get => detail(ctx, req, &sb),
                ["audit"] if get => audit(req, &sb, &query),
                // GET only: a HEAD would get an endless body.
                ["events"] if *req.method() == Method::Get => events(ctx, req, &sb, &query),
                ["output"] if get => {
                    let from = query.get("from").and_then(|f| f.parse().ok()).unwrap_or(0);
                    json(req, 200, &state::read_output(&sb.output_path(), from))
                }
                ["approver"] if post => reconnect(ctx, req, &sb),
                ["learned-policy"] if get => learned_policy(req, &sb),
                [] | ["audit"] | ["events"] | ["output"] | ["approver"] | ["learned-policy"] => {
                    error(req, 405, "method not allowed")
                }
                _ => error(req, 404, "not found"),
            }
        }
        []
        | ["page.js"]
        | ["page.css"]
        | ["api", "info"]
        | ["api", "sandboxes"]
        | ["api", "asks"]
        | ["api", "asks", _, _] => error(req, 405, "method not allowed"),
        _ => error(req, 404, "not found"),
    }
}

fn info(ctx: &Ctx, req: Request) {
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
    match crate::learn::container::learned(&sb.root, &sb.id, crate::learn::DEFAULT_THRESHOLD) {
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
fn learned_policy(req: Request, sb: &Sandbox) {
    match crate::learn::container::learned(&sb.root, &sb.id, crate::learn::DEFAULT_THRESHOLD) {
        Ok(c) => download(
            req,
            &format!("{}.learned.policy.json", file_name(&sb.id)),
            "application/json",
            c.learned.policy.to_pretty_json().into_bytes(),
        ),
        Err(e) => error(req, 404, &e.to_string()),
    }
}

fn detail(ctx: &Ctx, req: Request, sb: &Sandbox) {
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
fn audit(req: Request, sb: &Sandbox, query: &Query) {
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
fn events(ctx: &Ctx, req: Request, sb: &Sandbox, query: &Query) {
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

fn answer(ctx: &Ctx, mut req: Request, id: &str, ask: &str) {
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
fn reconnect(ctx: &Ctx, mut req: Request, sb: &Sandbox) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let t = random_token().unwrap();
        assert_eq!(t.len(), 36);
        assert!(valid_token(&t));
        assert!(!valid_token("short"));
        assert!(!valid_token("has spaces in it, sixteen+"));
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for text in [PAGE_HTML, PAGE_JS, PAGE_CSS] {
            assert!(!text.contains("http://") && !text.contains("https://"));
            assert!(!text.contains("innerHTML"), "markup from data");
        }
        assert!(PAGE_HTML.contains("/page.js") && PAGE_HTML.contains("/page.css"));
    }

    #[test]
    fn options_are_checked() {
        let mut o = UiOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            roots: vec![],
            ..UiOptions::default()
        };
        assert!(matches!(serve_background(o.clone()), Err(UiError::NoRoots)));
        o.roots = vec![PathBuf::from("/nonexistent")];
        o.only = Some("../x".into());
        assert!(matches!(
            serve_background(o.clone()),
            Err(UiError::BadOnly(_))
        ));
        o.only = None;
        o.token = Some("bad token".into());
        assert!(matches!(
            serve_background(o.clone()),
            Err(UiError::BadToken)
        ));
        o.token = None;
        let h = serve_background(o).unwrap();
        assert_ne!(h.addr().port(), 0);
        assert!(h.token().is_none());
        assert!(h.url().starts_with("http://127.0.0.1:"));
    }
}
