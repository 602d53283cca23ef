//! weir: a reverse-proxy load balancer.
//!
//! # Layout
//!
//! - [`config`]: TOML parsing and validation into domain types.
//! - [`daemon`]: listeners, the live [`snapshot::Snapshot`], reload and shutdown.
//! - [`server`]: accepting client connections and serving HTTP/1.1 and HTTP/2 on them,
//!   on the [`runtime`] workers;
//!   [`activity`]: their header-read and idle deadlines.
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

pub mod access;
pub mod activity;
pub mod admin;
pub mod balance;
pub mod body;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod error;
pub mod forward;
pub mod headers;
pub mod health;
pub mod listener;
pub mod logging;
pub mod proxy;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod shutdown;
pub mod signals;
pub mod snapshot;
pub mod stats;
pub mod tls;
pub mod upgrade;
pub mod upstream;
