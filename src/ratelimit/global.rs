//! `scope = "global"`: buckets in Redis, shared by every weir with the same `[redis] url`.
//!
//! # Why GCRA in a Lua script
//!
//! The script is the same GCRA as the local scope, so a route's limit means the
//! same thing whichever scope it has: a bucket of `burst`, refilled smoothly.
//! A fixed window with `INCR` + `PEXPIRE` lets a client through twice its
//! limit across a window boundary, and a sliding window needs either a log per
//! client (memory per request) or two counters and an approximation. GCRA
//! keeps one small integer per client — its theoretical arrival time — with a
//! TTL of exactly the time until its bucket is full again, after which the key
//! is gone and Redis holds nothing for idle clients.
//!
//! One request is one `EVALSHA` (one round trip, pipelined with other
//! requests' calls on the shared connection): the script reads the key,
//! decides, and writes it back atomically, with Redis's own clock (`TIME`), so
//! instances whose clocks disagree still share one budget.

use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use tracing::debug;

use crate::balance::stable_hash;
use crate::config::RateLimitConfig;
use crate::redis::RedisClient;

use super::Verdict;

/// GCRA: `KEYS[1]` holds the bucket's theoretical arrival time in
/// microseconds of Redis's clock; `ARGV[1]` is the emission interval (µs per
/// request), `ARGV[2]` the burst. Returns `{1, 0}` when allowed, `{0, wait_µs}` when not.
const GCRA: &str = r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local new_tat = tat + interval
local over = new_tat - now - interval * burst
if over > 0 then
  return {0, over}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, 0}
";

/// The buckets of one route with `scope = "global"`.
#[derive(Debug)]
pub(crate) struct GlobalLimiter {
    redis: Arc<RedisClient>,
    script: Script,
    /// `weir:rl:<route>:`, before each key.
    prefix: String,
    /// Microseconds per request (`per / requests`), at least 1.
    interval_us: u64,
    burst: u32,
}

impl GlobalLimiter {
    /// Buckets for `route`'s `config` in `redis`.
    pub(crate) fn new(redis: Arc<RedisClient>, route: &str, config: &RateLimitConfig) -> Self {
        let interval = config.per / config.requests.max(1);
        GlobalLimiter {
            redis,
            script: Script::new(GCRA),
            prefix: format!("weir:rl:{route}:"),
            interval_us: u64::try_from(interval.as_micros())
                .unwrap_or(u64::MAX)
                .max(1),
            burst: config.burst,
        }
    }

    /// The client it calls.
    pub(crate) fn redis(&self) -> &RedisClient {
        &self.redis
    }

    /// The Redis key of a client's bucket: a hash of its address or header
    /// value (fixed-size however long the header; the same on every
    /// instance), or `-` for requests without the header.
    fn key(&self, key: Option<&[u8]>) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(self.prefix.len() + 40);
        out.push_str(&self.prefix);
        match key {
            None => out.push('-'),
            Some(bytes) => {
                let _ = write!(out, "{:016x}", stable_hash(bytes));
            }
        }
        out
    }

    /// Takes one request from the bucket of `key` in Redis.
    pub(crate) async fn check(&self, key: Option<&[u8]>) -> Verdict {
        let key = self.key(key);
        let args = [self.interval_us, u64::from(self.burst)];
        match self
            .redis
            .run_script::<_, _, (i64, i64)>(&self.script, &[&key], &args)
            .await
        {
            Ok((1, _)) => Verdict::Allow,
            Ok((_, wait_us)) => Verdict::Deny {
                retry_after: Duration::from_micros(u64::try_from(wait_us).unwrap_or(0)),
            },
            Err(error) => {
                debug!(key = %key, error = %error, "global rate limit not checked");
                Verdict::Unavailable
            }
        }
    }
}
