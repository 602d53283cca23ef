//! Pooled HTTP/1.1 connections to one server, or one shared HTTP/2 connection.
//!
//! weir keeps its own small pool per server rather than a generic client:
//! connecting is a separate step from sending, so a connect failure leaves the
//! request untouched and it can go to another server.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::h1;
use super::idle::{IdleList, Timer};
use super::sender::{handshake_h2, Sender};
use crate::body::RequestBody;
use crate::config::UpstreamProtocol;
use crate::error::ConnectError;

/// How long an idle pooled connection is trusted to still be open.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Idle keep-alive connections to one server, and how to open new ones.
#[derive(Debug)]
pub(crate) struct Pool {
    /// Where new connections go.
    addr: SocketAddr,
    /// Bound on establishing a TCP connection.
    connect_timeout: Duration,
    /// At most this many idle connections are kept per worker (`keepalive`).
    max_idle: usize,
    /// Idle HTTP/1.1 connections; each connection holds a weak reference to
    /// it, to come back once its response was read whole.
    idle: Arc<IdleList<h1::Conn>>,
    /// HTTP/1.1 pooling, or one multiplexed h2c connection.
    protocol: UpstreamProtocol,
    /// The h2c connection every request shares; replaced when it closes. An
    /// async lock so that concurrent requests wait for one connect, not dial many.
    shared: tokio::sync::Mutex<Option<(http2::SendRequest<RequestBody>, Authority)>>,
}

/// A connection taken from (or new for) a pool, to send one request on.
#[derive(Debug)]
pub(crate) struct PooledConn {
    /// Sends the request on this connection.
    pub(crate) sender: Sender,
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
            idle: Arc::new(IdleList::new(max_idle)),
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

    /// An idle connection that is still open, or a new one. A request that
    /// asks for an `upgrade` gets hyper's HTTP/1.1 client on it, which can
    /// hand the connection over after a `101`.
    pub(crate) async fn checkout(&self, upgrade: bool) -> Result<PooledConn, ConnectError> {
        if self.protocol == UpstreamProtocol::H2c {
            return Box::pin(self.checkout_shared()).await;
        }
        let idle = self.pop_open();
        if upgrade {
            // Boxed: upgrades are rare, and the handshake's future would
            // otherwise make every request's future larger.
            return Box::pin(self.hyper_http1(idle)).await;
        }
        let conn = match idle {
            Some(conn) => conn,
            // Boxed, like the others: connecting is rare too.
            None => h1::Conn::new(Box::pin(self.tcp()).await?, Arc::downgrade(&self.idle)),
        };
        Ok(PooledConn {
            sender: Sender::Http1(Some(conn)),
        })
    }

    /// A spare timer for a request's wait on this server, if the worker has one.
    pub(crate) fn take_timer(&self) -> Option<Timer> {
        self.idle.take_timer()
    }

    /// Keeps `timer` for the next request to this server.
    pub(crate) fn put_timer(&self, timer: Timer) {
        self.idle.put_timer(timer);
    }

    /// The most recently idle connection the server has not closed.
    fn pop_open(&self) -> Option<h1::Conn> {
        let now = crate::clock::now();
        // Bounded: each iteration removes one entry from a list of at most `max_idle`.
        while let Some((conn, since)) = self.idle.pop() {
            if reusable(&conn, since, now) {
                return Some(conn);
            }
        }
        None
    }

    /// Closes the idle connections the server closed, and those idle too
    /// long. Without it, they would wait in `CLOSE_WAIT` for the next request
    /// to this server to find them, however long that takes.
    pub(crate) fn sweep_idle(&self) {
        let now = crate::clock::now();
        self.idle.sweep(|conn, since| reusable(conn, since, now));
    }

    /// hyper's HTTP/1.1 client, driven in a task, on `idle` or a new connection.
    async fn hyper_http1(&self, idle: Option<h1::Conn>) -> Result<PooledConn, ConnectError> {
        let stream = match idle {
            Some(conn) => conn.into_stream(),
            None => self.tcp().await?,
        };
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await?;
        let addr = self.addr;
        tokio::spawn(async move {
            if let Err(error) = conn.with_upgrades().await {
                tracing::debug!(server = %addr, %error, "upstream connection ended with an error");
            }
        });
        Ok(PooledConn {
            sender: Sender::Upgrade(sender),
        })
    }

    /// A handle on the shared h2c connection, connecting when there is none or it closed.
    async fn checkout_shared(&self) -> Result<PooledConn, ConnectError> {
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
        })
    }

    async fn tcp(&self) -> Result<TcpStream, ConnectError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| ConnectError::Timeout(self.connect_timeout))??;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// Whether an idle connection, idle since `since`, may take a request at `now`:
/// it was not idle past [`IDLE_TIMEOUT`], and the server has not closed it.
fn reusable(conn: &h1::Conn, since: Instant, now: Instant) -> bool {
    fresh(since, now) && conn.is_open()
}

/// Whether a connection idle since `since` is still within [`IDLE_TIMEOUT`] at `now`.
fn fresh(since: Instant, now: Instant) -> bool {
    now.checked_sub(IDLE_TIMEOUT)
        .is_none_or(|cutoff| since > cutoff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_idle_for_the_whole_timeout_is_no_longer_fresh() {
        let since = Instant::now();
        let tick = Duration::from_millis(1);
        assert!(fresh(since, since));
        assert!(fresh(since, since + IDLE_TIMEOUT - tick));
        assert!(!fresh(since, since + IDLE_TIMEOUT));
    }
}
