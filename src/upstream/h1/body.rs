//! The response body of weir's HTTP/1.1 client: read from the socket by the
//! task that polls it (the client connection's), no task or channel between.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::decode::{Decoded, Decoder};
use super::encode::{WriteError, Writer};
use super::Conn;
use crate::error::UpstreamError;

/// A response body being read off its connection.
#[derive(Debug)]
pub struct Body {
    /// `None` for a body that was whole with its head (or empty): nothing to
    /// read, and its connection already went back to its idle list.
    state: Option<Box<State>>,
    /// A body that arrived whole with its head, not handed out yet.
    whole: Option<Bytes>,
}

#[derive(Debug)]
struct State {
    /// `None` once the body ended or failed.
    conn: Option<Conn>,
    decoder: Decoder,
    /// The rest of the request, when the answer came before it was all sent.
    writer: Option<Box<Writer>>,
    /// Whether the connection can carry another request once this body ends
    /// whole (and the request was sent whole).
    reusable: bool,
    /// Whether a frame has been handed out.
    yielded: bool,
    /// An error found right after a frame was handed out, kept for the next
    /// poll: hyper's server drops what it has not written yet when a body
    /// fails, so the frames before the error get a chance to go out first.
    failed: Option<UpstreamError>,
}

impl Body {
    /// The body of the response whose head was read from `conn`.
    pub(super) fn new(
        conn: Conn,
        decoder: Decoder,
        writer: Option<Box<Writer>>,
        reusable: bool,
    ) -> Self {
        let mut state = State {
            conn: Some(conn),
            decoder,
            writer,
            reusable,
            yielded: false,
            failed: None,
        };
        if state.decoder.is_done() {
            state.finish();
            return Self {
                state: None,
                whole: None,
            };
        }
        // A small answer often arrives with its head: taken at once, it
        // needs no state kept for reading, and the connection goes back to
        // its idle list before the client has the body.
        if let Some(whole) = state.take_whole() {
            return Self {
                state: None,
                whole: Some(whole),
            };
        }
        Self {
            state: Some(Box::new(state)),
            whole: None,
        }
    }
}

impl State {
    /// The whole body of a length-delimited answer already read with its
    /// head (and the request sent whole), the connection released; `None`
    /// if more is to come.
    fn take_whole(&mut self) -> Option<Bytes> {
        let conn = self.conn.as_mut()?;
        let length = self.decoder.remaining()?;
        if self.writer.is_some() || (conn.buf.len() as u64) < length {
            return None;
        }
        let Ok(Decoded::Frame(frame)) = self.decoder.decode(&mut conn.buf) else {
            return None;
        };
        let data = frame.into_data().ok()?;
        self.finish();
        Some(data)
    }

    /// The body ended whole: the connection goes back to its idle list if
    /// nothing keeps it from carrying another request.
    fn finish(&mut self) {
        let conn = self.conn.take();
        if let Some(conn) = conn.filter(|_| self.reusable && self.writer.is_none()) {
            conn.release();
        }
        self.writer = None;
    }

    /// The exchange failed: the connection closes as it drops, and the
    /// body, not done, yields nothing more after the error. A body that
    /// already handed out frames fails on the next poll (see `failed`).
    fn fail(
        &mut self,
        error: UpstreamError,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        self.conn = None;
        self.writer = None;
        if !self.yielded {
            return Poll::Ready(Some(Err(error)));
        }
        self.failed = Some(error);
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        if let Some(error) = self.failed.take() {
            return Poll::Ready(Some(Err(error)));
        }
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(writer) = self.writer.as_mut() {
            match writer.poll_write(cx, &mut conn.stream) {
                Poll::Ready(Ok(())) => {
                    if let Some(writer) = self.writer.take() {
                        conn.out = writer.into_buffer();
                    }
                }
                Poll::Ready(Err(WriteError::Body(error))) => return self.fail(error, cx),
                // The server stopped reading the request; its answer may still be whole.
                Poll::Ready(Err(WriteError::Io(_))) => {
                    self.writer = None;
                    self.reusable = false;
                }
                Poll::Pending => {}
            }
        }
        // Bounded: each pass either returns or reads more bytes.
        loop {
            let decoded = match self.decoder.decode(&mut conn.buf) {
                Ok(Decoded::NeedMore) => match conn.poll_read(cx) {
                    Poll::Ready(Ok(0)) => self.decoder.closed(),
                    Poll::Ready(Ok(_)) => continue,
                    Poll::Ready(Err(error)) => Err(UpstreamError::Io(error)),
                    Poll::Pending => return Poll::Pending,
                },
                other => other,
            };
            return match decoded {
                Ok(Decoded::Frame(frame)) => {
                    if self.decoder.is_done() {
                        self.finish();
                    }
                    self.yielded = true;
                    Poll::Ready(Some(Ok(frame)))
                }
                Ok(Decoded::End) => {
                    self.finish();
                    Poll::Ready(None)
                }
                Ok(Decoded::NeedMore) => continue,
                Err(error) => self.fail(error, cx),
            };
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = self.get_mut();
        if let Some(whole) = this.whole.take() {
            return Poll::Ready(Some(Ok(Frame::data(whole))));
        }
        match this.state.as_mut() {
            Some(state) => state.poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.whole.is_none() && self.state.as_ref().is_none_or(|s| s.decoder.is_done())
    }

    fn size_hint(&self) -> SizeHint {
        if let Some(whole) = &self.whole {
            return SizeHint::with_exact(whole.len() as u64);
        }
        match self.state.as_ref().map(|s| s.decoder.remaining()) {
            None => SizeHint::with_exact(0),
            Some(Some(left)) => SizeHint::with_exact(left),
            Some(None) => SizeHint::default(),
        }
    }
}
