//! The Redis client weir instances share state through (`[redis]`): global
//! rate limits and the shared cache tier.
//!
//! One multiplexed connection (the `redis` crate's `ConnectionManager`):
//! concurrent calls from every worker thread are pipelined on it, and it
//! reconnects by itself after the connection drops. On top of it:
//! - every call is bounded by `[redis] timeout`, so a hung Redis never stalls
//!   a request longer than that;
//! - after a failure calls are not tried for a backoff (250 ms doubling to
//!   2 s), so an unreachable Redis costs requests nothing but a clock read;
//!   the first call after the backoff is the probe that finds Redis back;
//! - failures are counted (`weir_redis_errors_total`) and logged at warn at
//!   most once per [`WARN_EVERY`].

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, Script, ToRedisArgs};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::{RedisFail, RedisSettings};
use crate::stats::DaemonStats;

/// Failures are logged at most once per this interval.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(10);
/// The first backoff after a failure; it doubles with each failure in a row.
const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// The longest backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RedisError {
    /// A recent call failed; not tried until the backoff ends.
    #[error("Redis is backing off after a failure")]
    BackingOff,
    /// No answer within `[redis] timeout`.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The call failed (connection refused or lost, a script error, ...).
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// A shared Redis connection with a timeout, backoff and counted failures.
pub struct RedisClient {
    /// `[redis]` as configured; a reload that changes it makes a new client.
    pub(crate) settings: RedisSettings,
    /// Made on the first call, inside a runtime: the manager spawns its
    /// connection's task on the runtime that creates it.
    manager: OnceLock<Result<ConnectionManager, String>>,
    /// The origin of the millisecond clock of `retry_at` and `warned_at`.
    epoch: Instant,
    /// Milliseconds after `epoch` before which calls fail at once; 0 = healthy.
    retry_at: AtomicU64,
    /// Current backoff in milliseconds (doubles per failure in a row).
    backoff: AtomicU64,
    /// When the last warning was logged (milliseconds after `epoch`, +1 so 0 means never).
    warned_at: AtomicU64,
    /// Where failures are counted; outlives reloads.
    stats: Arc<DaemonStats>,
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClient")
            .field("url", &self.settings.url)
            .finish_non_exhaustive()
    }
}

impl RedisClient {
    /// A client for `settings`; it connects on its first call.
    pub(crate) fn new(settings: RedisSettings, stats: Arc<DaemonStats>) -> Self {
        RedisClient {
            settings,
            manager: OnceLock::new(),
            epoch: Instant::now(),
            retry_at: AtomicU64::new(0),
            backoff: AtomicU64::new(0),
            warned_at: AtomicU64::new(0),
            stats,
        }
    }

    /// What requests meet while Redis cannot answer.
    pub(crate) fn fail(&self) -> RedisFail {
        self.settings.fail
    }

    fn manager(&self) -> Result<ConnectionManager, RedisError> {
        let made = self.manager.get_or_init(|| {
            let client =
                redis::Client::open(self.settings.url.as_str()).map_err(|e| e.to_string())?;
            let timeout = self.settings.timeout;
            let config = ConnectionManagerConfig::new()
                .set_response_timeout(Some(timeout))
                .set_connection_timeout(Some(timeout.max(Duration::from_millis(500))))
                // weir's own backoff paces the retries.
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(10))
                .set_max_delay(Duration::from_millis(100));
            ConnectionManager::new_lazy_with_config(client, config).map_err(|e| e.to_string())
        });
        match made {
            Ok(manager) => Ok(manager.clone()),
            Err(e) => Err(RedisError::Redis(redis::RedisError::from((
                redis::ErrorKind::Client,
                "cannot create the connection",
                e.clone(),
            )))),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs `script` with `keys` and `args`: one `EVALSHA` round trip (and one
    /// `SCRIPT LOAD` + retry the first time a server has not seen it).
    pub(crate) async fn run_script<K: ToRedisArgs, A: ToRedisArgs, T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[K],
        args: &[A],
    ) -> Result<T, RedisError> {
        let mut call = script.prepare_invoke();
        for key in keys {
            call.key(key);
        }
        for arg in args {
            call.arg(arg);
        }
        self.call(|mut conn| async move { call.invoke_async(&mut conn).await })
            .await
    }

    /// Runs one call made by `f` on the shared connection, bounded by
    /// `[redis] timeout`; skipped at once while backing off after a failure.
    pub(crate) async fn call<T, F, Fut>(&self, f: F) -> Result<T, RedisError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let retry_at = self.retry_at.load(Ordering::Relaxed);
        if retry_at != 0 && self.now_ms() < retry_at {
            self.stats.redis_errors.fetch_add(1, Ordering::Relaxed);
            return Err(RedisError::BackingOff);
        }
        let timeout = self.settings.timeout;
        let result = match self.manager() {
            Ok(conn) => match tokio::time::timeout(timeout, f(conn)).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(e)) => Err(RedisError::Redis(e)),
                Err(_) => Err(RedisError::Timeout(timeout)),
            },
            Err(e) => Err(e),
        };
        match &result {
            Ok(_) => self.succeeded(),
            Err(e) => self.failed(e),
        }
        result
    }

    fn succeeded(&self) {
        if self.retry_at.swap(0, Ordering::Relaxed) != 0 {
            self.backoff.store(0, Ordering::Relaxed);
            info!(url = %self.settings.url, "Redis answers again");
        }
    }

    fn failed(&self, error: &RedisError) {
        self.stats.redis_errors.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let min = MIN_BACKOFF.as_millis() as u64;
        let max = MAX_BACKOFF.as_millis() as u64;
        let backoff = match self.backoff.load(Ordering::Relaxed) {
            0 => min,
            b => (b * 2).min(max),
        };
        self.backoff.store(backoff, Ordering::Relaxed);
        self.retry_at.store(now + backoff, Ordering::Relaxed);
        // One warning per interval, whichever thread gets there first.
        let last = self.warned_at.load(Ordering::Relaxed);
        let due = last == 0 || now + 1 >= last + WARN_EVERY.as_millis() as u64;
        if due
            && self
                .warned_at
                .compare_exchange(last, now + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let rate_limits = match self.settings.fail {
                RedisFail::Open => "let through",
                RedisFail::Closed => "503",
            };
            warn!(url = %self.settings.url, error = %error, rate_limits,
                cache = "memory only", retry_in_ms = backoff, "Redis unavailable");
        }
    }
}
