//! The little HTTP the proxy needs: reading a request head within limits,
//! parsing its target (CONNECT authority or absolute URI), rewriting a
//! forwarded request for the origin server, and writing short answers.
//!
//! Everything here reads bytes the sandbox wrote, so it is strict: one
//! request line, CRLF line ends, token header names, bounded sizes.

use std::io::{ErrorKind, Read, Write};

mod framer;

pub use framer::BodyFramer;

/// The longest request head accepted (request line and headers).
pub const MAX_HEAD: usize = 16 << 10;
/// The longest host name (DNS limit).
const MAX_HOST: usize = 253;

/// Where a request wants to go, and what to send there first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// `None` for CONNECT (a tunnel: answer 200, then relay); for a
    /// forwarded request, the rewritten head to send upstream.
    pub forward_head: Option<Vec<u8>>,
    /// How a forwarded request's body ends: exactly that much is sent
    /// upstream, never a byte after it. `Body::None` for CONNECT.
    pub body: Body,
}

/// How a request's body is framed (RFC 9112 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// No body: the request ends with its head.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Why a request was not understood; `status` is the HTTP answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpError {
    pub status: u16,
    pub reason: String,
}

fn bad(reason: impl Into<String>) -> HttpError {
    HttpError {
        status: 400,
        reason: reason.into(),
    }
}

/// What reading the head gave.
#[derive(Debug)]
pub enum HeadRead {
    /// The head (without the blank line) and any bytes read after it.
    Head {
        head: Vec<u8>,
        rest: Vec<u8>,
    },
    /// The client closed (or timed out) before a whole head.
    Closed,
    TimedOut,
    TooLarge,
}

/// Reads until the blank line that ends the head, at most [`MAX_HEAD`].
/// The caller sets a read timeout on `r` so a silent client ends here.
pub fn read_head(r: &mut impl Read) -> HeadRead {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(0) => return HeadRead::Closed,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if super::timed_out(&e) => return HeadRead::TimedOut,
            Err(_) => return HeadRead::Closed,
        };
        // Search only where the new bytes can complete the terminator.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = find(&buf[from..], b"\r\n\r\n") {
            let end = from + i;
            if end > MAX_HEAD {
                return HeadRead::TooLarge;
            }
            let rest = buf[end + 4..].to_vec();
            buf.truncate(end);
            return HeadRead::Head { head: buf, rest };
        }
        if buf.len() > MAX_HEAD {
            return HeadRead::TooLarge;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// At most this many header lines in a request head.
const MAX_HEADERS: usize = 128;

/// Parses a request head into its target. `head` excludes the final CRLF
/// pair. The head is parsed by `httparse`; on top of it, line ends must be
/// CRLF, and the target, the version and the body framing are checked.
pub fn parse_head(head: &[u8]) -> Result<Target, HttpError> {
    check_line_ends(head)?;
    let mut buf = Vec::with_capacity(head.len() + 4);
    buf.extend_from_slice(head);
    buf.extend_from_slice(b"\r\n\r\n");
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    match req.parse(&buf) {
        Ok(httparse::Status::Complete(n)) if n == buf.len() => {}
        Ok(_) => return Err(bad("malformed request head")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError {
                status: 431,
                reason: format!("more than {MAX_HEADERS} header lines"),
            })
        }
        Err(httparse::Error::Token) => return Err(bad("malformed request line")),
        Err(httparse::Error::HeaderName) => return Err(bad("malformed header name")),
        Err(httparse::Error::HeaderValue) => return Err(bad("malformed header value")),
        Err(httparse::Error::Version) => return Err(bad("unsupported HTTP version")),
        Err(e) => return Err(bad(format!("malformed request head: {e}"))),
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(bad("malformed request line"));
    };
    // A URI is visible ASCII (RFC 3986): httparse lets bytes above 0x7f
    // through.
    if target.is_empty() || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("malformed request target"));
    }
    // httparse knows HTTP/1.0 and 1.1 only.
    let version = if version == 1 { "HTTP/1.1" } else { "HTTP/1.0" };
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        // httparse refuses control bytes and trims the value; it lets
        // bytes above 0x7f through.
        let value = std::str::from_utf8(h.value).map_err(|_| bad("header value is not UTF-8"))?;
        headers.push((h.name, value));
    }
    if method == "CONNECT" {
        let (host, port) = split_authority(target, None)?;
        return Ok(Target {
            host,
            port,
            forward_head: None,
            body: Body::None,
        });
    }
    let Some(after_scheme) = strip_prefix_ci(target, "http://") else {
        if strip_prefix_ci(target, "https://").is_some() {
            return Err(bad("https URLs go through CONNECT"));
        }
        return Err(bad(
            "not a proxy request: expected an absolute http:// URI or CONNECT",
        ));
    };
    let split = after_scheme
        .find(['/', '?', '#'])
        .unwrap_or(after_scheme.len());
    let (authority, path) = after_scheme.split_at(split);
    let path = match path {
        "" => "/".to_string(),
        p if p.starts_with('/') => p.to_string(),
        p => format!("/{p}"),
    };
    let (host, port) = split_authority(authority, Some(80))?;
    let body = framing(&headers, version)?;
    let out = forward_head(method, &path, version, authority, headers)?;
    Ok(Target {
        host,
        port,
        forward_head: Some(out.into_bytes()),
        body,
    })
}

/// httparse takes a bare LF for a line end; a server behind us might
/// not, and would see other headers than the ones checked here.
fn check_line_ends(head: &[u8]) -> Result<(), HttpError> {
    for (i, &b) in head.iter().enumerate() {
        let crlf = match b {
            b'\r' => head.get(i + 1) == Some(&b'\n'),
            b'\n' => i > 0 && head[i - 1] == b'\r',
            _ => true,
        };
        if !crlf {
            // A bare CR or LF in the request line would cut the line
            // short upstream: name it as the target's fault there.
            let line_end = find(head, b"\r\n").unwrap_or(head.len());
            return Err(bad(if i < line_end {
                "malformed request target"
            } else {
                "bare CR or LF in the request head"
            }));
        }
    }
    Ok(())
}

/// The head forwarded upstream: origin-form, the URI's authority as the
/// Host, without hop-by-hop headers, one request per connection.
fn forward_head(
    method: &str,
    path: &str,
    version: &str,
    authority: &str,
    headers: Vec<(&str, &str)>,
) -> Result<String, HttpError> {
    // The Host is the URI's authority, whatever the client's Host said
    // (RFC 9112 3.2.2): the audit and the rules saw that host.
    let mut out = format!("{method} {path} {version}\r\nHost: {authority}\r\n");
    // Headers that `Connection` names are hop-by-hop too (RFC 9110 7.6.1).
    let named: Vec<String> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(','))
        .map(|t| t.trim_matches([' ', '\t']).to_ascii_lowercase())
        .collect();
    // Dropping these would forward a body without its framing.
    if let Some(f) = named
        .iter()
        .find(|n| *n == "content-length" || *n == "transfer-encoding")
    {
        return Err(bad(format!("Connection names {f}")));
    }
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        let hop = matches!(
            lower.as_str(),
            "host"
                | "connection"
                | "proxy-connection"
                | "keep-alive"
                | "proxy-authorization"
                | "te"
                | "trailer"
                | "upgrade"
        );
        if hop || named.contains(&lower) {
            continue;
        }
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    // One request per upstream connection: what follows on this connection
    // can only go to the host that was checked.
    out.push_str("Connection: close\r\n\r\n");
    Ok(out)
}

/// The body framing of a forwarded request, refusing every head that two
/// servers could frame differently (RFC 9112 6.1, 6.3): `Content-Length`
/// with `Transfer-Encoding`, either of them twice, a coding other than a
/// single `chunked`, `Transfer-Encoding` in HTTP/1.0, a length that is not
/// plain digits. Otherwise the upstream could read a second request,
/// for a Host of the sandbox's choosing, out of what was checked as one.
fn framing(headers: &[(&str, &str)], version: &str) -> Result<Body, HttpError> {
    let named = |n: &'static str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(h, _)| h.eq_ignore_ascii_case(n))
            .map(|(_, v)| *v)
            .collect()
    };
    let te = named("transfer-encoding");
    let cl = named("content-length");
    if !te.is_empty() && !cl.is_empty() {
        return Err(bad("both Content-Length and Transfer-Encoding"));
    }
    if te.len() > 1 {
        return Err(bad("Transfer-Encoding given more than once"));
    }
    if cl.len() > 1 {
        return Err(bad("Content-Length given more than once"));
    }
    if let Some(v) = te.first() {
        if version == "HTTP/1.0" {
            return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if !v.eq_ignore_ascii_case("chunked") {
            return Err(bad(format!(
                "unsupported Transfer-Encoding {:?} (only \"chunked\")",
                clip(v)
            )));
        }
        return Ok(Body::Chunked);
    }
    match cl.first() {
        None => Ok(Body::None),
        Some(v) => {
            let n = (!v.is_empty() && v.len() <= 18 && v.bytes().all(|b| b.is_ascii_digit()))
                .then(|| v.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| bad(format!("invalid Content-Length {:?}", clip(v))))?;
            Ok(if n == 0 { Body::None } else { Body::Length(n) })
        }
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    // `get`, not indexing: the cut may fall inside a multi-byte character.
    match s.get(..prefix.len()) {
        Some(head) if head.eq_ignore_ascii_case(prefix) => s.get(prefix.len()..),
        _ => None,
    }
}

/// `host:port`, `[v6]:port`, or (with a default port) just the host.
fn split_authority(a: &str, default_port: Option<u16>) -> Result<(String, u16), HttpError> {
    if a.contains('@') {
        return Err(bad("credentials in the URL are not supported"));
    }
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| bad("unterminated [IPv6] host"))?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("invalid IPv6 address"));
        }
        match after {
            "" => (h, None),
            p => (
                h,
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("junk after [IPv6] host"))?,
                ),
            ),
        }
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    };
    let port = match (port, default_port) {
        (Some(p), _) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| bad(format!("invalid port {:?}", clip(p))))?,
        (None, Some(d)) => d,
        (None, None) => return Err(bad("CONNECT needs host:port")),
    };
    if host.is_empty() || host.len() > MAX_HOST {
        return Err(bad("invalid host"));
    }
    let ok = host.parse::<std::net::IpAddr>().is_ok()
        || host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
    if !ok {
        return Err(bad(format!("invalid host {host:?}")));
    }
    Ok((host.trim_end_matches('.').to_ascii_lowercase(), port))
}

/// At most 32 characters of something the client sent, for a reason that
/// goes into the answer, the audit log and the supervisor's log.
fn clip(s: &str) -> String {
    match s.char_indices().nth(32) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// A header value can't carry CR/LF or other controls: keep it printable.
fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(512)
        .collect()
}

/// Writes a short, complete answer and nothing else (the caller closes).
pub fn answer(w: &mut impl Write, status: u16, deny_reason: Option<&str>, body: &str) {
    let text = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {text}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len() + 1
    );
    if let Some(r) = deny_reason {
        head.push_str(&format!("X-Buntime-Deny: {}\r\n", header_safe(r)));
    }
    head.push_str("\r\n");
    head.push_str(body);
    head.push('\n');
    let _ = w.write_all(head.as_bytes());
    let _ = w.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn connect_targets() {
        let t = parse_head(&head("CONNECT Example.COM:443 HTTP/1.1\r\nHost: x")).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.forward_head),
            ("example.com", 443, None)
        );
        let t = parse_head(&head("CONNECT [2001:db8::1]:22 HTTP/1.1")).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("2001:db8::1", 22));
        for bad_target in [
            "example.com",
            "a.com:0",
            "a.com:99999",
            "[::1",
            "a b:1",
            "u@h:1",
        ] {
            let line = format!("CONNECT {bad_target} HTTP/1.1");
            assert_eq!(
                parse_head(line.as_bytes()).unwrap_err().status,
                400,
                "{bad_target}"
            );
        }
    }

    #[test]
    fn forward_rewrites_to_origin_form() {
        let t = parse_head(&head(
            "GET http://h.test:8080/a/b?c=1 HTTP/1.1\r\nHost: h.test:8080\r\nProxy-Connection: keep-alive\r\nAccept: */*",
        ))
        .unwrap();
        assert_eq!((t.host.as_str(), t.port), ("h.test", 8080));
        let fwd = String::from_utf8(t.forward_head.unwrap()).unwrap();
        assert_eq!(
            fwd,
            "GET /a/b?c=1 HTTP/1.1\r\nHost: h.test:8080\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        let t = parse_head(&head("POST HTTP://h.test HTTP/1.0")).unwrap();
        assert_eq!(t.port, 80);
        assert!(String::from_utf8(t.forward_head.unwrap())
            .unwrap()
            .starts_with("POST / HTTP/1.0\r\nHost: h.test\r\n"));
    }

    #[test]
    fn forward_sends_the_uri_host_and_drops_what_connection_names() {
        let t = parse_head(&head(
            "GET http://a.test/x HTTP/1.1\r\nX-Before: 1\r\nHost: other.test\r\nConnection: X-Secret, close\r\nX-Secret: s\r\nX-Kept: k",
        ))
        .unwrap();
        let fwd = String::from_utf8(t.forward_head.unwrap()).unwrap();
        assert_eq!(
            fwd,
            "GET /x HTTP/1.1\r\nHost: a.test\r\nX-Before: 1\r\nX-Kept: k\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn connection_cannot_name_the_body_framing() {
        for f in ["Content-Length", "transfer-encoding"] {
            let h = format!(
                "POST http://a.test/ HTTP/1.1\r\nConnection: close, {f}\r\nContent-Length: 3"
            );
            let e = parse_head(h.as_bytes()).unwrap_err();
            assert_eq!(e.status, 400);
            assert_eq!(
                e.reason,
                format!("Connection names {}", f.to_ascii_lowercase())
            );
        }
    }

    #[test]
    fn control_characters_in_the_target_are_refused() {
        // Forwarded, these would end the request line early upstream and
        // start a header of the sandbox's choosing.
        for h in [
            "GET http://a.test/x\nX-Evil:1 HTTP/1.1",
            "GET http://a.test/x\rX-Evil:1 HTTP/1.1",
            "GET http://a.test/\0 HTTP/1.1",
            "GET http://a.test/\tx HTTP/1.1",
            "CONNECT a.test:443\n HTTP/1.1",
        ] {
            let e = parse_head(h.as_bytes()).unwrap_err();
            assert_eq!(e.status, 400, "{h:?}");
            // httparse refuses a control byte in the line as a whole.
            assert!(
                ["malformed request target", "malformed request line"].contains(&e.reason.as_str()),
                "{h:?}: {}",
                e.reason
            );
        }
    }

    #[test]
    fn odd_input_is_refused_without_panics_or_long_echoes() {
        // The scheme check cuts at byte 7, inside the 'é'.
        for h in [
            "GET aaaaaa\u{e9} HTTP/1.1",
            "GET \u{e9}\u{e9}\u{e9}\u{e9} HTTP/1.1",
        ] {
            assert_eq!(parse_head(h.as_bytes()).unwrap_err().status, 400, "{h:?}");
        }
        let long = "9".repeat(10_000);
        for h in [
            format!("CONNECT a.test:{long} HTTP/1.1"),
            format!("CONNECT a.test:1 HTTP/{long}"),
        ] {
            let e = parse_head(h.as_bytes()).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.reason.len() < 100, "{}", e.reason);
        }
        let e = parse_head(format!("CONNECT a.test:{long} HTTP/1.1").as_bytes()).unwrap_err();
        assert!(e.reason.ends_with("...\""), "{}", e.reason);
    }

    fn post(headers: &str) -> Result<Target, HttpError> {
        parse_head(format!("POST http://a.test/p HTTP/1.1\r\nHost: a.test{headers}").as_bytes())
    }

    #[test]
    fn ambiguous_body_framing_is_refused() {
        for (h, why) in [
            (
                "\r\nContent-Length: 5\r\nTransfer-Encoding: chunked",
                "both Content-Length and Transfer-Encoding",
            ),
            (
                "\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
                "Transfer-Encoding given more than once",
            ),
            (
                "\r\nTransfer-Encoding: gzip, chunked",
                "unsupported Transfer-Encoding \"gzip, chunked\" (only \"chunked\")",
            ),
            (
                "\r\nTransfer-Encoding: chunked, chunked",
                "unsupported Transfer-Encoding \"chunked, chunked\" (only \"chunked\")",
            ),
            (
                "\r\nTransfer-Encoding: xchunked",
                "unsupported Transfer-Encoding \"xchunked\" (only \"chunked\")",
            ),
            (
                "\r\nContent-Length: 5\r\nContent-Length: 5",
                "Content-Length given more than once",
            ),
            ("\r\nContent-Length: +5", "invalid Content-Length \"+5\""),
            (
                "\r\nContent-Length: 5, 5",
                "invalid Content-Length \"5, 5\"",
            ),
            (
                "\r\nContent-Length: 0x10",
                "invalid Content-Length \"0x10\"",
            ),
            (
                "\r\nX: 1\nTransfer-Encoding: chunked",
                "bare CR or LF in the request head",
            ),
            ("\r\nTransfer-Encoding : chunked", "malformed header name"),
        ] {
            let e = post(h).unwrap_err();
            assert_eq!((e.status, e.reason.as_str()), (400, why), "{h:?}");
        }
        let e =
            parse_head(b"POST http://a.test/ HTTP/1.0\r\nTransfer-Encoding: chunked").unwrap_err();
        assert_eq!(e.reason, "Transfer-Encoding in an HTTP/1.0 request");
        // Well framed: the framing is kept, and the headers forwarded.
        let t = post("\r\nTransfer-Encoding: Chunked").unwrap();
        assert_eq!(t.body, Body::Chunked);
        assert!(String::from_utf8(t.forward_head.unwrap())
            .unwrap()
            .contains("\r\nTransfer-Encoding: Chunked\r\n"));
        assert_eq!(
            post("\r\nContent-Length: 12").unwrap().body,
            Body::Length(12)
        );
        assert_eq!(post("\r\nContent-Length: 0").unwrap().body, Body::None);
        assert_eq!(post("").unwrap().body, Body::None);
    }

    /// Feeds `input` to a framer in pieces of `step` bytes; the body's
    /// length, or the error.
    fn frame(body: Body, input: &[u8], step: usize) -> Result<usize, String> {
        let mut f = BodyFramer::new(body);
        let mut used = 0;
        for piece in input.chunks(step) {
            let n = f.feed(piece).map_err(|e| e.reason)?;
            used += n;
            if n < piece.len() {
                break;
            }
        }
        if f.done() {
            Ok(used)
        } else {
            Err(format!("unfinished after {used}"))
        }
    }

    #[test]
    fn bodies_end_where_their_framing_says() {
        let next = b"GET http://other.test/ HTTP/1.1\r\nHost: other.test\r\n\r\n";
        let chunked: &[u8] = b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n";
        for step in [1, 2, 3, 7, 1000] {
            let mut input = chunked.to_vec();
            input.extend_from_slice(next);
            assert_eq!(
                frame(Body::Chunked, &input, step),
                Ok(chunked.len()),
                "{step}"
            );
            let mut input = b"12345".to_vec();
            input.extend_from_slice(next);
            assert_eq!(frame(Body::Length(5), &input, step), Ok(5));
            assert_eq!(frame(Body::None, next, step), Ok(0));
        }
        assert_eq!(frame(Body::Chunked, b"0\r\n\r\n", 1), Ok(5));
        assert_eq!(
            frame(Body::Chunked, b"3\r\nabc\r\n", 1),
            Err("unfinished after 8".into())
        );
        for (bad, why) in [
            (&b"5\nhello\r\n"[..], "bad chunk size"),
            (b"5\r\rhello\r\n", "chunk-size line without CRLF"),
            (b"5 \r\nhello\r\n", "bad chunk size"),
            (b"-5\r\n", "bad chunk size"),
            (b";x\r\n", "bad chunk size"),
            (b"3\r\nabcX\r\n", "chunk data without CRLF"),
            (b"11111111111111111\r\n", "chunk size too large"),
            (b"0\r\nX: 1\n\r\n", "bad byte in a trailer"),
            (b"1;a\x01\r\n", "bad byte in a chunk extension"),
        ] {
            assert_eq!(
                frame(Body::Chunked, bad, 1),
                Err(format!("malformed chunked body: {why}")),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn garbage_is_refused() {
        for h in [
            "",
            "GET / HTTP/1.1",
            "GET https://a.com/ HTTP/1.1",
            "GET http://a.com/ HTTP/2",
            "GET http://a.com/ HTTP/1.1 extra",
            "GET http://a.com/ HTTP/1.1\r\nBad Header: x",
            "GET http://a.com/ HTTP/1.1\r\n folded",
            "G\u{0}T http://a.com/ HTTP/1.1",
        ] {
            assert_eq!(parse_head(h.as_bytes()).unwrap_err().status, 400, "{h:?}");
        }
        assert!(parse_head(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn head_reading_is_bounded() {
        let mut ok: &[u8] = b"CONNECT a:1 HTTP/1.1\r\n\r\nEXTRA";
        match read_head(&mut ok) {
            HeadRead::Head { head, rest } => {
                assert_eq!(head, b"CONNECT a:1 HTTP/1.1");
                assert_eq!(rest, b"EXTRA");
            }
            other => panic!("{other:?}"),
        }
        let big = vec![b'a'; MAX_HEAD + 10];
        assert!(matches!(read_head(&mut big.as_slice()), HeadRead::TooLarge));
        let mut cut: &[u8] = b"CONNECT a:1 HTTP/1.1\r\n";
        assert!(matches!(read_head(&mut cut), HeadRead::Closed));
    }

    #[test]
    fn deny_header_cannot_inject() {
        let mut out = Vec::new();
        answer(&mut out, 403, Some("evil\r\nSet-Cookie: x"), "no");
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("X-Buntime-Deny: evil??Set-Cookie: x\r\n"), "{s}");
        assert!(s.starts_with("HTTP/1.1 403 Forbidden\r\n"));
    }
}
