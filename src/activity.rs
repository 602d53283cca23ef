//! Client connection deadlines: the time a client has to send a request head
//! (`header_read_timeout`, slowloris protection) and how long an idle
//! keep-alive connection is kept (`idle_timeout`).
//!
//! hyper's own header timer also runs while a connection is idle, which would
//! cut idle connections at the header timeout; so weir keeps both deadlines
//! itself, in a wrapper around the socket that knows whether a request is in
//! progress.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use atomic_waker::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// No head is being read.
const NONE: u64 = u64::MAX;

/// What a client connection is doing, shared by its socket wrapper and its requests.
#[derive(Debug)]
pub struct Activity {
    /// Reference point for the millisecond timestamps below.
    epoch: Instant,
    /// Requests in progress (answered but whose response body is not done yet).
    busy: AtomicU32,
    /// When the connection last became idle.
    idle_since_ms: AtomicU64,
    /// When the first byte of the next request head arrived, or `NONE`.
    head_since_ms: AtomicU64,
    /// The reader parked while a request was in progress: it has no timer
    /// armed, so it is woken when the connection turns idle to arm one.
    reader: AtomicWaker,
    /// HTTP/2: bytes on an idle connection are pings and settings, not a new
    /// request head, so only the idle deadline applies between streams.
    multiplexed: AtomicBool,
}

/// Counts one request in progress on a connection until dropped.
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Activity {
    /// A new connection: it must send its first request head in time.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            busy: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(0),
            head_since_ms: AtomicU64::new(0),
            reader: AtomicWaker::new(),
            multiplexed: AtomicBool::new(false),
        })
    }

    /// Marks a request as in progress until the returned guard drops.
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        self.head_since_ms.store(NONE, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// The connection speaks HTTP/2.
    pub fn mark_multiplexed(&self) {
        self.multiplexed.store(true, Ordering::Relaxed);
    }

    /// The connection became a tunnel (`101 Switching Protocols`): it is never
    /// idle in the HTTP sense again, and the tunnel's own idle timeout applies.
    pub fn mark_upgraded(&self) {
        self.busy.fetch_add(1, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    /// Bytes arrived: on an idle connection they start a request head.
    fn on_read(&self) {
        if self.busy.load(Ordering::Relaxed) == 0
            && !self.multiplexed.load(Ordering::Relaxed)
            && self.head_since_ms.load(Ordering::Relaxed) == NONE
        {
            self.head_since_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// When the connection must be closed if nothing more arrives, if ever.
    fn deadline(&self, idle: Duration, header: Duration) -> Option<Instant> {
        if self.busy.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let (since, limit) = match self.head_since_ms.load(Ordering::Relaxed) {
            NONE => (self.idle_since_ms.load(Ordering::Relaxed), idle),
            head => (head, header),
        };
        Some(self.epoch + Duration::from_millis(since) + limit)
    }
}

impl Busy {
    /// The connection became a tunnel; see [`Activity::mark_upgraded`].
    pub fn mark_upgraded(&self) {
        self.0.mark_upgraded();
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0
                .idle_since_ms
                .store(self.0.now_ms(), Ordering::Relaxed);
            self.0.reader.wake();
        }
    }
}

/// A client socket that fails reads once its connection's deadline passes.
#[derive(Debug)]
pub struct TimedIo<T> {
    inner: T,
    activity: Arc<Activity>,
    idle_timeout: Duration,
    header_timeout: Duration,
    /// The timer, armed for `armed_at`.
    sleep: Pin<Box<Sleep>>,
    armed_at: Option<Instant>,
}

impl<T> TimedIo<T> {
    /// Wraps `inner`, enforcing the deadlines of `activity`.
    pub fn new(
        inner: T,
        activity: Arc<Activity>,
        idle_timeout: Duration,
        header_timeout: Duration,
    ) -> Self {
        Self {
            inner,
            activity,
            idle_timeout,
            header_timeout,
            sleep: Box::pin(tokio::time::sleep(header_timeout)),
            armed_at: None,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.activity.on_read();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                // Register before looking, so a request ending in between still wakes us.
                this.activity.reader.register(cx.waker());
                let Some(at) = this
                    .activity
                    .deadline(this.idle_timeout, this.header_timeout)
                else {
                    return Poll::Pending;
                };
                if this.armed_at != Some(at) {
                    this.sleep.as_mut().reset(at);
                    this.armed_at = Some(at);
                }
                match this.sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client connection timed out",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    const IDLE: Duration = Duration::from_secs(60);
    const HEADER: Duration = Duration::from_secs(10);

    fn pair() -> (TimedIo<DuplexStream>, DuplexStream, Arc<Activity>) {
        let (server, client) = tokio::io::duplex(1024);
        let activity = Activity::new();
        let io = TimedIo::new(server, activity.clone(), IDLE, HEADER);
        (io, client, activity)
    }

    /// Reads until the deadline fails the read; returns how long that took.
    async fn time_to_timeout(io: &mut TimedIo<DuplexStream>) -> Duration {
        let start = Instant::now();
        let mut buf = [0u8; 16];
        let err = io.read(&mut buf).await.expect_err("the read times out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_new_connection_gets_the_header_timeout() {
        let (mut io, _client, _activity) = pair();
        assert_eq!(time_to_timeout(&mut io).await, HEADER);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_keep_alive_connection_gets_the_idle_timeout() {
        let (mut io, _client, activity) = pair();
        drop(activity.begin());
        assert_eq!(time_to_timeout(&mut io).await, IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_never_times_out() {
        let (mut io, mut client, activity) = pair();
        let busy = activity.begin();
        let mut buf = [0u8; 4];
        let read = tokio::time::timeout(Duration::from_secs(3600), io.read(&mut buf)).await;
        assert!(read.is_err(), "no deadline while a request is in progress");
        drop(busy);
        client.write_all(b"x").await.expect("write");
        assert_eq!(io.read(&mut buf).await.expect("read"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_parked_while_busy_gets_the_idle_timeout_once_the_request_ends() {
        let (mut io, _client, activity) = pair();
        let busy = activity.begin();
        let start = Instant::now();
        let reader = tokio::spawn(async move {
            time_to_timeout(&mut io).await;
            start.elapsed()
        });
        // Let the reader park with no timer, then keep the request busy for 10 min.
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(!reader.is_finished(), "no deadline while busy");
        drop(busy);
        let waited = reader.await.expect("reader task");
        assert_eq!(waited, Duration::from_secs(600) + IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn http2_pings_on_an_idle_connection_do_not_start_a_head() {
        let (mut io, mut client, activity) = pair();
        activity.mark_multiplexed();
        drop(activity.begin());
        client.write_all(b"PING").await.expect("write");
        let mut buf = [0u8; 4];
        assert_eq!(io.read(&mut buf).await.expect("read"), 4);
        assert_eq!(time_to_timeout(&mut io).await, IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn an_upgraded_connection_has_no_http_deadline() {
        let (mut io, _client, activity) = pair();
        activity.mark_upgraded();
        let mut buf = [0u8; 4];
        let read = tokio::time::timeout(Duration::from_secs(24 * 3600), io.read(&mut buf)).await;
        assert!(
            read.is_err(),
            "the tunnel's own idle timeout applies, not idle_timeout"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_byte_of_a_head_starts_the_header_timeout() {
        let (mut io, mut client, activity) = pair();
        drop(activity.begin());
        tokio::time::advance(Duration::from_secs(30)).await;
        client.write_all(b"G").await.expect("write");
        let mut buf = [0u8; 1];
        assert_eq!(io.read(&mut buf).await.expect("read"), 1);
        assert_eq!(time_to_timeout(&mut io).await, HEADER);
    }
}
