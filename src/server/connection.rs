//! One client connection: the TLS handshake, protocol detection (HTTP/1.1,
//! h2c by its preface, h2 by ALPN), serving requests until the connection
//! closes, parking it while idle, and graceful shutdown.

use std::convert::Infallible;
use std::fmt::Display;
use std::future::{self, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_util::future::Either;
use futures_util::FutureExt as _;
use http::{Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1::UpgradeableConnection;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info};

use super::deadlines::{is_head_timeout, Activity, Busy, HeadTimedOut, TimedIo};
use super::mode::{self, Kind, Mode};
use super::parking::ClientIo;
use super::proxy_protocol;
use super::refusal::{self, Unreadable};
use super::ServeContext;
use crate::body::BoxError;
use crate::exchange::ResponseBody;
use crate::pass::ConnInfo;
use crate::proxy;
use crate::stats::ProxyRejection;
use crate::upgrade::TunnelContext;

/// Serves one accepted connection until it closes.
///
/// Not an `async fn`: the set-up runs before the future is made, so that the
/// future, which lives as long as the connection, holds only what serving
/// needs, not also the arguments it was made from.
pub(super) fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<ServeContext>,
    permit: OwnedSemaphorePermit,
    mode: Arc<Mode>,
) -> impl Future<Output = ()> + Send {
    let _ = stream.set_nodelay(true);
    let open = ctx.snapshot.load().stats.connection_opened();
    let serving = if mode.proxy_protocol {
        // Boxed: rare, and it would make every connection's task larger.
        Either::Left(Box::pin(async move {
            let mut stream = stream;
            let Some(client) = proxied_client(&mut stream, peer, &ctx).await else {
                return;
            };
            let (peer, proxied) = (client.unwrap_or(peer), client.is_some());
            serve_client(stream, peer, proxied, ctx, permit, &mode).await;
        }))
    } else {
        Either::Right(serve_client(stream, peer, false, ctx, permit, &mode))
    };
    // Counted open until the connection's future is done or dropped.
    serving.map(move |()| drop(open))
}

/// Serves `stream` from `peer` (after its PROXY header, if any) as its
/// listener's mode says.
fn serve_client(
    stream: TcpStream,
    peer: SocketAddr,
    proxied: bool,
    ctx: Arc<ServeContext>,
    permit: OwnedSemaphorePermit,
    mode: &Mode,
) -> impl Future<Output = ()> + Send + 'static {
    let permit = Arc::new(permit);
    // Deadlines run from the accept (or from the end of a PROXY header, read
    // within its own): a TLS handshake and the first request head together
    // get `header_read_timeout`, however the protocol is detected.
    let activity = Activity::new();
    let stream = TimedIo::new(
        stream,
        activity.clone(),
        ctx.idle_timeout,
        ctx.header_read_timeout,
    );
    let conn = Conn {
        peer,
        proxied,
        ctx,
        permit,
        activity,
    };
    match &mode.kind {
        Kind::Plain => Either::Left(serve_http(stream, conn, Protocol::Auto)),
        Kind::RedirectHttps => Either::Left(serve_http(stream, conn, Protocol::Redirect)),
        // Boxed: the TLS state would otherwise make every connection's task,
        // plain ones included, as large as a TLS connection's.
        Kind::Tls(config) => Either::Right(Box::pin(serve_tls(stream, conn, config.clone()))),
    }
}

/// On a `proxy_protocol` listener: the client the PROXY header names
/// (`Some(None)`: the peer itself, for a `LOCAL` header), or `None` when the
/// connection is refused, logged and counted, before anything else is read.
async fn proxied_client(
    stream: &mut TcpStream,
    peer: SocketAddr,
    ctx: &ServeContext,
) -> Option<Option<SocketAddr>> {
    let trusted = proxy_protocol::is_trusted(
        &ctx.snapshot.load().config.server.trusted_proxies,
        peer.ip(),
    );
    let read = if trusted {
        proxy_protocol::read_client(stream, ctx.header_read_timeout).await
    } else {
        Err(ProxyRejection::Untrusted)
    };
    match read {
        Ok(client) => Some(client),
        Err(reason) => {
            debug!(%peer, reason = reason.label(), "connection refused: no valid PROXY header from a trusted proxy");
            ctx.snapshot.load().stats.record_proxy_rejection(reason);
            None
        }
    }
}

async fn serve_tls(
    stream: TimedIo<TcpStream>,
    conn: Conn,
    config: Arc<tokio_rustls::rustls::ServerConfig>,
) {
    // A client that never finishes its handshake holds a connection slot,
    // so the handshake is bounded like a request head.
    let accept = TlsAcceptor::from(config).accept(stream);
    let tls = match tokio::time::timeout(conn.ctx.header_read_timeout, accept).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            debug!(client = %conn.peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            debug!(client = %conn.peer, "TLS handshake timed out");
            return;
        }
    };
    let protocol = match tls.get_ref().1.alpn_protocol() {
        Some(b"h2") => Protocol::H2,
        _ => Protocol::Http1,
    };
    serve_http(tls, conn, protocol).await;
}

/// Which HTTP a connection speaks, as far as weir knows before reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// Cleartext: HTTP/1.1, or HTTP/2 when the client opens with its preface (h2c).
    Auto,
    /// Cleartext, answering every request with a redirect to HTTPS.
    Redirect,
    /// TLS with ALPN `http/1.1` or none.
    Http1,
    /// TLS with ALPN `h2`.
    H2,
}

/// One accepted client connection, before its protocol is known.
struct Conn {
    /// The client: the connection's peer, or the one its PROXY header named.
    peer: SocketAddr,
    /// Whether `peer` came from a PROXY header: such a client is never
    /// trusted with forwarding headers, whatever its address.
    proxied: bool,
    ctx: Arc<ServeContext>,
    /// The connection's slot under `max_connections`; tunnels share it.
    permit: Arc<OwnedSemaphorePermit>,
    /// Whether a request is in progress, for the header and idle deadlines.
    activity: Arc<Activity>,
}

/// Serves the connection's requests. The set-up runs before the future is
/// made, so that the future, which lives as long as the connection, holds
/// only what serving needs, not also the arguments it was made from.
fn serve_http<I>(io: I, conn: Conn, protocol: Protocol) -> impl Future<Output = ()> + Send
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Conn {
        peer,
        proxied,
        ctx,
        permit,
        activity,
    } = conn;
    let info = Arc::new(ConnInfo {
        peer,
        proxied,
        peer_ip: crate::headers::ip_value(peer.ip()),
        tls: matches!(protocol, Protocol::Http1 | Protocol::H2),
        tunnel: TunnelContext {
            _permit: permit,
            shutdown: ctx.shutdown.clone(),
        },
    });
    let io = ClientIo::new(io, activity.clone());
    let redirect = protocol == Protocol::Redirect;
    let snapshot = ctx.snapshot.clone();
    // For logging: shared, where the peer's address would be 32 bytes in the
    // connection's task twice.
    let client = info.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let busy = activity.begin();
        if req.version() == Version::HTTP_2 {
            activity.mark_multiplexed();
        }
        let inner = if redirect {
            Either::Left(future::ready(mode::redirect(req, &snapshot.load(), &info)))
        } else {
            // Boxed: hyper moves the request's future into its place, and a
            // pointer moves for less than the whole state of a request.
            Either::Right(Box::pin(proxy::handle(
                snapshot.load_full(),
                info.clone(),
                req,
            )))
        };
        Responding {
            inner,
            busy: Some(busy),
        }
    });
    let detected = match protocol {
        Protocol::H2 => Either::Left(future::ready(Ok((io, true)))),
        Protocol::Http1 => Either::Left(future::ready(Ok((io, false)))),
        Protocol::Auto | Protocol::Redirect => Either::Right(io.detect_h2()),
    };
    // Combinators rather than an `async` block, which would keep `io` and
    // `service` beside the connection they are moved into.
    detected.then(move |detected| {
        let served = match detected {
            Ok((io, true)) => Either::Left(Either::Left(serve_h2(io, service, ctx))),
            Ok((io, false)) => {
                Either::Left(Either::Right(serve_h1(io, service, ctx, client.clone())))
            }
            Err(error) => {
                let client = client.peer;
                debug!(%client, %error, "client connection ended before its first request");
                Either::Right(future::ready(Ok(())))
            }
        };
        served.map(move |result| {
            if let Err(e) = result {
                log_end(client.peer, &e);
            }
        })
    })
}

/// Logs how a connection hyper served ended with `e`.
fn log_end(peer: SocketAddr, e: &hyper::Error) {
    if e.is_parse() || e.is_parse_too_large() {
        // One hyper did not answer (an HTTP/2 preface on an HTTP/1.1
        // connection), or whose answer could not be held back.
        info!(client = %peer, error = %e, "malformed request");
    } else if e.is_timeout() {
        info!(client = %peer, error = %e, "client timed out");
    } else {
        debug!(client = %peer, error = %e, "client connection ended with an error");
    }
}

/// A connection's request handler, as hyper's connections take it.
trait Handler:
    hyper::service::Service<
        Request<Incoming>,
        Response = Response<Held>,
        Error = Infallible,
        Future: Send + 'static,
    > + Send
    + Unpin
    + 'static
{
}

impl<S> Handler for S where
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<Held>,
            Error = Infallible,
            Future: Send + 'static,
        > + Send
        + Unpin
        + 'static
{
}

async fn serve_h2<I, S>(io: ClientIo<I>, service: S, ctx: Arc<ServeContext>) -> hyper::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Handler,
{
    // Boxed, so that every connection's task is not as large as an HTTP/2 one.
    let mut conn = Box::pin(ctx.http2.serve_connection(TokioIo::new(io), service));
    tokio::select! {
        biased;
        result = conn.as_mut() => result,
        _ = ctx.shutdown.raised() => {
            // GOAWAY, then let open streams finish.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

/// Serves HTTP/1.1 requests until the connection closes, parking it whenever
/// it has been idle for [`super::deadlines::PARK_AFTER`] (see [`super::parking`]).
///
/// Not an `async fn`: its arguments would be kept in the future beside the
/// variables they are moved into, for the life of the connection.
fn serve_h1<I, S>(
    mut io: ClientIo<I>,
    mut service: S,
    ctx: Arc<ServeContext>,
    client: Arc<ConnInfo>,
) -> impl Future<Output = hyper::Result<()>> + Send
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Handler,
{
    let activity = io.activity().clone();
    io.hold_back_own_answers();
    async move {
        // At most one round per time the client wakes a parked connection.
        loop {
            // Boxed, so that a parked connection's task is small.
            let mut conn = Box::new(
                ctx.http1
                    .serve_connection(TokioIo::new(io), service)
                    .with_upgrades(),
            );
            let ended = tokio::select! {
                biased;
                result = &mut conn => Some(result),
                _ = ctx.shutdown.raised() => {
                    // Finish the request in progress with `Connection: close`; close if idle.
                    Pin::new(&mut *conn).graceful_shutdown();
                    Some(conn.as_mut().await)
                }
                // The socket's timer asks by waking this task, which polls it.
                () = future::poll_fn(|_| match activity.take_park_request() {
                    true => Poll::Ready(()),
                    false => Poll::Pending,
                }) => {
                    // Idle: hyper stops at once, and `ClientIo` keeps the socket open.
                    Pin::new(&mut *conn).graceful_shutdown();
                    conn.as_mut().await.err().map(Err)
                }
            };
            if let Some(result) = ended {
                return match result {
                    // Boxed: rare, and every connection's task would otherwise
                    // be as large as its state.
                    Err(error) => Box::pin(refuse(conn, error, &ctx, client.peer)).await,
                    Ok(()) => Ok(()),
                };
            }
            // In a block, so that `parts` is not kept in the task while parked.
            {
                // `{ conn }` moves the box into a temporary, freed at the end of
                // this statement. Moved out of in place, the box (800 bytes) would
                // be freed only at the end of its scope, after the parked wait.
                let Some(parts) = { conn }.into_parts() else {
                    return Ok(());
                };
                io = parts.io.into_inner();
                io.unread(&parts.read_buf);
                // hyper's read buffer goes now, not when the client next sends.
                drop(parts.read_buf);
                service = parts.service;
            }
            if io.has_unread() {
                // The start of a pipelined head, which came while the previous
                // request was in progress: from now its header deadline runs, and
                // the connection is not asked to park again.
                activity.on_read();
            } else {
                let _parked = ctx.snapshot.load().stats.connection_parked();
                let woken = tokio::select! {
                    biased;
                    woken = io.wait_for_client() => woken,
                    // Idle connections close at shutdown.
                    _ = ctx.shutdown.raised() => return Ok(()),
                };
                match woken {
                    Ok(true) => {}
                    Ok(false) => return Ok(()),
                    Err(error) => {
                        debug!(%error, "parked client connection closed");
                        return Ok(());
                    }
                }
            }
            activity.resumed();
        }
    }
}

/// A connection hyper ended with `error`: when hyper answered a head it
/// could not read, that answer was held back, and weir sends its own. A head
/// begun and not finished within `header_read_timeout`, which hyper does not
/// answer, weir answers 408, as HAProxy does.
async fn refuse<I, S>(
    conn: Box<UpgradeableConnection<TokioIo<ClientIo<I>>, S>>,
    error: hyper::Error,
    ctx: &ServeContext,
    peer: SocketAddr,
) -> hyper::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Handler,
{
    let Some(parts) = (*conn).into_parts() else {
        return Err(error);
    };
    let mut io = parts.io.into_inner();
    let (status, reason): (_, &(dyn Display + Sync)) = match io.take_held_answer() {
        Some(status) => (status, &error),
        // Only when every response is out: a 408 must not land in one.
        None if is_head_timeout(&error) && io.activity().all_answered() => {
            ctx.snapshot.load().stats.record_header_timeout();
            (StatusCode::REQUEST_TIMEOUT, &HeadTimedOut)
        }
        None => return Err(error),
    };
    let what = Unreadable {
        status,
        reason,
        head: &parts.read_buf,
        peer,
    };
    // Boxed: rare, and it would make every connection's task larger.
    Box::pin(refusal::answer(io, what, &ctx.snapshot.load())).await;
    Ok(())
}

pin_project! {
    /// A response on its way: once ready, it marks an upgraded connection and
    /// gives the body the connection's busy mark. A named future, because an
    /// `async` block awaiting `inner` would hold it twice, and hyper moves
    /// this future a few times per request.
    struct Responding<F> {
        #[pin]
        inner: F,
        busy: Option<Busy>,
    }
}

impl<F: Future<Output = Response<ResponseBody>>> Future for Responding<F> {
    type Output = Result<Response<Held>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = ready!(this.inner.poll(cx));
        let busy = this.busy.take();
        if let Some(busy) = &busy {
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                // The tunnel keeps its own idle timeout from here on.
                busy.mark_upgraded();
            }
        }
        Poll::Ready(Ok(resp.map(|body| Held { body, _busy: busy })))
    }
}

/// A response body that keeps its client connection counted as busy (no
/// idle or header deadline) until the body is done or dropped.
#[derive(Debug)]
pub(super) struct Held {
    body: ResponseBody,
    /// Dropped after `body`, whose end-of-exchange work runs first.
    _busy: Option<Busy>,
}

impl Body for Held {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
