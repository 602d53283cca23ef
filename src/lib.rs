//! weir: a reverse-proxy load balancer.
//!
//! # Layout
//!
//! - [`config`]: TOML parsing and validation into domain types.
//! - [`daemon`]: listeners, the live [`snapshot::Snapshot`], reload and shutdown.
//! - [`server`]: accepting client connections and serving HTTP/1.1 and HTTP/2 on them,
//!   on the [`runtime`] workers;
//!   [`activity`]: their header-read and idle deadlines;
//!   [`parking`]: idle HTTP/1.1 connections without hyper's buffers.
//! - [`listener`], [`tls`]: what a listener does (plain, TLS by SNI, HTTPS redirect).
//! - [`upgrade`]: `Upgrade` handshakes (WebSocket) and the tunnels they open.
//! - [`proxy`]: the request path: route, rewrite, forward, stream back;
//!   [`forward`]: picking a server, connecting, sending, retrying where safe;
//!   [`health`]: active health checks.
//! - [`routing`] and [`balance`]: pure lookup and selection logic.
//! - [`upstream`]: servers, their runtime state and connection pools.
//! - [`headers`], [`body`], [`error`]: what is forwarded and how failures map to statuses.
//! - [`access`], [`logging`]: the access log and diagnostics.
//! - [`stats`], [`admin`]: request counters and the admin listener that shows them.
//! - [`signals`]: Unix signals as [`daemon::Control`] values; [`demo`]: `weir demo`.
#![forbid(unsafe_code)]

/// The `AsyncWrite` methods of a socket wrapper that passes writes straight
/// to its field `$inner`; the wrapper writes `poll_shutdown` itself.
macro_rules! write_through {
    ($inner:ident) => {
        fn poll_write(
            self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
            buf: &[u8],
        ) -> ::std::task::Poll<::std::io::Result<usize>> {
            ::std::pin::Pin::new(&mut self.get_mut().$inner).poll_write(cx, buf)
        }

        fn poll_write_vectored(
            self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
            bufs: &[::std::io::IoSlice<'_>],
        ) -> ::std::task::Poll<::std::io::Result<usize>> {
            ::std::pin::Pin::new(&mut self.get_mut().$inner).poll_write_vectored(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            self.$inner.is_write_vectored()
        }

        fn poll_flush(
            self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
        ) -> ::std::task::Poll<::std::io::Result<()>> {
            ::std::pin::Pin::new(&mut self.get_mut().$inner).poll_flush(cx)
        }
    };
}

pub mod access;
pub(crate) mod admin;
pub mod balance;
pub(crate) mod body;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub(crate) mod error;
pub(crate) mod exchange;
pub(crate) mod forward;
pub mod headers;
pub(crate) mod health;
pub(crate) mod logging;
pub(crate) mod proxy;
pub mod routing;
pub mod runtime;
pub mod server;
pub(crate) mod shutdown;
pub(crate) mod signals;
pub mod snapshot;
pub mod stats;
pub(crate) mod upgrade;
pub mod upstream;
