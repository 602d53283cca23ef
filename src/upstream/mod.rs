//! Upstream pools: servers, their runtime state and their connections.

mod pool;
mod sender;
mod state;

use std::sync::Arc;

pub use pool::{ConnectError, Pool, PooledConn};
pub use sender::{te_trailers, Sender};
pub use state::{InFlightGuard, ServerState};

use crate::balance::{Candidate, Selector};
use crate::config::{ServerConfig, UpstreamConfig};

/// One upstream as configured in one snapshot.
#[derive(Debug)]
pub struct Upstream {
    /// The upstream's settings.
    pub config: UpstreamConfig,
    /// Servers in config order; `selector` returns indices into this list.
    pub servers: Vec<Server>,
    /// Picks a server (primaries first, backups when none can take the request).
    selector: Selector,
}

/// One server of an upstream in one snapshot.
#[derive(Debug)]
pub struct Server {
    /// The server's settings.
    pub config: ServerConfig,
    /// Runtime state shared with other snapshots that hold this server.
    pub state: Arc<ServerState>,
    /// Idle connections to this server.
    pub pool: Arc<Pool>,
}

impl Candidate for Server {
    fn weight(&self) -> u32 {
        self.config.weight
    }
    fn usable(&self) -> bool {
        self.state.is_usable()
    }
    fn in_flight(&self) -> u64 {
        self.state.in_flight()
    }
}

/// A server seen through a filter that hides servers already tried.
struct Untried<'a> {
    server: &'a Server,
    tried: bool,
}

impl Candidate for Untried<'_> {
    fn weight(&self) -> u32 {
        self.server.weight()
    }
    fn usable(&self) -> bool {
        !self.tried && self.server.usable()
    }
    fn in_flight(&self) -> u64 {
        self.server.in_flight()
    }
}

impl Upstream {
    /// Builds an upstream, reusing runtime state and pools from `previous`
    /// (the same upstream in the snapshot being replaced) server by server.
    pub fn new(config: UpstreamConfig, previous: Option<&Upstream>) -> Self {
        let servers: Vec<Server> = config
            .servers
            .iter()
            .map(|server| {
                let old = previous.and_then(|p| p.server(server.addr));
                let state = old
                    .map(|o| o.state.clone())
                    .unwrap_or_else(|| Arc::new(ServerState::new(server.addr)));
                let pool = old
                    .map(|o| o.pool.clone())
                    .filter(|p| {
                        p.has_settings(config.connect_timeout, config.keepalive, config.protocol)
                    })
                    .unwrap_or_else(|| {
                        Pool::new(
                            server.addr,
                            config.connect_timeout,
                            config.keepalive,
                            config.protocol,
                        )
                    });
                Server {
                    config: server.clone(),
                    state,
                    pool,
                }
            })
            .collect();
        let shape: Vec<(u32, bool)> = servers
            .iter()
            .map(|s| (s.config.weight, s.config.backup))
            .collect();
        Self {
            selector: Selector::new(config.balance, &shape),
            config,
            servers,
        }
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The server with this address, if it is in the pool.
    pub fn server(&self, addr: std::net::SocketAddr) -> Option<&Server> {
        self.servers.iter().find(|s| s.config.addr == addr)
    }

    /// Picks a usable server that is not in `tried` (indices of earlier attempts).
    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        if tried.is_empty() {
            return self.selector.select(&self.servers);
        }
        let view: Vec<Untried<'_>> = self
            .servers
            .iter()
            .enumerate()
            .map(|(i, server)| Untried {
                server,
                tried: tried.contains(&i),
            })
            .collect();
        self.selector.select(&view)
    }
}
