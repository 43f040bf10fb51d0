//! The little HTTP the proxy needs: reading a request head within limits,
//! parsing its target (CONNECT authority or absolute URI), rewriting a
//! forwarded request for the origin server, and writing short answers.
//!
//! Everything here reads bytes the sandbox wrote, so it is strict: one
//! request line, CRLF line ends, token header names, bounded sizes.

use std::io::{ErrorKind, Read, Write};

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

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses a request head into its target. `head` excludes the final CRLF
/// pair.
pub fn parse_head(head: &[u8]) -> Result<Target, HttpError> {
    let text = std::str::from_utf8(head).map_err(|_| bad("request head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("malformed request line"));
    };
    if !is_token(method) {
        return Err(bad("malformed method"));
    }
    // A URI is visible ASCII (RFC 3986): a bare CR or LF in it would be
    // copied into the request line sent upstream, and could add headers.
    if target.is_empty() || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("malformed request target"));
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(bad(format!("unsupported HTTP version {:?}", clip(version))));
    }
    let mut headers: Vec<(&str, &str)> = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad("malformed header line"));
        };
        // A name with whitespace (or an obs-fold continuation) is refused:
        // servers disagree on what it means.
        if !is_token(name) {
            return Err(bad("malformed header name"));
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(bad("malformed header value"));
        }
        headers.push((name, value.trim_matches([' ', '\t'])));
    }
    if method == "CONNECT" {
        let (host, port) = split_authority(target, None)?;
        return Ok(Target {
            host,
            port,
            forward_head: None,
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
    Ok(Target {
        host,
        port,
        forward_head: Some(out.into_bytes()),
    })
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
            assert_eq!(e.reason, "malformed request target", "{h:?}");
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
            assert!(e.reason.ends_with("...\""), "{}", e.reason);
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
