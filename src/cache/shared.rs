//! The Redis tier (`shared = true` routes): an entry fetched by one weir
//! instance is a hit on another.
//!
//! Redis is a help, never a dependency: every call is bounded by a short
//! timeout, and after a failure the tier stays out of the way for a while
//! (requests see memory only) before it tries again. Writes happen in the
//! background, off the request path.
//!
//! A stored value is `[u32 big-endian length][JSON head][body]`, under the key
//! `weir:cache:{G|H}:{host} {path?query}` with a TTL that covers its fresh
//! time and the stale windows.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use http_cache_semantics::CachePolicy;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands as _;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use tracing::warn;

use super::entry::{Entry, Key, Pending};

/// The longest a Redis call may take before the request goes on without it.
const CALL_TIMEOUT: Duration = Duration::from_millis(250);
/// How long the tier stays out of the way after a failure.
const BACKOFF: Duration = Duration::from_secs(1);
/// Keys a purge asks `SCAN` for at a time.
const SCAN_BATCH: usize = 1000;

/// The connection to `[redis] url`.
#[derive(Clone)]
pub(crate) struct SharedTier {
    url: Arc<str>,
    client: redis::Client,
    /// Made on first use, inside the runtime; it reconnects by itself.
    conn: Arc<OnceCell<ConnectionManager>>,
    /// Unix milliseconds until which Redis is skipped after a failure.
    skip_until_ms: Arc<AtomicU64>,
}

impl std::fmt::Debug for SharedTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTier")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
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
    /// A tier on `url`; `None` (logged) when the URL is not one the client understands.
    pub(crate) fn new(url: &str) -> Option<Self> {
        match redis::Client::open(url) {
            Ok(client) => Some(SharedTier {
                url: url.into(),
                client,
                conn: Arc::default(),
                skip_until_ms: Arc::default(),
            }),
            Err(error) => {
                warn!(%url, %error, "redis url not usable; the shared cache tier is off");
                None
            }
        }
    }

    /// The URL it talks to.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The connection, unless Redis failed a moment ago.
    async fn connection(&self) -> Option<ConnectionManager> {
        if unix_ms(SystemTime::now()) < self.skip_until_ms.load(Ordering::Relaxed) {
            return None;
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1);
        let made = self
            .conn
            .get_or_try_init(|| async {
                ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            })
            .await;
        match made {
            Ok(conn) => Some(conn.clone()),
            Err(error) => {
                self.failed(&error);
                None
            }
        }
    }

    /// Keeps Redis out of the way for a while after `error`.
    fn failed(&self, error: &dyn std::fmt::Display) {
        let until = unix_ms(SystemTime::now() + BACKOFF);
        let before = self.skip_until_ms.swap(until, Ordering::Relaxed);
        // One line per outage, not one per request.
        if before < unix_ms(SystemTime::now()) {
            warn!(url = %self.url, %error, "redis failed; the cache serves from memory only for now");
        }
    }

    /// Runs one Redis call, bounded; a failure is logged once and yields `None`.
    async fn call<T, F>(&self, f: impl FnOnce(ConnectionManager) -> F) -> Option<T>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.connection().await?;
        match tokio::time::timeout(CALL_TIMEOUT, f(conn)).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(error)) => {
                self.failed(&error);
                None
            }
            Err(_) => {
                self.failed(&"timed out");
                None
            }
        }
    }

    /// The entry stored for `key`, if Redis has one and answers in time.
    pub(crate) async fn get(&self, key: &Key) -> Option<Entry> {
        let name = redis_key(key);
        let value: Option<Vec<u8>> = self.call(|mut c| async move { c.get(name).await }).await?;
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
        let tier = self.clone();
        runtime.spawn(async move {
            let name = redis_key(&key);
            let _: Option<()> = tier
                .call(|mut c| async move { c.pset_ex(name, value, ms).await })
                .await;
        });
    }

    /// Drops the entries a purge of `host` (all when `None`) and path prefix `path` covers.
    pub(crate) async fn purge(&self, host: Option<&str>, path: &str) {
        let Some(mut conn) = self.connection().await else {
            return;
        };
        let mut cursor: u64 = 0;
        // Bounded: SCAN ends when the cursor comes back to 0; the cap is a guard.
        for _ in 0..100_000 {
            let scanned: Option<(u64, Vec<String>)> = self
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
            let Some((next, names)) = scanned else {
                return;
            };
            let doomed: Vec<String> = names
                .into_iter()
                .filter(|n| parse_key(n).is_some_and(|k| k.purged_by(host, path)))
                .collect();
            if !doomed.is_empty() {
                let deleted: Result<(), _> = conn.del(doomed).await;
                if let Err(error) = deleted {
                    self.failed(&error);
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
