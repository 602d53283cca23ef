//! Test helpers: real backends, the real proxy and real clients, all on
//! 127.0.0.1 ephemeral ports. Each test crate compiles this module on its own
//! and uses part of it, hence `allow(dead_code)`.
//!
//! - [`backends`]: hyper servers that record what reaches them, and dead ports.
//! - [`proxy`]: the daemon under test, its reload and shutdown controls.
//! - [`clients`]: HTTP clients, bodies and a steady load.
//! - [`config`]: TOML texts for the proxy.
//! - [`metrics`]: `/metrics` parsed, and samples looked up by labels.
//! - [`origin`]: an origin for cache tests, answering with the headers a test sets.
//! - [`raw`]: a raw-socket client that may misbehave, a backend that
//!   records the bytes it receives, and one that answers with fixed bytes.
//! - [`logs`]: the proxy's access log lines and diagnostic log lines.
//! - [`framing`]: checks that an upstream received only requests weir framed.
//! - [`dns`]: a real DNS server whose zone a test changes while weir runs.
//! - [`process`]: the real `weir` binary as a child process, and a stand-in
//!   for systemd's notification socket.
//! - [`redis`]: a real `redis-server` on a free port, killed when dropped.
#![allow(dead_code)]

mod backends;
mod clients;
mod config;
mod dns;
mod framing;
mod logs;
mod metrics;
mod origin;
mod process;
mod proxy;
mod raw;
mod redis;

// Each test crate uses a different part of these.
#[allow(unused_imports)]
pub use self::{
    backends::{
        closed_port, full, holding_backend, spawn_backend, spawn_backend_at, spawn_backend_with,
        spawn_h2c_backend_with, Backend, TestBody,
    },
    clients::{
        client, count_bytes, get, get_head, get_owned, get_with, send, send_with, Generated, Load,
        TestClient,
    },
    config::{config_with, one_upstream, server, with_admin, with_server_keys},
    dns::{DnsServer, ZONE},
    framing::weir_framed_requests,
    logs::{capture_logs, log_lines, Logs},
    metrics::{metric_value, scrape},
    origin::{spawn_origin, Origin},
    process::{rewrite_config, write_config, NotifySocket, Running, WEIR},
    proxy::{free_port, spawn_proxy, spawn_proxy_at, spawn_proxy_on, wait_until, Proxy},
    raw::{
        raw_exchange, spawn_recording_backend, spawn_scripted_backend, RawClient, RawResponse,
        RecordingBackend,
    },
    redis::RedisServer,
};
