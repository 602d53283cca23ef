//! Least connections, weighted, with ties broken by rotation.
//!
//! A group of up to [`SCAN_UP_TO`] servers is scanned whole, as nginx does:
//! the usable server with the fewest in-flight requests per weight wins.
//! Picking "the first idle server in list order" would send every request of a
//! quiet period to the first server; instead each scan starts one server
//! further on, and the first minimum found from there wins.
//!
//! A larger group compares two servers drawn at random and takes the less
//! loaded ("power of two choices", Envoy's default for least-request): a pick
//! then costs the same with 10 servers or 10,000, it never goes to the most
//! loaded of two or more usable servers, and the load stays close to even
//! (Mitzenmacher, 2001). When random draws keep landing on unusable servers it
//! falls back to a scan.
//!
//! Two concurrent picks may both choose the same idle server before either one's
//! in-flight count rises; that is inherent to reading live counts and evens out.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Groups up to this size are scanned whole; larger ones use two random choices.
pub(super) const SCAN_UP_TO: usize = 8;
/// Random draws a large group makes before falling back to a scan.
const DRAWS: usize = 16;

/// Weighted least-connections for one group of servers (indices `0..n`).
#[derive(Debug)]
pub(super) struct LeastConn {
    /// Number of servers in the group.
    servers: usize,
    /// `random_two`: two random choices whatever the group's size.
    always_two: bool,
    /// Where the next pick starts scanning; advanced by every pick so that ties
    /// rotate over all tied servers.
    offset: AtomicUsize,
}

impl LeastConn {
    /// A least-connections picker over `servers` servers; with `always_two`,
    /// two random choices at any size (`random_two`).
    pub(super) fn new(servers: usize, always_two: bool) -> Self {
        LeastConn {
            servers,
            always_two,
            offset: AtomicUsize::new(0),
        }
    }

    /// Picks the usable server with the fewest in-flight requests per weight
    /// (in a large group, the less loaded of two drawn at random).
    ///
    /// `load(i)` is `Some((in_flight, weight))` for a usable server, `None` for
    /// one that must not be picked. A weight of 0 counts as 1.
    pub(super) fn pick(&self, load: impl Fn(usize) -> Option<(u64, u32)>) -> Option<usize> {
        if self.servers > SCAN_UP_TO || (self.always_two && self.servers > 1) {
            if let Some(i) = self.two_choices(&load) {
                return Some(i);
            }
        }
        self.scan(load)
    }

    /// The less loaded of two distinct usable servers drawn at random; None
    /// when [`DRAWS`] draws did not find two.
    fn two_choices(&self, load: &impl Fn(usize) -> Option<(u64, u32)>) -> Option<usize> {
        let mut first: Option<(usize, u64, u32)> = None;
        for _ in 0..DRAWS {
            let i = fastrand::usize(..self.servers);
            if first.is_some_and(|(f, _, _)| f == i) {
                continue;
            }
            let Some((in_flight, weight)) = load(i) else {
                continue;
            };
            let weight = weight.max(1);
            match first {
                None => first = Some((i, in_flight, weight)),
                Some((f, f_in_flight, f_weight)) => {
                    let second_less = less_loaded(in_flight, weight, f_in_flight, f_weight);
                    return Some(if second_less { i } else { f });
                }
            }
        }
        None
    }

    /// Every server, from a rotating start; the first minimum wins.
    fn scan(&self, load: impl Fn(usize) -> Option<(u64, u32)>) -> Option<usize> {
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
