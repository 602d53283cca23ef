//! The request body weir sends upstream: the client's, streamed through
//! frame by frame (never buffered whole), limited and metered on the way.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// Errors a body can fail with while weir streams it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The client sent more than `max_body_size`; mapped to 413.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than max_body_size")]
pub struct BodyTooLarge;

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
        /// Counts the bytes read, for the metrics, when metered.
        counted: Option<Arc<AtomicU64>>,
    },
}

impl RequestBody {
    /// The client's body, limited to `max` bytes when set, its bytes added to `counted`.
    pub fn client(body: Incoming, max: Option<u64>, counted: Option<Arc<AtomicU64>>) -> Self {
        RequestBody::Client {
            body,
            left: max,
            counted,
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
            counted,
        } = self.get_mut()
        else {
            return Poll::Ready(None);
        };
        let frame = ready!(Pin::new(body).poll_frame(cx));
        if let Some(Ok(frame)) = &frame {
            let len = frame.data_ref().map_or(0, |d| d.len() as u64);
            if let Some(left) = left.as_mut() {
                match left.checked_sub(len) {
                    Some(rest) => *left = rest,
                    None => return Poll::Ready(Some(Err(BodyTooLarge.into()))),
                }
            }
            if let Some(counted) = counted {
                counted.fetch_add(len, Ordering::Relaxed);
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
