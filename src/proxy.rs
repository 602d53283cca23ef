//! The request path: route, pick a server, forward, stream the answer back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use tracing::{info, warn};

use crate::access::AccessRecord;
use crate::body::{Exchange, RequestBody, ResponseBody};
use crate::config::UpstreamProtocol;
use crate::error::ProxyError;
use crate::headers::{prepare_upstream_request, strip_hop_by_hop, Peer};
use crate::snapshot::Snapshot;
use crate::upgrade::{self, TunnelContext, TunnelLimits};
use crate::upstream::{te_trailers, InFlightGuard, Upstream};

/// What weir knows about the client connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// `http` or `https`.
    pub proto: &'static str,
    /// What a tunnel opened by an `Upgrade` on this connection holds on to.
    pub tunnel: TunnelContext,
}

/// Handles one client request against `snapshot`; never fails: errors become responses.
pub async fn handle(
    snapshot: Arc<Snapshot>,
    conn: &ConnInfo,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let (mut parts, body) = req.into_parts();
    let mut record = snapshot
        .access
        .as_ref()
        .map(|log| AccessRecord::new(log.clone(), started, conn.peer.ip(), &parts));

    let host = request_host(&parts);
    let host_str = host.as_ref().and_then(|h| h.to_str().ok());
    let Some(upstream) = snapshot.route(host_str, parts.uri.path()).cloned() else {
        return error_response(ProxyError::NoRoute, conn, &parts, record);
    };

    let upgrade = upgrade::take(&mut parts);
    // TE is hop-by-hop, but `trailers` is the one value HTTP/2 carries, and
    // gRPC servers refuse requests without it; weir passes trailers through.
    let wants_trailers = parts
        .headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    prepare_upstream_request(
        &mut parts.headers,
        Peer {
            ip: conn.peer.ip(),
            proto: conn.proto,
            trusted: &snapshot.config.server.trusted_proxies,
        },
        host_str,
    );
    if let Some(host) = host {
        parts.headers.insert(header::HOST, host);
    }
    if let Some(upgrade) = &upgrade {
        upgrade.restore(&mut parts.headers);
    }
    if wants_trailers && upstream.config.protocol == UpstreamProtocol::H2c {
        parts.headers.insert(header::TE, te_trailers());
    }
    let head = RequestHead {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
    };
    parts.uri = parts
        .uri
        .path_and_query()
        .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
    parts.version = Version::HTTP_11;
    let req = Request::from_parts(parts, RequestBody::Client(body));

    match forward(&upstream, req, &mut record, started).await {
        Ok((resp, exchange)) => {
            let (mut parts, body) = resp.into_parts();
            let tunnel = upgrade.and_then(|u| u.accept(&mut parts));
            strip_hop_by_hop(&mut parts.headers);
            let mut exchange = exchange;
            if let Some(record) = exchange.record.as_mut() {
                record.status = parts.status;
            }
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
            Response::from_parts(parts, ResponseBody::upstream(body, exchange))
        }
        Err(err) => error_response_for(err, conn, &head, record),
    }
}

/// The parts of the request head kept for logging after the request was sent.
struct RequestHead {
    method: http::Method,
    uri: Uri,
}

/// The request's host: the URI's authority for absolute-form requests
/// (RFC 9112 §3.2.2), else the `Host` header.
fn request_host(parts: &http::request::Parts) -> Option<HeaderValue> {
    match parts.uri.authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => parts.headers.get(header::HOST).cloned(),
    }
}

/// Sends `req` to a server of `upstream`, trying other servers when a
/// connection cannot be made. Returns the upstream's response head and the
/// bookkeeping its body must carry.
async fn forward(
    upstream: &Upstream,
    mut req: Request<RequestBody>,
    record: &mut Option<AccessRecord>,
    started: Instant,
) -> Result<(Response<Incoming>, Exchange), ProxyError> {
    let cfg = &upstream.config;
    let mut tried: Vec<usize> = Vec::new();
    let mut last_error = None;
    // A pooled connection found closed before anything was sent does not
    // count as a try, but is bounded all the same.
    let mut stale_left = 3u32;
    while tried.len() <= cfg.retries as usize {
        let Some(index) = upstream.pick(&tried) else {
            break;
        };
        let server = &upstream.servers[index];
        let addr = server.config.addr;
        let guard = InFlightGuard::new(server.state.clone());
        let mut conn = match server.pool.checkout().await {
            Ok(conn) => conn,
            Err(source) => {
                warn!(upstream = %cfg.name, server = %addr, error = %source, "connect failed");
                mark_failed(upstream, index);
                tried.push(index);
                last_error = Some(ProxyError::Connect {
                    server: addr,
                    source,
                });
                continue;
            }
        };
        let sent = tokio::time::timeout(cfg.response_timeout, conn.sender.try_send_request(req));
        match sent.await {
            Ok(Ok(resp)) => {
                server.state.record_success();
                if let Some(record) = record.as_mut() {
                    record.upstream = Some((cfg.name.clone(), addr));
                    record.upstream_time = Some(started.elapsed().as_secs_f64());
                }
                let exchange = Exchange {
                    guard: Some(guard),
                    conn: Some(conn),
                    record: record.take(),
                    bytes: 0,
                };
                return Ok((resp, exchange));
            }
            Ok(Err(mut error)) => {
                if let (Some(unsent), Some(left)) =
                    (error.take_message(), stale_left.checked_sub(1))
                {
                    // The pooled connection closed before the request went out
                    // (a keep-alive race): nothing was sent, so try again.
                    stale_left = left;
                    info!(upstream = %cfg.name, server = %addr, "pooled connection was closed; retrying");
                    req = unsent;
                    continue;
                }
                mark_failed(upstream, index);
                return Err(ProxyError::Upstream {
                    server: addr,
                    source: error.into_error(),
                });
            }
            Err(_elapsed) => {
                mark_failed(upstream, index);
                return Err(ProxyError::Timeout {
                    server: addr,
                    timeout: cfg.response_timeout,
                });
            }
        }
    }
    Err(last_error.unwrap_or_else(|| ProxyError::NoServer {
        upstream: cfg.name.clone(),
    }))
}

/// Counts a failure against a server and logs when it takes the server out.
fn mark_failed(upstream: &Upstream, index: usize) {
    let cfg = &upstream.config;
    let server = &upstream.servers[index];
    // nginx never takes the only server of a pool out: there is nowhere else to go.
    if upstream.servers.len() > 1 && server.state.record_failure(cfg.max_fails, cfg.fail_timeout) {
        warn!(upstream = %cfg.name, server = %server.config.addr, reason = "max_fails reached",
            down_for = ?cfg.fail_timeout, "server down");
    }
}

fn error_response(
    err: ProxyError,
    conn: &ConnInfo,
    parts: &http::request::Parts,
    record: Option<AccessRecord>,
) -> Response<ResponseBody> {
    let head = RequestHead {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
    };
    error_response_for(err, conn, &head, record)
}

/// The plain-text answer for a request weir could not forward, logged once with its reason.
fn error_response_for(
    err: ProxyError,
    conn: &ConnInfo,
    head: &RequestHead,
    mut record: Option<AccessRecord>,
) -> Response<ResponseBody> {
    let status = err.status();
    warn!(status = status.as_u16(), client = %conn.peer, method = %head.method,
        path = head.uri.path(), reason = %err, "request failed");
    if let Some(record) = record.as_mut() {
        record.status = status;
    }
    let exchange = Exchange {
        record,
        ..Exchange::default()
    };
    plain_response(status, exchange)
}

/// A short plain-text response weir writes itself.
pub fn plain_response(status: StatusCode, exchange: Exchange) -> Response<ResponseBody> {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut resp = Response::new(ResponseBody::full(text, exchange));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
