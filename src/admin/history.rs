//! The status page's memory: one sample per second for the last five minutes.
//!
//! A background task reads the cumulative counters once a second and keeps
//! per-second differences, so a page opened now shows the last minutes at
//! once and rates need no state in the browser.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde_json::{json, Value};

use super::State;
use crate::snapshot::Snapshot;
use crate::stats::HistogramSnapshot;
use crate::upstream::Server;

/// Samples kept: five minutes at one per second.
const KEEP: usize = 300;

/// Seconds averaged for the "now" figures in the tables.
pub const WINDOW: usize = 10;

/// Cumulative counters of one series at one instant.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    errors: u64,
    latency: HistogramSnapshot,
}

/// What happened during one second.
#[derive(Debug, Clone, Copy, Default)]
pub struct Point {
    /// Unix time at the end of the second.
    pub t: u64,
    /// Requests that ended.
    pub requests: u64,
    /// Of those, 5xx responses.
    pub errors: u64,
    /// Their latencies.
    pub latency: HistogramSnapshot,
}

/// The per-second history of one upstream or server.
#[derive(Debug, Default)]
pub struct Series {
    /// The totals at the previous sample, to take differences from.
    last: Option<Totals>,
    /// Newest last.
    pub points: VecDeque<Point>,
}

impl Series {
    fn push(&mut self, t: u64, now: Totals) {
        if let Some(last) = self.last {
            let latency = now.latency.since(&last.latency);
            self.points.push_back(Point {
                t,
                requests: latency.count(),
                errors: now.errors.saturating_sub(last.errors),
                latency,
            });
            if self.points.len() > KEEP {
                self.points.pop_front();
            }
        }
        self.last = Some(now);
    }

    /// The last `n` seconds summed into one point.
    pub fn recent(&self, n: usize) -> (Point, usize) {
        let mut sum = Point::default();
        let taken = self.points.iter().rev().take(n);
        let mut seconds = 0;
        for p in taken {
            sum.requests += p.requests;
            sum.errors += p.errors;
            sum.latency.add(&p.latency);
            seconds += 1;
        }
        (sum, seconds)
    }
}

/// The history of one upstream and its servers.
#[derive(Debug, Default)]
pub struct UpstreamHistory {
    /// The upstream as a whole.
    pub total: Series,
    /// Each server, by address.
    pub servers: HashMap<SocketAddr, Series>,
}

/// Histories of every configured upstream, by name.
#[derive(Debug, Default)]
pub struct History {
    /// Upstreams removed from the config are dropped at the next sample.
    pub upstreams: HashMap<String, UpstreamHistory>,
}

fn server_errors(server: &Server) -> u64 {
    server
        .state
        .stats
        .codes
        .nonzero()
        .iter()
        .filter(|(code, _)| *code >= 500)
        .map(|(_, n)| n)
        .sum()
}

impl History {
    /// Takes one sample of every upstream and server in `snapshot`.
    pub fn sample(&mut self, snapshot: &Snapshot, t: u64) {
        self.upstreams
            .retain(|name, _| snapshot.upstream(name).is_some());
        for upstream in &snapshot.upstreams {
            let entry = self
                .upstreams
                .entry(upstream.name().to_owned())
                .or_default();
            let stats = &upstream.stats;
            entry.total.push(
                t,
                Totals {
                    errors: stats.errors.load(Ordering::Relaxed),
                    latency: stats.latency.snapshot(),
                },
            );
            entry
                .servers
                .retain(|addr, _| upstream.server(*addr).is_some());
            for server in &upstream.servers {
                let totals = Totals {
                    errors: server_errors(server),
                    latency: server.state.stats.latency.snapshot(),
                };
                entry
                    .servers
                    .entry(server.config.addr)
                    .or_default()
                    .push(t, totals);
            }
        }
    }
}

/// Rates of a window: requests/s, error ratio, p50 and p99 in milliseconds.
pub fn rates(point: &Point, seconds: usize) -> Value {
    let secs = seconds.max(1) as f64;
    let ms = |q| point.latency.quantile(q).map(|s| round(s * 1000.0, 2));
    json!({
        "requests_per_second": round(point.requests as f64 / secs, 2),
        "error_rate": if point.requests == 0 { 0.0 } else { round(point.errors as f64 / point.requests as f64, 4) },
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
    })
}

/// Rounds for compact JSON.
pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// Unix time in whole seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Samples once a second until the admin state is gone.
pub(super) async fn run_sampler(snapshot: Arc<ArcSwap<Snapshot>>, state: Weak<State>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else {
            return;
        };
        let current = snapshot.load_full();
        let mut history = state.history.lock().unwrap_or_else(|e| e.into_inner());
        history.sample(&current, unix_now());
    }
}
