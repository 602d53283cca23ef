//! The response side of an exchange: the body weir sends to the client, and
//! what must happen when it ends or is dropped — the in-flight guard released,
//! the upstream connection given back, the access log line written and the
//! request's metrics recorded.
//!
//! Bodies are never buffered whole: frames pass through as they arrive.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};
use tracing::info;

use crate::access::AccessRecord;
use crate::body::{BodyProgress, BoxError};
use crate::cache::Fill;
use crate::compress::{Coding, Compressed};
use crate::error::UpstreamError;
use crate::stats::UpstreamStats;
use crate::upstream::{InFlightGuard, PooledConn, ServerState, UpstreamBody};

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
}

#[derive(Debug)]
enum Source {
    /// A short body weir wrote itself (error pages); taken when sent.
    Full(Option<Bytes>),
    /// The upstream's response body, after its first frame if that was taken early.
    Upstream {
        first: Option<EarlyFrame>,
        body: UpstreamBody,
    },
    /// The upstream's response body, compressed as it streams (`compress`);
    /// boxed, as the encoder's state is large and most responses have none.
    Compressed(Box<Compressed>),
}

/// The end-of-exchange bookkeeping a response body carries.
#[derive(Debug, Default)]
pub struct Exchange {
    /// Keeps the server's in-flight count up until the body is done.
    pub guard: Option<InFlightGuard>,
    /// hyper's handle on the upstream connection (h2c, upgrades), held
    /// while the body streams. weir's own HTTP/1.1 connections travel in the
    /// body instead, and go back to their pool from there.
    pub conn: Option<PooledConn>,
    /// The access log line to write at the end, when access logging is on.
    pub record: Option<Box<AccessRecord>>,
    /// Body bytes sent to the client so far.
    pub bytes: u64,
    /// When the whole exchange must be over (`request_timeout`).
    pub deadline: Option<Instant>,
    /// The request's metrics, recorded at the end.
    pub metrics: Option<Recording>,
    /// The upstream body's first frame, when it had arrived with the head
    /// ([`arrived_frame`]); sent before the rest.
    pub first: Option<EarlyFrame>,
    /// The cache entry the body is copied into as it streams (cached
    /// routes only), stored when the body ends whole.
    pub(crate) fill: Option<Box<Fill>>,
}

/// A body frame taken before the response head went out; boxed, as few
/// responses have one and the exchange is moved whole.
pub type EarlyFrame = Box<Frame<Bytes>>;

impl Exchange {
    /// Ends the exchange; `upstream_body` says whether the bytes sent were
    /// the server's (and not an answer weir wrote itself).
    fn finish(mut self, complete: bool, upstream_body: bool) {
        if let Some(fill) = self.fill.take().filter(|_| complete) {
            fill.complete();
        }
        // One clock read for both.
        let ended = crate::clock::now();
        if let Some(record) = self.record.take() {
            record.write(self.bytes, complete, ended);
        }
        if let Some(metrics) = self.metrics.take() {
            let server = self.guard.as_ref().map(|g| &**g.server());
            let from_server = if upstream_body { self.bytes } else { 0 };
            metrics.finish(from_server, server, ended);
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
        }
    }

    /// The upstream's body, streamed (and cut off at the exchange's deadline).
    pub fn upstream(body: UpstreamBody, mut exchange: Exchange) -> Self {
        Self {
            source: Source::Upstream {
                first: exchange.first.take(),
                body,
            },
            deadline: exchange
                .deadline
                .map(|at| Box::pin(tokio::time::sleep_until(at))),
            exchange: Some(Box::new(exchange)),
        }
    }

    /// The upstream's body compressed with `coding`, otherwise as [`ResponseBody::upstream`].
    pub fn compressed(body: UpstreamBody, mut exchange: Exchange, coding: Coding) -> Self {
        let first = exchange.first.take();
        Self {
            source: Source::Compressed(Box::new(Compressed::new(body, first, coding))),
            deadline: exchange
                .deadline
                .map(|at| Box::pin(tokio::time::sleep_until(at))),
            exchange: Some(Box::new(exchange)),
        }
    }

    fn finish(&mut self, complete: bool) {
        if let Some(exchange) = self.exchange.take() {
            let upstream_body = !matches!(self.source, Source::Full(_));
            exchange.finish(complete, upstream_body);
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
            Source::Upstream { first, body } => match first.take() {
                Some(frame) => Some(Ok(*frame)),
                None => ready!(Pin::new(body).poll_frame(cx)).map(|f| f.map_err(Into::into)),
            },
            Source::Compressed(body) => ready!(Pin::new(&mut **body).poll_frame(cx)),
        };
        match &frame {
            Some(Ok(frame)) => {
                if let (Some(data), Some(exchange)) = (frame.data_ref(), this.exchange.as_mut()) {
                    exchange.bytes += data.len() as u64;
                    if let Some(fill) = exchange.fill.as_mut() {
                        if !fill.push(data) {
                            // Too large to store: streamed on, and the
                            // waiters for its key go upstream themselves.
                            exchange.fill = None;
                        }
                    }
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
            Source::Upstream { first, body } => first.is_none() && body.is_end_stream(),
            Source::Compressed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Source::Full(None) => SizeHint::with_exact(0),
            Source::Upstream { first, body } => {
                let mut hint = body.size_hint();
                if let Some(data) = first.as_ref().and_then(|f| f.data_ref()) {
                    let len = data.len() as u64;
                    hint.set_lower(hint.lower() + len);
                    if let Some(upper) = hint.upper() {
                        hint.set_upper(upper + len);
                    }
                }
                hint
            }
            // Unknown until the encoder is done.
            Source::Compressed(_) => SizeHint::default(),
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

/// The first frame of an upstream body whose length is not declared (chunked,
/// or until the close), if hyper has already read it: a body that is broken
/// from its first chunk (a malformed chunk line) is then the upstream's error,
/// answered with 502 rather than cut off after a good-looking head. Looks
/// without waiting; a body of known length is not looked at.
pub fn arrived_frame(body: &mut UpstreamBody) -> Result<Option<EarlyFrame>, UpstreamError> {
    if body.is_end_stream() || body.size_hint().exact().is_some() {
        return Ok(None);
    }
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(body).poll_frame(&mut cx) {
        Poll::Ready(Some(Ok(frame))) => Ok(Some(Box::new(frame))),
        Poll::Ready(Some(Err(error))) => Err(error),
        Poll::Ready(None) | Poll::Pending => Ok(None),
    }
}

/// What is recorded when a request ends; carried in the response body's exchange.
#[derive(Debug)]
pub struct Recording {
    /// The upstream's (or the unrouted) counters.
    upstream: Arc<UpstreamStats>,
    /// The server that failed (or that a tunnel went to); the one that
    /// answered is otherwise given to [`Recording::finish`].
    pub server: Option<Arc<ServerState>>,
    /// When the request arrived.
    started: Instant,
    /// The status sent to the client.
    pub status: u16,
    /// How far the client's body got, shared with the metered request body.
    pub body: Option<Arc<BodyProgress>>,
}

impl Recording {
    /// Starts recording a request that arrived at `started`.
    pub fn new(upstream: Arc<UpstreamStats>, started: Instant) -> Self {
        Self {
            upstream,
            server: None,
            started,
            status: 0,
            body: None,
        }
    }

    /// Where the request body sent by `client` keeps its progress; none for
    /// bodiless requests.
    pub fn meter(&mut self, body: &Incoming, client: SocketAddr) -> Option<Arc<BodyProgress>> {
        if body.is_end_stream() {
            return None;
        }
        let progress = Arc::new(BodyProgress::new(client, self.started));
        self.body = Some(progress.clone());
        Some(progress)
    }

    /// Counts the request, which `ended` then: its status, latency and bytes,
    /// on its upstream and on `answered_by` (or the server recorded in it).
    /// `bytes_out` are the response body bytes that came from the server:
    /// none when weir answered itself for a server that failed.
    pub fn finish(self, bytes_out: u64, answered_by: Option<&ServerState>, ended: Instant) {
        let elapsed = ended.saturating_duration_since(self.started);
        self.upstream.latency.observe(elapsed);
        if self.status >= 500 {
            self.upstream.errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(body) = self.body.as_ref().filter(|b| b.stalled()) {
            self.upstream.record_body_stall();
            // Before a response, the 408 was logged with its reason; after
            // one began, the stall is logged here.
            if let Some(server) = answered_by {
                info!(client = %body.client, server = %server.addr, status = self.status,
                    "request body stalled after the response began; upstream request cancelled");
            }
        }
        let Some(server) = self.server.as_deref().or(answered_by) else {
            self.upstream.unassigned.add(self.status);
            return;
        };
        let stats = &server.stats;
        stats.codes.add(self.status);
        stats.latency.observe(elapsed);
        stats.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
        if let Some(body) = self.body {
            stats.bytes_in.fetch_add(body.bytes(), Ordering::Relaxed);
        }
    }
}
