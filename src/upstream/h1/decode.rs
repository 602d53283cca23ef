//! The response body as bytes arrive: by length, chunked, or until the
//! close. Pure functions of a buffer; the socket is read elsewhere.

use bytes::{Buf, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http_body::Frame;

use crate::error::UpstreamError;

/// Chunk extension bytes allowed in one body (hyper's limit too).
const EXTENSIONS_LIMIT: usize = 16 * 1024;
/// The most bytes of trailer fields (hyper's limit too).
const TRAILERS_LIMIT: usize = 16 * 1024;
/// The most trailer fields, as many as a head may have header lines.
const MAX_TRAILERS: usize = 100;
/// The longest chunk size line without its extensions.
const SIZE_LINE: usize = 64;

/// Where a body stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decoder {
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// This many bytes still to come.
    Length(u64),
    /// A chunked body, and extension bytes seen so far.
    Chunked(Chunk, usize),
    /// Everything until the server closes.
    UntilClose,
    /// The body has ended.
    Done,
}

/// Where a chunked body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// A chunk size line comes next.
    Size,
    /// This many bytes of chunk data still to come.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// The trailer section after the last chunk.
    Trailers,
}

/// What the buffered bytes gave.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// A data or trailers frame.
    Frame(Frame<bytes::Bytes>),
    /// More bytes are needed.
    NeedMore,
    /// The body has ended.
    End,
}

fn malformed(what: &'static str) -> UpstreamError {
    UpstreamError::Malformed(what)
}

impl Decoder {
    /// A body of `len` bytes.
    pub(crate) fn length(len: u64) -> Self {
        let kind = if len == 0 {
            Kind::Done
        } else {
            Kind::Length(len)
        };
        Self { kind }
    }

    /// A chunked body.
    pub(crate) fn chunked() -> Self {
        Self {
            kind: Kind::Chunked(Chunk::Size, 0),
        }
    }

    /// A body that ends when the server closes the connection.
    pub(crate) fn until_close() -> Self {
        Self {
            kind: Kind::UntilClose,
        }
    }

    /// Whether the body has ended.
    pub(crate) fn is_done(&self) -> bool {
        self.kind == Kind::Done
    }

    /// Body bytes still to come, when the length is known.
    pub(crate) fn remaining(&self) -> Option<u64> {
        match self.kind {
            Kind::Length(n) => Some(n),
            Kind::Done => Some(0),
            _ => None,
        }
    }

    /// Takes what it can from `buf`: a frame, the end, or a need for more.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, UpstreamError> {
        match &mut self.kind {
            Kind::Done => Ok(Decoded::End),
            Kind::Length(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let take = usize::try_from(*left).map_or(buf.len(), |l| l.min(buf.len()));
                let data = buf.split_to(take).freeze();
                *left -= take as u64;
                if *left == 0 {
                    self.kind = Kind::Done;
                }
                Ok(Decoded::Frame(Frame::data(data)))
            }
            Kind::UntilClose if buf.is_empty() => Ok(Decoded::NeedMore),
            Kind::UntilClose => Ok(Decoded::Frame(Frame::data(buf.split().freeze()))),
            Kind::Chunked(chunk, extensions) => {
                let (next, decoded) = chunked(*chunk, extensions, buf)?;
                let extensions = *extensions;
                self.kind = next.map_or(Kind::Done, |c| Kind::Chunked(c, extensions));
                Ok(decoded)
            }
        }
    }

    /// The server closed the connection: the end of a body that runs until
    /// then; any other body was cut short.
    pub(crate) fn closed(&mut self) -> Result<Decoded, UpstreamError> {
        match self.kind {
            Kind::UntilClose | Kind::Done => {
                self.kind = Kind::Done;
                Ok(Decoded::End)
            }
            _ => Err(UpstreamError::Closed),
        }
    }
}

/// One step of a chunked body: the state after it (`None` once ended) and what it gave.
fn chunked(
    mut chunk: Chunk,
    extensions: &mut usize,
    buf: &mut BytesMut,
) -> Result<(Option<Chunk>, Decoded), UpstreamError> {
    loop {
        match chunk {
            Chunk::Size => match size_line(buf, extensions)? {
                None => return Ok((Some(chunk), Decoded::NeedMore)),
                Some(0) => chunk = Chunk::Trailers,
                Some(size) => chunk = Chunk::Data(size),
            },
            Chunk::Data(left) => {
                if buf.is_empty() {
                    return Ok((Some(chunk), Decoded::NeedMore));
                }
                let take = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
                let data = buf.split_to(take).freeze();
                let left = left - take as u64;
                let next = if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                };
                return Ok((Some(next), Decoded::Frame(Frame::data(data))));
            }
            Chunk::DataEnd => {
                match buf.get(..2) {
                    Some(b"\r\n") => buf.advance(2),
                    Some(_) => return Err(malformed("chunk data not followed by CRLF")),
                    None if buf.first().is_some_and(|b| *b != b'\r') => {
                        return Err(malformed("chunk data not followed by CRLF"))
                    }
                    None => return Ok((Some(chunk), Decoded::NeedMore)),
                }
                chunk = Chunk::Size;
            }
            Chunk::Trailers => {
                return match trailers(buf)? {
                    None => Ok((Some(chunk), Decoded::NeedMore)),
                    Some(map) if map.is_empty() => Ok((None, Decoded::End)),
                    Some(map) => Ok((None, Decoded::Frame(Frame::trailers(map)))),
                };
            }
        }
    }
}

/// Reads a chunk size line, `size [; extensions] CRLF`, off the front of
/// `buf`: its size, or `None` while it is incomplete. `httparse` reads the
/// size; the extensions weir ignores may hold no control character but HTAB
/// (RFC 9112 §7.1.1, and the patch weir's hyper carries), and they count
/// against `extensions`, the body's budget.
fn size_line(buf: &mut BytesMut, extensions: &mut usize) -> Result<Option<u64>, UpstreamError> {
    if buf.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
        return Err(malformed("chunk size line without a size"));
    }
    let newline = buf.iter().position(|b| *b == b'\n');
    let line = &buf[..newline.unwrap_or(buf.len())];
    let (size_part, ext) = match line.iter().position(|b| *b == b';') {
        Some(at) => line.split_at(at),
        None => (line, &[][..]),
    };
    // The CR of the line's end, when it has arrived, is no part of the extensions.
    let ext = match ext.split_last() {
        Some((b'\r', rest)) => rest,
        _ => ext,
    };
    if ext.iter().any(|b| (*b < b' ' && *b != b'\t') || *b == 0x7f) {
        return Err(malformed("chunk extension holds a control character"));
    }
    if size_part.len() > SIZE_LINE || *extensions + ext.len() > EXTENSIONS_LIMIT {
        return Err(malformed("chunk size line too long"));
    }
    let Some(newline) = newline else {
        return Ok(None);
    };
    if !line.ends_with(b"\r") {
        return Err(malformed("chunk size line not ended by CRLF"));
    }
    match httparse::parse_chunk_size(&buf[..=newline]) {
        Ok(httparse::Status::Complete((len, size))) if len == newline + 1 => {
            *extensions += ext.len();
            buf.advance(len);
            Ok(Some(size))
        }
        _ => Err(malformed("invalid chunk size")),
    }
}

/// Reads the trailer section after the last chunk, with `httparse`: the
/// fields, or `None` while it is incomplete.
fn trailers(buf: &mut BytesMut) -> Result<Option<HeaderMap>, UpstreamError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_TRAILERS];
    let (len, fields) = match httparse::parse_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(parsed)) => parsed,
        Ok(httparse::Status::Partial) if buf.len() <= TRAILERS_LIMIT => return Ok(None),
        Ok(httparse::Status::Partial) => return Err(malformed("trailers too large")),
        Err(_) => return Err(malformed("invalid trailers")),
    };
    if len > TRAILERS_LIMIT {
        return Err(malformed("trailers too large"));
    }
    let mut map = HeaderMap::with_capacity(fields.len());
    for field in fields.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| malformed("invalid trailer name"))?;
        let value =
            HeaderValue::from_bytes(field.value).map_err(|_| malformed("invalid trailer value"))?;
        map.append(name, value);
    }
    buf.advance(len);
    Ok(Some(map))
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
