//! Idle detection for tunnels: both directions stamp one shared clock on
//! every read, and a watcher wakes at the deadline the last stamp implies.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// When bytes last moved through a tunnel, either way.
#[derive(Debug)]
pub(super) struct LastTraffic {
    /// Reference point for `last_ms`.
    start: Instant,
    /// Milliseconds since `start` of the last read that returned bytes;
    /// an atomic so both copy directions stamp it without a lock.
    last_ms: AtomicU64,
}

impl LastTraffic {
    pub(super) fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn stamp(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Resolves once no bytes have moved for `timeout`.
    pub(super) async fn idle_for(&self, timeout: Duration) {
        // Each turn sleeps to the deadline of the latest stamp; it loops only
        // when bytes moved meanwhile, which pushes the deadline forward.
        loop {
            let deadline = self.last() + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// An IO object that stamps an [`LastTraffic`] whenever a read returns bytes.
#[derive(Debug)]
pub(super) struct Watched<T> {
    io: T,
    activity: Arc<LastTraffic>,
}

impl<T> Watched<T> {
    pub(super) fn new(io: T, activity: Arc<LastTraffic>) -> Self {
        Self { io, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.stamp();
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    write_through!(io);

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn idle_resolves_only_after_a_quiet_timeout() {
        let activity = Arc::new(LastTraffic::new());
        let (a, mut b) = tokio::io::duplex(64);
        let mut watched = Watched::new(a, activity.clone());
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(5)).await;
        b.write_all(b"x").await.expect("write");
        let mut byte = [0u8; 1];
        watched.read_exact(&mut byte).await.expect("read");
        activity.idle_for(Duration::from_secs(10)).await;
        // Idle since the read at 5 s, so it fires at 15 s, not at 10 s.
        assert_eq!(started.elapsed(), Duration::from_secs(15));
    }
}
