//! Request and response bodies as weir streams them.
//!
//! Bodies are never buffered whole: frames pass through as they arrive. The
//! response body also carries what must happen when the exchange ends — the
//! in-flight guard, the upstream connection to give back, the access log line.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::access::AccessRecord;
use crate::activity::Busy;
use crate::stats::Recording;
use crate::upstream::{InFlightGuard, PooledConn};

/// Errors a body can fail with while weir streams it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The client sent more than `max_body_size`; mapped to 413.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than max_body_size")]
pub struct BodyTooLarge;

/// The body weir sends upstream.
#[derive(Debug)]
pub enum RequestBody {
    /// No body (health probes, bodiless requests rebuilt for a retry).
    Empty,
    /// The client's body, streamed through.
    Client {
        /// The body as it arrives.
        body: Incoming,
        /// Bytes still allowed by `max_body_size`; `None` = no limit.
        left: Option<u64>,
        /// Counts the bytes read, for the metrics, when metered.
        counted: Option<Arc<AtomicU64>>,
    },
}

impl RequestBody {
    /// The client's body, limited to `max` bytes when set, its bytes added to `counted`.
    pub fn client(body: Incoming, max: Option<u64>, counted: Option<Arc<AtomicU64>>) -> Self {
        RequestBody::Client {
            body,
            left: max,
            counted,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let RequestBody::Client {
            body,
            left,
            counted,
        } = self.get_mut()
        else {
            return Poll::Ready(None);
        };
        let frame = ready!(Pin::new(body).poll_frame(cx));
        if let Some(Ok(frame)) = &frame {
            let len = frame.data_ref().map_or(0, |d| d.len() as u64);
            if let Some(left) = left.as_mut() {
                match left.checked_sub(len) {
                    Some(rest) => *left = rest,
                    None => return Poll::Ready(Some(Err(BodyTooLarge.into()))),
                }
            }
            if let Some(counted) = counted {
                counted.fetch_add(len, Ordering::Relaxed);
            }
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Client { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Client { body, .. } => body.size_hint(),
        }
    }
}

/// The body weir sends to the client.
#[derive(Debug)]
pub struct ResponseBody {
    /// Where the bytes come from.
    source: Source,
    /// What to do when the body ends or is dropped; `None` once done. Boxed:
    /// hyper moves the response several times per request.
    exchange: Option<Box<Exchange>>,
    /// `request_timeout` for the rest of the body, when set.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Keeps the client connection counted as busy (no idle timeout) until the body is done.
    busy: Option<Busy>,
}

#[derive(Debug)]
enum Source {
    /// A short body weir wrote itself (error pages); taken when sent.
    Full(Option<Bytes>),
    /// The upstream's response body.
    Upstream(Incoming),
}

/// The end-of-exchange bookkeeping a response body carries.
#[derive(Debug, Default)]
pub struct Exchange {
    /// Keeps the server's in-flight count up until the body is done.
    pub guard: Option<InFlightGuard>,
    /// The upstream connection, reusable once the body was read whole.
    pub conn: Option<PooledConn>,
    /// The access log line to write at the end, when access logging is on.
    pub record: Option<Box<AccessRecord>>,
    /// Body bytes sent to the client so far.
    pub bytes: u64,
    /// When the whole exchange must be over (`request_timeout`).
    pub deadline: Option<Instant>,
    /// The request's metrics, recorded at the end.
    pub metrics: Option<Recording>,
}

impl Exchange {
    fn finish(mut self, complete: bool) {
        if complete {
            if let Some(conn) = self.conn.take() {
                conn.release();
            }
        }
        // One clock read for both.
        let ended = Instant::now();
        if let Some(record) = self.record.take() {
            record.write(self.bytes, complete, ended);
        }
        if let Some(metrics) = self.metrics.take() {
            let server = self.guard.as_ref().map(|g| &**g.server());
            metrics.finish(self.bytes, server, ended);
        }
    }
}

impl ResponseBody {
    /// A body weir wrote itself.
    pub fn full(bytes: impl Into<Bytes>, exchange: Exchange) -> Self {
        Self {
            source: Source::Full(Some(bytes.into())),
            exchange: Some(Box::new(exchange)),
            deadline: None,
            busy: None,
        }
    }

    /// The upstream's body, streamed (and cut off at the exchange's deadline).
    pub fn upstream(body: Incoming, exchange: Exchange) -> Self {
        Self {
            source: Source::Upstream(body),
            deadline: exchange
                .deadline
                .map(|at| Box::pin(tokio::time::sleep_until(at))),
            exchange: Some(Box::new(exchange)),
            busy: None,
        }
    }

    /// Keeps the client connection busy until this body is done.
    pub fn hold(&mut self, busy: Busy) {
        self.busy = Some(busy);
    }

    fn finish(&mut self, complete: bool) {
        if let Some(exchange) = self.exchange.take() {
            exchange.finish(complete);
        }
    }
}

/// The response body outlived `request_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("request_timeout reached while streaming the response")]
pub struct ResponseTimedOut;

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(deadline) = this.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                this.finish(false);
                return Poll::Ready(Some(Err(ResponseTimedOut.into())));
            }
        }
        let frame = match &mut this.source {
            Source::Full(bytes) => bytes.take().map(|b| Ok(Frame::data(b))),
            Source::Upstream(body) => ready!(Pin::new(body).poll_frame(cx)),
        };
        match &frame {
            Some(Ok(frame)) => {
                if let (Some(data), Some(exchange)) = (frame.data_ref(), this.exchange.as_mut()) {
                    exchange.bytes += data.len() as u64;
                }
                // hyper stops polling once the body says it ended, so finish here.
                if this.is_end_stream() {
                    this.finish(true);
                }
            }
            Some(Err(_)) => this.finish(false),
            None => this.finish(true),
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Full(bytes) => bytes.is_none(),
            Source::Upstream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Source::Full(None) => SizeHint::with_exact(0),
            Source::Upstream(body) => body.size_hint(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // A body dropped before its end: the client went away or the
        // connection failed; the upstream connection is not reusable.
        let complete = self.is_end_stream();
        self.finish(complete);
    }
}
