//! Pooled HTTP/1.1 connections to one server, or one shared HTTP/2 connection.
//!
//! weir keeps its own small pool per server rather than a generic client:
//! connecting is a separate step from sending, so a connect failure leaves the
//! request untouched and it can go to another server.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::uri::Authority;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::http2;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::sender::{handshake_h2, Sender};
use crate::body::RequestBody;
use crate::config::UpstreamProtocol;
use crate::error::ConnectError;
use crate::runtime;

/// How long an idle pooled connection is trusted to still be open.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Idle senders with the time they went idle, for one worker.
type IdleList = Vec<(SendRequest<RequestBody>, Instant)>;

/// One worker's idle list, on a cache line of its own so workers never contend.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(Mutex<IdleList>);

/// Idle keep-alive connections to one server, reused most-recent first.
///
/// Each worker runtime has its own idle list (nginx's `keepalive` is per
/// worker too): a connection's driver task runs on the worker that opened it,
/// so handing it to another worker would cost a cross-thread wake-up on every
/// request, and one shared list would be a lock every worker takes twice per request.
#[derive(Debug)]
pub(crate) struct Pool {
    /// Where new connections go.
    addr: SocketAddr,
    /// Bound on establishing a TCP connection.
    connect_timeout: Duration,
    /// At most this many idle connections are kept per worker (`keepalive`).
    max_idle: usize,
    /// Idle connections, one list per worker slot ([`runtime::worker_index`]).
    idle: Box<[Shard]>,
    /// HTTP/1.1 pooling, or one multiplexed h2c connection.
    protocol: UpstreamProtocol,
    /// The h2c connection every request shares; replaced when it closes. An
    /// async lock so that concurrent requests wait for one connect, not dial many.
    shared: tokio::sync::Mutex<Option<(http2::SendRequest<RequestBody>, Authority)>>,
}

/// A connection taken from (or new for) a pool; give it back with [`PooledConn::release`].
#[derive(Debug)]
pub(crate) struct PooledConn {
    /// Sends the request on this connection.
    pub(crate) sender: Sender,
    /// The pool it returns to.
    pool: Arc<Pool>,
}

impl Pool {
    /// An empty pool for `addr`.
    pub(crate) fn new(
        addr: SocketAddr,
        connect_timeout: Duration,
        max_idle: usize,
        protocol: UpstreamProtocol,
    ) -> Arc<Self> {
        Arc::new(Self {
            addr,
            connect_timeout,
            max_idle,
            idle: (0..runtime::worker_slots())
                .map(|_| Shard::default())
                .collect(),
            protocol,
            shared: tokio::sync::Mutex::new(None),
        })
    }

    /// Whether this pool was built with these settings (so a reload can keep it).
    pub(crate) fn has_settings(
        &self,
        connect_timeout: Duration,
        max_idle: usize,
        protocol: UpstreamProtocol,
    ) -> bool {
        self.connect_timeout == connect_timeout
            && self.max_idle == max_idle
            && self.protocol == protocol
    }

    /// An idle connection that is still open, or a new one.
    pub(crate) async fn checkout(self: &Arc<Self>) -> Result<PooledConn, ConnectError> {
        if self.protocol == UpstreamProtocol::H2c {
            return Box::pin(self.checkout_shared()).await;
        }
        // Bounded: each iteration removes one entry from a list of at most `max_idle`.
        while let Some((mut sender, since)) = self.pop_idle() {
            if since.elapsed() >= IDLE_TIMEOUT || sender.is_closed() {
                continue;
            }
            // A just-released connection may still be finishing its previous
            // response; `ready` resolves at once then, or fails if it closed.
            if sender.ready().await.is_ok() {
                return Ok(PooledConn {
                    sender: Sender::Http1(sender),
                    pool: self.clone(),
                });
            }
        }
        // Boxed, like `checkout_shared` above: connecting is rare, and its
        // future would otherwise make every request's future larger.
        let sender = Box::pin(self.connect()).await?;
        Ok(PooledConn {
            sender: Sender::Http1(sender),
            pool: self.clone(),
        })
    }

    /// A handle on the shared h2c connection, connecting when there is none or it closed.
    async fn checkout_shared(self: &Arc<Self>) -> Result<PooledConn, ConnectError> {
        let mut shared = self.shared.lock().await;
        if shared.as_ref().is_none_or(|(s, _)| s.is_closed()) {
            let stream = self.tcp().await?;
            *shared = Some(handshake_h2(stream, self.addr).await?);
        }
        let Some((sender, fallback)) = shared.as_ref() else {
            return Err(ConnectError::Io(io::ErrorKind::NotConnected.into()));
        };
        Ok(PooledConn {
            sender: Sender::H2 {
                sender: sender.clone(),
                fallback: fallback.clone(),
            },
            pool: self.clone(),
        })
    }

    async fn tcp(&self) -> Result<TcpStream, ConnectError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| ConnectError::Timeout(self.connect_timeout))??;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    async fn connect(&self) -> Result<SendRequest<RequestBody>, ConnectError> {
        let stream = self.tcp().await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await?;
        let addr = self.addr;
        tokio::spawn(async move {
            if let Err(error) = conn.with_upgrades().await {
                tracing::debug!(server = %addr, %error, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    fn pop_idle(&self) -> Option<(SendRequest<RequestBody>, Instant)> {
        lock(self.shard()).pop()
    }

    /// The calling worker's idle list.
    fn shard(&self) -> &Shard {
        &self.idle[runtime::worker_index() % self.idle.len()]
    }
}

fn lock(shard: &Shard) -> std::sync::MutexGuard<'_, IdleList> {
    shard.0.lock().unwrap_or_else(|e| e.into_inner())
}

impl PooledConn {
    /// Returns the connection for reuse once its response has been read whole.
    pub(crate) fn release(self) {
        // An h2 handle is a clone of the shared connection: nothing to give back.
        let Sender::Http1(sender) = self.sender else {
            return;
        };
        if sender.is_closed() {
            return;
        }
        let mut idle = lock(self.pool.shard());
        if idle.len() < self.pool.max_idle {
            idle.push((sender, Instant::now()));
        }
    }
}
