//! The routing snapshot: everything a request needs, swapped in one step on reload.

use std::io;
use std::sync::Arc;

use crate::access::AccessLogger;
use crate::access_list::AccessList;
use crate::cache::{Cache, RouteCache};
use crate::config::{Config, HeaderRules};
use crate::ratelimit::{Limiters, RouteLimiter};
use crate::redis::RedisClient;
use crate::routing::Router;
use crate::stats::DaemonStats;
use crate::upstream::Upstream;

/// What a route leads to.
#[derive(Debug)]
pub(crate) struct RouteTarget {
    /// The upstream that serves it.
    pub(crate) upstream: Arc<Upstream>,
    /// The route's own `request_timeout`, overriding the upstream's.
    pub(crate) request_timeout: Option<std::time::Duration>,
    /// The route's response cache, when it has `cache`.
    pub(crate) cache: Option<RouteCache>,
    /// The route's `rate_limit`, when it has one.
    pub(crate) rate_limit: Option<Arc<RouteLimiter>>,
    /// The length of the path prefix cut before forwarding (`strip_prefix`);
    /// `None` when nothing is cut.
    pub(crate) strip_prefix: Option<usize>,
    /// Whether responses are compressed (`compress`).
    pub(crate) compress: bool,
    /// `request_headers`, applied after weir's forwarding headers.
    pub(crate) request_headers: HeaderRules,
    /// `response_headers`, applied to the upstream's responses.
    pub(crate) response_headers: HeaderRules,
    /// The route's `allow` / `deny` lists; `None` serves every client.
    pub(crate) access: Option<AccessList>,
}

/// An immutable routing table built from one configuration.
///
/// A reload builds a new one off to the side and stores it whole, so a
/// request sees either the old table or the new one, never a mix.
pub struct Snapshot {
    /// The configuration this snapshot was built from.
    pub(crate) config: Arc<Config>,
    /// Routes to upstreams.
    router: Router<RouteTarget>,
    /// Upstreams in config order.
    pub upstreams: Vec<Arc<Upstream>>,
    /// The access log, when on.
    pub access: Option<AccessLogger>,
    /// Daemon-wide counters, handed from snapshot to snapshot.
    pub stats: Arc<DaemonStats>,
    /// The response cache, handed from snapshot to snapshot.
    pub cache: Option<Arc<Cache>>,
    /// The routes' rate limiters by route label, handed over to the next
    /// snapshot for routes whose limit is unchanged.
    pub(crate) limiters: Limiters,
    /// `[redis]`'s client, kept across reloads while `[redis]` is unchanged.
    pub(crate) redis: Option<Arc<RedisClient>>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("upstreams", &self.upstreams)
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    /// Builds a snapshot, carrying per-server state, pools and the access log
    /// over from `previous` where they are still configured the same way.
    pub fn build(config: Config, previous: Option<&Snapshot>) -> io::Result<Self> {
        let stats: Arc<DaemonStats> = previous.map(|p| p.stats.clone()).unwrap_or_default();
        let redis =
            config
                .redis
                .as_ref()
                .map(|settings| match previous.and_then(|p| p.redis.as_ref()) {
                    Some(old) if old.settings == *settings => old.clone(),
                    _ => Arc::new(RedisClient::new(settings.clone(), stats.clone())),
                });
        let mut limiters = Limiters::default();
        let upstreams: Vec<Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|u| {
                let old = previous.and_then(|p| p.upstream(&u.name));
                Arc::new(Upstream::new(u.clone(), old.map(|o| &**o)))
            })
            .collect();
        let cache = Cache::build(
            &config,
            redis.as_ref(),
            previous.and_then(|p| p.cache.as_ref()),
        );
        let routes = config
            .routes
            .iter()
            .filter_map(|r| {
                let upstream = upstreams.iter().find(|u| u.name() == r.upstream)?;
                let rate_limit =
                    limiters.for_route(r, redis.as_ref(), previous.map(|p| &p.limiters));
                let target = RouteTarget {
                    upstream: upstream.clone(),
                    request_timeout: r.request_timeout,
                    cache: cache
                        .as_ref()
                        .zip(r.cache)
                        .map(|(cache, config)| cache.route(&r.label(), config)),
                    rate_limit,
                    // Cutting `/` would leave every path as it was.
                    strip_prefix: (r.strip_prefix && r.path != "/").then_some(r.path.len()),
                    compress: r.compress,
                    request_headers: r.request_headers.clone(),
                    response_headers: r.response_headers.clone(),
                    access: r.access.clone(),
                };
                Some((r.host.clone(), r.path.clone(), target))
            })
            .collect();
        let log = &config.log;
        let access = match previous.and_then(|p| p.access.as_ref()) {
            Some(old) if old.matches(&log.access, log.access_format) => Some(old.clone()),
            _ => AccessLogger::open(&log.access, log.access_format)?,
        };
        Ok(Self {
            router: Router::new(routes),
            upstreams,
            access,
            stats,
            cache,
            limiters,
            redis,
            config: Arc::new(config),
        })
    }

    /// Where a request for `host` and `path` goes.
    pub(crate) fn route(&self, host: Option<&str>, path: &str) -> Option<&RouteTarget> {
        self.router.route(host, path)
    }

    /// The upstream with this name.
    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| u.name() == name)
    }

    /// Closes the idle upstream connections their servers closed, in every pool.
    pub(crate) fn sweep_idle(&self) {
        for server in self.upstreams.iter().flat_map(|u| &u.servers) {
            server.pool.sweep_idle();
        }
    }
}
