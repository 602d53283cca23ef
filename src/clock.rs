//! One clock read per poll of a client connection's task, as nginx reads the
//! time once per turn of its event loop.
//!
//! A request reads the time where it starts, where its connection goes back
//! to its pool, where it ends, and where its client connection turns idle:
//! most of those reads fall in one poll of the connection's task, microseconds
//! apart. Inside a task wrapped in [`Polled`], [`now`] reads the clock once
//! per poll and answers the same instant after that; elsewhere it reads the
//! clock every time. Timeouts and latencies are off by at most the length of
//! one poll.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

thread_local! {
    /// Whether a [`Polled`] task is being polled on this thread.
    static POLLING: Cell<bool> = const { Cell::new(false) };
    /// The instant read in this poll, once read.
    static READ: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The current instant: read once per poll of a [`Polled`] task.
pub(crate) fn now() -> Instant {
    READ.with(|read| {
        read.get().unwrap_or_else(|| {
            let now = Instant::now();
            if POLLING.with(Cell::get) {
                read.set(Some(now));
            }
            now
        })
    })
}

/// Polls `sleep` as a timer for `at`, re-armed only when it must be: when
/// `at` comes sooner than it is set for, or when it fires for an earlier
/// time that was since put off. A timer kept from one wait to the next (a
/// connection's idle deadline, each request's wait for its response head)
/// then costs no re-arming per wait; re-arming takes the timer wheel's lock.
pub(crate) fn poll_until(
    mut sleep: Pin<&mut Sleep>,
    at: Instant,
    cx: &mut Context<'_>,
) -> Poll<()> {
    if at < sleep.deadline() {
        sleep.as_mut().reset(at);
    }
    let fired = sleep.as_mut().poll(cx);
    if fired.is_ready() && sleep.deadline() < at {
        sleep.as_mut().reset(at);
        return sleep.poll(cx);
    }
    fired
}

pin_project! {
    /// A task whose polls each read the clock at most once through [`now`].
    pub(crate) struct Polled<F> {
        #[pin]
        inner: F,
    }
}

impl<F> Polled<F> {
    pub(crate) fn new(inner: F) -> Self {
        Self { inner }
    }
}

impl<F: Future> Future for Polled<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _poll = PollScope::enter();
        self.project().inner.poll(cx)
    }
}

/// Marks this thread as polling a [`Polled`] task; forgets the instant read
/// when dropped (by the outermost scope only, should they nest).
struct PollScope {
    outermost: bool,
}

impl PollScope {
    fn enter() -> Self {
        Self {
            outermost: !POLLING.with(|p| p.replace(true)),
        }
    }
}

impl Drop for PollScope {
    fn drop(&mut self) {
        if self.outermost {
            POLLING.with(|p| p.set(false));
            READ.with(|read| read.set(None));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const PASS: Duration = Duration::from_millis(2);

    #[tokio::test]
    async fn a_polled_task_reads_the_clock_once_per_poll() {
        let (first, same_poll) = Polled::new(async {
            let first = now();
            std::thread::sleep(PASS);
            (first, now())
        })
        .await;
        assert_eq!(first, same_poll);

        let (first, next_poll) = Polled::new(async {
            let first = now();
            tokio::task::yield_now().await;
            std::thread::sleep(PASS);
            (first, now())
        })
        .await;
        assert!(next_poll - first >= PASS);
    }

    #[tokio::test]
    async fn outside_a_polled_task_every_read_is_fresh() {
        let first = now();
        std::thread::sleep(PASS);
        assert!(now() - first >= PASS);
        Polled::new(async {}).await;
        let after = now();
        std::thread::sleep(PASS);
        assert!(now() - after >= PASS);
    }
}
