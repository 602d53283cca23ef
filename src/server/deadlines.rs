//! Client connection deadlines: the time a client has to send a request head
//! (`header_read_timeout`, slowloris protection) and how long an idle
//! keep-alive connection is kept (`idle_timeout`).
//!
//! hyper's own header timer also runs while a connection is idle, which would
//! cut idle connections at the header timeout; so weir keeps both deadlines
//! itself, in a wrapper around the socket that knows whether a request is in
//! progress.
//!
//! A client that sent part of a request head and then too little fails the
//! read with [`HeadTimedOut`], so that the connection answers it 408 before
//! closing, as HAProxy does (see [`super::refusal`]); one that sent nothing
//! is closed silently.
//!
//! The same timer asks for an idle HTTP/1.1 connection to be parked once it
//! has been quiet for [`PARK_AFTER`] (see [`super::parking`]): hyper's buffers
//! are released until the client sends again.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use atomic_waker::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// No head is being read.
const NONE: u64 = u64::MAX;

/// How long an HTTP/1.1 keep-alive connection waits for its next request
/// before it is parked, its buffers released.
pub const PARK_AFTER: Duration = Duration::from_secs(1);

/// The client began a request head and did not finish it within
/// `header_read_timeout`: the read fails with it, and the connection
/// answers 408 before it closes.
#[derive(Debug, thiserror::Error)]
#[error("request head not finished within header_read_timeout")]
pub(super) struct HeadTimedOut;

/// Whether `error`, or an error it wraps, is [`HeadTimedOut`].
pub(super) fn is_head_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    // Bounded by the depth of the error chain.
    while let Some(e) = next {
        let inner = e.downcast_ref::<io::Error>().and_then(io::Error::get_ref);
        if e.is::<HeadTimedOut>() || inner.is_some_and(|i| i.is::<HeadTimedOut>()) {
            return true;
        }
        next = e.source();
    }
    false
}

/// `Activity::park`: serving normally.
const SERVING: u8 = 0;
/// `Activity::park`: the connection has been idle for `PARK_AFTER`.
const PARK_WANTED: u8 = 1;
/// `Activity::park`: hyper is being stopped to park the connection, so closing
/// the socket is not meant.
const PARKING: u8 = 2;

/// What a client connection is doing, shared by its socket wrapper and its requests.
#[derive(Debug)]
pub struct Activity {
    /// Reference point for the millisecond timestamps below.
    epoch: Instant,
    /// Requests in progress (answered but whose response body is not done yet).
    busy: AtomicU32,
    /// When the connection last became idle.
    idle_since_ms: AtomicU64,
    /// When the first byte of the next request head arrived, or `NONE`. A
    /// new connection's head is due from the accept, so it starts at 0.
    head_since_ms: AtomicU64,
    /// Bytes have arrived since the last request began (under TLS, a record
    /// of any kind): if the head times out, the read fails with
    /// [`HeadTimedOut`], which hyper reports when it holds part of a head.
    head_begun: AtomicBool,
    /// The reader parked while a request was in progress: it has no timer
    /// armed, so it is woken when the connection turns idle to arm one.
    reader: AtomicWaker,
    /// HTTP/2: bytes on an idle connection are pings and settings, not a new
    /// request head, so only the idle deadline applies between streams.
    multiplexed: AtomicBool,
    /// Parking an idle HTTP/1.1 connection: `SERVING`, `PARK_WANTED`, `PARKING`.
    park: AtomicU8,
    /// HTTP/1.1: every response hyper was given has been flushed to the
    /// socket and no request is in progress, so anything hyper writes now
    /// is its own answer to a head it could not read (see `super::parking`).
    answered: AtomicBool,
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
            head_begun: AtomicBool::new(false),
            reader: AtomicWaker::new(),
            multiplexed: AtomicBool::new(false),
            park: AtomicU8::new(SERVING),
            answered: AtomicBool::new(true),
        })
    }

    /// Marks a request as in progress until the returned guard drops.
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        self.head_since_ms.store(NONE, Ordering::Relaxed);
        self.head_begun.store(false, Ordering::Relaxed);
        self.answered.store(false, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// The socket was flushed. hyper flushes it once its own buffer is
    /// empty, so with no request in progress every response is on its way.
    pub fn on_flush(&self) {
        if self.busy.load(Ordering::Relaxed) == 0 {
            self.answered.store(true, Ordering::Relaxed);
        }
    }

    /// Whether every response hyper was given is on its way and no request
    /// has begun since.
    pub fn all_answered(&self) -> bool {
        self.answered.load(Ordering::Relaxed)
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
        let elapsed = crate::clock::now().saturating_duration_since(self.epoch);
        u64::try_from(elapsed.as_millis()).unwrap_or(NONE - 1)
    }

    /// Bytes arrived: on an idle connection they start a request head. Also
    /// for bytes that came while a request was in progress and were found
    /// unused once it ended (the start of a pipelined head).
    pub fn on_read(&self) {
        if self.busy.load(Ordering::Relaxed) == 0 && !self.multiplexed.load(Ordering::Relaxed) {
            if self.head_since_ms.load(Ordering::Relaxed) == NONE {
                self.head_since_ms.store(self.now_ms(), Ordering::Relaxed);
            }
            self.head_begun.store(true, Ordering::Relaxed);
        }
    }

    /// Whether part of the next request head has arrived on an HTTP/1.1
    /// connection: if it times out, the read fails with [`HeadTimedOut`].
    fn began_a_head(&self) -> bool {
        self.head_begun.load(Ordering::Relaxed) && !self.multiplexed.load(Ordering::Relaxed)
    }

    /// When the connection must be closed if nothing more arrives, if ever;
    /// and whether the timer should fire earlier, [`PARK_AFTER`] into an idle
    /// spell, to ask for the connection to be parked.
    fn deadline(&self, limits: Limits) -> Option<Deadline> {
        if self.busy.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let head = self.head_since_ms.load(Ordering::Relaxed);
        let (since, limit) = match head {
            NONE => (self.idle_since_ms.load(Ordering::Relaxed), limits.idle_ms),
            head => (head, limits.header_ms),
        };
        let (since, limit) = (
            self.epoch + Duration::from_millis(since),
            Duration::from_millis(limit.into()),
        );
        let parkable = head == NONE
            && PARK_AFTER < limit
            && !self.multiplexed.load(Ordering::Relaxed)
            && self.park.load(Ordering::Relaxed) == SERVING;
        Some(if parkable {
            Deadline::Park(since + PARK_AFTER)
        } else {
            Deadline::Close(since + limit)
        })
    }

    /// Whether the connection should be parked now: it asked to be, and is
    /// still idle with no request head begun. If so, it is marked as parking
    /// until [`Activity::resumed`].
    pub fn take_park_request(&self) -> bool {
        if self.park.load(Ordering::Relaxed) != PARK_WANTED {
            return false;
        }
        let idle = self.busy.load(Ordering::Relaxed) == 0
            && self.head_since_ms.load(Ordering::Relaxed) == NONE;
        self.park
            .store(if idle { PARKING } else { SERVING }, Ordering::Relaxed);
        idle
    }

    /// Whether hyper is being stopped to park the connection.
    pub fn is_parking(&self) -> bool {
        self.park.load(Ordering::Relaxed) == PARKING
    }

    /// The parked connection is served again.
    pub fn resumed(&self) {
        self.park.store(SERVING, Ordering::Relaxed);
    }
}

/// What the timer of an idle connection is armed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    /// Ask for the connection to be parked.
    Park(Instant),
    /// Fail reads: the client took too long.
    Close(Instant),
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

/// `idle_timeout` and `header_read_timeout` in milliseconds, rounded up and
/// capped at about 49 days: every connection's task holds them.
#[derive(Debug, Clone, Copy)]
struct Limits {
    idle_ms: u32,
    header_ms: u32,
}

impl Limits {
    fn new(idle: Duration, header: Duration) -> Self {
        let ms = |d: Duration| u32::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u32::MAX);
        Self {
            idle_ms: ms(idle),
            header_ms: ms(header),
        }
    }
}

/// A client socket that fails reads once its connection's deadline passes.
#[derive(Debug)]
pub struct TimedIo<T> {
    inner: T,
    activity: Arc<Activity>,
    limits: Limits,
    /// The timer, armed for the last deadline found.
    sleep: Pin<Box<Sleep>>,
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
            limits: Limits::new(idle_timeout, header_timeout),
            sleep: Box::pin(tokio::time::sleep(header_timeout)),
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
                let Some(deadline) = this.activity.deadline(this.limits) else {
                    return Poll::Pending;
                };
                let (Deadline::Park(at) | Deadline::Close(at)) = deadline;
                // Each request puts the deadline off: the timer is re-armed
                // when it fires for the old one, not on every request.
                match crate::clock::poll_until(this.sleep.as_mut(), at, cx) {
                    Poll::Ready(()) if matches!(deadline, Deadline::Park(_)) => {
                        // Asked once: from now the timer is armed for the close.
                        // The connection's task polls this socket, so waking
                        // it lets it see the request.
                        this.activity.park.store(PARK_WANTED, Ordering::Relaxed);
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                    Poll::Ready(()) if this.activity.began_a_head() => {
                        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, HeadTimedOut)))
                    }
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
    write_through!(inner);

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
        timeout_error(io).await.0
    }

    /// Reads until the deadline fails the read; returns how long that took and the error.
    async fn timeout_error(io: &mut TimedIo<DuplexStream>) -> (Duration, io::Error) {
        let start = Instant::now();
        let mut buf = [0u8; 16];
        let err = io.read(&mut buf).await.expect_err("the read times out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        (start.elapsed(), err)
    }

    /// The client sends `bytes`, which the server side reads.
    async fn client_sends(io: &mut TimedIo<DuplexStream>, client: &mut DuplexStream, bytes: &[u8]) {
        client.write_all(bytes).await.expect("write");
        let mut buf = vec![0u8; bytes.len()];
        io.read_exact(&mut buf).await.expect("read");
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
        client_sends(&mut io, &mut client, b"G").await;
        let (waited, err) = timeout_error(&mut io).await;
        assert_eq!(waited, HEADER);
        assert!(is_head_timeout(&err), "to be answered 408: {err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_sent_nothing_times_out_without_a_head() {
        // A new connection, then an idle keep-alive one.
        for (keep_alive, limit) in [(false, HEADER), (true, IDLE)] {
            let (mut io, _client, activity) = pair();
            if keep_alive {
                drop(activity.begin());
            }
            let (waited, err) = timeout_error(&mut io).await;
            assert_eq!(waited, limit);
            assert!(!is_head_timeout(&err), "closed without an answer");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_connection_has_no_head_to_answer() {
        // Its preface read before it is known for HTTP/2, then nothing.
        let (mut io, mut client, activity) = pair();
        client_sends(&mut io, &mut client, b"PRI * HTTP/2.0\r\n").await;
        activity.mark_multiplexed();
        let (waited, err) = timeout_error(&mut io).await;
        assert_eq!(waited, HEADER);
        assert!(!is_head_timeout(&err));
    }

    /// Reads with a deadline of `within`; true when the read was still pending.
    async fn still_pending(io: &mut TimedIo<DuplexStream>, within: Duration) -> bool {
        let mut buf = [0u8; 4];
        tokio::time::timeout(within, io.read(&mut buf))
            .await
            .is_err()
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_asks_to_be_parked_after_park_after() {
        let (mut io, _client, activity) = pair();
        let start = Instant::now();
        drop(activity.begin());
        assert!(still_pending(&mut io, PARK_AFTER - Duration::from_millis(1)).await);
        assert!(!activity.take_park_request(), "too early");
        assert!(still_pending(&mut io, Duration::from_millis(2)).await);
        assert!(activity.take_park_request());
        assert!(activity.is_parking());
        assert!(!activity.take_park_request(), "asked once");
        // Parked, the idle timeout still runs from the end of the last request.
        time_to_timeout(&mut io).await;
        assert_eq!(start.elapsed(), IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_begun_after_the_ask_cancels_it() {
        let (mut io, _client, activity) = pair();
        drop(activity.begin());
        assert!(still_pending(&mut io, PARK_AFTER * 2).await);
        let busy = activity.begin();
        assert!(!activity.take_park_request());
        assert!(!activity.is_parking());
        drop(busy);
        // Asked again once idle for PARK_AFTER anew.
        assert!(still_pending(&mut io, PARK_AFTER * 2).await);
        assert!(activity.take_park_request());
    }

    #[tokio::test(start_paused = true)]
    async fn connections_reading_a_head_or_multiplexed_are_never_parked() {
        let (mut io, mut client, activity) = pair();
        drop(activity.begin());
        client.write_all(b"G").await.expect("write");
        let mut buf = [0u8; 1];
        assert_eq!(io.read(&mut buf).await.expect("read"), 1);
        assert!(still_pending(&mut io, HEADER - Duration::from_millis(1)).await);
        assert!(!activity.take_park_request(), "a head is being read");

        let (mut io, _client, activity) = pair();
        activity.mark_multiplexed();
        drop(activity.begin());
        assert!(still_pending(&mut io, IDLE - Duration::from_millis(1)).await);
        assert!(!activity.take_park_request(), "HTTP/2");
    }

    #[tokio::test(start_paused = true)]
    async fn a_resumed_connection_can_park_again() {
        let (mut io, _client, activity) = pair();
        drop(activity.begin());
        assert!(still_pending(&mut io, PARK_AFTER * 2).await);
        assert!(activity.take_park_request());
        activity.resumed();
        drop(activity.begin());
        assert!(still_pending(&mut io, PARK_AFTER * 2).await);
        assert!(activity.take_park_request());
    }
}
