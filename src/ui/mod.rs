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

mod api;
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
use std::time::Duration;

use serde::Serialize;
use tiny_http::{Method, Request};

pub use approve::{AnswerError, Ask, Link, Verdict};
pub use state::{policy_name, Sandbox, Summary};
pub use why::{why, Why};

use api::{answer, audit, detail, events, info, learned_policy, reconnect};
use approve::Approvals;
use http::{error, json, send, Guard};
use state::Roots;

/// Where `buntime ui` listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7437";

/// The state roots looked at by default: `buntime-runc`'s and `buntime
/// run`'s.
pub fn default_roots() -> Vec<PathBuf> {
    vec![
        PathBuf::from(crate::runtime::DEFAULT_ROOT),
        PathBuf::from(crate::statedir::RUN_STATE_ROOT),
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
                // A deleted learning container's kept record.
                if let (["learned-policy"], true, Some(sb)) = (rest, get, ctx.roots.find_kept(id)) {
                    return learned_policy(req, &sb);
                }
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
