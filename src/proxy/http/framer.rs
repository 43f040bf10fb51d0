//! Where a relayed request body ends: a length, or a chunked body
//! followed byte by byte.

use super::{bad, Body, HttpError};

/// The longest chunk-size line (size and extensions) and trailer section.
const MAX_CHUNK_LINE: usize = 4 << 10;
const MAX_TRAILERS: usize = 16 << 10;

/// Where a chunked body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// In a chunk-size line: the size so far, its digits, whether in an
    /// extension, and the line's length.
    Size {
        size: u64,
        digits: u8,
        ext: bool,
        len: usize,
    },
    /// The LF after a chunk-size line.
    SizeLf {
        size: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// In the trailer section: the current line's length, and the
    /// section's so far.
    Trailer {
        line: usize,
        total: usize,
    },
    TrailerLf {
        line: usize,
        total: usize,
    },
}

/// Follows a request body as it is relayed, to find where it ends: the
/// proxy sends exactly the body upstream, and knows that whatever comes
/// after it is not part of the request that was checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyFramer {
    state: Framer,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Framer {
    Length(u64),
    Chunked(Chunk),
    Done,
}

impl BodyFramer {
    pub fn new(body: Body) -> BodyFramer {
        let state = match body {
            Body::None => Framer::Done,
            Body::Length(n) => Framer::Length(n),
            Body::Chunked => Framer::Chunked(Chunk::Size {
                size: 0,
                digits: 0,
                ext: false,
                len: 0,
            }),
        };
        BodyFramer { state }
    }

    /// Has the whole body been seen?
    #[cfg(test)]
    pub fn done(&self) -> bool {
        self.state == Framer::Done
    }

    /// How many bytes at the start of `buf` belong to the body; the rest
    /// (if any) come after it. A chunked body that breaks its framing is
    /// an error: the proxy cannot tell where it ends.
    pub fn feed(&mut self, buf: &[u8]) -> Result<usize, HttpError> {
        let mut i = 0;
        while i < buf.len() {
            match &mut self.state {
                Framer::Done => return Ok(i),
                Framer::Length(left) => {
                    let take = (*left).min((buf.len() - i) as u64);
                    *left -= take;
                    i += take as usize;
                    if *left == 0 {
                        self.state = Framer::Done;
                    }
                }
                Framer::Chunked(c) => {
                    // Chunk data is skipped whole; the rest goes a byte
                    // at a time.
                    if let Chunk::Data { left } = c {
                        let take = (*left).min((buf.len() - i) as u64);
                        *left -= take;
                        i += take as usize;
                        if *left == 0 {
                            *c = Chunk::DataCr;
                        }
                        continue;
                    }
                    let next = chunk_step(*c, buf[i])?;
                    i += 1;
                    self.state = match next {
                        Some(c) => Framer::Chunked(c),
                        None => Framer::Done,
                    };
                }
            }
        }
        Ok(i)
    }
}

/// One byte of a chunked body outside chunk data; `None` once the body
/// has ended.
fn chunk_step(c: Chunk, b: u8) -> Result<Option<Chunk>, HttpError> {
    let malformed = |what: &str| Err(bad(format!("malformed chunked body: {what}")));
    Ok(Some(match c {
        Chunk::Size {
            size,
            digits,
            ext,
            len,
        } => size_step(size, digits, ext, len, b)?,
        Chunk::SizeLf { size } => match (b, size) {
            (b'\n', 0) => Chunk::Trailer { line: 0, total: 0 },
            (b'\n', left) => Chunk::Data { left },
            _ => return malformed("chunk-size line without CRLF"),
        },
        // Handled in `feed`.
        Chunk::Data { left } => Chunk::Data { left },
        Chunk::DataCr if b == b'\r' => Chunk::DataLf,
        Chunk::DataLf if b == b'\n' => Chunk::Size {
            size: 0,
            digits: 0,
            ext: false,
            len: 0,
        },
        Chunk::DataCr | Chunk::DataLf => return malformed("chunk data without CRLF"),
        Chunk::Trailer { line, total } => {
            if total >= MAX_TRAILERS {
                return malformed("trailer section too large");
            }
            match b {
                b'\r' => Chunk::TrailerLf { line, total },
                b'\n' | 0 => return malformed("bad byte in a trailer"),
                _ => Chunk::Trailer {
                    line: line + 1,
                    total: total + 1,
                },
            }
        }
        Chunk::TrailerLf { line, total } => match (b, line) {
            (b'\n', 0) => return Ok(None),
            (b'\n', _) => Chunk::Trailer {
                line: 0,
                total: total + 2,
            },
            _ => return malformed("trailer line without CRLF"),
        },
    }))
}

/// One byte of a chunk-size line.
fn size_step(size: u64, digits: u8, ext: bool, len: usize, b: u8) -> Result<Chunk, HttpError> {
    let malformed = |what: &str| Err(bad(format!("malformed chunked body: {what}")));
    if len >= MAX_CHUNK_LINE {
        return malformed("chunk-size line too long");
    }
    let len = len + 1;
    Ok(match b {
        b'\r' if digits > 0 => Chunk::SizeLf { size },
        _ if ext => {
            // chunk-ext: visible ASCII, space and tab.
            if !(b.is_ascii_graphic() || b == b' ' || b == b'\t') {
                return malformed("bad byte in a chunk extension");
            }
            Chunk::Size {
                size,
                digits,
                ext,
                len,
            }
        }
        b';' if digits > 0 => Chunk::Size {
            size,
            digits,
            ext: true,
            len,
        },
        _ => {
            let Some(d) = (b as char).to_digit(16) else {
                return malformed("bad chunk size");
            };
            if digits >= 16 {
                return malformed("chunk size too large");
            }
            Chunk::Size {
                size: size * 16 + u64::from(d),
                digits: digits + 1,
                ext,
                len,
            }
        }
    })
}
