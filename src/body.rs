//! The request body weir sends upstream: the client's, streamed through
//! frame by frame (never buffered whole), limited, metered and cut off when
//! the client stalls on the way.

use std::future::Future as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// Errors a body can fail with while weir streams it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The client sent more than `max_body_size`; mapped to 413.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than max_body_size")]
pub struct BodyTooLarge;

/// The client sent no body bytes for `body_read_timeout` while weir waited
/// for them; mapped to 408.
#[derive(Debug, thiserror::Error)]
#[error("request body sent nothing for {0:?} (body_read_timeout)")]
pub struct BodyStalled(pub Duration);

/// `BodyProgress::ended_ms` while the body has not ended.
const NOT_ENDED: u64 = u64::MAX;

/// How far a client's body got, shared by the body (read in the upstream
/// connection's task) and the request's bookkeeping and forwarding, which
/// read it from the request's task, also after the body is gone.
#[derive(Debug)]
pub struct BodyProgress {
    /// The client sending the body.
    pub client: SocketAddr,
    /// When the request arrived: `ended_ms` counts from here.
    epoch: Instant,
    /// Body bytes read so far.
    bytes: AtomicU64,
    /// weir is waiting for the client to send more: the exchange is held up
    /// by the client, not by the server.
    waiting: AtomicBool,
    /// When the whole body had been read (ms since `epoch`), or `NOT_ENDED`.
    ended_ms: AtomicU64,
    /// Set when `body_read_timeout` cut the body off.
    stalled: AtomicBool,
}

impl BodyProgress {
    /// Nothing read yet of the body of `client`'s request, which arrived at `epoch`.
    pub fn new(client: SocketAddr, epoch: Instant) -> Self {
        Self {
            client,
            epoch,
            bytes: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
            ended_ms: AtomicU64::new(NOT_ENDED),
            stalled: AtomicBool::new(false),
        }
    }

    /// Body bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether weir is waiting for the client to send more of the body.
    pub fn waiting(&self) -> bool {
        self.waiting.load(Ordering::Relaxed)
    }

    /// When the whole body had been read, if it has.
    pub fn ended_at(&self) -> Option<Instant> {
        match self.ended_ms.load(Ordering::Relaxed) {
            NOT_ENDED => None,
            ms => Some(self.epoch + Duration::from_millis(ms)),
        }
    }

    /// Whether `body_read_timeout` cut the body off.
    pub fn stalled(&self) -> bool {
        self.stalled.load(Ordering::Relaxed)
    }

    /// Notes that a read of the body found nothing (`true`) or a frame (`false`).
    pub(crate) fn set_waiting(&self, waiting: bool) {
        self.waiting.store(waiting, Ordering::Relaxed);
    }

    /// Notes that the whole body has been read, now.
    pub(crate) fn set_ended(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(NOT_ENDED - 1);
        self.ended_ms.store(ms, Ordering::Relaxed);
    }
}

/// The body weir sends upstream.
#[derive(Debug)]
pub enum RequestBody {
    /// No body (health probes, bodiless requests rebuilt for a retry).
    Empty,
    /// The client's body, streamed through.
    Client {
        /// The body as it arrives.
        body: Incoming,
        /// Bytes still allowed by `max_body_size`; `None` = no limit.
        left: Option<u64>,
        /// Bytes read and whether the body stalled, when metered.
        progress: Option<Arc<BodyProgress>>,
        /// `body_read_timeout`.
        stall: StallTimer,
    },
}

impl RequestBody {
    /// The client's body, limited to `max` bytes when set, cut off when the
    /// client sends nothing for `stall_after`, its progress kept in `progress`.
    pub fn client(
        body: Incoming,
        max: Option<u64>,
        stall_after: Duration,
        progress: Option<Arc<BodyProgress>>,
    ) -> Self {
        RequestBody::Client {
            body,
            left: max,
            progress,
            stall: StallTimer::new(stall_after),
        }
    }
}

/// `body_read_timeout`: time without progress, not a total deadline. It runs
/// only while weir waits for the client: from the moment a read of the body
/// finds nothing, until the next frame arrives. Time the upstream takes to
/// accept what was read does not count against the client.
#[derive(Debug)]
pub struct StallTimer {
    /// How long the client may send nothing.
    timeout: Duration,
    /// When weir began waiting for the next frame; `None` while not waiting.
    waiting_since: Option<Instant>,
    /// Armed at or before `waiting_since + timeout`, and moved on only when
    /// it fires early, so a steady body costs no timer update per frame.
    /// Made on the first wait: a body that came with its head has none.
    timer: Option<Pin<Box<Sleep>>>,
}

impl StallTimer {
    fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            waiting_since: None,
            timer: None,
        }
    }

    /// A frame arrived.
    fn progressed(&mut self) {
        self.waiting_since = None;
    }

    /// Called when a read found nothing: whether the client has now sent
    /// nothing for `timeout`. If not, the task is woken when it may have.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let since = *self.waiting_since.get_or_insert_with(Instant::now);
        let deadline = since + self.timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        // At most twice: a timer that fired early is moved to `deadline`.
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if timer.deadline() >= deadline {
                return true;
            }
            timer.as_mut().reset(deadline);
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let RequestBody::Client {
            body,
            left,
            progress,
            stall,
        } = self.get_mut()
        else {
            return Poll::Ready(None);
        };
        let frame = match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                let expired = stall.expired(cx);
                if let Some(progress) = progress {
                    progress.set_waiting(!expired);
                    if expired {
                        progress.stalled.store(true, Ordering::Relaxed);
                    }
                }
                return match expired {
                    false => Poll::Pending,
                    true => Poll::Ready(Some(Err(BodyStalled(stall.timeout).into()))),
                };
            }
        };
        stall.progressed();
        if let Some(progress) = progress {
            progress.set_waiting(false);
            // hyper reads no further once the body says it ended.
            if frame.is_none() || body.is_end_stream() {
                progress.set_ended();
            }
        }
        if let Some(Ok(frame)) = &frame {
            let len = frame.data_ref().map_or(0, |d| d.len() as u64);
            if let Some(left) = left.as_mut() {
                match left.checked_sub(len) {
                    Some(rest) => *left = rest,
                    None => return Poll::Ready(Some(Err(BodyTooLarge.into()))),
                }
            }
            if let Some(progress) = progress {
                progress.bytes.fetch_add(len, Ordering::Relaxed);
            }
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Client { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Client { body, .. } => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(300);

    /// Whether the timer says the client stalled, as a read that found nothing asks it.
    async fn expired(stall: &mut StallTimer) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(stall.expired(cx))).await
    }

    async fn advance(by: Duration) {
        tokio::time::advance(by).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_sends_nothing_expires_after_the_timeout() {
        let mut stall = StallTimer::new(TIMEOUT);
        assert!(!expired(&mut stall).await);
        advance(TIMEOUT - Duration::from_millis(1)).await;
        assert!(!expired(&mut stall).await);
        advance(Duration::from_millis(1)).await;
        assert!(expired(&mut stall).await);
    }

    #[tokio::test(start_paused = true)]
    async fn each_frame_starts_the_wait_afresh() {
        let mut stall = StallTimer::new(TIMEOUT);
        // Far longer than the timeout in total, never that long between frames.
        for _ in 0..20 {
            assert!(!expired(&mut stall).await);
            advance(TIMEOUT - Duration::from_millis(50)).await;
            stall.progressed();
        }
        assert!(!expired(&mut stall).await);
        advance(TIMEOUT).await;
        assert!(expired(&mut stall).await);
    }

    #[tokio::test(start_paused = true)]
    async fn time_the_upstream_takes_does_not_count_against_the_client() {
        let mut stall = StallTimer::new(TIMEOUT);
        assert!(!expired(&mut stall).await);
        stall.progressed();
        // The frame is with the upstream, which is slow to take it: weir does
        // not read, so the client is not waited for.
        advance(TIMEOUT * 10).await;
        assert!(!expired(&mut stall).await, "the wait begins now");
        advance(TIMEOUT - Duration::from_millis(1)).await;
        assert!(!expired(&mut stall).await);
        advance(Duration::from_millis(1)).await;
        assert!(expired(&mut stall).await);
    }
}
