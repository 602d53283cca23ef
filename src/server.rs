//! Client-facing listeners: accept, limit, serve HTTP/1.1, shut down gracefully.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::activity::{Activity, TimedIo};
use crate::config::ServerSettings;
use crate::proxy::{self, ConnInfo};
use crate::snapshot::Snapshot;

/// What every client connection shares.
#[derive(Debug)]
pub struct ServeContext {
    /// The current routing snapshot; each request loads it once.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// One permit per open client connection (`max_connections`).
    pub connections: Arc<Semaphore>,
    /// Flips to true when the daemon shuts down gracefully.
    pub shutdown: watch::Receiver<bool>,
    /// HTTP/1.1 connection settings, fixed at start.
    pub http: http1::Builder,
    /// `idle_timeout`, fixed at start.
    pub idle_timeout: Duration,
    /// `header_read_timeout`, fixed at start.
    pub header_read_timeout: Duration,
}

impl ServeContext {
    /// A context for `settings`, serving `snapshot`.
    pub fn new(
        settings: &ServerSettings,
        snapshot: Arc<ArcSwap<Snapshot>>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let mut http = http1::Builder::new();
        // Header and idle deadlines are kept by `TimedIo`, which knows whether
        // a request is in progress; hyper's timer would also cut idle connections.
        http.keep_alive(true)
            .header_read_timeout(None)
            .max_buf_size(settings.max_header_size);
        Self {
            snapshot,
            connections: Arc::new(Semaphore::new(settings.max_connections)),
            shutdown,
            http,
            idle_timeout: settings.idle_timeout,
            header_read_timeout: settings.header_read_timeout,
        }
    }
}

/// A running listener; dropping `stop` (or sending on it) stops accepting.
#[derive(Debug)]
pub struct RunningListener {
    /// The bound address (the real port when the config said 0).
    pub local: SocketAddr,
    /// Tells the accept loop to stop; open connections carry on.
    stop: watch::Sender<bool>,
    /// The accept loop.
    task: JoinHandle<()>,
}

impl RunningListener {
    /// Stops accepting; connections already open finish on their own.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Binds `addr` and starts accepting on it.
pub async fn listen(addr: SocketAddr, ctx: Arc<ServeContext>) -> std::io::Result<RunningListener> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(accept_loop(listener, ctx, stop_rx));
    info!(listen = %local, "listening");
    Ok(RunningListener { local, stop, task })
}

async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<ServeContext>,
    mut stop: watch::Receiver<bool>,
) {
    let mut shutdown = ctx.shutdown.clone();
    loop {
        // Take a connection slot before accepting: over `max_connections`,
        // new clients wait in the kernel's backlog instead of costing memory.
        let permit = tokio::select! {
            permit = ctx.connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = raised(&mut stop) => return,
            _ = raised(&mut shutdown) => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = raised(&mut stop) => return,
            _ = raised(&mut shutdown) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                tokio::spawn(serve(stream, peer, ctx.clone(), permit));
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
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let _open = ctx.snapshot.load().stats.connection_opened();
    let info = Arc::new(ConnInfo {
        peer,
        proto: "http",
    });
    let snapshot = ctx.snapshot.clone();
    let activity = Activity::new();
    let io = TimedIo::new(
        stream,
        activity.clone(),
        ctx.idle_timeout,
        ctx.header_read_timeout,
    );
    let service = service_fn(move |req| {
        let busy = activity.begin();
        let snapshot = snapshot.load_full();
        let info = info.clone();
        async move {
            let mut resp = proxy::handle(snapshot, &info, req).await;
            resp.body_mut().hold(busy);
            Ok::<_, Infallible>(resp)
        }
    });
    let conn = ctx
        .http
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let mut shutdown = ctx.shutdown.clone();
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = raised(&mut shutdown) => {
            // Finish the request in progress with `Connection: close`; close if idle.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        if error.is_parse() || error.is_parse_too_large() {
            info!(client = %peer, %error, "malformed request");
        } else if error.is_timeout() {
            info!(client = %peer, %error, "client timed out");
        } else {
            debug!(client = %peer, %error, "client connection ended with an error");
        }
    }
}

/// Resolves once `flag` is true (or its sender is gone).
pub async fn raised(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}
