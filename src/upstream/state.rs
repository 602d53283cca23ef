//! Per-server runtime state that outlives routing snapshots.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::stats::{Check, ServerStats};

/// Runtime state of one server of one upstream.
///
/// It is shared by every snapshot that contains the server, keyed by
/// (upstream name, address), so a reload keeps in-flight counts, failure
/// counts and health for servers that stay in the file.
#[derive(Debug)]
pub struct ServerState {
    /// The server's address.
    pub(crate) addr: SocketAddr,
    /// Requests (and tunnels) currently using this server; changed only by [`InFlightGuard`].
    in_flight: AtomicU64,
    /// Set by an operator to stop new requests while in-flight ones finish.
    draining: AtomicBool,
    /// Passive health: recent failures and the time the server is out until.
    passive: Mutex<PassiveHealth>,
    /// Whether `passive` counts failures in its window: read first by
    /// [`Self::record_success`], so that a success on a healthy server (every
    /// request, nearly) takes no lock.
    failing: AtomicBool,
    /// Cached "out until" as milliseconds since `epoch`, read lock-free on every pick.
    down_until_ms: AtomicU64,
    /// Active health: false after `fall` failed probes, true again after `rise` good ones.
    active_up: AtomicBool,
    /// When the server last came back into service (ms since `epoch`, 0 = never):
    /// `slow_start` ramps its share up from there. May lie in the future when a
    /// passive failure keeps the server out until then.
    back_since_ms: AtomicU64,
    /// Reference point for the millisecond timestamps.
    epoch: Instant,
    /// Request counters for the admin endpoints; they count on across reloads.
    pub(crate) stats: ServerStats,
}

#[derive(Debug, Default)]
struct PassiveHealth {
    /// Failures counted in the current window.
    fails: u32,
    /// When the current window started.
    window_start: Option<Instant>,
}

impl ServerState {
    /// Fresh state for a server that was not in the previous configuration.
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            in_flight: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            passive: Mutex::new(PassiveHealth::default()),
            failing: AtomicBool::new(false),
            down_until_ms: AtomicU64::new(0),
            active_up: AtomicBool::new(true),
            back_since_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            stats: ServerStats::default(),
        }
    }

    /// Requests currently in flight to this server.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether an operator is draining this server.
    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Starts or stops draining; a server enabled again ramps up under `slow_start`.
    pub(crate) fn set_draining(&self, draining: bool) {
        if !self.draining.swap(draining, Ordering::Relaxed) || draining {
            return;
        }
        self.mark_back(Instant::now());
    }

    /// Whether active health checks consider the server up (true without checks).
    pub(crate) fn is_active_up(&self) -> bool {
        self.active_up.load(Ordering::Relaxed)
    }

    /// Sets the active health verdict; coming up starts a `slow_start` ramp.
    pub(crate) fn set_active_up(&self, up: bool) {
        if self.active_up.swap(up, Ordering::Relaxed) == up {
            return;
        }
        self.stats.record_transition(Check::Active, up);
        if up {
            self.mark_back(Instant::now());
        }
    }

    /// The server's health now, combining draining, passive and active
    /// health and, with a `slow_start` window, the ramp of a returning server.
    ///
    /// Every view of a server's health (the admin endpoints, the metrics, the
    /// status page) and the balancer's choice read it from here, so they
    /// never disagree.
    pub fn health(&self, slow_start: Option<Duration>) -> Health {
        let until = self.down_until_ms.load(Ordering::Relaxed);
        let back = self.back_since_ms.load(Ordering::Relaxed);
        // One clock read, and none for a server that was never out.
        let now = (until != 0 || (back != 0 && slow_start.is_some()))
            .then(|| self.millis_since_epoch(Instant::now()));
        let mut health = Health {
            draining: self.is_draining(),
            passive_down: now.is_some_and(|now| now < until),
            active_down: !self.is_active_up(),
            ramp: None,
        };
        if let (Some(window), Some(now), true) = (slow_start, now, health.usable()) {
            health.ramp = ramp(back, now, window);
        }
        health
    }

    /// Starts a `slow_start` ramp now: for a server DNS has just added.
    pub(crate) fn start_ramp(&self) {
        self.mark_back(Instant::now());
    }

    fn mark_back(&self, at: Instant) {
        self.back_since_ms
            .store(self.millis_since_epoch(at).max(1), Ordering::Relaxed);
    }

    /// Whether passive health checks currently keep the server out.
    fn is_down(&self) -> bool {
        let until = self.down_until_ms.load(Ordering::Relaxed);
        until != 0 && self.millis_since_epoch(Instant::now()) < until
    }

    /// Records a failed attempt (nginx `max_fails`/`fail_timeout` semantics).
    /// Returns true when this failure took the server out.
    pub(crate) fn record_failure(&self, max_fails: u32, fail_timeout: Duration) -> bool {
        // Requests that were in flight when a server died fail together: the
        // first takes it out, the rest neither extend that nor log it again.
        if max_fails == 0 {
            return false;
        }
        let now = Instant::now();
        let mut passive = self.passive.lock().unwrap_or_else(|e| e.into_inner());
        // Checked under the lock: two workers failing at once count once.
        if self.is_down() {
            return false;
        }
        let window_open = passive
            .window_start
            .is_some_and(|start| now.duration_since(start) < fail_timeout);
        if !window_open {
            passive.window_start = Some(now);
            passive.fails = 0;
        }
        passive.fails += 1;
        if passive.fails < max_fails {
            self.failing.store(true, Ordering::Relaxed);
            return false;
        }
        passive.fails = 0;
        passive.window_start = None;
        self.failing.store(false, Ordering::Relaxed);
        let until = self.millis_since_epoch(now + fail_timeout).max(1);
        self.down_until_ms.store(until, Ordering::Relaxed);
        // It comes back by itself when the timeout ends: its ramp starts then.
        self.back_since_ms.store(until, Ordering::Relaxed);
        self.stats.record_transition(Check::Passive, false);
        true
    }

    /// Records a successful exchange: the failure window starts afresh.
    pub(crate) fn record_success(&self) {
        if self.down_until_ms.load(Ordering::Relaxed) == 0 && !self.failing.load(Ordering::Relaxed)
        {
            return;
        }
        let mut passive = self.passive.lock().unwrap_or_else(|e| e.into_inner());
        passive.fails = 0;
        passive.window_start = None;
        self.failing.store(false, Ordering::Relaxed);
        if self.down_until_ms.swap(0, Ordering::Relaxed) != 0 {
            self.stats.record_transition(Check::Passive, true);
        }
    }

    fn millis_since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }
}

/// The share of its weight a server back in service since `back` (ms since
/// the state's epoch, 0 = never out) may take at `now` under a `slow_start`
/// `window`; `None` when it is not ramping up (full share).
fn ramp(back: u64, now: u64, window: Duration) -> Option<f64> {
    if back == 0 {
        return None;
    }
    let window = window.as_millis().max(1) as f64;
    let elapsed = now.saturating_sub(back) as f64;
    (elapsed < window).then(|| elapsed / window)
}

/// A server's health at one moment, from [`ServerState::health`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Health {
    /// An operator is draining the server.
    pub draining: bool,
    /// Passive health (`max_fails` within `fail_timeout`) keeps it out.
    pub passive_down: bool,
    /// Active health checks (`fall` failed probes) keep it out.
    pub active_down: bool,
    /// Under `slow_start`: the share of its weight a returning server may
    /// take so far, below 1; `None` when it takes its full share (or none).
    pub ramp: Option<f64>,
}

impl Health {
    /// Whether health checks, passive and active, let the server take requests.
    pub fn healthy(&self) -> bool {
        !self.passive_down && !self.active_down
    }

    /// Whether new requests may be sent to the server: healthy and not draining.
    pub fn usable(&self) -> bool {
        self.healthy() && !self.draining
    }

    /// The state in one word, as the admin endpoints show it: `draining`,
    /// `down`, `backup` (usable, held in reserve) or `up`.
    pub fn word(&self, backup: bool) -> &'static str {
        if self.draining {
            "draining"
        } else if !self.healthy() {
            "down"
        } else if backup {
            "backup"
        } else {
            "up"
        }
    }

    /// Which checks keep the server out: `passive`, `active`, both or none.
    pub fn down_by(&self) -> impl Iterator<Item = &'static str> {
        [(self.passive_down, "passive"), (self.active_down, "active")]
            .into_iter()
            .filter_map(|(down, check)| down.then_some(check))
    }
}

/// Counts one request as in flight to a server for as long as it lives.
///
/// The proxy keeps it inside the response body, so the count drops when the
/// body has been sent or abandoned, not when the head arrives.
#[derive(Debug)]
pub(crate) struct InFlightGuard {
    state: Arc<ServerState>,
}

impl InFlightGuard {
    /// Counts a new request against `state`.
    pub(crate) fn new(state: Arc<ServerState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        Self { state }
    }

    /// The server this request went to.
    pub(crate) fn server(&self) -> &Arc<ServerState> {
        &self.state
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> Arc<ServerState> {
        Arc::new(ServerState::new("127.0.0.1:1".parse().expect("addr")))
    }

    #[test]
    fn guard_counts_while_alive() {
        let s = state();
        let a = InFlightGuard::new(s.clone());
        let b = InFlightGuard::new(s.clone());
        assert_eq!(s.in_flight(), 2);
        drop(a);
        assert_eq!(s.in_flight(), 1);
        drop(b);
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn max_fails_takes_server_out_and_success_brings_it_back() {
        let s = state();
        let window = Duration::from_secs(10);
        assert!(!s.record_failure(2, window));
        assert!(s.health(None).usable());
        assert!(s.record_failure(2, window));
        assert!(s.is_down());
        assert!(!s.health(None).usable());
        s.record_success();
        assert!(s.health(None).usable());
    }

    #[test]
    fn a_success_starts_the_failure_count_afresh() {
        let s = state();
        let window = Duration::from_secs(10);
        assert!(!s.record_failure(2, window));
        s.record_success();
        assert!(
            !s.record_failure(2, window),
            "the first failure was forgotten"
        );
        assert!(s.record_failure(2, window));
    }

    #[test]
    fn failures_while_down_do_not_take_it_out_again() {
        let s = state();
        assert!(s.record_failure(1, Duration::from_secs(10)));
        for _ in 0..5 {
            assert!(!s.record_failure(1, Duration::from_secs(10)));
        }
        assert!(s.is_down());
    }

    #[test]
    fn max_fails_zero_never_takes_out() {
        let s = state();
        for _ in 0..10 {
            assert!(!s.record_failure(0, Duration::from_secs(1)));
        }
        assert!(s.health(None).usable());
    }

    #[tokio::test(start_paused = true)]
    async fn down_expires_after_fail_timeout() {
        let s = state();
        assert!(s.record_failure(1, Duration::from_secs(10)));
        tokio::time::advance(Duration::from_millis(9_990)).await;
        assert!(s.is_down());
        tokio::time::advance(Duration::from_millis(20)).await;
        assert!(!s.is_down());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_outside_the_window_do_not_add_up() {
        let s = state();
        assert!(!s.record_failure(2, Duration::from_secs(10)));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!s.record_failure(2, Duration::from_secs(10)));
        assert!(s.health(None).usable());
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_back_from_passive_failure_ramps_up() {
        let s = state();
        let window = Duration::from_secs(10);
        assert_eq!(s.health(Some(window)).ramp, None);
        assert!(s.record_failure(1, Duration::from_secs(5)));
        tokio::time::advance(Duration::from_secs(5)).await;
        let start = s.health(Some(window)).ramp.expect("ramping");
        assert!(start < 0.05, "{start}");
        tokio::time::advance(Duration::from_secs(5)).await;
        let half = s.health(Some(window)).ramp.expect("ramping");
        assert!((half - 0.5).abs() < 0.05, "{half}");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(s.health(Some(window)).ramp, None);
    }

    #[tokio::test(start_paused = true)]
    async fn active_health_and_enable_start_a_ramp() {
        let s = state();
        let window = Duration::from_secs(10);
        s.set_active_up(false);
        assert!(!s.health(None).usable());
        s.set_active_up(true);
        assert!(s.health(None).usable());
        assert!(s.health(Some(window)).ramp.is_some());
        tokio::time::advance(window + Duration::from_millis(1)).await;
        assert_eq!(s.health(Some(window)).ramp, None);
        s.set_draining(true);
        assert_eq!(s.health(Some(window)).ramp, None);
        s.set_draining(false);
        assert!(s.health(Some(window)).ramp.is_some());
    }

    #[test]
    fn draining_is_not_usable() {
        let s = state();
        s.set_draining(true);
        assert!(!s.health(None).usable());
        s.set_draining(false);
        assert!(s.health(None).usable());
    }

    #[test]
    fn health_combines_draining_passive_and_active_state() {
        let s = state();
        let health = |s: &ServerState| s.health(None);
        assert_eq!(health(&s).word(false), "up");
        assert_eq!(health(&s).word(true), "backup");
        s.set_active_up(false);
        assert!(!health(&s).healthy());
        assert_eq!(
            health(&s).word(true),
            "down",
            "a backup that is down is down"
        );
        assert_eq!(health(&s).down_by().collect::<Vec<_>>(), ["active"]);
        assert!(s.record_failure(1, Duration::from_secs(10)));
        assert_eq!(
            health(&s).down_by().collect::<Vec<_>>(),
            ["passive", "active"]
        );
        s.set_draining(true);
        assert_eq!(health(&s).word(false), "draining");
        assert!(!health(&s).usable());
        s.set_active_up(true);
        s.record_success();
        s.set_draining(false);
        assert!(health(&s).usable());
        assert_eq!(health(&s).down_by().count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_is_out_is_not_ramping() {
        let s = state();
        let window = Duration::from_secs(60);
        assert!(s.record_failure(1, Duration::from_secs(5)));
        assert_eq!(s.health(Some(window)).ramp, None, "out, not ramping");
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(s.health(Some(window)).ramp.is_some());
        s.set_active_up(false);
        assert_eq!(s.health(Some(window)).ramp, None);
    }
}
