//! weir: a reverse-proxy load balancer.
//!
//! # Layout
//!
//! Imports run one way, from the request's entry down to the leaves:
//! `daemon` → `server` → `proxy` → (`cache` →) `pass` → `forward` →
//! `upstream` → `balance`, with
//! `config`, `stats`, `body` and `error` at the bottom.
//!
//! - `cli`: what the subcommands do; `signals`: Unix signals as
//!   `daemon::Control` values; `demo`: `weir demo`'s apps; `logging`.
//! - `config`: TOML parsing and validation into domain types.
//! - `discovery`: upstream servers by DNS name and SRV record, looked up
//!   apart from parsing and again as TTLs run out; changes go through the
//!   daemon's snapshot swap like a reload.
//! - `daemon`: listeners, the live `snapshot::Snapshot`, reload and shutdown;
//!   `runtime`: the worker runtimes; `shutdown`: the graceful-shutdown flag.
//! - `server`: the client side — accepting connections, TLS, serving HTTP/1.1
//!   and HTTP/2 on each, its deadlines, parking idle ones, the listener's mode,
//!   the PROXY protocol header a load balancer sends first.
//! - `proxy`: the request path: route and rewrite, then hand the request to
//!   the route's cache or straight to `pass`; `pass`: forward and stream the
//!   answer back, and the answers weir writes itself; `forward`: picking a server, connecting, sending, retrying where safe;
//!   `exchange`: the response body and what ends with it (in-flight guard,
//!   pooled connection, access record, metrics); `upgrade`: WebSocket and
//!   other `Upgrade` tunnels; `headers`: what is forwarded; `rewrite`: the
//!   request target a route's `strip_prefix` rewrites; `affinity`: the
//!   request key that `balance = "hash"` hashes; `host`: which host a
//!   request is for, and whether it is valid; `ratelimit`: per-route rate
//!   limits, local (in-process GCRA) or global (GCRA in Redis).
//! - `redis`: the shared Redis client (timeout, backoff, counted failures)
//!   that global limits use.
//! - `upstream`: servers, their runtime state and connection pools, and
//!   weir's own HTTP/1.1 client (`upstream::h1`), which the request's task
//!   drives with no task of its own; `health`: active health checks.
//! - `routing` and `balance`: pure lookup and selection logic.
//! - `body`, `error`, `stats`: the request body, failures and their
//!   statuses, plain counters; `compress`: response compression (`compress
//!   = true`), which the response body streams through.
//! - `access`: the access log; `admin`: the admin listener (metrics, status page, API).
//! - `cache`: the response cache of routes with `cache` — its entries, the
//!   memory and Redis tiers, and `cache::serve`, the request path of a
//!   cached route, which goes upstream through `pass`; the response body
//!   carries its tee (`exchange`).
//! - `access_list`: a route's `allow` / `deny` networks; `request_id`: keeping
//!   or making a request's id (both leaves the proxy calls).
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
pub mod access_list;
pub(crate) mod admin;
pub(crate) mod affinity;
pub mod balance;
pub(crate) mod body;
pub mod cache;
pub mod cli;
pub(crate) mod clock;
pub mod compress;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod discovery;
pub(crate) mod error;
pub(crate) mod exchange;
pub(crate) mod forward;
pub mod headers;
pub(crate) mod health;
pub(crate) mod host;
pub(crate) mod logging;
pub(crate) mod pass;
pub(crate) mod proxy;
pub(crate) mod ratelimit;
pub(crate) mod redis;
pub(crate) mod request_id;
pub(crate) mod rewrite;
pub mod routing;
pub mod runtime;
pub mod server;
pub(crate) mod shutdown;
pub(crate) mod signals;
pub mod snapshot;
pub mod stats;
pub(crate) mod upgrade;
pub mod upstream;
