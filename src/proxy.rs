//! The request path: route, pick a server, forward, stream the answer back.

use std::future::Future;
use std::sync::Arc;

use futures_util::FutureExt as _;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body as _, Incoming};
use tokio::time::Instant;

use crate::access::AccessRecord;
use crate::affinity;
use crate::body::RequestBody;
use crate::clock;
use crate::compress::Plan;
use crate::config::UpstreamProtocol;
use crate::error::ProxyError;
use crate::exchange::{Exchange, Recording, ResponseBody};
use crate::forward::Deadlines;
use crate::headers::{client_ip, prepare_upstream_request, Forwarded, Peer, Underscores};
use crate::host::request_host;
use crate::pass::{
    error_response, error_response_for, own_answer, pass, Answer, ConnInfo, Forwarding, RequestHead,
};
use crate::request_id;
use crate::rewrite;
use crate::snapshot::{RouteTarget, Snapshot};
use crate::upgrade::{self, UpgradeRequest};
use crate::upstream::te_trailers;

/// Handles one client request against `snapshot`; never fails: errors become responses.
///
/// hyper moves this future a few times per request, and every byte of it is
/// copied each time, so it is built to hold each thing once: not an `async
/// fn` (whose arguments would be kept beside the variables they are moved
/// into), the request ID's insertion a `map` around the future rather than an
/// `async` block awaiting it (which would hold it twice).
pub fn handle(
    snapshot: Arc<Snapshot>,
    conn: Arc<ConnInfo>,
    mut req: Request<Incoming>,
) -> impl Future<Output = Response<ResponseBody>> + Send {
    // `request_id`: in the request before anything reads it (the access
    // record, the upstream), and on every response, weir's own included.
    let id = snapshot
        .config
        .server
        .request_id
        .as_ref()
        .map(|name| (name.clone(), request_id::ensure(req.headers_mut(), name)));
    serve(snapshot, conn, req).map(move |mut resp| {
        if let Some((name, id)) = id {
            resp.headers_mut().insert(name, id);
        }
        resp
    })
}

/// Routes, forwards and answers one request.
// An `async fn` would keep its arguments twice (see above).
#[allow(clippy::manual_async_fn)]
fn serve(
    snapshot: Arc<Snapshot>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> impl Future<Output = Response<ResponseBody>> + Send {
    async move {
        // Routing and rewriting are synchronous and run in `prepare`, so only
        // what forwarding needs lives across an await; nothing here borrows
        // `forwarding`, so it takes no room once moved into what awaits it.
        let (forwarding, target, limit_key) = match prepare(&snapshot, &conn, req) {
            Ok(prepared) => prepared,
            Err(resp) => return resp,
        };
        // `limit_key` moved on every path: a key left behind would be kept
        // in the future until the request ends.
        if let Some((limiter, key)) = target.rate_limit.as_deref().map(|l| (l, limit_key)) {
            if let Err(err) = limiter.admit(key).await {
                let Forwarding {
                    record,
                    metrics,
                    head,
                    ..
                } = forwarding;
                let retry_after = match err {
                    ProxyError::RateLimited { retry_after, .. } => Some(retry_after),
                    _ => None,
                };
                let mut resp = error_response_for(err, &conn, &head, record, metrics);
                if let Some(retry_after) = retry_after {
                    resp.headers_mut()
                        .extend(limiter.denied_headers(retry_after));
                }
                return resp;
            }
        }
        if let Some(cache) = &target.cache {
            // Boxed: the cache's request path is larger than the plain one, and
            // routes without a cache should not carry its size in their future.
            return Box::pin(crate::cache::serve::serve(
                cache, forwarding, &conn, &snapshot,
            ))
            .await;
        }
        pass(forwarding, &conn, &snapshot).await
    }
}

/// A routed request: rewritten for its upstream, with its route's target
/// (its cache and rate limit) and its rate-limit key.
type Prepared<'a> = (Forwarding<'a>, &'a RouteTarget, Option<HeaderValue>);

/// Routes `req` and rewrites it for its upstream, or answers it at once
/// when it cannot be forwarded.
// The error is the answer, returned once by value; boxing it would only add
// an allocation.
#[allow(clippy::result_large_err)]
fn prepare<'a>(
    snapshot: &'a Snapshot,
    conn: &'a ConnInfo,
    req: Request<Incoming>,
) -> Result<Prepared<'a>, Response<ResponseBody>> {
    let started = clock::now();
    let (parts, body) = req.into_parts();
    let record = access_record(snapshot, conn, &parts, started);

    let routed = request_host(parts.version, &parts.uri, &parts.headers)
        .map_err(ProxyError::from)
        .and_then(|host| {
            let host_str = host.as_ref().and_then(|h| h.to_str().ok());
            let target = snapshot.route(host_str, parts.uri.path());
            target.map(|t| (host, t)).ok_or(ProxyError::NoRoute)
        });
    let (host, target) = match routed {
        Ok(routed) => routed,
        Err(err) => {
            let metrics = Recording::new(snapshot.stats.unrouted.clone(), started);
            return Err(error_response(err, conn, &parts, record, metrics));
        }
    };
    // Borrowed from the snapshot, which outlives the request: a clone would
    // be two more atomic operations on a line every worker shares.
    let upstream = &target.upstream;
    let mut metrics = Recording::new(upstream.stats.clone(), started);
    if let Some(access) = &target.access {
        let client = client_ip(&parts.headers, &client_side(conn, snapshot));
        if !access.permits(client) {
            let err = ProxyError::Forbidden { client };
            return Err(error_response(err, conn, &parts, record, metrics));
        }
    }
    let deadlines = Deadlines {
        started,
        request: target
            .request_timeout
            .or(upstream.config.request_timeout)
            .map(|t| started + t),
    };
    let max_body = snapshot.config.server.max_body_size;
    let stall_after = snapshot.config.server.body_read_timeout;
    if max_body.is_some_and(|max| declared_length(&parts.headers).is_some_and(|len| len > max)) {
        return Err(error_response(
            ProxyError::BodyTooLarge,
            conn,
            &parts,
            record,
            metrics,
        ));
    }

    // Read before the request's headers are rewritten for the upstream.
    let answer = Answer {
        rules: &target.response_headers,
        compress: Plan::for_request(target.compress, &parts.method, &parts.headers),
    };
    let (req, forwarded, head, upgrade) =
        upstream_request(parts, body, host, target, conn, snapshot);
    let affinity = affinity::of(&upstream.config, &req, &forwarded);
    let limit_key = target
        .rate_limit
        .as_ref()
        .and_then(|limiter| limiter.key(req.headers(), &forwarded));
    let req = req.map(|body| {
        let progress = metrics.meter(&body, conn.peer);
        RequestBody::client(body, max_body, stall_after, progress)
    });
    let forwarding = Forwarding {
        upstream,
        req: Some(req),
        forwarded: Some(forwarded),
        record,
        metrics,
        deadlines,
        affinity,
        head,
        upgrade,
        answer,
    };
    Ok((forwarding, target, limit_key))
}

/// The client's request rewritten for `target`'s upstream: hop-by-hop headers out (an
/// `Upgrade` handshake back in), origin-form URI, HTTP/1.1, the route's
/// prefix cut when it says so. Also returns the forwarding headers, what is
/// kept for logging, and the upgrade, if any.
fn upstream_request<'a>(
    mut parts: http::request::Parts,
    body: Incoming,
    host: Option<HeaderValue>,
    target: &RouteTarget,
    conn: &'a ConnInfo,
    snapshot: &'a Snapshot,
) -> (
    Request<Incoming>,
    Forwarded<'a>,
    RequestHead,
    Option<UpgradeRequest>,
) {
    let upstream = &*target.upstream;
    let upgrade = upgrade::take(&mut parts);
    // TE is hop-by-hop, but `trailers` is the one value HTTP/2 carries, and
    // gRPC servers refuse requests without it; weir passes trailers through.
    let wants_trailers = upstream.config.protocol == UpstreamProtocol::H2c
        && parts
            .headers
            .get(header::TE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
            });
    let server = &snapshot.config.server;
    let forwarded = prepare_upstream_request(
        &mut parts.headers,
        client_side(conn, snapshot),
        host.as_ref(),
        if server.underscores_in_headers {
            Underscores::Keep
        } else {
            Underscores::Drop
        },
    );
    // A host from the target's authority replaces the `Host` header; one
    // from the header is the header already (and re-inserting it would cost
    // a hashed lookup per request).
    if let Some(host) = host.filter(|_| parts.uri.authority().is_some()) {
        parts.headers.insert(header::HOST, host);
    }
    // After weir's own headers, which validation keeps rules away from.
    if !target.request_headers.is_empty() {
        target.request_headers.apply(&mut parts.headers);
    }
    if let Some(upgrade) = &upgrade {
        upgrade.restore(&mut parts.headers);
    }
    if wants_trailers {
        parts.headers.insert(header::TE, te_trailers());
    }
    // hyper's client (which upgrade requests still take) sends a GET, HEAD
    // or CONNECT whose body has no declared length as if it had none; naming
    // the framing makes it stream the body. weir's own client chunks it anyway.
    if upstream.config.protocol == UpstreamProtocol::Http1 && has_unsized_body(&body) {
        parts.headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
    let mut origin_form = origin_form(&parts.uri);
    if let Some(len) = target.strip_prefix {
        origin_form = rewrite::strip_prefix(&origin_form, len);
    }
    let head = RequestHead {
        method: parts.method.clone(),
        uri: std::mem::replace(&mut parts.uri, origin_form),
        version: parts.version,
    };
    parts.version = Version::HTTP_11;
    (Request::from_parts(parts, body), forwarded, head, upgrade)
}

/// The client side of `conn`, as the forwarding headers and the client
/// address see it: a client named by a PROXY header is never a trusted proxy.
fn client_side<'a>(conn: &'a ConnInfo, snapshot: &'a Snapshot) -> Peer<'a> {
    Peer {
        ip: conn.peer.ip(),
        ip_value: &conn.peer_ip,
        tls: conn.tls,
        trusted: if conn.proxied {
            &[]
        } else {
            &snapshot.config.server.trusted_proxies
        },
    }
}

/// The request target as an origin server gets it: the path and query of
/// `uri`, with `/` for an empty path (RFC 9112 §3.2.1), as when an
/// absolute-form target names no path (`http://host`, `http://host?q`,
/// `http://host#frag`). `*` stays `*` (`OPTIONS *`).
fn origin_form(uri: &Uri) -> Uri {
    let Some(pq) = uri.path_and_query() else {
        return Uri::from_static("/");
    };
    // Origin form already (the common case): its path is never empty.
    if uri.scheme().is_none() {
        return Uri::from(pq.clone());
    }
    // `path()` is `/` for an empty path.
    let target = match pq.query() {
        Some(query) => format!("{}?{query}", pq.path()),
        None => pq.path().to_owned(),
    };
    target.parse().unwrap_or_else(|_| Uri::from_static("/"))
}

/// Whether the client sends a body without a length: chunked in HTTP/1.1, or
/// HTTP/2 data without `content-length`.
fn has_unsized_body(body: &Incoming) -> bool {
    !body.is_end_stream() && body.size_hint().exact().is_none()
}

/// The body length the client declared, if it declared one (hyper has
/// checked the field: a list of equal lengths reads as none here, and the
/// body's count enforces `max_body_size` then).
fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    crate::headers::decimal(headers.get(header::CONTENT_LENGTH)?.as_bytes())
}

/// The access record of a request that arrived at `started`, when access logging is on.
fn access_record(
    snapshot: &Snapshot,
    conn: &ConnInfo,
    parts: &http::request::Parts,
    started: Instant,
) -> Option<Box<AccessRecord>> {
    // Boxed: the record travels with the response body, which hyper moves
    // around; a pointer is cheaper to move than the record.
    snapshot.access.as_ref().map(|log| {
        let mut record = AccessRecord::new(log.clone(), started, conn.peer.ip(), parts);
        if let Some(name) = &snapshot.config.server.request_id {
            record.request_id = parts.headers.get(name).cloned();
        }
        Box::new(record)
    })
}

/// What ends with an answer weir gives to a request it does not route (the
/// redirect listener's): the access log line, and the count under the
/// unrouted pseudo-upstream `""`.
pub(crate) fn unrouted_exchange(
    snapshot: &Snapshot,
    conn: &ConnInfo,
    parts: &http::request::Parts,
    status: StatusCode,
) -> Exchange {
    let started = Instant::now();
    let record = access_record(snapshot, conn, parts, started);
    let metrics = Recording::new(snapshot.stats.unrouted.clone(), started);
    own_answer(record, metrics, status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_form_always_has_a_path() {
        for (target, origin) in [
            ("/a/b?c", "/a/b?c"),
            ("http://h/a?b", "/a?b"),
            ("http://h", "/"),
            ("http://h#x", "/"),
            ("http://h?q=1", "/?q=1"),
            ("http://h?q#x", "/?q"),
            ("*", "*"),
        ] {
            let uri: Uri = target.parse().expect("uri");
            assert_eq!(origin_form(&uri).to_string(), origin, "{target}");
        }
    }
}
