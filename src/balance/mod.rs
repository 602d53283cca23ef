//! Server selection: which server of an upstream gets the next request.
//!
//! A [`Selector`] is built once per upstream when a snapshot is built, and is
//! immutable apart from a few atomics, so many threads pick through `&self`.
//! It knows only weights and the primary/backup split; whether a server may be
//! picked right now, and its load, come from the caller's runtime state through
//! [`Candidate`] at pick time. That keeps health and drain filtering apart from
//! the algorithms:
//!
//! - `round_robin`: nginx's smooth weighted round robin (weights 5:1:1 give
//!   `a a b a c a a`, never a burst to the heavy server). Unusable servers are
//!   skipped and their turns consumed, so the others keep their relative weights.
//! - `least_conn`: fewest in-flight requests relative to weight; ties are broken
//!   by rotation, never by list order. Groups of more than 8 servers take the
//!   less loaded of two servers drawn at random, so a pick costs the same at
//!   any size.
//! - `hash`: consistent hashing of a request key (weighted rendezvous hashing,
//!   see the `hash` module); requests without the key go round robin.
//! - `random_two`: the less loaded (relative to weight) of two servers drawn at
//!   random, at every size: a pick costs the same with 3 servers or 10,000.
//!
//! Backup servers form a second, independent group of the same algorithm,
//! consulted only when no primary server is usable.

mod hash;
mod least_conn;
mod round_robin;
#[cfg(test)]
mod tests;

use crate::config::Balance;
use hash::Rendezvous;
use least_conn::LeastConn;
use round_robin::RoundRobin;

pub use hash::stable_hash;

/// What a balancer needs to know about a server at pick time (implemented by the daemon's per-server runtime state; tests implement it on plain structs).
pub trait Candidate {
    /// Configured weight, 1..=256.
    fn weight(&self) -> u32;
    /// False when the server is down, draining or otherwise not to be picked.
    fn usable(&self) -> bool;
    /// Requests currently in flight to this server.
    fn in_flight(&self) -> u64;
    /// The server's identity for consistent hashing: a [`stable_hash`] of its
    /// address, the same in every weir process and whatever its list position.
    fn id(&self) -> u64;
}

/// Picks a server of one upstream: primaries first, backups only when no primary is usable.
#[derive(Debug)]
pub struct Selector {
    /// Servers without `backup`; None when every server is a backup.
    primary: Option<Group>,
    /// Servers with `backup`, tried only when no primary is usable.
    backup: Option<Group>,
}

impl Selector {
    /// `servers` gives (weight, backup) for each server, in config order; indices returned by `select` index this list.
    ///
    /// Round robin takes its weights from here (clamped to 1..=256) and builds
    /// its schedule now; see the `round_robin` module for the cost.
    pub fn new(balance: Balance, servers: &[(u32, bool)]) -> Self {
        let group = |want_backup: bool| {
            let (members, weights): (Vec<usize>, Vec<u32>) = servers
                .iter()
                .enumerate()
                .filter(|(_, &(_, backup))| backup == want_backup)
                .map(|(index, &(weight, _))| (index, weight))
                .unzip();
            (!members.is_empty()).then(|| Group::new(balance, members, &weights))
        };
        Selector {
            primary: group(false),
            backup: group(true),
        }
    }

    /// Returns the index of the chosen server, or None when no server (primary or backup) is usable.
    /// `servers` is the same list (same order and length) as given to `new`.
    ///
    /// Round robin uses the weights given to `new`; least_conn uses
    /// [`Candidate::weight`]. A server missing from a too-short list counts as unusable.
    pub fn select<C: Candidate>(&self, servers: &[C]) -> Option<usize> {
        self.select_keyed(servers, None)
    }

    /// Like [`Selector::select`], with the request's key for `hash` (a
    /// [`stable_hash`] of it); other algorithms ignore the key, and `hash`
    /// goes round robin without one.
    pub fn select_keyed<C: Candidate>(&self, servers: &[C], key: Option<u64>) -> Option<usize> {
        [&self.primary, &self.backup]
            .into_iter()
            .flatten()
            .find_map(|group| group.pick(servers, key))
    }
}

/// The servers of one tier (primary or backup) and the algorithm over them.
#[derive(Debug)]
struct Group {
    /// Index in the upstream's server list of each group member.
    members: Vec<usize>,
    /// Works on member positions `0..members.len()`.
    algorithm: Algorithm,
}

/// The closed set of balancing algorithms.
#[derive(Debug)]
enum Algorithm {
    RoundRobin(RoundRobin),
    LeastConn(LeastConn),
    Hash(Rendezvous),
}

impl Group {
    fn new(balance: Balance, members: Vec<usize>, weights: &[u32]) -> Self {
        let algorithm = match balance {
            Balance::RoundRobin => Algorithm::RoundRobin(RoundRobin::new(weights)),
            Balance::LeastConn => Algorithm::LeastConn(LeastConn::new(members.len(), false)),
            Balance::RandomTwo => Algorithm::LeastConn(LeastConn::new(members.len(), true)),
            Balance::Hash => Algorithm::Hash(Rendezvous::new(weights)),
        };
        Group { members, algorithm }
    }

    /// Picks a usable member and returns its index in the upstream's list.
    fn pick<C: Candidate>(&self, servers: &[C], key: Option<u64>) -> Option<usize> {
        let server = |member: usize| servers.get(self.members[member]);
        let local = match &self.algorithm {
            Algorithm::RoundRobin(rr) => rr.pick(|m| server(m).is_some_and(C::usable)),
            Algorithm::LeastConn(lc) => lc.pick(|m| {
                server(m)
                    .filter(|s| s.usable())
                    .map(|s| (s.in_flight(), s.weight()))
            }),
            Algorithm::Hash(hash) => hash.pick(key, self.members.len(), |m| {
                server(m)
                    .filter(|s| s.usable())
                    .map(|s| (s.id(), s.weight()))
            }),
        }?;
        Some(self.members[local])
    }
}
