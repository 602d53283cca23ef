//! Sending a request on an upstream connection: weir's own HTTP/1.1 client,
//! or hyper's (HTTP/1.1 for upgrades, HTTP/2 for h2c).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use futures_util::future;
use futures_util::FutureExt as _;
use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2, TrySendError};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::body::UpstreamBody;
use super::h1::{self, SendError};
use crate::body::RequestBody;
use crate::error::UpstreamError;
use crate::headers::Forwarded;

/// The sending half of one upstream connection.
#[derive(Debug)]
pub(crate) enum Sender {
    /// weir's own HTTP/1.1 client; the connection moves into the response
    /// body, and from there back to its pool.
    Http1(Option<h1::Conn>),
    /// hyper's HTTP/1.1 client, for a request that asks for an upgrade.
    Upgrade(http1::SendRequest<RequestBody>),
    /// A handle on a shared HTTP/2 connection: cloned per request, multiplexed.
    H2 {
        /// The shared connection.
        sender: http2::SendRequest<RequestBody>,
        /// `:authority` for requests without a `Host` (HTTP/2 requires one).
        fallback: Authority,
    },
}

impl Sender {
    /// Sends `req` with the forwarding headers `forwarded` (unless they are
    /// in its map already); when it can go again on another connection, the
    /// error gives the request back.
    ///
    /// Boxed, whichever client sends: the request's future then holds a
    /// pointer, not the largest of the three (weir's own client's future
    /// holds the request while it is written).
    pub(crate) fn try_send_request(
        &mut self,
        mut req: Request<RequestBody>,
        forwarded: Option<&Forwarded<'_>>,
    ) -> Sending {
        if let (Some(forwarded), Sender::Upgrade(_) | Sender::H2 { .. }) = (forwarded, &*self) {
            forwarded.insert_into(req.headers_mut());
        }
        match self {
            Sender::Http1(conn) => match conn.take() {
                Some(conn) => Box::pin(
                    h1::send(conn, req, forwarded)
                        .map(|sent| sent.map(|resp| resp.map(UpstreamBody::H1))),
                ),
                // A connection carries one request: a second is given back.
                None => Box::pin(future::ready(Err(SendError {
                    error: UpstreamError::Closed,
                    request: Some(Box::new(req)),
                }))),
            },
            Sender::Upgrade(sender) => Box::pin(sender.try_send_request(req).map(from_hyper)),
            Sender::H2 { sender, fallback } => Box::pin(
                sender
                    .try_send_request(for_h2(req, fallback))
                    .map(from_hyper),
            ),
        }
    }
}

/// A request on its way: the upstream's response head, or why it did not come.
pub(crate) type Sending =
    Pin<Box<dyn Future<Output = Result<Response<UpstreamBody>, SendError>> + Send>>;

/// hyper's answer in the shape of weir's own client's.
fn from_hyper(
    sent: Result<Response<Incoming>, TrySendError<Request<RequestBody>>>,
) -> Result<Response<UpstreamBody>, SendError> {
    match sent {
        Ok(resp) => Ok(resp.map(UpstreamBody::Hyper)),
        Err(mut error) => Err(SendError {
            request: error.take_message().map(Box::new),
            error: UpstreamError::Hyper(error.into_error()),
        }),
    }
}

/// Rewrites an origin-form HTTP/1.1-style request for an HTTP/2 upstream:
/// `:scheme` and `:authority` come from the URI, so the `Host` header
/// becomes the authority (RFC 9113 §8.3.1) and is then dropped.
pub(crate) fn for_h2(mut req: Request<RequestBody>, fallback: &Authority) -> Request<RequestBody> {
    if req.uri().scheme().is_some() {
        return req;
    }
    let authority = req
        .headers_mut()
        .remove(header::HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        .unwrap_or_else(|| fallback.clone());
    let mut parts = req.uri().clone().into_parts();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = Version::HTTP_2;
    req
}

/// How long an idle h2c connection waits for a PING answer before it is considered dead.
const H2_KEEPALIVE: Duration = Duration::from_secs(20);

/// Opens an h2c (prior knowledge) connection on `stream` and drives it in a task.
pub(crate) async fn handshake_h2(
    stream: TcpStream,
    addr: SocketAddr,
) -> Result<(http2::SendRequest<RequestBody>, Authority), hyper::Error> {
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEPALIVE)
        .keep_alive_timeout(H2_KEEPALIVE)
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        if let Err(error) = conn.await {
            tracing::debug!(server = %addr, %error, "upstream h2 connection ended with an error");
        }
    });
    let fallback = Authority::try_from(addr.to_string().as_str())
        .unwrap_or_else(|_| Authority::from_static("localhost"));
    Ok((sender, fallback))
}

/// `te: trailers`, the one `TE` value HTTP/2 allows; gRPC servers require it.
pub(crate) fn te_trailers() -> HeaderValue {
    HeaderValue::from_static("trailers")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_becomes_the_authority() {
        let req = Request::get("/a?b=1")
            .header("host", "site.test:8080")
            .body(RequestBody::Empty)
            .expect("request");
        let req = for_h2(req, &Authority::from_static("127.0.0.1:1"));
        assert_eq!(req.uri(), "http://site.test:8080/a?b=1");
        assert!(req.headers().get("host").is_none());
        assert_eq!(req.version(), Version::HTTP_2);
    }

    #[test]
    fn no_host_falls_back_to_the_server_address() {
        let req = Request::get("/").body(RequestBody::Empty).expect("request");
        let req = for_h2(req, &Authority::from_static("127.0.0.1:1"));
        assert_eq!(req.uri(), "http://127.0.0.1:1/");
    }
}
