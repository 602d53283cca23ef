//! Counters: plain atomics, updated where requests end and read by the admin
//! endpoints. This module is a leaf: it knows nothing of servers or requests.
//!
//! Recording a request is a handful of relaxed atomic adds on counters that
//! live in per-server and per-upstream state — no lock, no map lookup, no
//! allocation. Those states are carried over across reloads like the servers'
//! runtime state, so counters keep counting; the admin endpoints read them
//! at scrape time from the live snapshot, which is why removed servers vanish
//! from `/metrics` on their own.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Upper bounds of the latency buckets in seconds; a last `+Inf` bucket follows.
pub(crate) const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Number of bucket slots including `+Inf`.
pub(crate) const SLOTS: usize = BUCKETS.len() + 1;

/// A fixed-bucket latency histogram of atomics.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    counts: [AtomicU64; SLOTS],
    /// Sum of all observations in nanoseconds.
    sum_ns: AtomicU64,
}

/// A point-in-time copy of a [`Histogram`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct HistogramSnapshot {
    /// Observations per bucket (not cumulative).
    pub(crate) counts: [u64; SLOTS],
    /// Sum of observations in seconds.
    pub(crate) sum: f64,
}

impl Histogram {
    /// Counts one observation.
    pub(crate) fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let slot = BUCKETS.iter().position(|b| secs <= *b).unwrap_or(SLOTS - 1);
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Copies the current values.
    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            sum: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

impl HistogramSnapshot {
    /// Total observations.
    pub(crate) fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Bucket-wise `self - earlier`, for rates over a window.
    pub(crate) fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: std::array::from_fn(|i| self.counts[i].saturating_sub(earlier.counts[i])),
            sum: (self.sum - earlier.sum).max(0.0),
        }
    }

    /// Adds `other` bucket-wise.
    pub(crate) fn add(&mut self, other: &HistogramSnapshot) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.sum += other.sum;
    }

    /// The `q` quantile in seconds, interpolated within its bucket the way
    /// Prometheus' `histogram_quantile` does; `None` without observations.
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (i, &n) in self.counts.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let Some(&upper) = BUCKETS.get(i) else {
                    // The +Inf bucket has no upper bound: report the highest finite one.
                    return Some(BUCKETS[BUCKETS.len() - 1]);
                };
                let lower = if i == 0 { 0.0 } else { BUCKETS[i - 1] };
                let into = (rank - below as f64) / n as f64;
                return Some(lower + (upper - lower) * into.clamp(0.0, 1.0));
            }
            below += n;
        }
        Some(BUCKETS[BUCKETS.len() - 1])
    }
}

/// Lowest status code counted; codes are 100..=999 (RFC 9110 §15 and `http`'s `StatusCode`).
const FIRST_CODE: u16 = 100;

/// Responses counted per exact status code.
#[derive(Debug)]
pub(crate) struct CodeCounts {
    /// Index = code - 100.
    counts: Box<[AtomicU64]>,
}

impl Default for CodeCounts {
    fn default() -> Self {
        Self {
            counts: (FIRST_CODE..1000).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl CodeCounts {
    /// Counts one response with `code`.
    pub(crate) fn add(&self, code: u16) {
        if let Some(slot) = code
            .checked_sub(FIRST_CODE)
            .and_then(|i| self.counts.get(usize::from(i)))
        {
            slot.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Codes seen so far and their counts, in code order.
    pub(crate) fn nonzero(&self) -> Vec<(u16, u64)> {
        (FIRST_CODE..)
            .zip(self.counts.iter())
            .map(|(code, n)| (code, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// Which kind of health check changed a server's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// `max_fails`/`fail_timeout` on real traffic.
    Passive,
    /// Probes from `[upstream.health_check]`.
    Active,
}

/// Counters of one server, living in its [`ServerState`] so they survive reloads.
#[derive(Debug, Default)]
pub(crate) struct ServerStats {
    /// Responses sent to clients for requests this server handled, by status.
    pub(crate) codes: CodeCounts,
    /// Time from the request's arrival to the end of its response body.
    pub(crate) latency: Histogram,
    /// Request body bytes received from clients and sent to this server.
    pub(crate) bytes_in: AtomicU64,
    /// Response body bytes sent to clients from this server.
    pub(crate) bytes_out: AtomicU64,
    /// Health transitions: `[passive down, passive up, active down, active up]`.
    transitions: [AtomicU64; 4],
}

impl ServerStats {
    /// Counts a health state change of this server.
    pub(crate) fn record_transition(&self, check: Check, up: bool) {
        let i = usize::from(check == Check::Active) * 2 + usize::from(up);
        self.transitions[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Health transitions so far for `check`, as (to down, to up).
    pub(crate) fn transitions(&self, check: Check) -> (u64, u64) {
        let i = usize::from(check == Check::Active) * 2;
        (
            self.transitions[i].load(Ordering::Relaxed),
            self.transitions[i + 1].load(Ordering::Relaxed),
        )
    }
}

/// Counters of one upstream, carried over across reloads by upstream name.
#[derive(Debug, Default)]
pub(crate) struct UpstreamStats {
    /// Latency of every request routed to this upstream (`weir_request_duration_seconds`).
    pub(crate) latency: Histogram,
    /// Responses with a 5xx status, for error rates.
    pub(crate) errors: AtomicU64,
    /// Responses to requests that never reached a server (503 with none usable), by status.
    pub(crate) unassigned: CodeCounts,
    /// Attempts made after an earlier attempt failed.
    pub(crate) retries: AtomicU64,
    /// Request bodies cut off by `body_read_timeout`.
    pub(crate) body_stalls: AtomicU64,
    /// Lookups of the upstream's DNS names, by result.
    pub(crate) dns: DnsCounts,
}

/// Lookups of an upstream's names and SRV records (`weir_dns_resolutions_total`).
#[derive(Debug, Default)]
pub(crate) struct DnsCounts {
    /// Answers with servers.
    pub(crate) ok: AtomicU64,
    /// Answers without any (the name has no such records).
    pub(crate) empty: AtomicU64,
    /// No answer: timeout, refusal, unreachable name server.
    pub(crate) error: AtomicU64,
}

impl DnsCounts {
    /// Counts one lookup by its `result` label: `ok`, `empty` or `error`.
    pub(crate) fn record(&self, result: &str) {
        let counter = match result {
            "ok" => &self.ok,
            "empty" => &self.empty,
            _ => &self.error,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl UpstreamStats {
    /// Counts an attempt on another server after a failed one.
    pub(crate) fn record_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request body cut off by `body_read_timeout`.
    pub(crate) fn record_body_stall(&self) {
        self.body_stalls.fetch_add(1, Ordering::Relaxed);
    }
}

/// Daemon-wide counters, carried over across reloads in the snapshot.
#[derive(Debug, Default)]
pub struct DaemonStats {
    /// Client connections open now (`weir_connections_open`).
    pub(crate) connections_open: AtomicI64,
    /// Of those, idle HTTP/1.1 connections parked without buffers
    /// (`weir_connections_parked`).
    pub connections_parked: AtomicI64,
    /// Requests no route matched; exported as `upstream=""`.
    pub(crate) unrouted: Arc<UpstreamStats>,
    /// Connections closed with a 408 because a request head begun was not
    /// finished within `header_read_timeout`.
    pub(crate) header_timeouts: AtomicU64,
    /// Redis calls that got no answer (failed, timed out, or skipped while
    /// backing off after a failure): `weir_redis_errors_total`.
    pub(crate) redis_errors: AtomicU64,
    /// Connections closed on a `proxy_protocol` listener before any request,
    /// by [`ProxyRejection`] (`weir_proxy_protocol_rejected_total{reason}`).
    pub(crate) proxy_rejected: [AtomicU64; ProxyRejection::ALL.len()],
}

/// Why a `proxy_protocol` listener closed a connection before reading a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProxyRejection {
    /// The peer is not in `trusted_proxies`; nothing was read.
    Untrusted,
    /// The connection did not start with a PROXY signature at all.
    Missing,
    /// It started like a PROXY header that then did not parse, or was too long.
    Invalid,
    /// The header did not arrive within `header_read_timeout`.
    Timeout,
    /// The peer closed (or reset) the connection before a whole header arrived.
    Closed,
}

impl ProxyRejection {
    /// Every reason, in the order of `DaemonStats::proxy_rejected`.
    pub(crate) const ALL: [ProxyRejection; 5] = [
        ProxyRejection::Untrusted,
        ProxyRejection::Missing,
        ProxyRejection::Invalid,
        ProxyRejection::Timeout,
        ProxyRejection::Closed,
    ];

    /// The metric's `reason` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            ProxyRejection::Untrusted => "untrusted",
            ProxyRejection::Missing => "missing",
            ProxyRejection::Invalid => "invalid",
            ProxyRejection::Timeout => "timeout",
            ProxyRejection::Closed => "closed",
        }
    }
}

impl DaemonStats {
    /// Counts a client connection as open until the returned guard drops.
    pub(crate) fn connection_opened(self: &Arc<Self>) -> GaugeGuard {
        GaugeGuard::up(self, |s| &s.connections_open)
    }

    /// Counts a client connection as parked until the returned guard drops.
    pub(crate) fn connection_parked(self: &Arc<Self>) -> GaugeGuard {
        GaugeGuard::up(self, |s| &s.connections_parked)
    }

    /// Counts a request head not finished within `header_read_timeout`.
    pub(crate) fn record_header_timeout(&self) {
        self.header_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection a `proxy_protocol` listener closed for `reason`.
    pub(crate) fn record_proxy_rejection(&self, reason: ProxyRejection) {
        self.proxy_rejected[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections closed so far for `reason`.
    pub(crate) fn proxy_rejections(&self, reason: ProxyRejection) -> u64 {
        self.proxy_rejected[reason as usize].load(Ordering::Relaxed)
    }
}

/// Keeps one of the daemon's gauges up by one while it lives.
#[derive(Debug)]
pub(crate) struct GaugeGuard {
    stats: Arc<DaemonStats>,
    gauge: fn(&DaemonStats) -> &AtomicI64,
}

impl GaugeGuard {
    fn up(stats: &Arc<DaemonStats>, gauge: fn(&DaemonStats) -> &AtomicI64) -> Self {
        gauge(stats).fetch_add(1, Ordering::Relaxed);
        Self {
            stats: stats.clone(),
            gauge,
        }
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        (self.gauge)(&self.stats).fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many reloads have been applied and refused since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReloadCount {
    /// Reloads that swapped in a new snapshot.
    pub ok: u64,
    /// Reloads that changed nothing because the file was invalid.
    pub failed: u64,
    /// Unix time of the last successful reload (or of the start).
    pub last_success_unix: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_quantiles() {
        let h = Histogram::default();
        for _ in 0..90 {
            h.observe(Duration::from_micros(800));
        }
        for _ in 0..10 {
            h.observe(Duration::from_millis(200));
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 100);
        assert_eq!(s.counts[0], 90);
        assert_eq!(s.counts[7], 10);
        let p50 = s.quantile(0.5).expect("p50");
        assert!(p50 > 0.0 && p50 <= 0.001, "{p50}");
        let p99 = s.quantile(0.99).expect("p99");
        assert!(p99 > 0.1 && p99 <= 0.25, "{p99}");
        assert!((s.sum - (0.072 + 2.0)).abs() < 1e-6);
    }

    #[test]
    fn slow_requests_land_in_inf() {
        let h = Histogram::default();
        h.observe(Duration::from_secs(30));
        let s = h.snapshot();
        assert_eq!(s.counts[SLOTS - 1], 1);
        assert_eq!(s.quantile(0.5), Some(10.0));
        assert_eq!(HistogramSnapshot::default().quantile(0.5), None);
    }

    #[test]
    fn codes_count_exactly() {
        let c = CodeCounts::default();
        c.add(200);
        c.add(200);
        c.add(502);
        c.add(999);
        c.add(42);
        assert_eq!(c.nonzero(), vec![(200, 2), (502, 1), (999, 1)]);
    }

    #[test]
    fn transitions_are_kept_apart() {
        let s = ServerStats::default();
        s.record_transition(Check::Passive, false);
        s.record_transition(Check::Active, true);
        assert_eq!(s.transitions(Check::Passive), (1, 0));
        assert_eq!(s.transitions(Check::Active), (0, 1));
    }
}
