//! Idle keep-alive connections to one server, and spare timers for the
//! requests sent to it, one list of each per worker.

use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::runtime;

/// How long an idle pooled connection is trusted to still be open.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A timer for a request's wait on the server's answer. Arming a timer and
/// disarming it each take the timer wheel's lock; one kept armed from one
/// request to the next is re-armed only when its deadline passes (see
/// [`crate::clock::poll_until`]).
pub(crate) type Timer = Pin<Box<Sleep>>;

/// One worker's idle connections, with the time each went idle, and spare timers.
#[derive(Debug)]
struct Idle<T> {
    conns: Vec<(T, Instant)>,
    timers: Vec<Timer>,
}

/// One worker's idle list, on a cache line of its own so workers never contend.
#[derive(Debug)]
#[repr(align(128))]
struct Shard<T>(Mutex<Idle<T>>);

/// Idle connections, reused most-recent first.
///
/// Each worker runtime has its own list (nginx's `keepalive` is per worker
/// too): a connection's socket is registered with the reactor of the worker
/// that opened it, so handing it to another worker would cost a cross-thread
/// wake-up on every request, and one shared list would be a lock every worker
/// takes twice per request.
#[derive(Debug)]
pub(crate) struct IdleList<T> {
    /// At most this many idle connections are kept per worker (`keepalive`).
    max: usize,
    /// One list per worker slot ([`runtime::worker_index`]).
    shards: Box<[Shard<T>]>,
}

impl<T> IdleList<T> {
    /// An empty list that keeps at most `max` connections per worker.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            shards: (0..runtime::worker_slots())
                .map(|_| {
                    Shard(Mutex::new(Idle {
                        conns: Vec::new(),
                        timers: Vec::new(),
                    }))
                })
                .collect(),
        }
    }

    /// The calling worker's most recently idle connection, with when it went idle.
    pub(crate) fn pop(&self) -> Option<(T, Instant)> {
        self.lock().conns.pop()
    }

    /// A spare timer of the calling worker's (whose runtime made it), if it has one.
    pub(crate) fn take_timer(&self) -> Option<Timer> {
        self.lock().timers.pop()
    }

    /// Keeps `timer` for another request, as many as connections are kept.
    /// It stays armed: the next request mostly waits less long than it is
    /// set for, and then need not re-arm it.
    pub(crate) fn put_timer(&self, timer: Timer) {
        let mut idle = self.lock();
        if idle.timers.len() < self.max {
            idle.timers.push(timer);
        }
    }

    /// Keeps `conn` for reuse, if the calling worker's list has room. Entries
    /// idle past [`IDLE_TIMEOUT`] are dropped first: no task watches them, and
    /// a list that is never drained deep would otherwise keep them forever.
    pub(crate) fn put(&self, conn: T) {
        let now = crate::clock::now();
        let mut idle = self.lock();
        let list = &mut idle.conns;
        // Entries idle since `cutoff` or before are expired (one comparison
        // each, where a duration would be a subtraction each).
        let expired = now.checked_sub(IDLE_TIMEOUT).map_or(0, |cutoff| {
            list.iter()
                .take_while(|(_, since)| *since <= cutoff)
                .count()
        });
        // Dropped outside the lock: closing a socket is a system call.
        let old: Option<Vec<(T, Instant)>> = (expired > 0).then(|| list.drain(..expired).collect());
        if list.len() < self.max {
            list.push((conn, now));
        }
        drop(idle);
        drop(old);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle<T>> {
        let shard = &self.shards[runtime::worker_index() % self.shards.len()];
        shard.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_newest_goes_out_first_and_expired_ones_are_dropped_on_the_next_put() {
        let list = IdleList::new(2);
        list.put(1);
        list.put(2);
        list.put(3);
        assert_eq!(list.pop().map(|(c, _)| c), Some(2), "the third had no room");
        list.put(2);
        tokio::time::advance(IDLE_TIMEOUT).await;
        list.put(4);
        assert_eq!(list.pop().map(|(c, _)| c), Some(4));
        assert!(list.pop().is_none(), "1 and 2 had expired");
    }
}
