//! The client side: accepting connections on the listeners, terminating TLS,
//! serving HTTP/1.1 and HTTP/2 on each connection, its deadlines, and parking
//! idle connections.
//!
//! - `accept`: binding listeners and the accept loops (`max_connections`).
//! - `connection`: one client connection, from the first byte to its close.
//! - `mode`: what a listener does — plain, TLS by SNI, or an HTTPS redirect.
//! - `tls`: certificates and the rustls server configuration.
//! - `deadlines`: `header_read_timeout` and `idle_timeout`, kept on the socket.
//! - `parking`: idle HTTP/1.1 connections without hyper's buffers.

mod accept;
mod connection;
mod deadlines;
pub(crate) mod mode;
mod parking;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::Semaphore;

use crate::config::ServerSettings;
use crate::runtime::Workers;
use crate::shutdown::Shutdown;
use crate::snapshot::Snapshot;

pub(crate) use accept::{listen, RunningListener};
pub use accept::{listening_socket, LISTEN_BACKLOG};

/// Concurrent HTTP/2 streams per client connection (SETTINGS_MAX_CONCURRENT_STREAMS).
pub(crate) const H2_MAX_CONCURRENT_STREAMS: u32 = 256;
/// Largest HTTP/2 header list accepted, in bytes (SETTINGS_MAX_HEADER_LIST_SIZE);
/// as large as the HTTP/1.1 read buffer, so both protocols admit the same heads.
pub(crate) const H2_MAX_HEADER_LIST_SIZE: u32 = 64 * 1024;

/// What every client connection shares.
#[derive(Debug)]
pub(crate) struct ServeContext {
    /// The current routing snapshot; each request loads it once.
    pub(crate) snapshot: Arc<ArcSwap<Snapshot>>,
    /// One permit per open client connection (`max_connections`).
    pub(crate) connections: Arc<Semaphore>,
    /// Raised when the daemon shuts down gracefully.
    pub(crate) shutdown: Shutdown,
    /// HTTP/1.1 connection settings, fixed at start.
    pub(crate) http1: http1::Builder,
    /// HTTP/2 connection settings, fixed at start.
    pub(crate) http2: http2::Builder<TokioExecutor>,
    /// `idle_timeout`, fixed at start.
    pub(crate) idle_timeout: Duration,
    /// `header_read_timeout`, fixed at start: also bounds the TLS handshake.
    pub(crate) header_read_timeout: Duration,
    /// The runtimes that accept and serve connections, fixed at start.
    pub(crate) workers: Workers,
}

impl ServeContext {
    /// A context for `settings`, serving `snapshot`.
    pub(crate) fn new(
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
