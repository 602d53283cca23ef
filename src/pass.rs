//! The plain request path: a routed, rewritten request forwarded and its
//! answer streamed back (the whole path of a route without a cache, and the
//! cache's way upstream), and the answers weir writes itself.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use tracing::{debug, warn};

use crate::access::AccessRecord;
use crate::affinity::Affinity;
use crate::body::RequestBody;
use crate::compress::{self, Plan};
use crate::config::HeaderRules;
use crate::error::ProxyError;
use crate::exchange::{Exchange, Recording, ResponseBody};
use crate::forward::{forward, Deadlines, Terms};
use crate::headers::{strip_hop_by_hop, Forwarded};
use crate::snapshot::Snapshot;
use crate::upgrade::{TunnelContext, TunnelLimits, UpgradeRequest};
use crate::upstream::{Upstream, UpstreamBody};

/// What weir knows about the client connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address: the connection's peer, or the client its
    /// PROXY protocol header named.
    pub peer: SocketAddr,
    /// Whether `peer` came from a PROXY header. Such a client is untrusted
    /// whatever its address: its own forwarding headers are replaced.
    pub proxied: bool,
    /// `peer`'s address as a header value, rendered once for all its requests.
    pub peer_ip: HeaderValue,
    /// Whether the client connection is TLS: `X-Forwarded-Proto` is `https`.
    pub tls: bool,
    /// What a tunnel opened by an `Upgrade` on this connection holds on to.
    pub tunnel: TunnelContext,
}

/// Forwards a prepared request and streams the answer back (the whole
/// request path of a route without a cache).
///
/// Not an `async fn`, and `forwarding` used in place rather than taken
/// apart: either would keep a second copy of it in the future.
#[allow(clippy::manual_async_fn)]
pub(crate) fn pass<'a>(
    mut forwarding: Forwarding<'a>,
    conn: &'a ConnInfo,
    snapshot: &'a Snapshot,
) -> impl Future<Output = Response<ResponseBody>> + Send + 'a {
    async move {
        let fw = &mut forwarding;
        let terms = Terms {
            deadlines: fw.deadlines,
            affinity: fw.affinity,
            body: fw.metrics.body.as_deref(),
            upgrading: fw.upgrade.is_some(),
            forwarded: fw.forwarded.as_ref(),
        };
        let result = forward(fw.upstream, &mut fw.req, &mut fw.record, terms).await;
        let Forwarding {
            upstream,
            record,
            mut metrics,
            deadlines,
            head,
            upgrade,
            answer,
            ..
        } = forwarding;
        match result {
            Ok((resp, mut exchange)) => {
                exchange.deadline = deadlines.request;
                client_response(resp, exchange, metrics, upgrade, conn, snapshot, answer)
            }
            Err(err) => {
                let failed = err.failed_server().and_then(|addr| upstream.server(addr));
                metrics.server = failed.map(|s| s.state.clone());
                error_response_for(err, conn, &head, record, metrics)
            }
        }
    }
}

/// A routed request, rewritten for its upstream and ready to forward.
pub(crate) struct Forwarding<'a> {
    pub(crate) upstream: &'a Arc<Upstream>,
    /// Taken by the attempt that sends it.
    pub(crate) req: Option<Request<RequestBody>>,
    /// The forwarding headers, written as the request goes out; `None` once
    /// they were put into the request's header map.
    pub(crate) forwarded: Option<Forwarded<'a>>,
    pub(crate) record: Option<Box<AccessRecord>>,
    pub(crate) metrics: Recording,
    pub(crate) deadlines: Deadlines,
    /// What ties the request to a server (`hash`, `sticky`).
    pub(crate) affinity: Affinity,
    pub(crate) head: RequestHead,
    pub(crate) upgrade: Option<UpgradeRequest>,
    /// What the route and the request ask of the response.
    pub(crate) answer: Answer<'a>,
}

/// What the route and the request ask of the response.
pub(crate) struct Answer<'a> {
    /// The route's `response_headers`.
    pub(crate) rules: &'a HeaderRules,
    /// Whether and how the body is compressed.
    pub(crate) compress: Plan,
}

/// The upstream's response as the client gets it: hop-by-hop headers out, the
/// route's header rules applied, the body carrying the exchange's
/// bookkeeping (compressed when the plan says so), and a tunnel opened after a `101`.
fn client_response(
    resp: Response<UpstreamBody>,
    mut exchange: Exchange,
    mut metrics: Recording,
    upgrade: Option<UpgradeRequest>,
    conn: &ConnInfo,
    snapshot: &Snapshot,
    answer: Answer<'_>,
) -> Response<ResponseBody> {
    let (mut parts, body) = resp.into_parts();
    let tunnel = upgrade.and_then(|u| u.accept(&mut parts));
    strip_hop_by_hop(&mut parts.headers);
    if !answer.rules.is_empty() {
        answer.rules.apply(&mut parts.headers);
    }
    // After the rules, so the compressed head is what the client gets.
    let coding = compress::rewrite_head(answer.compress, parts.status, &mut parts.headers);
    if let Some(record) = exchange.record.as_mut() {
        record.status = parts.status;
    }
    metrics.status = parts.status.as_u16();
    // Counted against the server of the exchange's in-flight guard;
    // a tunnel takes the guard away, so it names the server here.
    if tunnel.is_some() {
        metrics.server = exchange.guard.as_ref().map(|g| g.server().clone());
    }
    exchange.metrics = Some(metrics);
    if let Some(tunnel) = tunnel {
        let server = &snapshot.config.server;
        let limits = TunnelLimits {
            idle: server.tunnel_idle_timeout,
            shutdown: server.shutdown_timeout,
        };
        tunnel.open(
            &mut parts.headers,
            &mut exchange,
            conn.tunnel.clone(),
            limits,
        );
    }
    let body = match coding {
        Some(coding) => ResponseBody::compressed(body, exchange, coding),
        None => ResponseBody::upstream(body, exchange),
    };
    Response::from_parts(parts, body)
}

/// The parts of the request head kept for logging after the request was sent.
pub(crate) struct RequestHead {
    pub(crate) method: http::Method,
    pub(crate) uri: Uri,
    /// The client's HTTP version.
    pub(crate) version: Version,
}

/// The plain-text answer for a request refused before it was rewritten.
pub(crate) fn error_response(
    err: ProxyError,
    conn: &ConnInfo,
    parts: &http::request::Parts,
    record: Option<Box<AccessRecord>>,
    metrics: Recording,
) -> Response<ResponseBody> {
    let head = RequestHead {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        version: parts.version,
    };
    error_response_for(err, conn, &head, record, metrics)
}

/// The plain-text answer for a request weir could not forward, logged once with its reason.
pub(crate) fn error_response_for(
    err: ProxyError,
    conn: &ConnInfo,
    head: &RequestHead,
    record: Option<Box<AccessRecord>>,
    metrics: Recording,
) -> Response<ResponseBody> {
    let status = err.status();
    // Rate limits are logged at debug: the limit working; Redis's failures
    // are logged (once per interval) where they happen.
    if err.is_policy() {
        debug!(status = status.as_u16(), client = %conn.peer, method = %head.method,
            path = head.uri.path(), reason = %err, "request refused");
    } else {
        warn!(status = status.as_u16(), client = %conn.peer, method = %head.method,
            path = head.uri.path(), reason = %err, "request failed");
    }
    let mut resp = plain_response(status, own_answer(record, metrics, status));
    // RFC 9110 §15.5.9: weir gave up waiting; the rest of the body will not
    // be read, so the connection cannot carry another request.
    if status == StatusCode::REQUEST_TIMEOUT && head.version < Version::HTTP_2 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// What ends with an answer weir wrote itself: its access record and its
/// metrics, both with its status.
pub(crate) fn own_answer(
    mut record: Option<Box<AccessRecord>>,
    mut metrics: Recording,
    status: StatusCode,
) -> Exchange {
    if let Some(record) = record.as_mut() {
        record.status = status;
    }
    metrics.status = status.as_u16();
    Exchange {
        record,
        metrics: Some(metrics),
        ..Exchange::default()
    }
}

/// The body of every answer weir writes itself: `502 Bad Gateway` and a newline.
pub(crate) fn plain_text(status: StatusCode) -> String {
    format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
}

/// A short plain-text response weir writes itself.
pub fn plain_response(status: StatusCode, exchange: Exchange) -> Response<ResponseBody> {
    let text = plain_text(status);
    let mut resp = Response::new(ResponseBody::full(text, exchange));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
