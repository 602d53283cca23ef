//! The request path of a route with `cache`: look up, answer from the cache,
//! coalesce misses, revalidate, refresh in the background, stand in for a
//! failing upstream, and store what the upstream sends while it streams.
//!
//! A part of the proxy's request path kept in a room of its own: `proxy`
//! calls [`serve`] for cached routes, and it answers with `proxy`'s helpers.

use std::sync::Arc;
use std::time::SystemTime;

use http::header;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use tokio::time::Instant;
use tracing::debug;

use super::entry::{has_directive, Entry, Key, Outcome, Standing, X_CACHE};
use super::fill::Fill;
use super::store::{LockGuard, Turn};
use super::{Cache, RouteCache};
use crate::body::RequestBody;
use crate::config::RouteCacheConfig;
use crate::error::ProxyError;
use crate::exchange::{Exchange, ResponseBody};
use crate::forward::{forward, Deadlines, Terms};
use crate::headers::strip_hop_by_hop;
use crate::pass::{error_response_for, own_answer, pass, ConnInfo, Forwarding};
use crate::snapshot::Snapshot;
use crate::upstream::{Upstream, UpstreamBody};

/// Answers a request on a cached route.
pub(crate) async fn serve(
    route: &RouteCache,
    mut fw: Forwarding<'_>,
    conn: &ConnInfo,
    snapshot: &Snapshot,
) -> Response<ResponseBody> {
    let cache = &route.cache;
    // The cache reads the request as it goes upstream (a `Vary` may name a
    // forwarding header) and keeps copies of it: the forwarding headers go
    // into its header map.
    if let (Some(forwarded), Some(req)) = (fw.forwarded.take(), fw.req.as_mut()) {
        forwarded.insert_into(req.headers_mut());
    }
    let key = match fw.req.as_ref() {
        Some(req) if fw.upgrade.is_none() && !bypasses(req) => Key::of(req),
        _ => None,
    };
    let Some(key) = key else {
        if let Some(req) = fw.req.as_ref().filter(|r| !r.method().is_safe()) {
            // RFC 9111 §4.4: a request that may change the resource makes
            // its stored answers (here) invalid.
            cache.invalidate(req);
        }
        route.counters.count(Outcome::Bypass);
        let mut resp = pass(fw, conn, snapshot).await;
        resp.headers_mut()
            .insert(X_CACHE.clone(), Outcome::Bypass.header());
        return resp;
    };
    // Taken out while the cache answers from its entries: a hit needs no
    // copy of the request, only what it says.
    let Some(req) = fw.req.take() else {
        return pass(fw, conn, snapshot).await;
    };
    let now = cache.now();
    match cache.lookup(&key, &req, &route.config, now).await {
        Some((entry, Standing::Fresh)) => {
            return hit(route, &entry, fw, &req, Outcome::Hit, now);
        }
        Some((entry, _)) => {
            if entry.within(route.config.stale_while_revalidate, now) {
                refresh(route, key, entry.clone(), &req, fw.upstream.clone(), &fw);
                return hit(route, &entry, fw, &req, Outcome::Stale, now);
            }
            fw.req = Some(req);
            return fetch(route, key, Some(entry), None, fw, conn).await;
        }
        None => {}
    }
    let lock = match cache.turn(&key) {
        Turn::Lead(guard) => Some(guard),
        Turn::Wait(mut done) => {
            // Closed when the leader stored its answer or gave up; past the
            // timeout this request goes upstream itself.
            let _ = tokio::time::timeout(cache.lock_timeout(), done.changed()).await;
            let now = cache.now();
            if let Some((entry, Standing::Fresh)) =
                cache.lookup(&key, &req, &route.config, now).await
            {
                return hit(route, &entry, fw, &req, Outcome::Hit, now);
            }
            None
        }
    };
    fw.req = Some(req);
    fetch(route, key, None, lock, fw, conn).await
}

/// Whether the request itself keeps the cache out: a body, or `no-store`.
fn bypasses(req: &Request<RequestBody>) -> bool {
    !http_body::Body::is_end_stream(req.body()) || has_directive(req.headers(), "no-store")
}

/// The request's head, kept for the policy (`Vary`) and for answering after
/// the request itself went upstream.
fn head_of<B>(req: &Request<B>) -> Request<()> {
    let mut head = Request::new(());
    *head.method_mut() = req.method().clone();
    *head.uri_mut() = req.uri().clone();
    *head.version_mut() = req.version();
    *head.headers_mut() = req.headers().clone();
    head
}

/// The answer from `entry` to `req`, written by weir: logged and counted like any other.
fn hit<B>(
    route: &RouteCache,
    entry: &Entry,
    fw: Forwarding<'_>,
    head: &Request<B>,
    outcome: Outcome,
    now: SystemTime,
) -> Response<ResponseBody> {
    route.counters.count(outcome);
    let resp = entry.answer(head.method(), head.headers(), outcome, now);
    let (mut parts, body) = resp.into_parts();
    // The route's response rules, as on every answer from the upstream
    // (entries are stored without them).
    if !fw.answer.rules.is_empty() {
        fw.answer.rules.apply(&mut parts.headers);
    }
    let exchange = own_answer(fw.record, fw.metrics, parts.status);
    Response::from_parts(parts, ResponseBody::full(body, exchange))
}

/// Sends the request upstream: a miss (holding the key's lock, if it got
/// it), or the revalidation of `stale`. Stores what may be stored, and
/// stands in with `stale` for a failing upstream within `stale_if_error`.
#[allow(clippy::too_many_arguments)]
async fn fetch(
    route: &RouteCache,
    key: Key,
    stale: Option<Arc<Entry>>,
    lock: Option<LockGuard>,
    mut fw: Forwarding<'_>,
    conn: &ConnInfo,
) -> Response<ResponseBody> {
    let cache = &route.cache;
    // Kept for the policy (`Vary`) and for answering once the request went upstream.
    let head = fw.req.as_ref().map(head_of).unwrap_or_default();
    if let (Some(entry), Some(req)) = (&stale, fw.req.as_mut()) {
        // The stored answer's validators, not the client's: a 304 then
        // speaks of the stored body, and the client's own conditions are
        // answered from it.
        let headers = req.headers_mut();
        headers.remove(header::IF_NONE_MATCH);
        headers.remove(header::IF_MODIFIED_SINCE);
        for (name, value) in entry.validators() {
            headers.insert(name, value);
        }
    }
    let terms = Terms {
        deadlines: fw.deadlines,
        affinity: fw.affinity,
        body: None,
        upgrading: false,
        forwarded: None,
    };
    let result = forward(fw.upstream, &mut fw.req, &mut fw.record, terms).await;
    let now = cache.now();
    let (resp, mut exchange) = match result {
        Ok(answer) => answer,
        Err(err) => {
            if let Some(entry) = stale.filter(|e| stands_in(route, e, &err, now)) {
                debug!(error = %err, "upstream failed; serving the stale entry");
                return hit(route, &entry, fw, &head, Outcome::Stale, now);
            }
            let failed = err
                .failed_server()
                .and_then(|addr| fw.upstream.server(addr));
            fw.metrics.server = failed.map(|s| s.state.clone());
            return error_response_for(err, conn, &fw.head, fw.record, fw.metrics);
        }
    };
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(entry) = &stale {
        let status = parts.status;
        if status == StatusCode::NOT_MODIFIED
            || (status.is_server_error() && entry.within(route.config.stale_if_error, now))
        {
            fw.record = exchange.record.take();
            // Drained (a 304 has no body) or dropped: the exchange ends here.
            drop(ResponseBody::upstream(body, exchange));
            if status == StatusCode::NOT_MODIFIED {
                let refreshed = entry
                    .revalidated(&head, &parts.headers, &route.config, now)
                    .map(Arc::new);
                let served = match refreshed {
                    Some(fresh) => {
                        cache.store(&key, fresh.clone(), &head, &route.config, now);
                        fresh
                    }
                    None => entry.clone(),
                };
                return hit(route, &served, fw, &head, Outcome::Hit, now);
            }
            debug!(
                status = status.as_u16(),
                "upstream failed; serving the stale entry"
            );
            return hit(route, entry, fw, &head, Outcome::Stale, now);
        }
    }
    let fill = storable(cache, &route.config, &head, &parts, now).map(|pending| {
        Box::new(Fill::new(
            cache.clone(),
            key,
            head,
            route.config,
            pending,
            now,
            lock,
        ))
    });
    let outcome = if fill.is_some() {
        Outcome::Miss
    } else {
        Outcome::Bypass
    };
    route.counters.count(outcome);
    parts.headers.insert(X_CACHE.clone(), outcome.header());
    if let Some(record) = exchange.record.as_mut() {
        record.status = parts.status;
    }
    fw.metrics.status = parts.status.as_u16();
    exchange.metrics = Some(fw.metrics);
    exchange.fill = fill;
    // After `storable` took the stored head: entries are kept without the
    // route's rules, which every answer then gets.
    if !fw.answer.rules.is_empty() {
        fw.answer.rules.apply(&mut parts.headers);
    }
    Response::from_parts(parts, ResponseBody::upstream(body, exchange))
}

/// The entry the answer `parts` would make, when it may be stored and its
/// declared length is within the limit.
fn storable(
    cache: &Cache,
    config: &RouteCacheConfig,
    head: &Request<()>,
    parts: &http::response::Parts,
    now: SystemTime,
) -> Option<super::entry::Pending> {
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if head.method() != Method::HEAD && declared.is_some_and(|len| len > cache.max_entry_size()) {
        return None;
    }
    Entry::policy_for(head, parts.status, &parts.headers, config, now)
}

/// Whether `entry` answers in place of the upstream's failure `err`: a
/// failed connect, exchange or timeout, or no usable server.
fn stands_in(route: &RouteCache, entry: &Entry, err: &ProxyError, now: SystemTime) -> bool {
    matches!(
        err,
        ProxyError::NoServer { .. }
            | ProxyError::Connect { .. }
            | ProxyError::Upstream { .. }
            | ProxyError::Timeout { .. }
    ) && entry.within(route.config.stale_if_error, now)
}

/// Refreshes `entry` in the background (`stale_while_revalidate`), once per key.
fn refresh(
    route: &RouteCache,
    key: Key,
    entry: Arc<Entry>,
    head: &Request<RequestBody>,
    upstream: Arc<Upstream>,
    fw: &Forwarding<'_>,
) {
    let cache = route.cache.clone();
    if !cache.start_refresh(&key) {
        return;
    }
    let config = route.config;
    let head = head_of(head);
    let mut req = Request::new(RequestBody::Empty);
    *req.method_mut() = head.method().clone();
    *req.uri_mut() = head.uri().clone();
    *req.headers_mut() = head.headers().clone();
    let headers = req.headers_mut();
    headers.remove(header::IF_NONE_MATCH);
    headers.remove(header::IF_MODIFIED_SINCE);
    for (name, value) in entry.validators() {
        headers.insert(name, value);
    }
    let affinity = fw.affinity;
    tokio::spawn(async move {
        let terms = Terms {
            deadlines: Deadlines {
                started: Instant::now(),
                request: None,
            },
            affinity,
            body: None,
            upgrading: false,
            forwarded: None,
        };
        let mut req = Some(req);
        let result = forward(&upstream, &mut req, &mut None, terms).await;
        match result {
            Ok((resp, exchange)) => {
                let now = cache.now();
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                if parts.status == StatusCode::NOT_MODIFIED {
                    drop(ResponseBody::upstream(body, exchange));
                    if let Some(fresh) = entry.revalidated(&head, &parts.headers, &config, now) {
                        cache.store(&key, Arc::new(fresh), &head, &config, now);
                    }
                } else if !parts.status.is_server_error() {
                    let pending = storable(&cache, &config, &head, &parts, now);
                    let fill = pending.map(|p| {
                        Box::new(Fill::new(
                            cache.clone(),
                            key.clone(),
                            head_of(&head),
                            config,
                            p,
                            now,
                            None,
                        ))
                    });
                    drain(body, exchange, fill).await;
                } else {
                    drop(ResponseBody::upstream(body, exchange));
                }
            }
            Err(error) => debug!(%error, "background refresh failed"),
        }
        cache.end_refresh(&key);
    });
}

/// Reads a body to its end, storing it through `fill`.
async fn drain(body: UpstreamBody, mut exchange: Exchange, fill: Option<Box<Fill>>) {
    exchange.fill = fill;
    let mut body = ResponseBody::upstream(body, exchange);
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            break;
        }
    }
}
