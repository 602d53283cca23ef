//! Rate limits per route (`rate_limit = { requests, per, burst, key, scope }`).
//!
//! Both scopes run the same algorithm, GCRA: a bucket of `burst` requests per
//! key, refilled at `requests` per `per`. `local` keeps the buckets in this
//! process ([`local`]); `global` keeps them in Redis, shared by every weir
//! with the same `[redis] url` ([`global`]).
//!
//! A limiter belongs to its route: a reload keeps a route's limiter (and so its
//! buckets) when the route's `rate_limit` did not change, found by the route's
//! label. Over the limit, the answer is 429 with `Retry-After` and the
//! `RateLimit-Policy` / `RateLimit` fields of draft-ietf-httpapi-ratelimit-headers-11
//! (May 2026). Allowed responses carry none of them: writing them costs a
//! formatted header pair on every request, would show the policy to every
//! client, and a `global` bucket's exact remainder is only known after a
//! Redis call weir makes anyway — 429s carry what a client needs to back off.

pub(crate) mod global;
pub(crate) mod local;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{LimitKey, LimitScope, RateLimitConfig, RedisFail, RouteConfig};
use crate::error::ProxyError;
use crate::headers::Forwarded;
use crate::redis::RedisClient;

use global::GlobalLimiter;
use local::LocalLimiter;

/// `RateLimit-Policy`.
pub(crate) static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub(crate) static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// What a limiter says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the limit.
    Allow,
    /// Over it; the bucket has room again after `retry_after`.
    Deny {
        /// Until one more request would be allowed.
        retry_after: Duration,
    },
    /// The bucket could not be read (Redis unreachable or too slow).
    Unavailable,
}

/// Where a route's buckets live.
#[derive(Debug)]
enum Buckets {
    Local(LocalLimiter),
    Global(GlobalLimiter),
}

/// The limit of one route.
#[derive(Debug)]
pub(crate) struct RouteLimiter {
    /// The route's metric label: host (or `*`) and path, `yoursite.com/api`.
    pub(crate) route: Arc<str>,
    /// The limit as configured; a reload keeps this limiter only if it is equal.
    config: RateLimitConfig,
    buckets: Buckets,
    /// `RateLimit-Policy` of every 429, rendered once.
    policy: HeaderValue,
    /// Requests answered 429 (`weir_rate_limited_total`); carried over a
    /// reload that changes the limit, so the counter never goes back.
    pub(crate) limited: Arc<AtomicU64>,
}

impl RouteLimiter {
    fn new(
        route: Arc<str>,
        config: RateLimitConfig,
        redis: Option<&Arc<RedisClient>>,
        limited: Arc<AtomicU64>,
    ) -> Option<Self> {
        let buckets = match config.scope {
            LimitScope::Local => Buckets::Local(LocalLimiter::new(&config)),
            // Validation makes `global` require `[redis]`.
            LimitScope::Global => {
                Buckets::Global(GlobalLimiter::new(redis?.clone(), &route, &config))
            }
        };
        let policy = format!("\"default\";q={};w={}", config.burst, window_secs(&config));
        Some(RouteLimiter {
            policy: HeaderValue::from_str(&policy).ok()?,
            route,
            config,
            buckets,
            limited,
        })
    }

    /// The key of a request with `headers` and `forwarded` (as weir
    /// forwards them, with the client address it resolved in `X-Real-IP`):
    /// owned, so the request's future does not keep the request borrowed
    /// while [`Self::admit`] waits.
    pub(crate) fn key(
        &self,
        headers: &HeaderMap,
        forwarded: &Forwarded<'_>,
    ) -> Option<HeaderValue> {
        match &self.config.key {
            LimitKey::Ip => Some(forwarded.real_ip()),
            LimitKey::Header(name) => forwarded.get(headers, name),
        }
        .cloned()
    }

    /// Takes one request of `key` (see [`Self::key`]) from its bucket; an
    /// error is the request's refusal: 429, or 503 when Redis cannot be asked
    /// and `[redis] fail = "closed"`.
    pub(crate) async fn admit(&self, key: Option<HeaderValue>) -> Result<(), ProxyError> {
        match self.check(key.as_ref().map(HeaderValue::as_bytes)).await {
            Verdict::Allow => Ok(()),
            Verdict::Deny { retry_after } => Err(ProxyError::RateLimited {
                route: self.route.clone(),
                retry_after,
            }),
            Verdict::Unavailable => match self.redis().map(RedisClient::fail) {
                Some(RedisFail::Closed) => Err(ProxyError::LimitUnavailable {
                    route: self.route.clone(),
                }),
                _ => Ok(()),
            },
        }
    }

    async fn check(&self, key: Option<&[u8]>) -> Verdict {
        let verdict = match &self.buckets {
            Buckets::Local(local) => local.check(key),
            // Boxed: the Redis call's future is large, and the request's
            // future, which hyper moves around, should not grow by it.
            Buckets::Global(global) => Box::pin(global.check(key)).await,
        };
        if let Verdict::Deny { .. } = verdict {
            self.limited.fetch_add(1, Ordering::Relaxed);
        }
        verdict
    }

    /// The Redis client of global buckets.
    pub(crate) fn redis(&self) -> Option<&RedisClient> {
        match &self.buckets {
            Buckets::Local(_) => None,
            Buckets::Global(g) => Some(g.redis()),
        }
    }

    /// The headers of a 429 that must wait `retry_after`: `Retry-After`,
    /// `RateLimit-Policy` and `RateLimit`.
    pub(crate) fn denied_headers(&self, retry_after: Duration) -> [(HeaderName, HeaderValue); 3] {
        let secs = ceil_secs(retry_after).max(1);
        let mut buf = itoa::Buffer::new();
        let retry =
            HeaderValue::from_str(buf.format(secs)).unwrap_or(HeaderValue::from_static("1"));
        let state = HeaderValue::from_str(&format!("\"default\";r=0;t={secs}"))
            .unwrap_or(HeaderValue::from_static("\"default\";r=0;t=1"));
        [
            (http::header::RETRY_AFTER, retry),
            (RATELIMIT_POLICY.clone(), self.policy.clone()),
            (RATELIMIT.clone(), state),
        ]
    }

    /// Drops idle keys of local buckets.
    fn sweep(&self) {
        if let Buckets::Local(local) = &self.buckets {
            local.sweep();
        }
    }
}

/// Seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The time an empty bucket takes to fill up, in whole seconds (at least 1):
/// the `w` of `RateLimit-Policy`, whose `q` is the bucket's size.
fn window_secs(config: &RateLimitConfig) -> u64 {
    let fill = config.per.saturating_mul(config.burst) / config.requests.max(1);
    ceil_secs(fill).max(1)
}

/// Every route's limiter, kept by route label across reloads.
#[derive(Debug, Default)]
pub(crate) struct Limiters {
    by_route: HashMap<Arc<str>, Arc<RouteLimiter>>,
}

impl Limiters {
    /// The limiter of `route`: the previous one when its limit is unchanged
    /// (and its buckets, local or global, still the same ones), else a new one.
    pub(crate) fn for_route(
        &mut self,
        route: &RouteConfig,
        redis: Option<&Arc<RedisClient>>,
        previous: Option<&Limiters>,
    ) -> Option<Arc<RouteLimiter>> {
        let config = route.rate_limit.as_ref()?;
        let label: Arc<str> = route.label().into();
        let old = previous.and_then(|p| p.by_route.get(&label));
        let same_redis = |old: &RouteLimiter| match (old.redis(), redis) {
            (None, _) => true,
            (Some(a), Some(b)) => std::ptr::eq(a, &**b),
            (Some(_), None) => false,
        };
        let limiter = match old {
            Some(old) if old.config == *config && same_redis(old) => old.clone(),
            _ => {
                let limited = old.map(|o| o.limited.clone()).unwrap_or_default();
                let limiter = Arc::new(RouteLimiter::new(
                    label.clone(),
                    config.clone(),
                    redis,
                    limited,
                )?);
                if config.scope == LimitScope::Local {
                    spawn_sweeper(&limiter, config);
                }
                limiter
            }
        };
        self.by_route.insert(label, limiter.clone());
        Some(limiter)
    }

    /// The limiters, for metrics.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<RouteLimiter>> {
        self.by_route.values()
    }
}

/// Sweeps `limiter`'s idle keys every time a bucket takes to fill (1 s to
/// 1 min), until the limiter is gone; without a runtime (a unit test
/// building a snapshot) keys are not swept.
fn spawn_sweeper(limiter: &Arc<RouteLimiter>, config: &RateLimitConfig) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let every = Duration::from_secs(window_secs(config).clamp(1, 60));
    let weak: Weak<RouteLimiter> = Arc::downgrade(limiter);
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(limiter) = weak.upgrade() else {
                return;
            };
            // Walking a large map takes milliseconds: off the worker threads.
            let swept = tokio::task::spawn_blocking(move || limiter.sweep()).await;
            if swept.is_err() {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(requests: u32, per: Duration, burst: u32) -> RateLimitConfig {
        RateLimitConfig {
            requests,
            per,
            burst,
            key: LimitKey::Ip,
            scope: LimitScope::Local,
        }
    }

    #[test]
    fn the_policy_window_is_the_time_a_bucket_takes_to_fill() {
        assert_eq!(window_secs(&config(100, Duration::from_secs(1), 100)), 1);
        assert_eq!(window_secs(&config(10, Duration::from_secs(60), 5)), 30);
        assert_eq!(window_secs(&config(1000, Duration::from_secs(1), 1)), 1);
    }

    #[test]
    fn a_denial_names_the_policy_and_the_wait_rounded_up() {
        let l = RouteLimiter::new(
            "*/".into(),
            config(100, Duration::from_secs(1), 100),
            None,
            Arc::default(),
        )
        .expect("local");
        let headers = l.denied_headers(Duration::from_millis(1500));
        let text: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().expect("ascii").to_owned()))
            .collect();
        assert_eq!(
            text,
            [
                ("retry-after".to_owned(), "2".to_owned()),
                (
                    "ratelimit-policy".to_owned(),
                    "\"default\";q=100;w=1".to_owned()
                ),
                ("ratelimit".to_owned(), "\"default\";r=0;t=2".to_owned()),
            ]
        );
        // Never `Retry-After: 0`, which would invite an immediate retry.
        assert_eq!(l.denied_headers(Duration::from_millis(3))[0].1, "1");
    }
}
