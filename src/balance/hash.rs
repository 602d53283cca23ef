//! Consistent hashing: weighted rendezvous hashing (highest random weight).
//!
//! Every (key, server) pair gets a pseudo-random score from a hash of the key
//! and the server's identity (a hash of its address, never its position in the
//! list); the usable server with the highest score wins. So:
//!
//! - removing one of `n` servers moves only the keys that server had, about
//!   `1/n` of them, and no other key moves — there is no ring to rebalance;
//! - a key whose server is unusable goes to the server with its next highest
//!   score, the same one every time and on every weir instance;
//! - two processes with the same servers agree on every key: the hash is
//!   fixed (FNV-1a and a 64-bit finalizer), with no per-process seed.
//!
//! Weights follow Schindelhauer and Schomaker's weighted rendezvous hashing:
//! the score is `-w / ln(u)` for a uniform `u` in (0, 1), which gives each
//! server a share of the keys proportional to its weight and keeps the
//! minimal-disruption property. With equal weights the score is `u` itself,
//! compared as an integer.
//!
//! Why rendezvous rather than a ring (ketama) or Maglev: it needs no table —
//! nothing to rebuild on reload and no memory per server — its spread is as even
//! as the key sample allows rather than depending on a number of virtual nodes,
//! and "the next choice for a key" falls out of the same scores. The price is a
//! pick in `O(n)`: one multiply-xorshift per server, plus a logarithm each when
//! weights differ (see `benches/balance.rs` for the cost at 3 and 1,000 servers).

use super::round_robin::RoundRobin;

/// Rendezvous hashing over one group of servers, with round robin for
/// requests that carry no key.
#[derive(Debug)]
pub(super) struct Rendezvous {
    /// Whether every server has the same weight (scores compare as integers).
    uniform: bool,
    /// Requests without the key are balanced by round robin.
    fallback: RoundRobin,
}

impl Rendezvous {
    /// A hashing picker for a group with these weights.
    pub(super) fn new(weights: &[u32]) -> Self {
        Rendezvous {
            uniform: weights.windows(2).all(|w| w[0] == w[1]),
            fallback: RoundRobin::new(weights),
        }
    }

    /// The usable server with the highest score for `key`; without a key, the
    /// next one in round-robin order.
    ///
    /// `server(i)` is `Some((id, weight))` for a usable server, `None` otherwise.
    pub(super) fn pick(
        &self,
        key: Option<u64>,
        servers: usize,
        server: impl Fn(usize) -> Option<(u64, u32)>,
    ) -> Option<usize> {
        let Some(key) = key else {
            return self.fallback.pick(|i| server(i).is_some());
        };
        let mut best: Option<(usize, f64, u64)> = None;
        for i in 0..servers {
            let Some((id, weight)) = server(i) else {
                continue;
            };
            let score = self.score(key, id, weight);
            // Ties (equal hashes) go to the lower id, so every instance agrees.
            if best.is_none_or(|(_, s, b)| score > s || (score == s && id < b)) {
                best = Some((i, score, id));
            }
        }
        best.map(|(i, _, _)| i)
    }

    fn score(&self, key: u64, id: u64, weight: u32) -> f64 {
        let h = mix(key ^ id);
        if self.uniform {
            // Exact as an integer below 2^53; the top 53 bits keep the order.
            return (h >> 11) as f64;
        }
        // u in (0, 1]: never 0, so ln(u) is finite; u = 1 scores infinity.
        let u = ((h >> 11) + 1) as f64 / (1u64 << 53) as f64;
        -f64::from(weight.max(1)) / u.ln()
    }
}

/// A stable 64-bit hash of `bytes`: FNV-1a, then a finalizer so that close
/// inputs (ports 3000 and 3001) land far apart.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    mix(fnv1a(bytes))
}

/// 64-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// MurmurHash3's 64-bit finalizer: every input bit affects every output bit.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fixed_across_processes_and_releases() {
        // FNV-1a's published test vectors.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
        // Pinned: a change here would remap every key of every user.
        assert_eq!(stable_hash(b"127.0.0.1:3000"), 3_115_897_763_154_907_686);
        assert_ne!(
            stable_hash(b"127.0.0.1:3000"),
            stable_hash(b"127.0.0.1:3001")
        );
    }
}
