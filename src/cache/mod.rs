//! The response cache: RFC 9111 semantics from `http-cache-semantics`, an
//! in-process tier (`moka`, bounded by bytes) and, for `shared = true`
//! routes, a Redis tier shared by several weir instances.
//!
//! - `entry`: the key, a stored answer and the rules of what may be stored;
//! - `store`: the memory tier and the per-key fetch locks (coalescing);
//! - `fill`: the tee that stores a body while it streams to the client;
//! - `serve`: the request path of a cached route;
//! - `shared`: the Redis tier.
//!
//! The [`Cache`] outlives snapshots: a reload hands it over, so entries,
//! counters and locks survive SIGHUP.

mod entry;
mod fill;
pub(crate) mod serve;
mod shared;
mod store;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Request};

use crate::config::{CacheSettings, Config, RouteCacheConfig};
use crate::redis::RedisClient;
pub use entry::Outcome;
use entry::{Entry, Key, Variants};
pub(crate) use fill::Fill;
use shared::SharedTier;
use store::{Locks, Memory, Stored, Turn};

/// How long an entry that can be revalidated is kept past its stale windows.
const REVALIDATION_ROOM: Duration = Duration::from_secs(600);

/// The daemon's cache, handed from snapshot to snapshot.
#[derive(Debug)]
pub struct Cache {
    /// The in-process tier.
    memory: Memory,
    /// `[cache]` as last loaded.
    settings: CacheSettings,
    /// The keys being fetched, so concurrent misses wait for one fetch.
    locks: Arc<Locks>,
    /// Keys being refreshed in the background (`stale_while_revalidate`),
    /// so one refresh runs per key.
    refreshing: Arc<Mutex<HashSet<Key>>>,
    /// Counters by route label; they outlive the routes' snapshots.
    routes: Arc<Mutex<HashMap<String, Arc<RouteCounters>>>>,
    /// Milliseconds added to the wall clock, for tests that move time on.
    skew_ms: Arc<AtomicU64>,
    /// The Redis tier, when `[redis]` is configured.
    shared: Option<SharedTier>,
}

/// What one route's cache did, by outcome.
#[derive(Debug, Default)]
pub struct RouteCounters {
    /// `X-Cache: HIT`.
    pub hit: AtomicU64,
    /// `X-Cache: MISS`.
    pub miss: AtomicU64,
    /// `X-Cache: STALE`.
    pub stale: AtomicU64,
    /// `X-Cache: BYPASS`.
    pub bypass: AtomicU64,
}

impl RouteCounters {
    fn count(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Hit => &self.hit,
            Outcome::Miss => &self.miss,
            Outcome::Stale => &self.stale,
            Outcome::Bypass => &self.bypass,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A route's view of the cache, held by its routing target.
#[derive(Debug)]
pub(crate) struct RouteCache {
    /// The daemon's cache.
    pub(crate) cache: Arc<Cache>,
    /// The route's `cache = { ... }`.
    pub(crate) config: RouteCacheConfig,
    /// The route's counters.
    pub(crate) counters: Arc<RouteCounters>,
}

impl Cache {
    /// The cache for `config`, carrying `previous`'s entries, counters and
    /// locks over; `None` when no `[cache]` is configured.
    pub(crate) fn build(
        config: &Config,
        redis: Option<&Arc<RedisClient>>,
        previous: Option<&Arc<Cache>>,
    ) -> Option<Arc<Cache>> {
        let settings = config.cache.clone()?;
        let shared = redis.map(|r| SharedTier::new(r.clone()));
        let cache = match previous {
            Some(old) => Cache {
                memory: if old.memory.capacity == settings.memory {
                    old.memory.clone()
                } else {
                    old.memory.resized(settings.memory)
                },
                settings,
                locks: old.locks.clone(),
                refreshing: old.refreshing.clone(),
                routes: old.routes.clone(),
                skew_ms: old.skew_ms.clone(),
                shared,
            },
            None => Cache {
                memory: Memory::new(settings.memory),
                settings,
                locks: Arc::default(),
                refreshing: Arc::default(),
                routes: Arc::default(),
                skew_ms: Arc::default(),
                shared,
            },
        };
        Some(Arc::new(cache))
    }

    /// The route handle for the route labelled `label`.
    pub(crate) fn route(self: &Arc<Self>, label: &str, config: RouteCacheConfig) -> RouteCache {
        let counters = self
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(label.to_owned())
            .or_default()
            .clone();
        RouteCache {
            cache: self.clone(),
            config,
            counters,
        }
    }

    /// Counters of every route that has had a cache, by label.
    pub fn route_counters(&self) -> Vec<(String, Arc<RouteCounters>)> {
        let routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<_> = routes.iter().map(|(l, c)| (l.clone(), c.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Keys and bytes in the memory tier.
    pub fn usage(&self) -> (u64, u64) {
        self.memory.usage()
    }

    /// The bound of the memory tier in bytes.
    pub fn capacity(&self) -> u64 {
        self.memory.capacity
    }

    /// Drops the entries of `host` (all hosts when `None`) whose path and
    /// query start with `path`, here and in Redis; returns how many keys
    /// the memory tier dropped.
    pub async fn purge(&self, host: Option<&str>, path: &str) -> u64 {
        let purged = self.memory.purge(host, path);
        if let Some(shared) = &self.shared {
            shared.purge(host, path).await;
        }
        purged
    }

    /// Drops the memory tier's `GET` and `HEAD` answers for the target of
    /// `req` (an unsafe method's).
    fn invalidate<B>(&self, req: &Request<B>) {
        let mut get = Request::new(());
        *get.uri_mut() = req.uri().clone();
        *get.headers_mut() = HeaderMap::with_capacity(1);
        if let Some(host) = req.headers().get(http::header::HOST) {
            get.headers_mut().insert(http::header::HOST, host.clone());
        }
        if let Some(key) = Key::of(&get) {
            let head = Key {
                head: true,
                ..key.clone()
            };
            self.memory.invalidate(&key);
            self.memory.invalidate(&head);
        }
    }

    /// Moves the cache's clock on by `by` (tests: expiry without waiting).
    #[doc(hidden)]
    pub fn advance_clock(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.skew_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// The time the cache's decisions are taken at.
    fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_millis(self.skew_ms.load(Ordering::Relaxed))
    }

    /// The entry that answers `req`, with how it stands at `now`: from
    /// memory, else (for shared routes) from Redis, which then also fills memory.
    async fn lookup<B>(
        &self,
        key: &Key,
        req: &Request<B>,
        route: &RouteCacheConfig,
        now: SystemTime,
    ) -> Option<(Arc<Entry>, entry::Standing)> {
        if let Some(found) = self.memory.get(key).and_then(|s| s.variants.find(req, now)) {
            return Some(found);
        }
        let shared = self.shared.as_ref().filter(|_| route.shared)?;
        let entry = Arc::new(shared.get(key).await?);
        let standing = entry.standing(req, now);
        if matches!(standing, entry::Standing::Other) {
            return None;
        }
        self.remember(key, entry.clone(), req, route, now);
        Some((entry, standing))
    }

    /// Stores `entry` in memory beside the other variants of `key`.
    fn remember<B>(
        &self,
        key: &Key,
        entry: Arc<Entry>,
        req: &Request<B>,
        route: &RouteCacheConfig,
        now: SystemTime,
    ) {
        let window = route.stale_window();
        let validators = entry.validators().next().is_some();
        let fresh = entry.stale_at.duration_since(now).unwrap_or_default();
        let keep_for = fresh
            + window
            + if validators {
                REVALIDATION_ROOM
            } else {
                Duration::ZERO
            };
        if keep_for.is_zero() {
            return;
        }
        let variants = match self.memory.get(key) {
            Some(old) => old.variants.with(entry, req, now),
            None => Variants {
                entries: vec![entry],
            },
        };
        let stored = Stored {
            variants: Arc::new(variants),
            keep_for,
        };
        self.memory.insert(key.clone(), stored);
    }

    /// Stores `entry` in memory and, for shared routes, in Redis (in the background).
    fn store<B>(
        &self,
        key: &Key,
        entry: Arc<Entry>,
        req: &Request<B>,
        route: &RouteCacheConfig,
        now: SystemTime,
    ) {
        if let Some(shared) = self.shared.as_ref().filter(|_| route.shared) {
            let keep = route.stale_window() + REVALIDATION_ROOM;
            shared.put(key.clone(), entry.clone(), keep, now);
        }
        self.remember(key, entry, req, route, now);
    }

    /// The lock on fetching `key`.
    fn turn(&self, key: &Key) -> Turn {
        self.locks.take(key)
    }

    /// Marks `key` as being refreshed; `false` when a refresh already runs.
    fn start_refresh(&self, key: &Key) -> bool {
        self.refreshing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone())
    }

    /// Ends the refresh of `key`.
    fn end_refresh(&self, key: &Key) {
        self.refreshing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }

    /// The largest body stored.
    fn max_entry_size(&self) -> u64 {
        self.settings.max_entry_size
    }

    /// How long a miss waits for another request's fetch of the same key.
    fn lock_timeout(&self) -> Duration {
        self.settings.lock_timeout
    }
}
