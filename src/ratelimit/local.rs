//! `scope = "local"`: a keyed GCRA in this process, shared by every worker
//! thread (governor's `DashMap` store: sharded locks, one atomic per key).
//!
//! Keys are 64-bit SipHash digests of the client's key (its address or
//! header value) under a per-limiter random key, so every entry has the same
//! small size whatever the header holds, and a client cannot choose values
//! that collide with another client's bucket. The map then uses the digest as
//! its own hash instead of hashing it a second time.
//!
//! Memory: an entry is the 8-byte digest and governor's 8-byte state in a
//! hashbrown slot (plus a control byte); with the table's spare room, 1 M
//! distinct keys measured 35 MiB resident, 37 bytes per key
//! (`memory_of_a_million_keys` below), and a sweep gives it back. Idle keys
//! are dropped by [`LocalLimiter::sweep`], which the owner runs on a timer:
//! a key whose bucket has refilled completely is indistinguishable from a
//! key never seen, so dropping it changes no answer.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::config::RateLimitConfig;

use super::Verdict;

/// A `BuildHasher` whose hash of a `u64` is the `u64` itself: the keys are
/// already keyed SipHash digests, uniformly spread.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Digest;

/// The [`Hasher`] of [`Digest`].
#[derive(Debug, Default)]
pub(crate) struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (keys are `u64`); anything else still hashes.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl BuildHasher for Digest {
    type Hasher = DigestHasher;

    fn build_hasher(&self) -> DigestHasher {
        DigestHasher::default()
    }
}

type Keyed<C> =
    RateLimiter<u64, DashMapStateStore<u64, Digest>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The buckets of one route with `scope = "local"`.
pub(crate) struct LocalLimiter<C: Clock = DefaultClock> {
    limiter: Keyed<C>,
    /// Keys the digests: per limiter and random, so digests cannot be aimed.
    seed: RandomState,
    clock: C,
}

impl<C: Clock> std::fmt::Debug for LocalLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLimiter")
            .field("keys", &self.limiter.len())
            .finish_non_exhaustive()
    }
}

impl LocalLimiter {
    /// Buckets for `config`, on the monotonic clock.
    pub(crate) fn new(config: &RateLimitConfig) -> Self {
        Self::with_clock(config, DefaultClock::default())
    }
}

impl<C: Clock + Clone> LocalLimiter<C> {
    /// Buckets for `config` on `clock` (tests pass a clock they move by hand).
    pub(crate) fn with_clock(config: &RateLimitConfig, clock: C) -> Self {
        let limiter =
            RateLimiter::dashmap_with_clock_and_hasher(quota(config), clock.clone(), Digest);
        LocalLimiter {
            limiter,
            seed: RandomState::new(),
            clock,
        }
    }

    /// Takes one request from the bucket of `key` (`None`: the shared bucket
    /// of requests without the keyed header).
    pub(crate) fn check(&self, key: Option<&[u8]>) -> Verdict {
        let digest = self.seed.hash_one(key);
        match self.limiter.check_key(&digest) {
            Ok(()) => Verdict::Allow,
            Err(not_until) => Verdict::Deny {
                retry_after: not_until.wait_time_from(self.clock.now()),
            },
        }
    }

    /// Drops the keys whose buckets are full again, and gives their memory back.
    pub(crate) fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Keys held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.limiter.len()
    }
}

/// governor's quota for `config`: a bucket of `burst`, one request back every `per / requests`.
fn quota(config: &RateLimitConfig) -> Quota {
    let one = (config.per / config.requests.max(1)).max(Duration::from_nanos(1));
    let burst = NonZeroU32::new(config.burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(one)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LimitKey, LimitScope};
    use governor::clock::FakeRelativeClock;

    fn limit(requests: u32, per: Duration, burst: u32) -> RateLimitConfig {
        RateLimitConfig {
            requests,
            per,
            burst,
            key: LimitKey::Ip,
            scope: LimitScope::Local,
        }
    }

    fn allowed(l: &LocalLimiter<FakeRelativeClock>, key: &[u8], n: usize) -> usize {
        (0..n)
            .filter(|_| l.check(Some(key)) == Verdict::Allow)
            .count()
    }

    #[test]
    fn a_burst_then_the_refill_rate_exactly() {
        let clock = FakeRelativeClock::default();
        // 10 per second, bucket of 5.
        let l = LocalLimiter::with_clock(&limit(10, Duration::from_secs(1), 5), clock.clone());
        assert_eq!(allowed(&l, b"a", 20), 5, "the burst");
        match l.check(Some(b"a")) {
            Verdict::Deny { retry_after } => assert_eq!(retry_after, Duration::from_millis(100)),
            other => panic!("expected a denial, got {other:?}"),
        }
        clock.advance(Duration::from_millis(99));
        assert_eq!(allowed(&l, b"a", 3), 0, "not yet refilled");
        clock.advance(Duration::from_millis(1));
        assert_eq!(allowed(&l, b"a", 3), 1, "one back after 100ms");
        clock.advance(Duration::from_millis(300));
        assert_eq!(allowed(&l, b"a", 10), 3, "three back after 300ms");
        clock.advance(Duration::from_secs(10));
        assert_eq!(allowed(&l, b"a", 10), 5, "never more than the burst");
    }

    #[test]
    fn keys_have_their_own_buckets_and_the_headerless_share_one() {
        let clock = FakeRelativeClock::default();
        let l = LocalLimiter::with_clock(&limit(1, Duration::from_secs(60), 2), clock);
        assert_eq!(allowed(&l, b"10.0.0.1", 5), 2);
        assert_eq!(allowed(&l, b"10.0.0.2", 5), 2);
        assert_eq!(l.check(None), Verdict::Allow);
        assert_eq!(l.check(None), Verdict::Allow);
        assert!(matches!(l.check(None), Verdict::Deny { .. }));
        // An empty header value is a value, not the missing header.
        assert_eq!(allowed(&l, b"", 5), 2);
    }

    #[test]
    fn a_hundred_thousand_idle_keys_are_swept_away() {
        let clock = FakeRelativeClock::default();
        let l = LocalLimiter::with_clock(&limit(10, Duration::from_secs(1), 10), clock.clone());
        for i in 0u32..100_000 {
            assert_eq!(l.check(Some(&i.to_be_bytes())), Verdict::Allow);
        }
        assert_eq!(l.len(), 100_000);
        // Not yet full again: kept, or their clients would get a fresh burst.
        clock.advance(Duration::from_millis(50));
        l.sweep();
        assert_eq!(l.len(), 100_000);
        clock.advance(Duration::from_secs(1));
        l.sweep();
        assert_eq!(l.len(), 0, "every bucket is full again, so none is kept");
        // And a second wave fits in the same bound.
        for i in 100_000u32..200_000 {
            l.check(Some(&i.to_be_bytes()));
        }
        assert_eq!(l.len(), 100_000);
    }

    /// Resident memory of this process in bytes (Linux).
    fn rss() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        pages * 4096
    }

    /// The figure in this module's doc: run with
    /// `cargo test --release --lib memory_of_a_million_keys -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn memory_of_a_million_keys() {
        let clock = FakeRelativeClock::default();
        let l = LocalLimiter::with_clock(&limit(10, Duration::from_secs(1), 10), clock.clone());
        let before = rss();
        for i in 0u32..1_000_000 {
            l.check(Some(&i.to_be_bytes()));
        }
        let after = rss();
        println!(
            "1M keys: {} MiB resident, {} bytes per key",
            (after - before) >> 20,
            (after - before) / 1_000_000
        );
        clock.advance(Duration::from_secs(2));
        l.sweep();
        println!(
            "after the sweep: {} keys, {} MiB resident above the start",
            l.len(),
            rss().saturating_sub(before) >> 20
        );
    }
}
