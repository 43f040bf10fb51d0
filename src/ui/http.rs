//! HTTP plumbing of the UI on top of `tiny_http`: who may talk to it
//! (`Host`, `Origin`, token), responses with the security headers, query
//! strings, and server-sent events written as chunks on the raw
//! connection.

use std::io::Write;
use std::net::SocketAddr;

use tiny_http::{Header, Request, Response, StatusCode};

/// The content security policy of every response: nothing but this
/// server, no inline script, no frames.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
    form-action 'none'";

/// Name of the token header (also accepted: `?token=`).
pub const TOKEN_HEADER: &str = "X-Buntime-Token";

/// Decides whether a request may be served.
#[derive(Debug, Clone)]
pub struct Guard {
    /// `host:port` values the `Host` header may take (lower case); empty:
    /// any (a non-loopback listener, where the token protects instead).
    hosts: Vec<String>,
    token: Option<String>,
    /// On loopback: the listener and the uid whose connections (and
    /// root's) are served; other local users are refused.
    owner: Option<(SocketAddr, u32)>,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: &'static str,
}

fn refuse(status: u16, message: &'static str) -> Refusal {
    Refusal { status, message }
}

/// A header's value (first of that name).
pub fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

/// Equal in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Guard {
    /// For a listener bound to `addr`. On loopback the `Host` must name
    /// the listener (`127.0.0.1:P`, `localhost:P`, `[::1]:P`), which keeps
    /// DNS-rebinding pages out; elsewhere the token does.
    pub fn new(addr: SocketAddr, token: Option<String>) -> Self {
        let port = addr.port();
        let hosts = if addr.ip().is_loopback() {
            let mut h = vec![
                format!("localhost:{port}"),
                format!("127.0.0.1:{port}"),
                format!("[::1]:{port}"),
            ];
            let bound = addr.to_string().to_ascii_lowercase();
            if !h.contains(&bound) {
                h.push(bound);
            }
            h
        } else {
            Vec::new()
        };
        // SAFETY: geteuid has no preconditions.
        let owner = addr
            .ip()
            .is_loopback()
            .then(|| (addr, unsafe { libc::geteuid() }));
        Guard {
            hosts,
            token,
            owner,
        }
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Checks `Host`, on loopback the connecting user (ours or root),
    /// `Origin` (which must be this server when present, and present on
    /// anything but GET/HEAD) and, for the API, the token.
    pub fn check(&self, req: &Request, query: &Query, api: bool) -> Result<(), Refusal> {
        let host = header(req, "Host")
            .map(|h| h.trim().to_ascii_lowercase())
            .ok_or_else(|| refuse(400, "missing Host header"))?;
        if !self.hosts.is_empty() && !self.hosts.contains(&host) {
            return Err(refuse(403, "Host is not this server"));
        }
        if let Some((listener, me)) = self.owner {
            let uid = req
                .remote_addr()
                .and_then(|peer| super::peer::owner(listener, *peer));
            match uid {
                Some(u) if u == me || u == 0 => {}
                Some(_) => return Err(refuse(403, "connections of other users are refused")),
                None => return Err(refuse(403, "cannot tell which user is connecting")),
            }
        }
        let safe = matches!(
            req.method(),
            tiny_http::Method::Get | tiny_http::Method::Head
        );
        match header(req, "Origin") {
            Some(o) if o.trim().to_ascii_lowercase() != format!("http://{host}") => {
                return Err(refuse(403, "cross-origin request refused"));
            }
            None if !safe => return Err(refuse(403, "Origin header required")),
            _ => {}
        }
        // Browsers say where a request comes from; refuse other sites even
        // when they manage to send no Origin.
        if let Some(site) = header(req, "Sec-Fetch-Site") {
            if !matches!(site.trim(), "same-origin" | "none") {
                return Err(refuse(403, "cross-site request refused"));
            }
        }
        if let (true, Some(want)) = (api, self.token.as_deref()) {
            let given = header(req, TOKEN_HEADER).or_else(|| query.get("token"));
            if !given.is_some_and(|g| same_secret(g, want)) {
                return Err(refuse(401, "token required (printed when the UI started)"));
            }
        }
        Ok(())
    }
}

/// A parsed query string.
#[derive(Debug, Default, Clone)]
pub struct Query(Vec<(String, String)>);

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes (and `+` as space, for query values).
pub fn decode(s: &str, plus: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Query {
    pub fn parse(q: &str) -> Self {
        Query(
            q.split('&')
                .filter(|p| !p.is_empty())
                .take(32)
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k, true), decode(v, true))
                })
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A non-empty value.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|v| !v.is_empty())
    }
}

/// Splits a request URL into decoded path segments and the query.
pub fn split_url(url: &str) -> (Vec<String>, Query) {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let segs = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| decode(s, false))
        .collect();
    (segs, Query::parse(query))
}

fn hdr(name: &str, value: &str) -> Option<Header> {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
}

/// The headers every response carries.
fn common_headers() -> Vec<Header> {
    [
        ("Content-Security-Policy", CSP),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "no-referrer"),
        ("Cache-Control", "no-store"),
        ("Cross-Origin-Resource-Policy", "same-origin"),
    ]
    .iter()
    .filter_map(|(n, v)| hdr(n, v))
    .collect()
}

/// Sends `body` with `content_type`; errors writing to a client that went
/// away are only logged.
pub fn send(req: Request, status: u16, content_type: &str, body: Vec<u8>) {
    let mut resp = Response::from_data(body).with_status_code(StatusCode(status));
    for h in common_headers() {
        resp.add_header(h);
    }
    if let Some(h) = hdr("Content-Type", content_type) {
        resp.add_header(h);
    }
    if let Err(e) = req.respond(resp) {
        tracing::debug!(target: "ui", "response not sent: {e}");
    }
}

/// `body` as a file to save (`Content-Disposition: attachment`) named
/// `filename` (the caller's, of safe characters only).
pub fn download(req: Request, filename: &str, content_type: &str, body: Vec<u8>) {
    let mut resp = Response::from_data(body).with_status_code(StatusCode(200));
    for h in common_headers() {
        resp.add_header(h);
    }
    let disposition = format!("attachment; filename=\"{filename}\"");
    for h in [
        hdr("Content-Type", content_type),
        hdr("Content-Disposition", &disposition),
    ]
    .into_iter()
    .flatten()
    {
        resp.add_header(h);
    }
    if let Err(e) = req.respond(resp) {
        tracing::debug!(target: "ui", "response not sent: {e}");
    }
}

pub fn json(req: Request, status: u16, v: &impl serde::Serialize) {
    let body = serde_json::to_vec(v).unwrap_or_else(|_| b"null".to_vec());
    send(req, status, "application/json", body);
}

/// `{"error": message}` with `status`.
pub fn error(req: Request, status: u16, message: &str) {
    json(req, status, &serde_json::json!({ "error": message }));
}

/// A server-sent events stream on the raw connection. Each event is one
/// HTTP chunk, flushed at once (tiny_http's own chunking buffers 8 KiB).
pub struct Sse {
    w: Box<dyn Write + Send>,
    chunked: bool,
}

impl Sse {
    /// Writes the response head; the request is consumed.
    pub fn start(req: Request) -> std::io::Result<Sse> {
        let chunked = *req.http_version() != tiny_http::HTTPVersion(1, 0);
        let mut head = String::from("HTTP/1.1 200 OK\r\n");
        head.push_str("Content-Type: text/event-stream; charset=utf-8\r\n");
        for h in common_headers() {
            head.push_str(&format!("{}: {}\r\n", h.field, h.value));
        }
        if chunked {
            head.push_str("Transfer-Encoding: chunked\r\n");
        } else {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut w = req.into_writer();
        w.write_all(head.as_bytes())?;
        w.flush()?;
        let mut s = Sse { w, chunked };
        s.chunk(b"retry: 2000\n\n")?;
        Ok(s)
    }

    fn chunk(&mut self, data: &[u8]) -> std::io::Result<()> {
        if self.chunked {
            write!(self.w, "{:x}\r\n", data.len())?;
            self.w.write_all(data)?;
            self.w.write_all(b"\r\n")?;
        } else {
            self.w.write_all(data)?;
        }
        self.w.flush()
    }

    /// One event; `data` must be one line (JSON is).
    pub fn event(&mut self, name: &str, id: Option<u64>, data: &str) -> std::io::Result<()> {
        let mut e = String::with_capacity(data.len() + 40);
        if let Some(id) = id {
            e.push_str(&format!("id: {id}\n"));
        }
        e.push_str(&format!("event: {name}\n"));
        for line in data.lines() {
            e.push_str("data: ");
            e.push_str(line);
            e.push('\n');
        }
        e.push('\n');
        self.chunk(e.as_bytes())
    }

    /// A comment: keeps proxies quiet and finds clients that went away.
    pub fn ping(&mut self) -> std::io::Result<()> {
        self.chunk(b": ping\n\n")
    }

    /// Ends the stream (the last chunk).
    pub fn finish(mut self) {
        if self.chunked {
            let _ = self.w.write_all(b"0\r\n\r\n");
        }
        let _ = self.w.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_queries_decode() {
        let (segs, q) = split_url("/api/sandboxes/a%2Bb/events?kind=fs_read&x=a+b%21&token=");
        assert_eq!(segs, vec!["api", "sandboxes", "a+b", "events"]);
        assert_eq!(q.get("kind"), Some("fs_read"));
        assert_eq!(q.get("x"), Some("a b!"));
        assert_eq!(q.text("token"), None);
        assert_eq!(decode("%", false), "%");
        assert_eq!(decode("%4", false), "%4");
        assert_eq!(decode("%zz", false), "%zz");
        assert_eq!(decode("a%41", false), "aA");
    }

    #[test]
    fn secrets_compare() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }
}
