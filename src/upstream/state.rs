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
    pub(crate) fn is_draining(&self) -> bool {
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
    pub fn is_active_up(&self) -> bool {
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

    /// The share of its weight a returning server may take under `slow_start`:
    /// `None` when it is not ramping up (full share).
    pub(crate) fn ramp(&self, slow_start: Duration) -> Option<f64> {
        let back = self.back_since_ms.load(Ordering::Relaxed);
        if back == 0 {
            return None;
        }
        let now = self.millis_since_epoch(Instant::now());
        let window = slow_start.as_millis().max(1) as f64;
        let elapsed = now.saturating_sub(back) as f64;
        (elapsed < window).then(|| elapsed / window)
    }

    fn mark_back(&self, at: Instant) {
        self.back_since_ms
            .store(self.millis_since_epoch(at).max(1), Ordering::Relaxed);
    }

    /// Whether passive health checks currently keep the server out.
    pub fn is_down(&self) -> bool {
        let until = self.down_until_ms.load(Ordering::Relaxed);
        until != 0 && self.millis_since_epoch(Instant::now()) < until
    }

    /// Whether new requests may be sent to this server.
    pub(crate) fn is_usable(&self) -> bool {
        !self.is_draining() && !self.is_down() && self.is_active_up()
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
            return false;
        }
        passive.fails = 0;
        passive.window_start = None;
        let until = self.millis_since_epoch(now + fail_timeout).max(1);
        self.down_until_ms.store(until, Ordering::Relaxed);
        // It comes back by itself when the timeout ends: its ramp starts then.
        self.back_since_ms.store(until, Ordering::Relaxed);
        self.stats.record_transition(Check::Passive, false);
        true
    }

    /// Records a successful exchange: the failure window starts afresh.
    pub(crate) fn record_success(&self) {
        if self.down_until_ms.load(Ordering::Relaxed) == 0 {
            let passive = self.passive.lock().unwrap_or_else(|e| e.into_inner());
            if passive.fails == 0 {
                return;
            }
        }
        let mut passive = self.passive.lock().unwrap_or_else(|e| e.into_inner());
        passive.fails = 0;
        passive.window_start = None;
        if self.down_until_ms.swap(0, Ordering::Relaxed) != 0 {
            self.stats.record_transition(Check::Passive, true);
        }
    }

    fn millis_since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
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
        assert!(s.is_usable());
        assert!(s.record_failure(2, window));
        assert!(s.is_down());
        assert!(!s.is_usable());
        s.record_success();
        assert!(s.is_usable());
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
        assert!(s.is_usable());
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
        assert!(s.is_usable());
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_back_from_passive_failure_ramps_up() {
        let s = state();
        let window = Duration::from_secs(10);
        assert_eq!(s.ramp(window), None);
        assert!(s.record_failure(1, Duration::from_secs(5)));
        tokio::time::advance(Duration::from_secs(5)).await;
        let start = s.ramp(window).expect("ramping");
        assert!(start < 0.05, "{start}");
        tokio::time::advance(Duration::from_secs(5)).await;
        let half = s.ramp(window).expect("ramping");
        assert!((half - 0.5).abs() < 0.05, "{half}");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(s.ramp(window), None);
    }

    #[tokio::test(start_paused = true)]
    async fn active_health_and_enable_start_a_ramp() {
        let s = state();
        let window = Duration::from_secs(10);
        s.set_active_up(false);
        assert!(!s.is_usable());
        s.set_active_up(true);
        assert!(s.is_usable());
        assert!(s.ramp(window).is_some());
        tokio::time::advance(window + Duration::from_millis(1)).await;
        assert_eq!(s.ramp(window), None);
        s.set_draining(true);
        assert_eq!(s.ramp(window), None);
        s.set_draining(false);
        assert!(s.ramp(window).is_some());
    }

    #[test]
    fn draining_is_not_usable() {
        let s = state();
        s.set_draining(true);
        assert!(!s.is_usable());
        s.set_draining(false);
        assert!(s.is_usable());
    }
}
