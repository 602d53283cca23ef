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
//! - `proxy_protocol`: the PROXY header a trusted load balancer sends first.
//! - `refusal`: weir's own answer to a request head hyper cannot read.

mod accept;
mod connection;
mod deadlines;
pub(crate) mod mode;
mod parking;
mod proxy_protocol;
mod refusal;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::Semaphore;

use crate::config::{ServerSettings, DEFAULT_MAX_HEADERS};
use crate::runtime::Workers;
use crate::shutdown::Shutdown;
use crate::snapshot::Snapshot;

pub(crate) use accept::{listen, RunningListener};
pub use accept::{listening_socket, LISTEN_BACKLOG};

/// Concurrent HTTP/2 streams per client connection (SETTINGS_MAX_CONCURRENT_STREAMS).
pub(crate) const H2_MAX_CONCURRENT_STREAMS: u32 = 256;

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
        // max_header_size is exact: hyper measures the head itself, request
        // line to blank line. The read buffer only has to hold it; on its
        // own, a buffer limit lets through heads a read's worth larger.
        http1
            .keep_alive(true)
            .half_close(true)
            .header_read_timeout(None)
            .max_header_size(settings.max_header_size)
            .max_buf_size(settings.max_header_size);
        // hyper's default, kept on the stack; any other count costs it a heap
        // allocation per request head.
        if settings.max_headers != DEFAULT_MAX_HEADERS {
            http1.max_headers(settings.max_headers);
        }
        // h2's defaults against rapid reset (CVE-2023-44487: 20 pending
        // accept resets) and local error resets (1024) stay on, set here
        // explicitly so an upgrade of hyper cannot silently loosen them.
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            .max_header_list_size(h2_max_header_list_size(settings.max_header_size))
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

/// SETTINGS_MAX_HEADER_LIST_SIZE for `max_header_size` (RFC 9113 §6.5.2: the
/// header list's size, each field's name and value plus 32 bytes). The h2
/// crate refuses a list that *reaches* its setting, so it gets one byte more:
/// a list of exactly `max_header_size` passes.
fn h2_max_header_list_size(max_header_size: usize) -> u32 {
    u32::try_from(max_header_size.saturating_add(1)).unwrap_or(u32::MAX)
}
