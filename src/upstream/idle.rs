//! Idle keep-alive connections to one server, and spare timers for the
//! requests sent to it, one list of each per worker.

use std::pin::Pin;
use std::sync::Mutex;

use tokio::time::{Instant, Sleep};

use crate::runtime;

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

    /// Keeps `conn` for reuse, if the calling worker's list has room. Those
    /// idle too long are dropped by the pool's sweep ([`IdleList::sweep`]).
    pub(crate) fn put(&self, conn: T) {
        let now = crate::clock::now();
        let mut idle = self.lock();
        if idle.conns.len() < self.max {
            idle.conns.push((conn, now));
        }
    }

    /// Drops the connections `keep` refuses (given each with when it went
    /// idle) from every worker's list, closing them outside the locks.
    pub(crate) fn sweep(&self, keep: impl Fn(&T, Instant) -> bool) {
        for shard in &self.shards {
            let gone: Vec<(T, Instant)> = lock(shard)
                .conns
                .extract_if(.., |(conn, since)| !keep(conn, *since))
                .collect();
            drop(gone);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle<T>> {
        lock(&self.shards[runtime::worker_index() % self.shards.len()])
    }
}

fn lock<T>(shard: &Shard<T>) -> std::sync::MutexGuard<'_, Idle<T>> {
    shard.0.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_newest_goes_out_first_and_a_full_list_keeps_no_more() {
        let list = IdleList::new(2);
        list.put(1);
        list.put(2);
        list.put(3);
        assert_eq!(list.pop().map(|(c, _)| c), Some(2), "the third had no room");
        assert_eq!(list.pop().map(|(c, _)| c), Some(1));
        assert!(list.pop().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_sweep_drops_what_it_refuses_and_keeps_the_order_of_the_rest() {
        let list = IdleList::new(4);
        for conn in 1..=4 {
            list.put(conn);
        }
        list.sweep(|conn, _| conn % 2 == 0);
        assert_eq!(list.pop().map(|(c, _)| c), Some(4));
        assert_eq!(list.pop().map(|(c, _)| c), Some(2));
        assert!(list.pop().is_none(), "1 and 3 were swept");
    }
}
