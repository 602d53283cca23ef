//! Request and response bodies as weir streams them.
//!
//! Bodies are never buffered whole: frames pass through as they arrive. The
//! response body also carries what must happen when the exchange ends — the
//! in-flight guard, the upstream connection to give back, the access log line.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::access::AccessRecord;
use crate::stats::Recording;
use crate::upstream::{InFlightGuard, PooledConn};

/// The body weir sends upstream.
#[derive(Debug)]
pub enum RequestBody {
    /// No body (health probes, bodiless requests rebuilt for a retry).
    Empty,
    /// The client's body, streamed through.
    Client(Incoming),
    /// The client's body, streamed through and its bytes counted for the metrics.
    Metered(Incoming, Arc<AtomicU64>),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Client(body) => Pin::new(body).poll_frame(cx),
            RequestBody::Metered(body, bytes) => {
                let frame = ready!(Pin::new(body).poll_frame(cx));
                if let Some(data) = frame.as_ref().and_then(|f| f.as_ref().ok()?.data_ref()) {
                    bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Client(body) | RequestBody::Metered(body, _) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Client(body) | RequestBody::Metered(body, _) => body.size_hint(),
        }
    }
}

/// The body weir sends to the client.
#[derive(Debug)]
pub struct ResponseBody {
    /// Where the bytes come from.
    source: Source,
    /// What to do when the body ends or is dropped; `None` once done.
    exchange: Option<Exchange>,
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
    pub record: Option<AccessRecord>,
    /// Body bytes sent to the client so far.
    pub bytes: u64,
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
        if let Some(record) = self.record.take() {
            record.write(self.bytes, complete);
        }
        if let Some(metrics) = self.metrics.take() {
            metrics.finish(self.bytes);
        }
    }
}

impl ResponseBody {
    /// A body weir wrote itself.
    pub fn full(bytes: impl Into<Bytes>, exchange: Exchange) -> Self {
        Self {
            source: Source::Full(Some(bytes.into())),
            exchange: Some(exchange),
        }
    }

    /// The upstream's body, streamed.
    pub fn upstream(body: Incoming, exchange: Exchange) -> Self {
        Self {
            source: Source::Upstream(body),
            exchange: Some(exchange),
        }
    }

    fn finish(&mut self, complete: bool) {
        if let Some(exchange) = self.exchange.take() {
            exchange.finish(complete);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
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
        Poll::Ready(frame)
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
