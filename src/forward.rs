//! Forwarding one request to an upstream: pick a server, connect, send, and
//! retry on another server where that is safe.
//!
//! A retry goes to a server not tried yet, and only
//! - after a failed connect (nothing was sent), always;
//! - after a reset or timeout before the response head, or an answer weir
//!   will not pass on (a `101` the request did not ask for, a body broken
//!   from its first chunk), when the method is idempotent and the request
//!   has no body, so it can be sent again whole.
//!
//! A body that was streamed is never sent twice, and nothing is retried once
//! the response head has been taken (no byte of it reaches the client before).

use std::error::Error as _;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::{Body, Incoming};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::access::AccessRecord;
use crate::body::{BodyTooLarge, RequestBody};
use crate::error::ProxyError;
use crate::exchange::{arrived_frame, EarlyFrame, Exchange};
use crate::upstream::{InFlightGuard, Upstream};

/// Pooled connections found closed before a request went out, retried without
/// counting as a try (a keep-alive race), at most this many times.
const STALE_RETRIES: u32 = 3;

/// When an exchange must be over.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// When the request arrived.
    pub started: Instant,
    /// `request_timeout`: the whole exchange, response body included.
    pub request: Option<Instant>,
}

/// Sends the request in `req` to a server of `upstream`, retrying where safe.
/// Returns the upstream's response head and the bookkeeping its body must carry.
/// `upgrading`: the request asks to switch protocols; a `101` to any other
/// request is the upstream's error.
///
/// The request is taken from the caller's `Option` rather than passed by
/// value, so that this future does not hold a second copy of it.
pub async fn forward(
    upstream: &Upstream,
    req: &mut Option<Request<RequestBody>>,
    record: &mut Option<Box<AccessRecord>>,
    deadlines: Deadlines,
    upgrading: bool,
) -> Result<(Response<Incoming>, Exchange), ProxyError> {
    let cfg = &upstream.config;
    // Only a bodiless idempotent request can be sent again after it went out.
    let replayable = cfg.retries > 0
        && upstream.servers.len() > 1
        && req
            .as_ref()
            .is_some_and(|r| is_idempotent(r.method()) && r.body().is_end_stream());
    let retry_deadline = cfg.retry_timeout.map(|t| deadlines.started + t);
    let mut tried: Vec<usize> = Vec::new();
    let mut stale_left = STALE_RETRIES;
    let mut last_error: Option<ProxyError> = None;

    while tried.len() <= cfg.retries as usize {
        if !tried.is_empty() && retry_deadline.is_some_and(|d| Instant::now() >= d) {
            warn!(upstream = %cfg.name, "retry_timeout reached; no more retries");
            break;
        }
        let Some(index) = upstream.pick(&tried) else {
            break;
        };
        if !tried.is_empty() {
            upstream.stats.record_retry();
        }
        let server = &upstream.servers[index];
        let addr = server.config.addr;
        if let Some(error) = &last_error {
            warn!(upstream = %cfg.name, server = %addr, attempt = tried.len() + 1,
                previous = %error, "retrying on another server");
        }
        let guard = InFlightGuard::new(server.state.clone());
        let mut conn = match server.pool.checkout().await {
            Ok(conn) => conn,
            Err(source) => {
                warn!(upstream = %cfg.name, server = %addr, error = %source, "connect failed");
                upstream.mark_failed(index);
                tried.push(index);
                last_error = Some(ProxyError::Connect {
                    server: addr,
                    source,
                });
                continue;
            }
        };
        // Copied from `req` before taking it: a borrowed `request` would be
        // kept in this future across the await below.
        let copy = replayable
            .then(|| req.as_ref().map(copy_bodiless))
            .flatten();
        let Some(request) = req.take() else {
            break;
        };
        let (wait, by_request_timeout) = attempt_timeout(cfg.response_timeout, deadlines.request);
        let sent = tokio::time::timeout(wait, conn.sender.try_send_request(request)).await;
        let error = match sent {
            Ok(Ok(mut resp)) => match admit(&mut resp, upgrading, addr) {
                Ok(first) => {
                    if cfg.fail_on_status.contains(&resp.status().as_u16()) {
                        upstream.mark_failed(index);
                    } else {
                        server.state.record_success();
                    }
                    if let Some(record) = record.as_mut() {
                        record.answered_by(&cfg.name, addr, deadlines.started.elapsed());
                    }
                    let exchange = Exchange {
                        guard: Some(guard),
                        conn: Some(conn),
                        record: record.take(),
                        first,
                        ..Exchange::default()
                    };
                    return Ok((resp, exchange));
                }
                Err(error) => error,
            },
            Ok(Err(mut error)) => {
                if let (Some(unsent), Some(left)) =
                    (error.take_message(), stale_left.checked_sub(1))
                {
                    info!(upstream = %cfg.name, server = %addr,
                        "pooled connection was closed before sending; retrying");
                    stale_left = left;
                    *req = Some(unsent);
                    continue;
                }
                let error = error.into_error();
                if is_body_too_large(&error) {
                    return Err(ProxyError::BodyTooLarge);
                }
                if error.is_user() {
                    // The client's body failed (it went away mid-upload): not the server's fault.
                    return Err(ProxyError::ClientBody(error));
                }
                ProxyError::Upstream {
                    server: addr,
                    source: error,
                }
            }
            Err(_elapsed) => ProxyError::Timeout {
                server: addr,
                timeout: wait,
            },
        };
        upstream.mark_failed(index);
        tried.push(index);
        last_error = Some(error);
        match copy {
            Some(copy) if !by_request_timeout => *req = Some(copy),
            _ => break,
        }
    }
    Err(last_error.unwrap_or_else(|| ProxyError::NoServer {
        upstream: cfg.name.clone(),
    }))
}

/// Whether the upstream's answer may go out, with the first frame of its
/// body if that has already arrived; or the upstream's error when it must
/// not: a `101` to a request that asked for no upgrade, or a body already
/// known to be broken (a malformed first chunk) before its head is sent.
fn admit(
    resp: &mut Response<Incoming>,
    upgrading: bool,
    server: SocketAddr,
) -> Result<Option<EarlyFrame>, ProxyError> {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS && !upgrading {
        return Err(ProxyError::UnsolicitedUpgrade { server });
    }
    arrived_frame(resp.body_mut()).map_err(|source| ProxyError::Upstream { server, source })
}

/// How long one attempt may wait for the response head, and whether that is
/// bounded by the whole request's deadline rather than `response_timeout`.
fn attempt_timeout(response_timeout: Duration, request: Option<Instant>) -> (Duration, bool) {
    match request.map(|d| d.saturating_duration_since(Instant::now())) {
        Some(left) if left < response_timeout => (left, true),
        _ => (response_timeout, false),
    }
}

/// RFC 9110 §9.2.2, less CONNECT-like oddities.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// A copy of a request without a body, to send again after a failure.
fn copy_bodiless(req: &Request<RequestBody>) -> Request<RequestBody> {
    let mut copy = Request::new(RequestBody::Empty);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

fn is_body_too_large(error: &hyper::Error) -> bool {
    let mut source = error.source();
    // Bounded by the depth of the error chain.
    while let Some(e) = source {
        if e.is::<BodyTooLarge>() {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_methods_follow_rfc_9110() {
        for m in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"] {
            assert!(is_idempotent(&m.parse().expect("method")), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT"] {
            assert!(!is_idempotent(&m.parse().expect("method")), "{m}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_request_deadline_caps_an_attempt() {
        let rt = Duration::from_secs(60);
        assert_eq!(attempt_timeout(rt, None), (rt, false));
        let soon = Instant::now() + Duration::from_secs(5);
        assert_eq!(
            attempt_timeout(rt, Some(soon)),
            (Duration::from_secs(5), true)
        );
        let late = Instant::now() + Duration::from_secs(120);
        assert_eq!(attempt_timeout(rt, Some(late)), (rt, false));
    }

    #[test]
    fn a_bodiless_copy_keeps_the_head() {
        let req = Request::put("/x?y=1")
            .header("x-a", "1")
            .body(RequestBody::Empty)
            .expect("request");
        let copy = copy_bodiless(&req);
        assert_eq!(copy.method(), Method::PUT);
        assert_eq!(copy.uri(), "/x?y=1");
        assert_eq!(copy.headers()["x-a"], "1");
    }
}
