//! The graceful-shutdown flag: raised once, awaited by every connection.
//!
//! Each client connection waits on it beside its HTTP future, so the wait is
//! polled every time the connection's task wakes: several times per request.
//! tokio's `watch` and `Notify` take the waiter list's mutex on every poll of a
//! waiting future, and with one flag shared by every connection of every
//! worker that mutex is taken by all workers on every request. Here a poll of
//! a registered waiter is one atomic load and a waker comparison; the lock is
//! taken only to register, to leave, and once to wake everyone.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// A flag raised once; cheap to clone, every clone sees the same flag.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    raised: AtomicBool,
    waiters: Mutex<Waiters>,
}

#[derive(Debug, Default)]
struct Waiters {
    next: u64,
    wakers: HashMap<u64, Waker>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Shutdown {
    /// A flag not raised yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Raises the flag and wakes every waiter; later waits finish at once.
    pub fn raise(&self) {
        // Set before taking the lock: a waiter that registers after the
        // wakers were taken sees the flag under the same lock.
        self.inner.raised.store(true, Ordering::SeqCst);
        let wakers = std::mem::take(&mut self.inner.lock().wakers);
        for waker in wakers.into_values() {
            waker.wake();
        }
    }

    /// Whether the flag is raised.
    #[cfg(test)]
    pub fn is_raised(&self) -> bool {
        self.inner.raised.load(Ordering::SeqCst)
    }

    /// Resolves once the flag is raised.
    pub fn raised(&self) -> Raised<'_> {
        Raised {
            shutdown: self,
            registered: None,
        }
    }
}

/// The future of [`Shutdown::raised`].
#[derive(Debug)]
pub struct Raised<'a> {
    shutdown: &'a Shutdown,
    /// This waiter's key and the waker stored under it.
    registered: Option<(u64, Waker)>,
}

impl Future for Raised<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let inner = &this.shutdown.inner;
        if inner.raised.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        if let Some((_, waker)) = &this.registered {
            if waker.will_wake(cx.waker()) {
                return Poll::Pending;
            }
        }
        let mut waiters = inner.lock();
        if inner.raised.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        let key = match &this.registered {
            Some((key, _)) => *key,
            None => {
                waiters.next += 1;
                waiters.next
            }
        };
        waiters.wakers.insert(key, cx.waker().clone());
        this.registered = Some((key, cx.waker().clone()));
        Poll::Pending
    }
}

impl Drop for Raised<'_> {
    fn drop(&mut self) {
        if let Some((key, _)) = self.registered.take() {
            self.shutdown.inner.lock().wakers.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn every_waiter_wakes_and_later_waits_finish_at_once() {
        let shutdown = Shutdown::new();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let shutdown = shutdown.clone();
                tokio::spawn(async move { shutdown.raised().await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(!shutdown.is_raised());
        assert_eq!(shutdown.inner.lock().wakers.len(), 3);
        shutdown.raise();
        for waiter in waiters {
            tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .expect("woken")
                .expect("joined");
        }
        assert!(shutdown.is_raised());
        shutdown.raised().await;
    }

    #[tokio::test]
    async fn a_waiter_that_goes_away_leaves_nothing_behind() {
        let shutdown = Shutdown::new();
        let wait = tokio::time::timeout(Duration::from_millis(10), shutdown.raised()).await;
        assert!(wait.is_err(), "not raised yet");
        assert!(shutdown.inner.lock().wakers.is_empty());
    }
}
