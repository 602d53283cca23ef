//! Smooth weighted round robin over a precomputed schedule.
//!
//! nginx's smooth WRR keeps a running score per server; every pick adds each
//! server's weight to its score, takes the highest score (first in list order on
//! a tie) and subtracts the total weight from it. The sequence it produces is
//! periodic: after `Σw / gcd(w)` picks every score is back at zero. We run that
//! once in [`RoundRobin::new`] and store one period as a schedule of server
//! indices, so a pick is an atomic cursor and a short scan rather than a
//! read-modify-write of every score under a lock.
//!
//! # Cost of building the schedule
//!
//! The schedule has `P = Σw / gcd(w)` slots (at most `256 · n` for `n` servers,
//! 4 bytes each). Equal weights are the common case and give `P = n` with no
//! simulation at all: the schedule is `0..n`. Otherwise the simulation runs `P`
//! steps, and each step looks only at the distinct weights `d` (servers of equal
//! weight are always picked in rotation among themselves, so one score per
//! weight class suffices): `O(P · d)` time with `d ≤ min(n, 256)`. A typical pool
//! with two or three distinct weights costs a few operations per slot. The
//! pathological case is 1,000 servers with 256 distinct weights: 33 M class
//! steps for weights spread evenly over 1..=256, at most 65 M; each step is one
//! add and one compare of a packed (score, index) key, about 25-40 ms in
//! `benches/balance.rs` (it was about 45-65 ms with a score and an index compared
//! separately); paid once per upstream per reload, off the request path.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How often a pick retries moving the cursor when other threads moved it first.
/// After that it returns the server it found anyway: a rare repeat under heavy
/// contention is better than spinning on the request path.
const CAS_RETRIES: usize = 4;

/// Smooth weighted round robin for one group of servers (indices `0..n`).
#[derive(Debug)]
pub(super) struct RoundRobin {
    /// One period of nginx's smooth WRR sequence, as indices into the group.
    schedule: Vec<u32>,
    /// Number of servers in the group, to bound the "is anyone usable" check.
    servers: usize,
    /// Next schedule slot to consider; always `< schedule.len()` (or 0 when empty).
    /// Slots skipped because their server was unusable are consumed too, which is
    /// what keeps the usable servers at their relative weights.
    cursor: AtomicUsize,
}

impl RoundRobin {
    /// Builds the schedule for these weights (clamped to 1..=256).
    pub(super) fn new(weights: &[u32]) -> Self {
        RoundRobin {
            schedule: smooth_schedule(weights),
            servers: weights.len(),
            cursor: AtomicUsize::new(0),
        }
    }

    /// Picks the next usable server in schedule order, or None when none is usable.
    pub(super) fn pick(&self, usable: impl Fn(usize) -> bool) -> Option<usize> {
        let period = self.schedule.len();
        let mut cursor = self.cursor.load(Ordering::Relaxed);
        let mut attempt = 0;
        loop {
            let (pos, server) = self.find(cursor, &usable)?;
            let next = if pos + 1 == period { 0 } else { pos + 1 };
            // Relaxed suffices: the cursor publishes no other memory.
            match self
                .cursor
                .compare_exchange(cursor, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some(server),
                Err(actual) if attempt < CAS_RETRIES => {
                    cursor = actual;
                    attempt += 1;
                }
                Err(_) => return Some(server),
            }
        }
    }

    /// The first slot at or after `from` (wrapping) whose server is usable.
    fn find(&self, from: usize, usable: &impl Fn(usize) -> bool) -> Option<(usize, usize)> {
        let period = self.schedule.len();
        let slot = |step: usize| {
            let pos = (from + step) % period;
            (pos, self.schedule[pos] as usize)
        };
        // When all servers are up the first slot is taken. When all are down, a
        // full period scan would cost up to 256·n; so after n slots, ask each
        // server once before scanning the rest.
        let quick = period.min(self.servers);
        for step in 0..quick {
            let (pos, server) = slot(step);
            if usable(server) {
                return Some((pos, server));
            }
        }
        if !(0..self.servers).any(usable) {
            return None;
        }
        (quick..period)
            .map(slot)
            .find(|&(_, server)| usable(server))
    }
}

/// One period of nginx's smooth weighted round robin over `weights`.
pub(super) fn smooth_schedule(weights: &[u32]) -> Vec<u32> {
    let clamped: Vec<u32> = weights.iter().map(|&w| w.clamp(1, 256)).collect();
    let divisor = clamped.iter().copied().fold(0, gcd);
    if clamped.iter().all(|&w| w == divisor) {
        return (0..weights.len() as u32).collect();
    }
    let reduced: Vec<i64> = clamped.iter().map(|&w| i64::from(w / divisor)).collect();
    let total: i64 = reduced.iter().sum();

    // Within one weight class every member gains the same score each step, so the
    // class's best member is the not-yet-picked one with the lowest index, and its
    // score stands for the class. Members are in ascending index order.
    let mut by_weight: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    for (index, &w) in reduced.iter().enumerate() {
        by_weight.entry(w).or_default().push(index as u32);
    }
    // One key per class packs nginx's order, "highest score, then lowest server
    // index", into one integer: the score in the high 32 bits, the complement of
    // the class's next member in the low 32. A step is then an add and a compare
    // per class over two flat arrays. |score| ≤ total ≤ 256·n, so the keys fit
    // an i64 for any pool whose schedule (4·total bytes) fits in memory.
    let (steps, mut classes): (Vec<i64>, Vec<Class>) = by_weight
        .into_iter()
        .map(|(weight, members)| (weight << KEY_SHIFT, Class { members, next: 0 }))
        .unzip();
    let mut keys: Vec<i64> = classes.iter().map(|c| tie_break(c.members[0])).collect();

    let period = total as usize;
    let mut schedule = Vec::with_capacity(period);
    for _ in 0..period {
        let mut best = 0;
        let mut best_key = i64::MIN;
        for (c, (key, step)) in keys.iter_mut().zip(&steps).enumerate() {
            *key += step;
            if *key > best_key {
                best_key = *key;
                best = c;
            }
        }
        let class = &mut classes[best];
        schedule.push(class.members[class.next]);
        class.next += 1;
        let mut score = best_key >> KEY_SHIFT;
        if class.next == class.members.len() {
            // Every member has now been picked once more: the class's best score
            // is the picked ones' score, one total lower.
            class.next = 0;
            score -= total;
        }
        keys[best] = (score << KEY_SHIFT) + tie_break(class.members[class.next]);
    }
    schedule
}

/// Where a class key's score starts; below it, [`tie_break`].
const KEY_SHIFT: u32 = 32;

/// The low half of a class key: larger for a lower server index.
fn tie_break(member: u32) -> i64 {
    i64::from(u32::MAX - member)
}

/// Servers of one (reduced) weight during schedule simulation.
struct Class {
    /// Server indices, ascending.
    members: Vec<u32>,
    /// The member to pick next; those before it have been picked once more.
    next: usize,
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// nginx's algorithm as written, one step per pick: the reference the schedule
/// builder is tested against.
#[cfg(test)]
pub(super) fn nginx_sequence(weights: &[u32], picks: usize) -> Vec<u32> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(picks);
    for _ in 0..picks {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += i64::from(w);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out
}
