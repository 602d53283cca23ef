//! weir's own HTTP/1.1 client, driven in the request's task.
//!
//! hyper's client runs each upstream connection in a task of its own and
//! hands requests to it over a channel; most of what weir spent per request
//! went there (see benches/README.md). Here a pooled connection is a socket
//! and a read buffer, nothing more: the request's task writes the request and
//! reads the response head, and the response body reads the socket from the
//! task that sends it to the client, giving the connection back to its idle
//! list once the response is read whole. hyper stays for the client side,
//! for h2c upstreams and for upgrades.
//!
//! - `encode`: the request's framing, its head, and its body streamed out.
//! - `parse`: the response head (with `httparse`) and its framing (RFC 9112 §6.3).
//! - `decode`: the response body by length, chunked, or until the close.
//! - `body`: the response body, which also finishes sending the request.

mod body;
mod decode;
mod encode;
mod parse;

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::Weak;
use std::task::{Context, Poll};

use bytes::BytesMut;
use http::{HeaderMap, Request, Response, StatusCode};
use tokio::net::TcpStream;

pub(crate) use body::Body;

use self::encode::{WriteError, Writer};
use self::parse::Head;
use super::idle::IdleList;
use crate::body::RequestBody;
use crate::error::UpstreamError;
use crate::headers::Forwarded;

/// Free room below which the read buffer grows before a read.
const MIN_READ: usize = 4 * 1024;
/// How much the read buffer grows by.
const READ_SIZE: usize = 16 * 1024;

/// An open HTTP/1.1 connection to a server, idle between requests.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: TcpStream,
    /// Bytes read from the server and not yet taken.
    buf: BytesMut,
    /// Where requests are encoded, kept from one request to the next.
    out: BytesMut,
    /// What parsing one response head keeps for the next; boxed, as the
    /// connection moves between its pool and each response's body.
    scratch: Box<parse::Scratch>,
    /// Whether it carried a response before: a failure before any byte of
    /// the next answer may then be the server closing it while it was idle.
    reused: bool,
    /// The idle list it goes back to when a response was read whole; weak, so
    /// that the list (dropped with its pool when a reload removes the
    /// server) is not kept alive by the connections in it.
    home: Weak<IdleList<Conn>>,
}

impl Conn {
    /// A new connection on `stream`, pooled in `home` between requests.
    pub(crate) fn new(stream: TcpStream, home: Weak<IdleList<Conn>>) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
            out: BytesMut::new(),
            scratch: Box::default(),
            reused: false,
            home,
        }
    }

    /// Whether an idle connection is still open: a server that closed it, or
    /// sent bytes nobody asked for, made it readable. Costs no system call
    /// unless the socket was seen readable.
    pub(crate) fn is_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// The socket, for hyper's client to take over (an upgrade).
    pub(crate) fn into_stream(self) -> TcpStream {
        self.stream
    }

    /// Gives the connection back to its idle list, when nothing is left unread.
    fn release(mut self) {
        if !self.buf.is_empty() {
            return;
        }
        if let Some(home) = self.home.upgrade() {
            self.reused = true;
            home.put(self);
        }
    }

    /// Reads more bytes from the server into the buffer; the count read, 0 at its end.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < MIN_READ {
            self.buf.reserve(READ_SIZE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.buf)
    }

    /// Writes the request on and reads until a final response head has
    /// arrived; interim (1xx) responses are skipped. The response's headers
    /// go into `spare`'s room: the request's header map, no longer needed
    /// once an answer has begun to arrive (and the request then cannot be
    /// given back for another try).
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        writer: &mut Writer,
        sending: &mut Sending,
        spare: &mut HeaderMap,
    ) -> Poll<Result<Head, UpstreamError>> {
        loop {
            if !sending.sent && sending.failed.is_none() {
                match writer.poll_write(cx, &mut self.stream) {
                    Poll::Ready(Ok(())) => sending.sent = true,
                    Poll::Ready(Err(WriteError::Body(error))) => return Poll::Ready(Err(error)),
                    // The server may have answered before it stopped reading.
                    Poll::Ready(Err(WriteError::Io(error))) => sending.failed = Some(error),
                    Poll::Pending => {}
                }
            }
            // Bounded: each pass takes one head out of a buffer of at most MAX_HEAD.
            while let Some(head) = parse::head(&mut self.buf, &mut self.scratch, spare)? {
                if !head.status.is_informational() || head.status == StatusCode::SWITCHING_PROTOCOLS
                {
                    return Poll::Ready(Ok(head));
                }
            }
            match self.poll_read(cx) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(match sending.failed.take() {
                        Some(error) => UpstreamError::Io(error),
                        None => UpstreamError::Closed,
                    }))
                }
                Poll::Ready(Ok(_)) => sending.answered = true,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(UpstreamError::Io(error))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// How far sending a request got.
#[derive(Debug, Default)]
struct Sending {
    /// The whole request was written.
    sent: bool,
    /// Writing failed; reading goes on, for an answer the server sent first.
    failed: Option<io::Error>,
    /// Some bytes of an answer arrived.
    answered: bool,
}

/// A request that could not be sent, given back when nothing of it was
/// taken and the server closed a reused connection before answering: it can
/// go again on another connection.
#[derive(Debug)]
pub(crate) struct SendError {
    /// What went wrong.
    pub(crate) error: UpstreamError,
    /// The request, when it can be sent again; boxed, as it is large and
    /// rarely there.
    pub(crate) request: Option<Box<Request<RequestBody>>>,
}

impl SendError {
    /// The request back, if it can be sent again.
    pub(crate) fn take_message(&mut self) -> Option<Request<RequestBody>> {
        self.request.take().map(|request| *request)
    }

    /// What went wrong.
    pub(crate) fn into_error(self) -> UpstreamError {
        self.error
    }
}

/// Sends `req` on `conn`, with the forwarding headers `forwarded` after its
/// own, and reads the response head; the response body reads the rest, and
/// sends what is left of the request body.
///
/// The head is encoded before the future is made, so that the future does
/// not borrow `forwarded`.
pub(crate) fn send(
    mut conn: Conn,
    req: Request<RequestBody>,
    forwarded: Option<&Forwarded<'_>>,
) -> impl Future<Output = Result<Response<Body>, SendError>> + Send + 'static {
    let (mut parts, body) = req.into_parts();
    let started = encode::framing(&mut parts.headers, &body).map(|framing| {
        let mut head = std::mem::take(&mut conn.out);
        head.clear();
        encode::head(&parts, forwarded, &mut head);
        Writer::new(head, body, framing)
    });
    async move {
        let mut writer = started.map_err(|error| SendError {
            error,
            request: None,
        })?;
        let mut sending = Sending::default();
        let headers = &mut parts.headers;
        let polled = poll_fn(|cx| conn.poll_head(cx, &mut writer, &mut sending, headers)).await;
        let mut head = match polled {
            Ok(head) => head,
            Err(error) => {
                let again =
                    conn.reused && !sending.answered && writer.untouched() && is_stale(&error);
                let request = again.then(|| {
                    let body = writer.into_body().unwrap_or(RequestBody::Empty);
                    Box::new(Request::from_parts(parts, body))
                });
                return Err(SendError { error, request });
            }
        };
        let (decoder, reusable) =
            parse::framing(&mut head, &parts.method).map_err(|error| SendError {
                error,
                request: None,
            })?;
        // A request whose writing failed leaves the connection unusable after this answer.
        let reusable = reusable && sending.failed.is_none();
        let writer = if sending.sent {
            conn.out = writer.into_buffer();
            None
        } else {
            sending.failed.is_none().then(|| Box::new(writer))
        };
        let mut resp = Response::new(Body::new(conn, decoder, writer, reusable));
        *resp.status_mut() = head.status;
        *resp.version_mut() = head.version;
        *resp.headers_mut() = head.headers;
        if let Some(reason) = head.reason {
            if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(reason) {
                resp.extensions_mut().insert(reason);
            }
        }
        Ok(resp)
    }
}

/// Whether `error` is what a server closing an idle connection looks like.
fn is_stale(error: &UpstreamError) -> bool {
    match error {
        UpstreamError::Closed => true,
        UpstreamError::Io(e) => matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

#[cfg(test)]
#[path = "fuzz_tests.rs"]
mod fuzz_tests;
