//! Ring messages: `[u32 LE length][payload]` frames whose payload starts
//! with an 8-byte header:
//!
//! ```text
//! 0  u8   type   (0x00 STDOUT ... 0x11 DENY, see `kind`)
//! 1  u8   flags  (FLAG_FD_FOLLOWS on ALLOW only)
//! 2  u16  reserved, must be 0
//! 4  u32  request id (LE); 0 for STDOUT/STDERR/EXIT, non-zero otherwise
//! 8  ...  body, per type
//! ```
//!
//! `decode` is the function the fuzzer targets: it takes a payload already
//! copied out of the shared mapping and must reject anything malformed with
//! a `DecodeError`, never panic.

use super::error::DecodeError;

/// Message type numbers (first payload byte). 0x00-0x05 and 0x10/0x11 are
/// the seed design's numbers.
pub mod kind {
    pub const STDOUT: u8 = 0x00;
    pub const FS_READ: u8 = 0x01;
    pub const FS_WRITE: u8 = 0x02;
    pub const NET_CONNECT: u8 = 0x03;
    pub const EXEC: u8 = 0x04;
    pub const LISTDIR: u8 = 0x05;
    pub const STDERR: u8 = 0x06;
    pub const EXIT: u8 = 0x07;
    pub const ALLOW: u8 = 0x10;
    pub const DENY: u8 = 0x11;
}

/// ALLOW flag: a file descriptor for this request id follows on the control
/// socket (it is sent there *before* the ALLOW is written to the ring).
pub const FLAG_FD_FOLLOWS: u8 = 0x01;

pub const HEADER_LEN: usize = 8;
pub const MAX_PATH: usize = 4096;
pub const MAX_HOST: usize = 255;
pub const MAX_ARGS: usize = 4096;
pub const MAX_REASON: usize = 1024;
/// Largest payload `decode` accepts (the ring limit is usually lower).
pub const MAX_PAYLOAD: usize = 16 << 20;

/// A request from the worker that needs the supervisor's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Body: the path.
    FsRead { path: Vec<u8> },
    /// Body: `u32 LE path length, path, data` (empty data: "give me an fd").
    FsWrite { path: Vec<u8>, data: Vec<u8> },
    /// Body: `u16 LE port, host` (name or address, printable ASCII).
    NetConnect { host: String, port: u16 },
    /// Body: each argument followed by a NUL byte.
    Exec { argv: Vec<Vec<u8>> },
    /// Body: the path.
    ListDir { path: Vec<u8> },
}

/// The supervisor's answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Body: inline result bytes (may be empty).
    Allow { data: Vec<u8>, fd_follows: bool },
    /// Body: UTF-8 reason, at most `MAX_REASON` bytes.
    Deny { reason: String },
}

/// Any decoded ring message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(i32),
    Request { id: u32, request: Request },
    Reply { id: u32, reply: Reply },
}

impl Request {
    pub fn kind(&self) -> u8 {
        match self {
            Request::FsRead { .. } => kind::FS_READ,
            Request::FsWrite { .. } => kind::FS_WRITE,
            Request::NetConnect { .. } => kind::NET_CONNECT,
            Request::Exec { .. } => kind::EXEC,
            Request::ListDir { .. } => kind::LISTDIR,
        }
    }

    /// Append the body bytes to `out`.
    pub fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            Request::FsRead { path } | Request::ListDir { path } => out.extend_from_slice(path),
            Request::FsWrite { path, data } => {
                out.extend_from_slice(&(path.len() as u32).to_le_bytes());
                out.extend_from_slice(path);
                out.extend_from_slice(data);
            }
            Request::NetConnect { host, port } => {
                out.extend_from_slice(&port.to_le_bytes());
                out.extend_from_slice(host.as_bytes());
            }
            Request::Exec { argv } => {
                for a in argv {
                    out.extend_from_slice(a);
                    out.push(0);
                }
            }
        }
    }
}

/// Write a payload header.
pub fn encode_header(out: &mut Vec<u8>, kind: u8, flags: u8, id: u32) {
    out.extend_from_slice(&[kind, flags, 0, 0]);
    out.extend_from_slice(&id.to_le_bytes());
}

/// A header as bytes (for zero-copy pushes: header and body as two parts).
pub fn header(kind: u8, flags: u8, id: u32) -> [u8; HEADER_LEN] {
    let i = id.to_le_bytes();
    [kind, flags, 0, 0, i[0], i[1], i[2], i[3]]
}

impl Message {
    /// The payload (without the length prefix).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Message::Stdout(b) | Message::Stderr(b) => {
                let k = if matches!(self, Message::Stdout(_)) {
                    kind::STDOUT
                } else {
                    kind::STDERR
                };
                encode_header(&mut out, k, 0, 0);
                out.extend_from_slice(b);
            }
            Message::Exit(code) => {
                encode_header(&mut out, kind::EXIT, 0, 0);
                out.extend_from_slice(&code.to_le_bytes());
            }
            Message::Request { id, request } => {
                encode_header(&mut out, request.kind(), 0, *id);
                request.encode_body(&mut out);
            }
            Message::Reply { id, reply } => match reply {
                Reply::Allow { data, fd_follows } => {
                    let flags = if *fd_follows { FLAG_FD_FOLLOWS } else { 0 };
                    encode_header(&mut out, kind::ALLOW, flags, *id);
                    out.extend_from_slice(data);
                }
                Reply::Deny { reason } => {
                    encode_header(&mut out, kind::DENY, 0, *id);
                    out.extend_from_slice(reason.as_bytes());
                }
            },
        }
        out
    }
}

fn check_path(p: &[u8]) -> Result<Vec<u8>, DecodeError> {
    if p.is_empty() {
        return Err(DecodeError::BadPath("empty"));
    }
    if p.len() > MAX_PATH {
        return Err(DecodeError::BadPath("too long"));
    }
    if p.contains(&0) {
        return Err(DecodeError::BadPath("contains NUL"));
    }
    Ok(p.to_vec())
}

fn check_host(h: &[u8]) -> Result<String, DecodeError> {
    // Names and literal addresses only: printable ASCII, no spaces, so a
    // host string cannot smuggle anything into logs or resolvers.
    if h.is_empty() || h.len() > MAX_HOST || !h.iter().all(|c| c.is_ascii_graphic()) {
        return Err(DecodeError::BadHost);
    }
    String::from_utf8(h.to_vec()).map_err(|_| DecodeError::BadHost)
}

fn check_argv(b: &[u8]) -> Result<Vec<Vec<u8>>, DecodeError> {
    let Some(body) = b.strip_suffix(&[0]) else {
        return Err(DecodeError::BadArgv("not NUL-terminated"));
    };
    // Count before allocating: a body of NULs would otherwise cost the
    // supervisor a vector per byte.
    if body.iter().filter(|&&c| c == 0).count() >= MAX_ARGS {
        return Err(DecodeError::BadArgv("too many arguments"));
    }
    let argv: Vec<Vec<u8>> = body.split(|&c| c == 0).map(<[u8]>::to_vec).collect();
    if argv.first().is_none_or(|a| a.is_empty()) {
        return Err(DecodeError::BadArgv("empty program name"));
    }
    Ok(argv)
}

/// Check the header of a payload without decoding its body. Returns
/// (type, flags, id). Same checks as `decode` for the header part.
pub fn check_header(p: &[u8]) -> Result<(u8, u8, u32), DecodeError> {
    if p.len() < HEADER_LEN {
        return Err(DecodeError::Truncated(HEADER_LEN));
    }
    if p.len() > MAX_PAYLOAD {
        return Err(DecodeError::TooLarge {
            len: p.len(),
            max: MAX_PAYLOAD,
        });
    }
    let (k, flags) = (p[0], p[1]);
    if p[2] != 0 || p[3] != 0 {
        return Err(DecodeError::ReservedNonZero);
    }
    let id = u32::from_le_bytes([p[4], p[5], p[6], p[7]]);

    let allowed_flags = if k == kind::ALLOW { FLAG_FD_FOLLOWS } else { 0 };
    if flags & !allowed_flags != 0 {
        return Err(DecodeError::BadFlags { kind: k, flags });
    }
    let unsolicited = matches!(k, kind::STDOUT | kind::STDERR | kind::EXIT);
    if unsolicited && id != 0 {
        return Err(DecodeError::UnexpectedId(k));
    }
    let needs_id = matches!(
        k,
        kind::FS_READ
            | kind::FS_WRITE
            | kind::NET_CONNECT
            | kind::EXEC
            | kind::LISTDIR
            | kind::ALLOW
            | kind::DENY
    );
    if needs_id && id == 0 {
        return Err(DecodeError::MissingId(k));
    }
    if !(unsolicited || needs_id) {
        return Err(DecodeError::UnknownKind(k));
    }
    Ok((k, flags, id))
}

/// Decode one payload. Pure, total: malformed input is an error value.
pub fn decode(p: &[u8]) -> Result<Message, DecodeError> {
    let (k, flags, id) = check_header(p)?;
    let body = &p[HEADER_LEN..];
    let req = |request| Ok(Message::Request { id, request });
    match k {
        kind::STDOUT => Ok(Message::Stdout(body.to_vec())),
        kind::STDERR => Ok(Message::Stderr(body.to_vec())),
        kind::EXIT => {
            let b: [u8; 4] = body.try_into().map_err(|_| DecodeError::BadExit)?;
            Ok(Message::Exit(i32::from_le_bytes(b)))
        }
        kind::FS_READ => req(Request::FsRead {
            path: check_path(body)?,
        }),
        kind::LISTDIR => req(Request::ListDir {
            path: check_path(body)?,
        }),
        kind::FS_WRITE => {
            let Some((n, rest)) = body.split_first_chunk::<4>() else {
                return Err(DecodeError::BadPath("missing length"));
            };
            let n = u32::from_le_bytes(*n) as usize;
            if n > rest.len() {
                return Err(DecodeError::BadPath("length exceeds body"));
            }
            let (path, data) = rest.split_at(n);
            req(Request::FsWrite {
                path: check_path(path)?,
                data: data.to_vec(),
            })
        }
        kind::NET_CONNECT => {
            let Some((port, host)) = body.split_first_chunk::<2>() else {
                return Err(DecodeError::BadPort);
            };
            let port = u16::from_le_bytes(*port);
            if port == 0 {
                return Err(DecodeError::BadPort);
            }
            req(Request::NetConnect {
                host: check_host(host)?,
                port,
            })
        }
        kind::EXEC => req(Request::Exec {
            argv: check_argv(body)?,
        }),
        kind::ALLOW => Ok(Message::Reply {
            id,
            reply: Reply::Allow {
                data: body.to_vec(),
                fd_follows: flags & FLAG_FD_FOLLOWS != 0,
            },
        }),
        kind::DENY => {
            if body.len() > MAX_REASON {
                return Err(DecodeError::BadReason);
            }
            let reason = String::from_utf8(body.to_vec()).map_err(|_| DecodeError::BadReason)?;
            Ok(Message::Reply {
                id,
                reply: Reply::Deny { reason },
            })
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(m: Message) {
        assert_eq!(decode(&m.encode()), Ok(m));
    }

    #[test]
    fn every_message_round_trips() {
        round_trip(Message::Stdout(b"hello".to_vec()));
        round_trip(Message::Stderr(Vec::new()));
        round_trip(Message::Exit(-3));
        round_trip(Message::Request {
            id: 1,
            request: Request::FsRead {
                path: b"/etc/hosts".to_vec(),
            },
        });
        round_trip(Message::Request {
            id: 2,
            request: Request::FsWrite {
                path: b"/tmp/x".to_vec(),
                data: b"abc\0def".to_vec(),
            },
        });
        round_trip(Message::Request {
            id: 3,
            request: Request::NetConnect {
                host: "example.com".into(),
                port: 443,
            },
        });
        round_trip(Message::Request {
            id: 4,
            request: Request::Exec {
                argv: vec![b"/bin/ls".to_vec(), Vec::new(), b"-l".to_vec()],
            },
        });
        round_trip(Message::Request {
            id: u32::MAX,
            request: Request::ListDir {
                path: b"/".to_vec(),
            },
        });
        round_trip(Message::Reply {
            id: 9,
            reply: Reply::Allow {
                data: vec![1, 2, 3],
                fd_follows: true,
            },
        });
        round_trip(Message::Reply {
            id: 9,
            reply: Reply::Deny {
                reason: "network denied by policy".into(),
            },
        });
    }

    #[test]
    fn seed_type_numbers_are_kept() {
        assert_eq!(
            [
                kind::STDOUT,
                kind::FS_READ,
                kind::FS_WRITE,
                kind::NET_CONNECT,
                kind::EXEC,
                kind::LISTDIR,
                kind::ALLOW,
                kind::DENY
            ],
            [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x10, 0x11]
        );
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(decode(&[0; 7]), Err(DecodeError::Truncated(8)));
        assert_eq!(
            decode(&[0x42, 0, 0, 0, 1, 0, 0, 0]),
            Err(DecodeError::UnknownKind(0x42))
        );
        assert_eq!(
            decode(&[0, 0, 1, 0, 0, 0, 0, 0]),
            Err(DecodeError::ReservedNonZero)
        );
        assert_eq!(
            decode(&[0, 0, 0, 0, 1, 0, 0, 0]),
            Err(DecodeError::UnexpectedId(0))
        );
        assert_eq!(
            decode(&[1, 0, 0, 0, 0, 0, 0, 0, b'/']),
            Err(DecodeError::MissingId(1))
        );
        assert!(matches!(
            decode(&[1, 1, 0, 0, 1, 0, 0, 0, b'/']),
            Err(DecodeError::BadFlags { .. })
        ));
        assert!(matches!(
            decode(&[1, 0, 0, 0, 1, 0, 0, 0]),
            Err(DecodeError::BadPath(_))
        ));
        assert!(matches!(
            decode(&[1, 0, 0, 0, 1, 0, 0, 0, b'/', 0]),
            Err(DecodeError::BadPath(_))
        ));
        // FS_WRITE whose path length points past the body.
        assert!(matches!(
            decode(&[2, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, b'/']),
            Err(DecodeError::BadPath(_))
        ));
        assert_eq!(
            decode(&[3, 0, 0, 0, 1, 0, 0, 0, 0, 0, b'h']),
            Err(DecodeError::BadPort)
        );
        assert_eq!(
            decode(&[3, 0, 0, 0, 1, 0, 0, 0, 80, 0, b'a', b' ']),
            Err(DecodeError::BadHost)
        );
        assert!(matches!(
            decode(&[4, 0, 0, 0, 1, 0, 0, 0, b'l', b's']),
            Err(DecodeError::BadArgv(_))
        ));
        assert!(matches!(
            decode(&[4, 0, 0, 0, 1, 0, 0, 0, 0]),
            Err(DecodeError::BadArgv(_))
        ));
        assert_eq!(
            decode(&[7, 0, 0, 0, 0, 0, 0, 0, 1]),
            Err(DecodeError::BadExit)
        );
        assert_eq!(
            decode(&[0x11, 0, 0, 0, 1, 0, 0, 0, 0xff]),
            Err(DecodeError::BadReason)
        );
    }
}
