//! The in-process tier: a size-bounded `moka` cache of each key's variants,
//! and the locks that make concurrent misses for one key wait for one fetch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use moka::sync::Cache as Moka;
use moka::Expiry;
use tokio::sync::watch;

use super::entry::{Key, Variants};

/// A key's variants as stored, with how long to keep them.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    /// The variants.
    pub(crate) variants: Arc<Variants>,
    /// Fresh time, the stale windows and room to revalidate: past it the
    /// entry is of no use.
    pub(crate) keep_for: Duration,
}

/// Expires each key after its own `keep_for`.
struct KeepFor;

impl Expiry<Key, Stored> for KeepFor {
    fn expire_after_create(&self, _: &Key, value: &Stored, _: Instant) -> Option<Duration> {
        Some(value.keep_for)
    }

    fn expire_after_update(
        &self,
        _: &Key,
        value: &Stored,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.keep_for)
    }
}

/// The memory tier.
#[derive(Clone)]
pub(crate) struct Memory {
    /// Entries weighted by their bytes; moka's TinyLFU decides what goes.
    entries: Moka<Key, Stored>,
    /// Its bound in bytes.
    pub(crate) capacity: u64,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Memory {
    /// An empty tier of `capacity` bytes.
    pub(crate) fn new(capacity: u64) -> Self {
        let entries = Moka::builder()
            .max_capacity(capacity)
            .weigher(|key: &Key, value: &Stored| {
                u32::try_from(key.weight() + value.variants.weight()).unwrap_or(u32::MAX)
            })
            .expire_after(KeepFor)
            .build();
        Memory { entries, capacity }
    }

    /// A tier of `capacity` bytes holding what `self` holds (as far as it fits).
    pub(crate) fn resized(&self, capacity: u64) -> Self {
        let new = Memory::new(capacity);
        for (key, value) in self.entries.iter() {
            new.entries.insert((*key).clone(), value);
        }
        new
    }

    /// The variants stored for `key`.
    pub(crate) fn get(&self, key: &Key) -> Option<Stored> {
        self.entries.get(key)
    }

    /// Stores `value` under `key`.
    pub(crate) fn insert(&self, key: Key, value: Stored) {
        self.entries.insert(key, value);
    }

    /// Drops `key`.
    pub(crate) fn invalidate(&self, key: &Key) {
        self.entries.invalidate(key);
    }

    /// Drops every key of `host` (every host when `None`) under the path prefix `path`.
    pub(crate) fn purge(&self, host: Option<&str>, path: &str) -> u64 {
        let host = host.map(str::to_owned);
        let path = path.to_owned();
        let purged: Vec<_> = self
            .entries
            .iter()
            .filter(|(k, _)| k.purged_by(host.as_deref(), &path))
            .map(|(k, _)| k)
            .collect();
        for key in &purged {
            self.entries.invalidate(&**key);
        }
        purged.len() as u64
    }

    /// Entries (keys) and bytes held, after moka's pending bookkeeping.
    pub(crate) fn usage(&self) -> (u64, u64) {
        self.entries.run_pending_tasks();
        (self.entries.entry_count(), self.entries.weighted_size())
    }
}

/// Who fetches a missing key.
#[derive(Debug)]
pub(crate) enum Turn {
    /// This request: the others wait until the guard is dropped.
    Lead(LockGuard),
    /// Another request already is; changes (closes) when it is done.
    Wait(watch::Receiver<()>),
}

/// The keys being fetched, each with the channel its waiters watch.
#[derive(Debug, Default)]
pub(crate) struct Locks {
    held: Mutex<HashMap<Key, watch::Sender<()>>>,
}

impl Locks {
    /// Takes the lock on `key`, or a way to wait for whoever holds it.
    pub(crate) fn take(self: &Arc<Self>, key: &Key) -> Turn {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = held.get(key) {
            return Turn::Wait(tx.subscribe());
        }
        held.insert(key.clone(), watch::Sender::new(()));
        Turn::Lead(LockGuard {
            locks: self.clone(),
            key: key.clone(),
        })
    }
}

/// The fetch of one key; dropping it (stored or not) wakes the waiters.
#[derive(Debug)]
pub(crate) struct LockGuard {
    locks: Arc<Locks>,
    key: Key,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Dropping the sender closes every waiter's receiver.
        self.locks
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}
