//! The tee that stores a body while it streams to the client: chunks are
//! kept (not copied) as they pass, up to the entry limit, and the entry is
//! stored when the body has ended whole. The client never waits for it.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::Request;

use super::entry::{Key, Pending};
use super::store::LockGuard;
use super::Cache;
use crate::config::RouteCacheConfig;

/// A response body on its way into the cache.
#[derive(Debug)]
pub(crate) struct Fill {
    cache: Arc<Cache>,
    key: Key,
    /// The request head the entry answers (for `Vary`).
    request: Request<()>,
    route: RouteCacheConfig,
    /// The entry, but for its body.
    pending: Pending,
    /// When the response arrived.
    received: SystemTime,
    /// The body so far.
    chunks: Vec<Bytes>,
    len: u64,
    /// The fetch lock of `key`, released once stored (or given up).
    lock: Option<LockGuard>,
}

impl Fill {
    /// Starts storing the answer `pending` to `request`.
    pub(crate) fn new(
        cache: Arc<Cache>,
        key: Key,
        request: Request<()>,
        route: RouteCacheConfig,
        pending: Pending,
        received: SystemTime,
        lock: Option<LockGuard>,
    ) -> Self {
        Fill {
            cache,
            key,
            request,
            route,
            pending,
            received,
            chunks: Vec::new(),
            len: 0,
            lock,
        }
    }

    /// Keeps a chunk of the body; `false` once the body is too large to
    /// store, and the fill should be dropped.
    pub(crate) fn push(&mut self, data: &Bytes) -> bool {
        self.len += data.len() as u64;
        if self.len > self.cache.max_entry_size() {
            return false;
        }
        self.chunks.push(data.clone());
        true
    }

    /// Stores the entry: the body ended whole.
    pub(crate) fn complete(self) {
        let body = match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks[0].clone(),
            _ => {
                let mut buf = BytesMut::with_capacity(self.len as usize);
                for chunk in &self.chunks {
                    buf.extend_from_slice(chunk);
                }
                buf.freeze()
            }
        };
        let entry = Arc::new(self.pending.with_body(body));
        self.cache
            .store(&self.key, entry, &self.request, &self.route, self.received);
        // The waiters are woken only now, when the entry is there for them.
        drop(self.lock);
    }
}
