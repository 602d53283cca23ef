//! Why weir answered a request itself, and with which status.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

/// A request weir could not forward, mapped to a status in one place.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route matches the request's host and path.
    #[error("no route matches")]
    NoRoute,
    /// Every server of the upstream is down or draining.
    #[error("no usable server in upstream {upstream}")]
    NoServer {
        /// The upstream's name.
        upstream: String,
    },
    /// Connecting to the upstream failed (after any retries).
    #[error("connect to {server} failed: {source}")]
    Connect {
        /// The last server tried.
        server: SocketAddr,
        /// What went wrong.
        source: ConnectError,
    },
    /// The exchange with the upstream failed before a response head arrived.
    #[error("upstream {server} failed: {}", Causes(source))]
    Upstream {
        /// The server.
        server: SocketAddr,
        /// What went wrong.
        source: UpstreamError,
    },
    /// The upstream did not send a response head within `response_timeout`.
    #[error("upstream {server} did not answer within {timeout:?}")]
    Timeout {
        /// The server.
        server: SocketAddr,
        /// The configured `response_timeout`.
        timeout: Duration,
    },
    /// The request body is larger than `max_body_size`.
    #[error("request body larger than max_body_size")]
    BodyTooLarge,
    /// Reading the client's request body failed (the client went away mid-upload).
    #[error("client request body failed: {}", Causes(.0))]
    ClientBody(UpstreamError),
    /// The client's request body sent nothing for `body_read_timeout`, so its
    /// request to the upstream was cancelled.
    #[error("request body stalled past body_read_timeout; request to {server} of upstream {upstream} cancelled")]
    BodyStalled {
        /// The upstream's name.
        upstream: String,
        /// The server the request was going to.
        server: SocketAddr,
    },
    /// The route's `allow` / `deny` lists refuse the client.
    #[error("client {client} refused by the route's allow/deny lists")]
    Forbidden {
        /// The client address weir resolved.
        client: std::net::IpAddr,
    },
    /// The route's rate limit refuses the request; its bucket has room again after `retry_after`.
    #[error("over the rate limit of route {route}; room again in {retry_after:?}")]
    RateLimited {
        /// The route's label.
        route: Arc<str>,
        /// Until one more request would be allowed.
        retry_after: Duration,
    },
    /// A global rate limit could not ask Redis, and `[redis] fail = "closed"`.
    #[error("rate limit of route {route} cannot reach Redis, and [redis] fail = \"closed\"")]
    LimitUnavailable {
        /// The route's label.
        route: Arc<str>,
    },
    /// The request's host is missing, doubled or malformed.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The upstream switched protocols though the request asked for no upgrade.
    #[error(
        "upstream {server} answered 101 Switching Protocols to a request that asked for no upgrade"
    )]
    UnsolicitedUpgrade {
        /// The server.
        server: SocketAddr,
    },
}

/// Why a request's host is refused with 400 (RFC 9112 §3.2, RFC 9113 §8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// An HTTP/1.1 request without `Host`.
    #[error("HTTP/1.1 request without a Host header")]
    Missing,
    /// More than one `Host` header.
    #[error("more than one Host header")]
    Several,
    /// A `Host` that is not `host[:port]`.
    #[error("Host header is not a valid host[:port]")]
    Invalid,
    /// An absolute-form target (or `:authority`) that is not `host[:port]`, such as one with userinfo.
    #[error("request target's authority is not a valid host[:port]")]
    InvalidTarget,
    /// HTTP/2 `:authority` and `Host` name different hosts.
    #[error(":authority and Host disagree")]
    Mismatch,
}

impl ProxyError {
    /// The status weir answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::NoServer { .. } | ProxyError::LimitUnavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Connect { .. }
            | ProxyError::Upstream { .. }
            | ProxyError::UnsolicitedUpgrade { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::ClientBody(_) | ProxyError::Host(_) => StatusCode::BAD_REQUEST,
            ProxyError::BodyStalled { .. } => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// Whether it is a route's policy working as configured (a rate limit),
    /// logged at debug rather than warn: a client over its limit is no fault.
    pub fn is_policy(&self) -> bool {
        matches!(
            self,
            ProxyError::RateLimited { .. } | ProxyError::LimitUnavailable { .. }
        )
    }

    /// The server a failed request is counted against, if any was tried.
    pub fn failed_server(&self) -> Option<SocketAddr> {
        match self {
            ProxyError::Connect { server, .. }
            | ProxyError::Upstream { server, .. }
            | ProxyError::Timeout { server, .. }
            | ProxyError::UnsolicitedUpgrade { server } => Some(*server),
            ProxyError::NoRoute
            | ProxyError::Forbidden { .. }
            | ProxyError::RateLimited { .. }
            | ProxyError::LimitUnavailable { .. }
            | ProxyError::NoServer { .. }
            | ProxyError::BodyTooLarge
            | ProxyError::ClientBody(_)
            | ProxyError::Host(_)
            | ProxyError::BodyStalled { .. } => None,
        }
    }
}

/// An error with the errors that caused it, `a: b: c`: hyper's own message
/// (`error reading a body from connection`) rarely says what went wrong.
struct Causes<'a>(&'a dyn std::error::Error);

impl fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        // Bounded by the depth of the error chain.
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

/// What went wrong in an exchange with a server: in hyper's client (h2c
/// upstreams and upgrades) or in weir's own HTTP/1.1 client.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// hyper's client failed.
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    /// Reading from or writing to the server failed.
    #[error("upstream connection failed")]
    Io(#[source] io::Error),
    /// The server closed the connection before its response was complete.
    #[error("connection closed before the response was complete")]
    Closed,
    /// The response head is not HTTP/1.1 as `httparse` reads it.
    #[error("malformed response head")]
    Head(#[source] httparse::Error),
    /// The response breaks a rule of HTTP/1.1 framing (RFC 9112).
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    /// The request body failed on its way: the client's doing.
    #[error("request body failed")]
    RequestBody(#[source] crate::body::BoxError),
    /// The request body is longer or shorter than its `Content-Length` says;
    /// it is cut off rather than sent wrong.
    #[error("request body does not match its content-length")]
    BodyLength,
}

impl UpstreamError {
    /// Whether the client's request body failed, and not the server.
    pub fn is_client_body(&self) -> bool {
        match self {
            UpstreamError::Hyper(error) => error.is_user(),
            UpstreamError::RequestBody(_) | UpstreamError::BodyLength => true,
            _ => false,
        }
    }
}

/// Why a connection to a server could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect did not finish within `connect_timeout`.
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    /// TCP connect failed (refused, unreachable, …).
    #[error("connect failed: {0}")]
    Io(#[from] io::Error),
    /// The HTTP/1.1 handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(#[from] hyper::Error),
}
