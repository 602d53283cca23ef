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
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Poll};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::access::AccessRecord;
use crate::affinity::Affinity;
use crate::body::{BodyProgress, BodyTooLarge, RequestBody};
use crate::error::{ProxyError, UpstreamError};
use crate::exchange::{arrived_frame, EarlyFrame, Exchange};
use crate::headers::Forwarded;
use crate::upstream::{InFlightGuard, Timer, Upstream, UpstreamBody};

/// Pooled connections found closed before a request went out — or closed by
/// the server as it arrived, before any byte of an answer, with the request
/// still whole — retried without counting as a try (a keep-alive race), at
/// most this many times.
const STALE_RETRIES: u32 = 3;

/// When an exchange must be over.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// When the request arrived.
    pub started: Instant,
    /// `request_timeout`: the whole exchange, response body included.
    pub request: Option<Instant>,
}

/// What, besides the request itself, decides how it is forwarded.
#[derive(Debug, Clone, Copy)]
pub struct Terms<'a> {
    /// When the exchange must be over.
    pub deadlines: Deadlines,
    /// What in the request points at a server (`hash`, `sticky`).
    pub affinity: Affinity,
    /// The progress of the request's body, if it has one: a body cut off by
    /// `body_read_timeout` fails the attempt, and that is the client's
    /// doing, not the server's.
    pub body: Option<&'a BodyProgress>,
    /// The request asks to switch protocols; a `101` to any other request
    /// is the upstream's error.
    pub upgrading: bool,
    /// The forwarding headers, when they are not in the request's map yet.
    pub forwarded: Option<&'a Forwarded<'a>>,
}

/// Sends the request in `req` to a server of `upstream`, retrying where safe.
/// Returns the upstream's response head and the bookkeeping its body must carry.
///
/// The request is taken from the caller's `Option` rather than passed by
/// value, so that this future does not hold a second copy of it; and for the
/// same reason this is no `async fn`, whose arguments would be kept beside
/// the variables they are moved into.
pub fn forward<'a>(
    upstream: &'a Upstream,
    req: &'a mut Option<Request<RequestBody>>,
    record: &'a mut Option<Box<AccessRecord>>,
    terms: Terms<'a>,
) -> impl Future<Output = Result<(Response<UpstreamBody>, Exchange), ProxyError>> + Send + 'a {
    // Taken apart here: inside the future, the parts would be kept beside `terms`.
    let Terms {
        deadlines,
        affinity,
        body,
        upgrading,
        forwarded,
    } = terms;
    async move {
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
            let Some(index) = upstream.pick(&tried, affinity) else {
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
            let mut conn = match server.pool.checkout(upgrading).await {
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
            // kept in this future across the await below. Boxed, so that the
            // future keeps a pointer, not a request, for the requests not replayed.
            let copy = replayable
                .then(|| req.as_ref().map(|r| Box::new(copy_bodiless(r))))
                .flatten();
            let Some(request) = req.take() else {
                break;
            };
            let send = std::pin::pin!(conn.sender.try_send_request(request, forwarded));
            let mut timer = server.pool.take_timer();
            let sent = response_head(send, &mut timer, cfg.response_timeout, deadlines, body).await;
            if let Some(timer) = timer {
                server.pool.put_timer(timer);
            }
            let by_request_timeout = matches!(sent, Err(Late::Request(_)));
            let error = match sent {
                Ok(Ok(mut resp)) => match admit(&mut resp, upgrading, addr) {
                    Ok(first) => {
                        if let Some((id, cookie)) = &server.sticky {
                            if affinity.sticky != Some(*id) {
                                resp.headers_mut()
                                    .append(http::header::SET_COOKIE, cookie.clone());
                            }
                        }
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
                    // Checked first: over HTTP/2 the stall shows only as a reset stream.
                    if body.is_some_and(BodyProgress::stalled) {
                        // Dropping `conn` closes it: it is not given back to the pool.
                        return Err(ProxyError::BodyStalled {
                            upstream: cfg.name.clone(),
                            server: addr,
                        });
                    }
                    if is_body_too_large(&error) {
                        return Err(ProxyError::BodyTooLarge);
                    }
                    if error.is_client_body() {
                        // The client's body failed (it went away mid-upload): not the server's fault.
                        return Err(ProxyError::ClientBody(error));
                    }
                    ProxyError::Upstream {
                        server: addr,
                        source: error,
                    }
                }
                Err(Late::Response(timeout) | Late::Request(timeout)) => ProxyError::Timeout {
                    server: addr,
                    timeout,
                },
            };
            upstream.mark_failed(index);
            tried.push(index);
            last_error = Some(error);
            match copy {
                Some(copy) if !by_request_timeout => *req = Some(*copy),
                _ => break,
            }
        }
        Err(last_error.unwrap_or_else(|| ProxyError::NoServer {
            upstream: cfg.name.clone(),
        }))
    }
}

/// Which deadline passed before the response head arrived, and how long it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Late {
    /// `response_timeout`.
    Response(Duration),
    /// `request_timeout`, the whole request's deadline.
    Request(Duration),
}

/// Waits for `send`, the upstream's response head, within `response_timeout`
/// and the request's deadline, on `timer` (one is made if there is none).
///
/// `response_timeout` counts the time the server has the request. While the
/// client's `body` is still coming in, the exchange waits on the client —
/// `body_read_timeout` bounds that — so the wait starts over each time it
/// runs out; once the body is in, it counts from then. A server that stops
/// taking the body (no byte moves for a whole `response_timeout`) is late.
///
/// `send` is pinned by the caller, so that this future holds a pointer to it
/// rather than a second copy.
async fn response_head<F: Future>(
    mut send: Pin<&mut F>,
    timer: &mut Option<Timer>,
    response_timeout: Duration,
    deadlines: Deadlines,
    body: Option<&BodyProgress>,
) -> Result<F::Output, Late> {
    let mut from = crate::clock::now();
    let mut seen = 0;
    poll_fn(|cx| {
        if let Poll::Ready(head) = send.as_mut().poll(cx) {
            return Poll::Ready(Ok(head));
        }
        // One pass per `response_timeout` the client's upload takes: each
        // pass but the last starts from a later point of the upload.
        loop {
            let at = from + response_timeout;
            let (until, late) = match deadlines.request {
                Some(end) if end <= at => (
                    end,
                    Late::Request(end.saturating_duration_since(deadlines.started)),
                ),
                _ => (at, Late::Response(response_timeout)),
            };
            let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
            ready!(crate::clock::poll_until(timer.as_mut(), until, cx));
            let Some(body) = body.filter(|_| matches!(late, Late::Response(_))) else {
                return Poll::Ready(Err(late));
            };
            from = match body.ended_at() {
                Some(ended) if ended > from => ended,
                Some(_) => return Poll::Ready(Err(late)),
                None if body.waiting() || body.bytes() != seen => Instant::now(),
                None => return Poll::Ready(Err(late)),
            };
            seen = body.bytes();
        }
    })
    .await
}

/// Whether the upstream's answer may go out, with the first frame of its
/// body if that has already arrived; or the upstream's error when it must
/// not: a `101` to a request that asked for no upgrade, or a body already
/// known to be broken (a malformed first chunk) before its head is sent.
fn admit(
    resp: &mut Response<UpstreamBody>,
    upgrading: bool,
    server: SocketAddr,
) -> Result<Option<EarlyFrame>, ProxyError> {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS && !upgrading {
        return Err(ProxyError::UnsolicitedUpgrade { server });
    }
    arrived_frame(resp.body_mut()).map_err(|source| ProxyError::Upstream { server, source })
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

fn is_body_too_large(error: &UpstreamError) -> bool {
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

    const RT: Duration = Duration::from_secs(60);

    /// Deadlines of a request that arrives now, with a `request_timeout` when given.
    fn deadlines(request_timeout: Option<u64>) -> Deadlines {
        let started = Instant::now();
        Deadlines {
            started,
            request: request_timeout.map(|s| started + Duration::from_secs(s)),
        }
    }

    /// Waits for an answer that never comes; returns which deadline passed, and when.
    async fn never_answered(deadlines: Deadlines, body: Option<&BodyProgress>) -> (Late, Duration) {
        waited_on(&mut None, deadlines, body).await
    }

    /// [`never_answered`], on `timer`.
    async fn waited_on(
        timer: &mut Option<Timer>,
        deadlines: Deadlines,
        body: Option<&BodyProgress>,
    ) -> (Late, Duration) {
        let start = Instant::now();
        let late = response_head(
            std::pin::pin!(std::future::pending::<()>()),
            timer,
            RT,
            deadlines,
            body,
        )
        .await
        .expect_err("no answer");
        (late, start.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_kept_from_another_wait_fires_at_this_waits_deadline() {
        let rt = Late::Response(RT);
        // Armed for sooner (an earlier request's wait), later, and long past.
        let now = Instant::now();
        for armed in [now + RT / 2, now + RT * 2, now] {
            let mut timer = Some(Box::pin(tokio::time::sleep_until(armed)));
            tokio::time::advance(Duration::from_secs(1)).await;
            assert_eq!(waited_on(&mut timer, deadlines(None), None).await, (rt, RT));
            assert!(timer.is_some(), "the timer is kept");
            tokio::time::advance(RT).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_request_deadline_caps_the_wait() {
        let rt = Late::Response(RT);
        assert_eq!(never_answered(deadlines(None), None).await, (rt, RT));
        let five = Duration::from_secs(5);
        let capped = never_answered(deadlines(Some(5)), None).await;
        assert_eq!(capped, (Late::Request(five), five));
        assert_eq!(never_answered(deadlines(Some(120)), None).await, (rt, RT));
    }

    fn progress() -> BodyProgress {
        BodyProgress::new("127.0.0.1:1".parse().expect("addr"), Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn time_spent_waiting_for_the_clients_body_is_not_the_servers() {
        let body = progress();
        body.set_waiting(true);
        let client = async {
            tokio::time::sleep(Duration::from_secs(100)).await;
            body.set_waiting(false);
            body.set_ended();
        };
        let (late, ()) = tokio::join!(never_answered(deadlines(None), Some(&body)), client);
        let from_the_end = Duration::from_secs(100) + RT;
        assert_eq!(late, (Late::Response(RT), from_the_end));
        // The request's own deadline still holds.
        let body = progress();
        body.set_waiting(true);
        let capped = never_answered(deadlines(Some(90)), Some(&body)).await;
        assert_eq!(capped.1, Duration::from_secs(90));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_already_in_or_no_longer_taken_leaves_response_timeout_as_it_is() {
        let body = progress();
        body.set_ended();
        let late = never_answered(deadlines(None), Some(&body)).await;
        assert_eq!(late, (Late::Response(RT), RT));
        // Not ended, not waited for, no byte moved: the server does not read it.
        let body = progress();
        let late = never_answered(deadlines(None), Some(&body)).await;
        assert_eq!(late, (Late::Response(RT), RT));
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
