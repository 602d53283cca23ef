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
//! add and one max of a packed (score, index) key, 32 bits wide when it fits,
//! in eight independent lanes: 5.9 ms in `benches/balance.rs` (18.2 ms with one
//! running maximum of 64-bit keys, about 50 ms with a score and an index
//! compared separately); paid once per upstream per reload, off the request path.

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
    schedule(weights, false)
}

/// [`smooth_schedule`] with 64-bit keys even where 32 bits would do.
#[cfg(test)]
pub(super) fn smooth_schedule_wide(weights: &[u32]) -> Vec<u32> {
    schedule(weights, true)
}

fn schedule(weights: &[u32], wide: bool) -> Vec<u32> {
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
    let classes: Vec<Class> = by_weight
        .into_iter()
        .map(|(weight, members)| Class {
            weight,
            members,
            next: 0,
        })
        .collect();
    // Scores stay within ±(total + 256), above the server index bits; when twice
    // that fits 32 bits, a step's scan does twice the keys per instruction.
    let packing = Packing::new(reduced.len());
    if !wide && (2 * total + 257) << packing.bits <= i64::from(i32::MAX) {
        simulate::<i32>(classes, total, packing)
    } else {
        simulate::<i64>(classes, total, packing)
    }
}

/// One period of the sequence, stepping every class's key per pick.
///
/// One key per class packs nginx's order, "highest score, then lowest server
/// index", into one integer: the score in the high bits, the complement of the
/// class's next member in the low [`Packing::bits`]. A step is then an add and a
/// max per class over two flat arrays. |score| ≤ total ≤ 256·n, so the keys fit
/// an i64 for any pool whose schedule (4·total bytes) fits in memory.
fn simulate<K: Key>(mut classes: Vec<Class>, total: i64, packing: Packing) -> Vec<u32> {
    let steps: Vec<K> = classes
        .iter()
        .map(|c| K::narrow(c.weight << packing.bits))
        .collect();
    let mut keys: Vec<K> = classes
        .iter()
        .map(|c| K::narrow(packing.key(0, c.members[0])))
        .collect();
    // Keys are unique (their low bits name a server), so the best class is
    // found from the best key alone, through the server it names.
    let mut class_of = vec![0u32; packing.servers];
    for (c, class) in classes.iter().enumerate() {
        for &member in &class.members {
            class_of[member as usize] = c as u32;
        }
    }

    let period = total as usize;
    let mut schedule = Vec::with_capacity(period);
    for _ in 0..period {
        let (mut score, member) = packing.unpack(advance(&mut keys, &steps).widen());
        let best = class_of[member as usize] as usize;
        let class = &mut classes[best];
        schedule.push(member);
        class.next += 1;
        if class.next == class.members.len() {
            // Every member has now been picked once more: the class's best score
            // is the picked ones' score, one total lower.
            class.next = 0;
            score -= total;
        }
        keys[best] = K::narrow(packing.key(score, class.members[class.next]));
    }
    schedule
}

/// Adds each class's step to its key and returns the largest key. Eight
/// running maxima instead of one: each compare waits on the one eight keys
/// back, not on the previous key's, and the compiler can use SIMD.
fn advance<K: Key>(keys: &mut [K], steps: &[K]) -> K {
    const LANES: usize = 8;
    let mut lanes = [K::MIN; LANES];
    let mut keys8 = keys.chunks_exact_mut(LANES);
    let mut steps8 = steps.chunks_exact(LANES);
    for (key, step) in (&mut keys8).zip(&mut steps8) {
        for lane in 0..LANES {
            key[lane] += step[lane];
            lanes[lane] = lanes[lane].max(key[lane]);
        }
    }
    for (key, step) in keys8.into_remainder().iter_mut().zip(steps8.remainder()) {
        *key += *step;
        lanes[0] = lanes[0].max(*key);
    }
    lanes.into_iter().fold(K::MIN, K::max)
}

/// A class key's integer type: i32 when scores and indices fit, else i64.
trait Key: Copy + Ord + std::ops::AddAssign {
    const MIN: Self;
    /// `value`, which the caller knows fits.
    fn narrow(value: i64) -> Self;
    fn widen(self) -> i64;
}

impl Key for i32 {
    const MIN: Self = i32::MIN;
    fn narrow(value: i64) -> Self {
        value as i32
    }
    fn widen(self) -> i64 {
        i64::from(self)
    }
}

impl Key for i64 {
    const MIN: Self = i64::MIN;
    fn narrow(value: i64) -> Self {
        value
    }
    fn widen(self) -> i64 {
        self
    }
}

/// How a score and a server index share one key.
#[derive(Debug, Clone, Copy)]
struct Packing {
    /// Number of servers.
    servers: usize,
    /// Low bits holding the complement of the server index.
    bits: u32,
}

impl Packing {
    fn new(servers: usize) -> Self {
        Packing {
            servers,
            bits: usize::BITS - servers.leading_zeros(),
        }
    }

    fn mask(self) -> i64 {
        (1 << self.bits) - 1
    }

    /// The key for `score` with `member` next: larger for a lower index on a tie.
    fn key(self, score: i64, member: u32) -> i64 {
        (score << self.bits) + (self.mask() - i64::from(member))
    }

    /// The score and the member a key names.
    fn unpack(self, key: i64) -> (i64, u32) {
        (key >> self.bits, (self.mask() - (key & self.mask())) as u32)
    }
}

/// Servers of one (reduced) weight during schedule simulation.
struct Class {
    /// The class's reduced weight: its score's gain per step.
    weight: i64,
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
