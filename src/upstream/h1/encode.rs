//! The request as it goes out: its framing chosen, its head encoded into one
//! buffer, and its body streamed after it, chunked or by length.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body::Body;
use tokio::io::AsyncWrite;

use crate::body::{BoxError, RequestBody};
use crate::error::UpstreamError;
use crate::headers::{decimal, Forwarded};

/// How a request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body.
    Empty,
    /// `Content-Length`: this many bytes still to send.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Chooses the body's framing and makes the head say it, as hyper's client
/// does: a framing header the request has is kept (chunked wins over a
/// length), a body of known size gets `Content-Length`, any other body is
/// chunked. A length the body cannot match is refused before a byte is sent.
pub(super) fn framing(
    headers: &mut HeaderMap,
    body: &impl http_body::Body,
) -> Result<Framing, UpstreamError> {
    let length = |headers: &HeaderMap| content_length(headers).ok_or(UpstreamError::BodyLength);
    if body.is_end_stream() {
        // Most requests have no body and neither field: one pass over the
        // names costs less than a hashed removal and lookup.
        let framed = headers
            .keys()
            .any(|name| name == header::TRANSFER_ENCODING || name == header::CONTENT_LENGTH);
        if !framed {
            return Ok(Framing::Empty);
        }
        headers.remove(header::TRANSFER_ENCODING);
        if headers.contains_key(header::CONTENT_LENGTH) && length(headers)? != 0 {
            return Err(UpstreamError::BodyLength);
        }
        return Ok(Framing::Empty);
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        if !final_coding_is_chunked(headers) {
            headers.append(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
        headers.remove(header::CONTENT_LENGTH);
        return Ok(Framing::Chunked);
    }
    if headers.contains_key(header::CONTENT_LENGTH) {
        return Ok(Framing::Length(length(headers)?));
    }
    if let Some(len) = body.size_hint().exact() {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        return Ok(Framing::Length(len));
    }
    headers.insert(
        header::TRANSFER_ENCODING,
        HeaderValue::from_static("chunked"),
    );
    Ok(Framing::Chunked)
}

/// The one length all `Content-Length` values agree on; `None` when one is
/// not a number or two differ (RFC 9110 §8.6 allows a list of equal values).
pub(super) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .try_fold(None, agreed_length)
        .flatten()
}

/// `length`, the length the `Content-Length` values before `value` agree on
/// (`None` for no value yet), with `value`'s taken in; `None` when `value`
/// is not a list of numbers all equal to `length`.
pub(super) fn agreed_length(mut length: Option<u64>, value: &HeaderValue) -> Option<Option<u64>> {
    // Nearly every value is one number, read without splitting.
    let parts = match decimal(value.as_bytes()) {
        Some(n) => return length.is_none_or(|l| l == n).then_some(Some(n)),
        None => value.as_bytes().split(|b| *b == b','),
    };
    for part in parts {
        let n = decimal(part.trim_ascii())?;
        if length.is_some_and(|l| l != n) {
            return None;
        }
        length = Some(n);
    }
    Some(length)
}

/// Whether the last coding of `Transfer-Encoding` is `chunked` (RFC 9112 §6.3).
pub(super) fn final_coding_is_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
        .and_then(|v| v.as_bytes().rsplit(|b| *b == b',').next())
        .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// Writes the request line and headers of `parts`, then the forwarding
/// headers `forwarded`, as HTTP/1.1, into `out`.
pub(super) fn head(
    parts: &http::request::Parts,
    forwarded: Option<&Forwarded<'_>>,
    out: &mut BytesMut,
) {
    let uri = &parts.uri;
    // weir sends the origin form; anything else goes as the URI is written.
    let absolute;
    let target = match uri.path_and_query() {
        _ if uri.scheme().is_some() => {
            absolute = uri.to_string();
            absolute.as_str()
        }
        Some(pq) if !pq.as_str().is_empty() => pq.as_str(),
        _ => "/",
    };
    let field_size = |(n, v): (&HeaderName, &HeaderValue)| n.as_str().len() + v.len() + 4;
    let size = 32
        + target.len()
        + parts.headers.iter().map(field_size).sum::<usize>()
        + forwarded.map_or(0, |f| f.fields().map(field_size).sum());
    out.reserve(size);
    out.put_slice(parts.method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    for field in parts
        .headers
        .iter()
        .chain(forwarded.into_iter().flat_map(Forwarded::fields))
    {
        put_field(field, out);
    }
    out.put_slice(b"\r\n");
}

/// A header line, `name: value\r\n`.
fn put_field((name, value): (&HeaderName, &HeaderValue), out: &mut BytesMut) {
    out.put_slice(name.as_str().as_bytes());
    out.put_slice(b": ");
    out.put_slice(value.as_bytes());
    out.put_slice(b"\r\n");
}

/// Trailer fields that must not be sent in a trailer (RFC 9110 §6.5.1), as
/// hyper's client leaves them out.
fn allowed_in_trailer(name: &HeaderName) -> bool {
    !matches!(
        *name,
        header::AUTHORIZATION
            | header::CACHE_CONTROL
            | header::CONTENT_ENCODING
            | header::CONTENT_LENGTH
            | header::CONTENT_RANGE
            | header::CONTENT_TYPE
            | header::HOST
            | header::MAX_FORWARDS
            | header::SET_COOKIE
            | header::TRAILER
            | header::TRANSFER_ENCODING
            | header::TE
            | header::CONNECTION
    )
}

/// Body bytes copied next to their chunk line rather than written from their own buffer.
const COPY_BELOW: usize = 1024;
/// Bytes read ahead of the socket at most, so a fast client and a slow
/// server hold little memory; also what one `writev` gathers.
const AHEAD: usize = 64 * 1024;
/// Buffers one `writev` takes at most.
const MAX_SLICES: usize = 16;

/// Why sending the request stopped.
#[derive(Debug)]
pub(super) enum WriteError {
    /// Writing to the server failed.
    Io(io::Error),
    /// The request body failed (the client's doing) or broke its length.
    Body(UpstreamError),
}

/// A request on its way out: the encoded head and body bytes not written
/// yet, and the body still to read.
#[derive(Debug)]
pub(super) struct Writer<B = RequestBody> {
    /// The request body.
    body: B,
    /// Whether the body has ended and its end is queued.
    ended: bool,
    framing: Framing,
    /// What to write, in order.
    queue: VecDeque<Bytes>,
    /// Small pieces (the head, chunk lines) gathered before they are queued.
    staging: BytesMut,
    /// Bytes in `queue` and `staging`.
    queued: usize,
    /// Whether a frame was taken from the body: then it cannot be sent again.
    touched: bool,
}

impl<B> Writer<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// A writer for the request with the encoded `head`, then its `body`.
    pub(super) fn new(head: BytesMut, body: B, framing: Framing) -> Self {
        let staging = head;
        Self {
            queued: staging.len(),
            body,
            ended: framing == Framing::Empty,
            framing,
            queue: VecDeque::new(),
            staging,
            touched: false,
        }
    }

    /// Whether the request body is still whole (not a frame of it was taken).
    pub(super) fn untouched(&self) -> bool {
        !self.touched
    }

    /// The request body back, when nothing of it was taken.
    pub(super) fn into_body(self) -> Option<B> {
        (!self.touched).then_some(self.body)
    }

    /// The buffer the request was encoded in, for the next request.
    pub(super) fn into_buffer(self) -> BytesMut {
        self.staging
    }

    /// Writes what it can and reads the body on; ready once the whole
    /// request is written.
    pub(super) fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut W,
    ) -> Poll<Result<(), WriteError>> {
        loop {
            // Read ahead while frames are at hand, so the head and a first
            // small chunk go out in one write.
            let mut waiting_for_body = false;
            while !self.ended && self.queued < AHEAD {
                match self.poll_body(cx) {
                    Poll::Ready(result) => result.map_err(WriteError::Body)?,
                    Poll::Pending => {
                        waiting_for_body = true;
                        break;
                    }
                }
            }
            if self.queued == 0 {
                return match waiting_for_body {
                    true => Poll::Pending,
                    false => Poll::Ready(Ok(())),
                };
            }
            ready!(self.poll_flush(cx, io)).map_err(WriteError::Io)?;
        }
    }

    /// Takes one frame of the body and queues it, framed.
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), UpstreamError>> {
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        self.touched = true;
        let ended = self.body.is_end_stream();
        match frame {
            None => self.end(None)?,
            Some(Err(error)) => return Poll::Ready(Err(UpstreamError::RequestBody(error.into()))),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    self.data(data)?;
                    if ended {
                        self.end(None)?;
                    }
                }
                Err(frame) => self.end(frame.into_trailers().ok())?,
            },
        }
        Poll::Ready(Ok(()))
    }

    /// Queues a data frame.
    fn data(&mut self, data: Bytes) -> Result<(), UpstreamError> {
        if data.is_empty() {
            return Ok(());
        }
        let len = data.len();
        match &mut self.framing {
            Framing::Length(left) => {
                *left = left
                    .checked_sub(len as u64)
                    .ok_or(UpstreamError::BodyLength)?;
                self.put_data(data);
            }
            Framing::Chunked => {
                self.put_small(format_args!("{len:X}\r\n"));
                self.put_data(data);
                self.staging.put_slice(b"\r\n");
                self.queued += 2;
            }
            Framing::Empty => return Err(UpstreamError::BodyLength),
        }
        Ok(())
    }

    /// Queues the end of the body, with its trailers when chunked.
    fn end(&mut self, trailers: Option<HeaderMap>) -> Result<(), UpstreamError> {
        self.ended = true;
        match self.framing {
            Framing::Length(0) | Framing::Empty => Ok(()),
            Framing::Length(_) => Err(UpstreamError::BodyLength),
            Framing::Chunked => {
                let before = self.staging.len();
                self.staging.put_slice(b"0\r\n");
                for field in trailers.iter().flatten() {
                    if allowed_in_trailer(field.0) {
                        put_field(field, &mut self.staging);
                    }
                }
                self.staging.put_slice(b"\r\n");
                self.queued += self.staging.len() - before;
                Ok(())
            }
        }
    }

    fn put_small(&mut self, args: std::fmt::Arguments<'_>) {
        let before = self.staging.len();
        let _ = std::fmt::Write::write_fmt(&mut Staging(&mut self.staging), args);
        self.queued += self.staging.len() - before;
    }

    fn put_data(&mut self, data: Bytes) {
        self.queued += data.len();
        if data.len() < COPY_BELOW {
            self.staging.put_slice(&data);
            return;
        }
        if !self.staging.is_empty() {
            self.queue.push_back(self.staging.split().freeze());
        }
        self.queue.push_back(data);
    }

    /// Writes the queue, as much as the socket takes, with one `writev` at a time.
    fn poll_flush<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut W,
    ) -> Poll<io::Result<()>> {
        // Most requests are a head, or a head and a small body: written
        // straight from where they were encoded.
        while self.queue.is_empty() && !self.staging.is_empty() {
            let written = ready!(Pin::new(&mut *io).poll_write(cx, &self.staging))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.staging.advance(written);
            self.queued -= written;
        }
        if !self.staging.is_empty() {
            self.queue.push_back(self.staging.split().freeze());
        }
        while !self.queue.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            for (slot, buf) in slices.iter_mut().zip(self.queue.iter()) {
                *slot = IoSlice::new(buf);
                count += 1;
            }
            let written = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(written);
        }
        Poll::Ready(Ok(()))
    }

    fn advance(&mut self, mut written: usize) {
        self.queued -= written;
        while let Some(front) = self.queue.front_mut() {
            if written < front.len() {
                front.advance(written);
                return;
            }
            written -= front.len();
            self.queue.pop_front();
        }
    }
}

/// `fmt::Write` into a `BytesMut`.
struct Staging<'a>(&'a mut BytesMut);

impl std::fmt::Write for Staging<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.put_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
#[path = "encode_tests.rs"]
mod tests;
