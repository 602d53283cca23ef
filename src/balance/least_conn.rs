//! Least connections, weighted, with ties broken by rotation.
//!
//! Picking "the first idle server in list order" would send every request of a
//! quiet period to the first server; instead each pick starts its scan one
//! server further on, and the first minimum found from there wins.
//!
//! A pick reads every server of the group, as nginx's does: a few ns per server.
//! Two concurrent picks may both choose the same idle server before either one's
//! in-flight count rises; that is inherent to reading live counts and evens out.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Weighted least-connections for one group of servers (indices `0..n`).
#[derive(Debug)]
pub(super) struct LeastConn {
    /// Number of servers in the group.
    servers: usize,
    /// Where the next pick starts scanning; advanced by every pick so that ties
    /// rotate over all tied servers.
    offset: AtomicUsize,
}

impl LeastConn {
    /// A least-connections picker over `servers` servers.
    pub(super) fn new(servers: usize) -> Self {
        LeastConn {
            servers,
            offset: AtomicUsize::new(0),
        }
    }

    /// Picks the usable server with the fewest in-flight requests per weight.
    ///
    /// `load(i)` is `Some((in_flight, weight))` for a usable server, `None` for
    /// one that must not be picked. A weight of 0 counts as 1.
    pub(super) fn pick(&self, load: impl Fn(usize) -> Option<(u64, u32)>) -> Option<usize> {
        let n = self.servers;
        if n == 0 {
            return None;
        }
        // Wraps after 2^64 picks; the one uneven step that causes is harmless.
        let start = self.offset.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(usize, u64, u32)> = None;
        for step in 0..n {
            let i = if start + step >= n {
                start + step - n
            } else {
                start + step
            };
            let Some((in_flight, weight)) = load(i) else {
                continue;
            };
            let weight = weight.max(1);
            let better = match best {
                None => true,
                Some((_, best_in_flight, best_weight)) => {
                    less_loaded(in_flight, weight, best_in_flight, best_weight)
                }
            };
            if better {
                best = Some((i, in_flight, weight));
            }
        }
        best.map(|(i, _, _)| i)
    }
}

/// `a_in_flight / a_weight < b_in_flight / b_weight`, exactly: cross-multiplied
/// in 128 bits so neither floats nor overflow can reorder servers.
pub(super) fn less_loaded(
    a_in_flight: u64,
    a_weight: u32,
    b_in_flight: u64,
    b_weight: u32,
) -> bool {
    u128::from(a_in_flight) * u128::from(b_weight) < u128::from(b_in_flight) * u128::from(a_weight)
}
