//! Client-facing listeners: accept, limit, terminate TLS, serve HTTP/1.1 and
//! HTTP/2, shut down gracefully.

use std::convert::Infallible;
use std::future::{self, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::future::Either;
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::activity::{Activity, Busy, TimedIo};
use crate::body::ResponseBody;
use crate::config::ServerSettings;
use crate::listener::{self, Mode, SharedMode};
use crate::parking::ClientIo;
use crate::proxy::{self, ConnInfo};
use crate::runtime::Workers;
use crate::shutdown::Shutdown;
use crate::snapshot::Snapshot;
use crate::upgrade::TunnelContext;

/// Concurrent HTTP/2 streams per client connection (SETTINGS_MAX_CONCURRENT_STREAMS).
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 256;
/// Largest HTTP/2 header list accepted, in bytes (SETTINGS_MAX_HEADER_LIST_SIZE);
/// as large as the HTTP/1.1 read buffer, so both protocols admit the same heads.
pub const H2_MAX_HEADER_LIST_SIZE: u32 = 64 * 1024;

/// What every client connection shares.
#[derive(Debug)]
pub struct ServeContext {
    /// The current routing snapshot; each request loads it once.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// One permit per open client connection (`max_connections`).
    pub connections: Arc<Semaphore>,
    /// Raised when the daemon shuts down gracefully.
    pub shutdown: Shutdown,
    /// HTTP/1.1 connection settings, fixed at start.
    pub http1: http1::Builder,
    /// HTTP/2 connection settings, fixed at start.
    pub http2: http2::Builder<TokioExecutor>,
    /// `idle_timeout`, fixed at start.
    pub idle_timeout: Duration,
    /// `header_read_timeout`, fixed at start: also bounds the TLS handshake.
    pub header_read_timeout: Duration,
    /// The runtimes that accept and serve connections, fixed at start.
    pub workers: Workers,
}

impl ServeContext {
    /// A context for `settings`, serving `snapshot`.
    pub fn new(
        settings: &ServerSettings,
        snapshot: Arc<ArcSwap<Snapshot>>,
        shutdown: Shutdown,
        workers: Workers,
    ) -> Self {
        let mut http1 = http1::Builder::new();
        // Header and idle deadlines are kept by `TimedIo`, which knows whether
        // a request is in progress; hyper's timer would also cut idle connections.
        // half_close: a FIN from the client while its request is at the server
        // is not an abort (RFC 9112 §9.6); the answer is still sent. hyper
        // otherwise reads the socket after every request head to look for
        // that FIN, and since the head's bytes are still in use it allocates
        // a fresh 8 KiB read buffer for it: ~900 instructions per request.
        http1
            .keep_alive(true)
            .half_close(true)
            .header_read_timeout(None)
            .max_buf_size(settings.max_header_size);
        // h2's defaults against rapid reset (CVE-2023-44487: 20 pending
        // accept resets) and local error resets (1024) stay on, set here
        // explicitly so an upgrade of hyper cannot silently loosen them.
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            .max_header_list_size(H2_MAX_HEADER_LIST_SIZE)
            .max_pending_accept_reset_streams(20)
            .max_local_error_reset_streams(1024)
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20));
        Self {
            snapshot,
            connections: Arc::new(Semaphore::new(settings.max_connections)),
            shutdown,
            http1,
            http2,
            idle_timeout: settings.idle_timeout,
            header_read_timeout: settings.header_read_timeout,
            workers,
        }
    }
}

/// A running listener; dropping `stop` (or sending on it) stops accepting.
#[derive(Debug)]
pub struct RunningListener {
    /// The bound address (the real port when the config said 0).
    pub local: SocketAddr,
    /// Plain, TLS (with its certificates) or redirect; swapped on reload.
    pub mode: SharedMode,
    /// Tells the accept loop to stop; open connections carry on.
    stop: watch::Sender<bool>,
    /// The accept loops, one per worker.
    tasks: Vec<JoinHandle<()>>,
}

impl RunningListener {
    /// Stops accepting; connections already open finish on their own.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Binds `addr` and starts accepting on it, serving each connection as `mode` says.
///
/// With worker runtimes, each worker gets its own `SO_REUSEPORT` socket on the
/// same address, so the kernel spreads new connections over the workers.
pub async fn listen(
    addr: SocketAddr,
    mode: Mode,
    ctx: Arc<ServeContext>,
) -> std::io::Result<RunningListener> {
    let (stop, stop_rx) = watch::channel(false);
    let mode = Arc::new(ArcSwap::from_pointee(mode));
    let workers = ctx.workers.handles().to_vec();
    if workers.is_empty() {
        let listener = TcpListener::from_std(listening_socket(addr, false)?)?;
        let local = listener.local_addr()?;
        let task = tokio::spawn(accept_loop(listener, ctx, stop_rx, mode.clone()));
        info!(listen = %local, "listening");
        return Ok(RunningListener {
            local,
            mode,
            stop,
            tasks: vec![task],
        });
    }
    // All sockets are bound before any accepts, so a failure leaves nothing behind;
    // port 0 is resolved by the first bind and reused by the others.
    let mut sockets = Vec::with_capacity(workers.len());
    let mut local = addr;
    for _ in &workers {
        let socket = listening_socket(local, true)?;
        local = socket.local_addr()?;
        sockets.push(socket);
    }
    let tasks = workers
        .iter()
        .zip(sockets)
        .map(|(worker, socket)| {
            let (ctx, stop_rx, mode) = (ctx.clone(), stop_rx.clone(), mode.clone());
            // Registered with the worker's own reactor, so it must be converted there.
            worker.spawn(async move {
                match TcpListener::from_std(socket) {
                    Ok(listener) => accept_loop(listener, ctx, stop_rx, mode).await,
                    Err(error) => warn!(%error, "cannot register a listening socket"),
                }
            })
        })
        .collect();
    info!(listen = %local, workers = workers.len(), "listening");
    Ok(RunningListener {
        local,
        mode,
        stop,
        tasks,
    })
}

/// Connections the kernel may hold completed but not yet accepted, per
/// listening socket (capped by `net.core.somaxconn`, 4096 by default). tokio's
/// and std's `bind` use 128, which a thousand clients connecting at once
/// overflow: the kernel then drops their SYNs, and each retries after a second.
pub const LISTEN_BACKLOG: i32 = 4096;

/// A non-blocking listening socket on `addr` with [`LISTEN_BACKLOG`]; with
/// `reuse_port`, other sockets may share the address (`SO_REUSEPORT`).
pub fn listening_socket(
    addr: SocketAddr,
    reuse_port: bool,
) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<ServeContext>,
    mut stop: watch::Receiver<bool>,
    mode: SharedMode,
) {
    loop {
        // Take a connection slot before accepting: over `max_connections`,
        // new clients wait in the kernel's backlog instead of costing memory.
        let permit = tokio::select! {
            permit = ctx.connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = raised(&mut stop) => return,
            _ = ctx.shutdown.raised() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = raised(&mut stop) => return,
            _ = ctx.shutdown.raised() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                tokio::spawn(serve(stream, peer, ctx.clone(), permit, mode.load_full()));
            }
            Err(error) => {
                // Usually EMFILE/ENFILE: back off briefly rather than spin.
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<ServeContext>,
    permit: OwnedSemaphorePermit,
    mode: Arc<Mode>,
) {
    let _ = stream.set_nodelay(true);
    let _open = ctx.snapshot.load().stats.connection_opened();
    let permit = Arc::new(permit);
    // Deadlines run from the accept: a TLS handshake and the first request
    // head together get `header_read_timeout`, however the protocol is detected.
    let activity = Activity::new();
    let stream = TimedIo::new(
        stream,
        activity.clone(),
        ctx.idle_timeout,
        ctx.header_read_timeout,
    );
    let conn = Conn {
        peer,
        ctx,
        permit,
        activity,
    };
    match &*mode {
        Mode::Plain => serve_http(stream, conn, Protocol::Auto).await,
        Mode::RedirectHttps => serve_http(stream, conn, Protocol::Redirect).await,
        // Boxed: the TLS state would otherwise make every connection's task,
        // plain ones included, as large as a TLS connection's.
        Mode::Tls(config) => Box::pin(serve_tls(stream, conn, config.clone())).await,
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
    peer: SocketAddr,
    ctx: Arc<ServeContext>,
    /// The connection's slot under `max_connections`; tunnels share it.
    permit: Arc<OwnedSemaphorePermit>,
    /// Whether a request is in progress, for the header and idle deadlines.
    activity: Arc<Activity>,
}

async fn serve_http<I>(io: I, conn: Conn, protocol: Protocol)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Conn {
        peer,
        ctx,
        permit,
        activity,
    } = conn;
    let info = Arc::new(ConnInfo {
        peer,
        peer_ip: crate::headers::ip_value(peer.ip()),
        proto: if matches!(protocol, Protocol::Http1 | Protocol::H2) {
            "https"
        } else {
            "http"
        },
        tunnel: TunnelContext {
            permit,
            shutdown: ctx.shutdown.clone(),
        },
    });
    let redirect = protocol == Protocol::Redirect;
    let snapshot = ctx.snapshot.clone();
    let mut io = ClientIo::new(io, activity.clone());
    let service = service_fn(move |req: Request<Incoming>| {
        let busy = activity.begin();
        if req.version() == Version::HTTP_2 {
            activity.mark_multiplexed();
        }
        let inner = if redirect {
            Either::Left(future::ready(listener::redirect(&req)))
        } else {
            Either::Right(proxy::handle(snapshot.load_full(), info.clone(), req))
        };
        Responding {
            inner,
            busy: Some(busy),
        }
    });
    let h2 = match protocol {
        Protocol::H2 => true,
        Protocol::Http1 => false,
        Protocol::Auto | Protocol::Redirect => match io.starts_with_h2_preface().await {
            Ok(h2) => h2,
            Err(error) => {
                debug!(client = %peer, %error, "client connection ended before its first request");
                return;
            }
        },
    };
    let result = if h2 {
        serve_h2(io, service, &ctx).await
    } else {
        serve_h1(io, service, &ctx).await
    };
    if let Err(e) = result {
        if e.is_parse() || e.is_parse_too_large() {
            info!(client = %peer, error = %e, "malformed request");
        } else if e.is_timeout() {
            info!(client = %peer, error = %e, "client timed out");
        } else {
            debug!(client = %peer, error = %e, "client connection ended with an error");
        }
    }
}

/// A connection's request handler, as hyper's connections take it.
trait Handler:
    hyper::service::Service<
        Request<Incoming>,
        Response = Response<ResponseBody>,
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
            Response = Response<ResponseBody>,
            Error = Infallible,
            Future: Send + 'static,
        > + Send
        + Unpin
        + 'static
{
}

async fn serve_h2<I, S>(io: ClientIo<I>, service: S, ctx: &ServeContext) -> hyper::Result<()>
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
/// it has been idle for [`crate::activity::PARK_AFTER`] (see [`crate::parking`]).
async fn serve_h1<I, S>(
    mut io: ClientIo<I>,
    mut service: S,
    ctx: &ServeContext,
) -> hyper::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Handler,
{
    let activity = io.activity().clone();
    // At most one round per time the client wakes a parked connection.
    loop {
        // Boxed, so that a parked connection's task is small.
        let mut conn = Box::new(
            ctx.http1
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades(),
        );
        tokio::select! {
            biased;
            result = &mut conn => return result,
            _ = ctx.shutdown.raised() => {
                // Finish the request in progress with `Connection: close`; close if idle.
                Pin::new(&mut *conn).graceful_shutdown();
                return conn.await;
            }
            // The socket's timer asks by waking this task, which polls it.
            () = future::poll_fn(|_| match activity.take_park_request() {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }) => {
                // Idle: hyper stops at once, and `ClientIo` keeps the socket open.
                Pin::new(&mut *conn).graceful_shutdown();
                (&mut conn).await?;
            }
        }
        let Some(parts) = conn.into_parts() else {
            return Ok(());
        };
        io = parts.io.into_inner();
        io.unread(&parts.read_buf);
        // hyper's read buffer goes now, not when the client next sends.
        drop(parts.read_buf);
        service = parts.service;
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
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp = ready!(this.inner.poll(cx));
        if let Some(busy) = this.busy.take() {
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                // The tunnel keeps its own idle timeout from here on.
                busy.mark_upgraded();
            }
            resp.body_mut().hold(busy);
        }
        Poll::Ready(Ok(resp))
    }
}

/// Resolves once `flag` is true (or its sender is gone).
pub async fn raised(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}
