//! The body of an upstream response, from whichever client read it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::h1;
use crate::error::UpstreamError;

/// An upstream response body.
#[derive(Debug)]
pub enum UpstreamBody {
    /// From hyper's client: an h2c upstream, or an upgrade request's answer.
    Hyper(Incoming),
    /// From weir's own HTTP/1.1 client.
    H1(h1::Body),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        match self.get_mut() {
            UpstreamBody::Hyper(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(UpstreamError::from))),
            UpstreamBody::H1(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Hyper(body) => body.is_end_stream(),
            UpstreamBody::H1(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Hyper(body) => body.size_hint(),
            UpstreamBody::H1(body) => body.size_hint(),
        }
    }
}
