//! The Redis tier (`shared = true` routes): an entry fetched by one weir
//! instance is a hit on another.
//!
//! Redis is a help, never a dependency: calls go through `[redis]`'s client
//! (`crate::redis`), bounded by `[redis] timeout` and skipped while it backs
//! off after a failure, so requests then see memory only. Writes happen in
//! the background, off the request path.
//!
//! A stored value is `[u32 big-endian length][JSON head][body]`, under the key
//! `weir:cache:{G|H}:{host} {path?query}` with a TTL that covers its fresh
//! time and the stale windows.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use http_cache_semantics::CachePolicy;
use redis::AsyncCommands as _;
use serde::{Deserialize, Serialize};

use super::entry::{Entry, Key, Pending};
use crate::redis::RedisClient;

/// Keys a purge asks `SCAN` for at a time.
const SCAN_BATCH: usize = 1000;

/// The cache's use of `[redis]`'s client.
#[derive(Clone, Debug)]
pub(crate) struct SharedTier {
    redis: Arc<RedisClient>,
}

/// What is stored besides the body.
#[derive(Serialize, Deserialize)]
struct Head {
    policy: CachePolicy,
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    stale_at_ms: u64,
    no_stale: bool,
}

impl SharedTier {
    /// The tier on `redis`.
    pub(crate) fn new(redis: Arc<RedisClient>) -> Self {
        SharedTier { redis }
    }

    /// The entry stored for `key`, if Redis has one and answers in time.
    pub(crate) async fn get(&self, key: &Key) -> Option<Entry> {
        let name = redis_key(key);
        let value: Option<Vec<u8>> = self
            .redis
            .call(|mut c| async move { c.get(name).await })
            .await
            .ok()?;
        decode(&value?)
    }

    /// Stores `entry` under `key` in the background, kept `extra` past its fresh time.
    pub(crate) fn put(&self, key: Key, entry: Arc<Entry>, extra: Duration, now: SystemTime) {
        let Some(value) = encode(&entry) else {
            return;
        };
        let keep = entry.stale_at.duration_since(now).unwrap_or_default() + extra;
        let ms = u64::try_from(keep.as_millis())
            .unwrap_or(u64::MAX)
            .max(1000);
        // A body may end while its runtime shuts down, outside of it: the
        // write is then skipped rather than panicking.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let redis = self.redis.clone();
        runtime.spawn(async move {
            let name = redis_key(&key);
            // A failure is counted and logged by the client; the entry stays in memory.
            let _: Result<(), _> = redis
                .call(|mut c| async move { c.pset_ex(name, value, ms).await })
                .await;
        });
    }

    /// Drops the entries a purge of `host` (all when `None`) and path prefix `path` covers.
    pub(crate) async fn purge(&self, host: Option<&str>, path: &str) {
        let mut cursor: u64 = 0;
        // Bounded: SCAN ends when the cursor comes back to 0; the cap is a guard.
        for _ in 0..100_000 {
            let scanned: Result<(u64, Vec<String>), _> = self
                .redis
                .call(|mut c| async move {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg("weir:cache:*")
                        .arg("COUNT")
                        .arg(SCAN_BATCH)
                        .query_async(&mut c)
                        .await
                })
                .await;
            let Ok((next, names)) = scanned else {
                return;
            };
            let doomed: Vec<String> = names
                .into_iter()
                .filter(|n| parse_key(n).is_some_and(|k| k.purged_by(host, path)))
                .collect();
            if !doomed.is_empty() {
                let deleted: Result<(), _> = self
                    .redis
                    .call(|mut c| async move { c.del(doomed).await })
                    .await;
                if deleted.is_err() {
                    return;
                }
            }
            if next == 0 {
                return;
            }
            cursor = next;
        }
    }
}

fn redis_key(key: &Key) -> String {
    let method = if key.head { 'H' } else { 'G' };
    format!("weir:cache:{method}:{} {}", key.host, key.target)
}

fn parse_key(name: &str) -> Option<Key> {
    let rest = name.strip_prefix("weir:cache:")?;
    let (method, rest) = rest.split_once(':')?;
    let (host, target) = rest.split_once(' ')?;
    Some(Key {
        head: method == "H",
        host: host.into(),
        target: target.into(),
    })
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn encode(entry: &Entry) -> Option<Vec<u8>> {
    let head = Head {
        policy: entry.policy.clone(),
        status: entry.status.as_u16(),
        headers: entry
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect(),
        stale_at_ms: unix_ms(entry.stale_at),
        no_stale: entry.no_stale,
    };
    let json = serde_json::to_vec(&head).ok()?;
    let len = u32::try_from(json.len()).ok()?;
    let mut out = Vec::with_capacity(4 + json.len() + entry.body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&entry.body);
    Some(out)
}

/// The entry in `value`; `None` for anything malformed (another writer's
/// format, a truncated value): a miss, never an error.
fn decode(value: &[u8]) -> Option<Entry> {
    let len_bytes: [u8; 4] = value.get(..4)?.try_into().ok()?;
    let len = usize::try_from(u32::from_be_bytes(len_bytes)).ok()?;
    let json = value.get(4..4 + len)?;
    let body = Bytes::copy_from_slice(value.get(4 + len..)?);
    let head: Head = serde_json::from_slice(json).ok()?;
    let mut headers = HeaderMap::with_capacity(head.headers.len());
    for (name, value) in head.headers {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).ok()?,
            HeaderValue::from_bytes(&value).ok()?,
        );
    }
    let pending = Pending::restored(
        head.policy,
        StatusCode::from_u16(head.status).ok()?,
        headers,
        UNIX_EPOCH + Duration::from_millis(head.stale_at_ms),
        head.no_stale,
    );
    Some(pending.with_body(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_their_redis_names() {
        let key = Key {
            head: false,
            host: "example.com:8080".into(),
            target: "/a b?c".into(),
        };
        let parsed = parse_key(&redis_key(&key)).expect("parses");
        assert_eq!(parsed, key);
        assert!(parse_key("weir:other").is_none());
    }

    #[test]
    fn malformed_values_are_misses() {
        assert!(decode(b"").is_none());
        assert!(decode(b"\0\0\0\x05{}").is_none());
        assert!(decode(b"\0\0\0\x02{}body").is_none());
    }
}
