//! Listening sockets and their accept loops, one per worker runtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::connection::serve;
use super::mode::{Mode, SharedMode};
use super::ServeContext;
use crate::clock::Polled;

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
                tokio::spawn(Polled::new(serve(
                    stream,
                    peer,
                    ctx.clone(),
                    permit,
                    mode.load_full(),
                )));
            }
            Err(error) => {
                // Usually EMFILE/ENFILE: back off briefly rather than spin.
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Resolves once `flag` is true (or its sender is gone).
async fn raised(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}
