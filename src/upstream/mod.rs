//! Upstream pools: servers, their runtime state and their connections.

mod body;
mod h1;
mod idle;
mod pool;
mod sender;
mod state;

use std::sync::Arc;

pub use body::UpstreamBody;
pub(crate) use idle::Timer;
pub(crate) use pool::{Pool, PooledConn};
pub(crate) use sender::te_trailers;
pub(crate) use sender::{for_h2, handshake_h2};
pub(crate) use state::InFlightGuard;
pub use state::{Health, ServerState};

use crate::affinity::{self, Affinity};
use crate::balance::{stable_hash, Candidate, Selector};
use crate::config::{ServerConfig, UpstreamConfig};
use crate::stats::UpstreamStats;

/// One upstream as configured in one snapshot.
#[derive(Debug)]
pub struct Upstream {
    /// The upstream's settings.
    pub(crate) config: UpstreamConfig,
    /// Servers in config order; `selector` returns indices into this list.
    pub servers: Vec<Server>,
    /// Picks a server (primaries first, backups when none can take the request);
    /// shared with the same upstream in other snapshots while its servers'
    /// weights and roles stay the same.
    selector: Arc<Selector>,
    /// Request counters, shared with the same upstream in other snapshots.
    pub(crate) stats: Arc<UpstreamStats>,
}

/// One server of an upstream in one snapshot.
#[derive(Debug)]
pub struct Server {
    /// The server's settings.
    pub(crate) config: ServerConfig,
    /// Runtime state shared with other snapshots that hold this server.
    pub state: Arc<ServerState>,
    /// Idle connections to this server.
    pub(crate) pool: Arc<Pool>,
    /// The upstream's `slow_start` window.
    slow_start: Option<std::time::Duration>,
    /// Identity for consistent hashing: a stable hash of the address.
    id: u64,
    /// With `sticky`: the server's cookie identity and the `Set-Cookie` naming it.
    pub(crate) sticky: Option<(u64, http::HeaderValue)>,
}

impl Server {
    /// The server's health now: what every view shows and the balancer uses.
    pub fn health(&self) -> Health {
        self.state.health(self.slow_start)
    }
}

impl Candidate for Server {
    fn weight(&self) -> u32 {
        self.config.weight
    }
    fn usable(&self) -> bool {
        // A server ramping up under slow_start is offered a growing share of picks.
        let health = self.health();
        health.usable() && health.ramp.is_none_or(|share| fastrand::f64() < share)
    }
    fn in_flight(&self) -> u64 {
        self.state.in_flight()
    }
    fn id(&self) -> u64 {
        self.id
    }
}

/// A server seen through a filter that hides servers already tried, and
/// optionally ignores slow_start (when every usable server is ramping up).
struct Untried<'a> {
    server: &'a Server,
    tried: bool,
    ramp: bool,
}

impl Candidate for Untried<'_> {
    fn weight(&self) -> u32 {
        self.server.weight()
    }
    fn usable(&self) -> bool {
        !self.tried
            && if self.ramp {
                self.server.usable()
            } else {
                self.server.health().usable()
            }
    }
    fn in_flight(&self) -> u64 {
        self.server.in_flight()
    }
    fn id(&self) -> u64 {
        self.server.id
    }
}

impl Upstream {
    /// Builds an upstream, reusing runtime state and pools from `previous`
    /// (the same upstream in the snapshot being replaced) server by server.
    pub(crate) fn new(config: UpstreamConfig, previous: Option<&Upstream>) -> Self {
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
                    slow_start: config.slow_start,
                    id: stable_hash(server.addr.to_string().as_bytes()),
                    sticky: config.sticky.as_ref().map(|sticky| {
                        let id = affinity::sticky_id(&config.name, server.addr);
                        (id, affinity::set_cookie(sticky, id))
                    }),
                }
            })
            .collect();
        // A round-robin schedule can take milliseconds to build (see
        // `balance::round_robin`); an upstream a reload leaves alone keeps its
        // selector, and its rotation goes on where it was.
        let wanted = shape(&servers);
        let selector = previous
            .filter(|p| p.config.balance == config.balance && shape(&p.servers) == wanted)
            .map(|p| p.selector.clone())
            .unwrap_or_else(|| Arc::new(Selector::new(config.balance, &wanted)));
        Self {
            selector,
            stats: previous.map(|p| p.stats.clone()).unwrap_or_default(),
            config,
            servers,
        }
    }

    /// The upstream's name.
    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }

    /// The server with this address, if it is in the pool.
    pub fn server(&self, addr: std::net::SocketAddr) -> Option<&Server> {
        self.servers.iter().find(|s| s.config.addr == addr)
    }

    /// Counts a failure against server `index` and logs when it takes the server out.
    pub(crate) fn mark_failed(&self, index: usize) {
        let cfg = &self.config;
        let Some(server) = self.servers.get(index) else {
            return;
        };
        // nginx never takes the only server of a pool out: there is nowhere else to go.
        if self.servers.len() > 1 && server.state.record_failure(cfg.max_fails, cfg.fail_timeout) {
            tracing::warn!(upstream = %cfg.name, server = %server.config.addr,
                reason = "max_fails reached", down_for = ?cfg.fail_timeout, "server down");
        }
    }

    /// Picks a usable server that is not in `tried` (indices of earlier
    /// attempts): the one the sticky cookie names while it is usable, else by
    /// the balancing algorithm (with the request's hashed key for `hash`).
    pub(crate) fn pick(&self, tried: &[usize], affinity: Affinity) -> Option<usize> {
        if let Some(id) = affinity.sticky {
            let named = self
                .servers
                .iter()
                .position(|s| s.sticky.as_ref().is_some_and(|(sid, _)| *sid == id));
            if let Some(i) = named.filter(|i| !tried.contains(i)) {
                if self.servers[i].health().usable() {
                    return Some(i);
                }
            }
        }
        let key = affinity.hash;
        if tried.is_empty() {
            if let Some(index) = self.selector.select_keyed(&self.servers, key) {
                return Some(index);
            }
            // Without slow_start nothing can have declined the pick.
            self.config.slow_start?;
        }
        let view = |ramp: bool| -> Vec<Untried<'_>> {
            self.servers
                .iter()
                .enumerate()
                .map(|(i, server)| Untried {
                    server,
                    tried: tried.contains(&i),
                    ramp,
                })
                .collect()
        };
        // Ramping servers may all decline a pick; then any usable one will do.
        self.selector
            .select_keyed(&view(true), key)
            .or_else(|| self.selector.select_keyed(&view(false), key))
    }
}

/// What a selector is built from: each server's weight and whether it is a backup.
fn shape(servers: &[Server]) -> Vec<(u32, bool)> {
    servers
        .iter()
        .map(|s| (s.config.weight, s.config.backup))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Balance;
    use std::time::Duration;

    fn upstream(slow_start: Option<Duration>) -> Upstream {
        let config = UpstreamConfig {
            hash_key: None,
            sticky: None,
            name: "app".into(),
            balance: Balance::RoundRobin,
            servers: ["127.0.0.1:3000", "127.0.0.1:3001"]
                .iter()
                .map(|a| ServerConfig {
                    addr: a.parse().expect("addr"),
                    weight: 1,
                    backup: false,
                    from: None,
                })
                .collect(),
            dns: vec![],
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            keepalive: 1,
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
            retries: 2,
            retry_timeout: None,
            request_timeout: None,
            fail_on_status: vec![],
            slow_start,
            protocol: crate::config::UpstreamProtocol::Http1,
            health_check: None,
        };
        Upstream::new(config, None)
    }

    #[test]
    fn a_reload_keeps_the_selector_while_weights_and_roles_stay() {
        let old = upstream(None);
        let same = Upstream::new(old.config.clone(), Some(&old));
        assert!(Arc::ptr_eq(&old.selector, &same.selector));
        // Rotation goes on where it was.
        let next = same.pick(&[], Affinity::default());
        assert_ne!(old.pick(&[], Affinity::default()), next);

        let mut reweighted = old.config.clone();
        reweighted.servers[1].weight = 2;
        let changed = Upstream::new(reweighted, Some(&old));
        assert!(!Arc::ptr_eq(&old.selector, &changed.selector));

        let mut least = old.config.clone();
        least.balance = Balance::LeastConn;
        let changed = Upstream::new(least, Some(&old));
        assert!(!Arc::ptr_eq(&old.selector, &changed.selector));
    }

    fn share_of_first(up: &Upstream, picks: usize) -> f64 {
        let first = (0..picks)
            .filter(|_| up.pick(&[], Affinity::default()) == Some(0))
            .count();
        first as f64 / picks as f64
    }

    #[tokio::test(start_paused = true)]
    async fn a_returning_server_ramps_up_under_slow_start() {
        let up = upstream(Some(Duration::from_secs(100)));
        up.servers[0].state.set_active_up(false);
        up.servers[0].state.set_active_up(true);
        tokio::time::advance(Duration::from_secs(10)).await;
        let early = share_of_first(&up, 4000);
        assert!(
            early > 0.02 && early < 0.15,
            "share at 10% of the ramp: {early}"
        );
        tokio::time::advance(Duration::from_secs(91)).await;
        let full = share_of_first(&up, 4000);
        assert!((full - 0.5).abs() < 0.01, "share after the ramp: {full}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_ramping_server_alone_still_takes_requests() {
        let up = upstream(Some(Duration::from_secs(100)));
        up.servers[1].state.set_draining(true);
        up.servers[0].state.set_active_up(false);
        up.servers[0].state.set_active_up(true);
        assert!((0..100).all(|_| up.pick(&[], Affinity::default()) == Some(0)));
    }

    #[test]
    fn without_slow_start_a_returning_server_takes_its_full_share() {
        let up = upstream(None);
        up.servers[0].state.set_active_up(false);
        up.servers[0].state.set_active_up(true);
        assert!((share_of_first(&up, 1000) - 0.5).abs() < 0.01);
    }
}
