//! Request heads hyper cannot read — malformed, larger than
//! `max_header_size`, more lines than `max_headers` — and heads not finished
//! within `header_read_timeout` (408), answered like every
//! other status weir sends itself: the short plain-text body, a log line
//! with the reason, an access log line, and a count in `weir_requests_total`
//! under the unrouted upstream `""`.
//!
//! hyper answers such a head on its own, with an empty body, and only then
//! reports the error; the socket held that answer back (see
//! [`super::parking`]). weir sends its own with the same status, then closes.

use std::fmt::Display;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use http::{Method, Request, StatusCode, Uri, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::access::AccessRecord;
use crate::exchange::Recording;
use crate::pass::plain_text;
use crate::snapshot::Snapshot;

/// How long the client may go on sending once answered, before the close.
const LINGER: Duration = Duration::from_secs(2);
/// How much of what it sends then is read and thrown away, at most.
const LINGER_BYTES: usize = 1 << 20;

/// What weir knows of a connection whose request head hyper could not read.
pub(super) struct Unreadable<'a> {
    /// The status hyper chose, and weir answers with.
    pub(super) status: StatusCode,
    /// Why the head could not be read.
    pub(super) reason: &'a (dyn Display + Sync),
    /// The bytes of the head hyper had read.
    pub(super) head: &'a [u8],
    /// The client.
    pub(super) peer: SocketAddr,
}

/// Answers `what` on `io`, records it, and closes the connection.
pub(super) async fn answer<I>(mut io: I, what: Unreadable<'_>, snapshot: &Snapshot)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let Unreadable {
        status,
        reason,
        head,
        peer,
    } = what;
    let started = Instant::now();
    warn!(status = status.as_u16(), client = %peer, %reason, "request failed");
    let body = plain_text(status);
    let sent = async {
        io.write_all(&response(status, &body)).await?;
        io.flush().await?;
        io.shutdown().await
    }
    .await;
    let ended = Instant::now();
    if let Some(log) = &snapshot.access {
        let mut record = match request_line(head) {
            Some(parts) => AccessRecord::new(log.clone(), started, peer.ip(), &parts),
            None => AccessRecord::without_request_line(log.clone(), started, peer.ip()),
        };
        record.status = status;
        let bytes = if sent.is_ok() { body.len() as u64 } else { 0 };
        record.write(bytes, sent.is_ok(), ended);
    }
    let mut metrics = Recording::new(snapshot.stats.unrouted.clone(), started);
    metrics.status = status.as_u16();
    metrics.finish(0, None, ended);
    match sent {
        Ok(()) => linger(&mut io).await,
        Err(error) => debug!(client = %peer, %error, "could not send the answer"),
    }
}

/// weir's answer as it goes on the wire; the connection closes after it.
fn response(status: StatusCode, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\
         connection: close\r\ndate: {}\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
        httpdate::fmt_http_date(SystemTime::now()),
    )
    .into_bytes()
}

/// The head's request line, for the access log, if it can be read.
fn request_line(head: &[u8]) -> Option<http::request::Parts> {
    let mut no_headers: [httparse::Header<'_>; 0] = [];
    let mut req = httparse::Request::new(&mut no_headers);
    // An error past the request line (a header, too many of them) leaves it read.
    let _ = req.parse(head);
    let method = Method::from_bytes(req.method?.as_bytes()).ok()?;
    let uri: Uri = req.path?.parse().ok()?;
    let version = match req.version? {
        0 => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .version(version)
        .body(())
        .ok()?;
    Some(req.into_parts().0)
}

/// Reads, for a while, what the client still sends: closing a socket with
/// unread bytes resets the connection, and the reset can destroy the answer
/// before the client reads it (RFC 9112 §9.6).
async fn linger<I: AsyncRead + Unpin>(io: &mut I) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut left = LINGER_BYTES;
    let drain = async {
        while left > 0 {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_line_is_read_past_a_bad_header() {
        let parts = request_line(b"POST /a?b=1 HTTP/1.0\r\nbad header\r\n\r\n").expect("read");
        assert_eq!(parts.method, Method::POST);
        assert_eq!(parts.uri, "/a?b=1");
        assert_eq!(parts.version, Version::HTTP_10);
        let parts = request_line(b"\r\nGET / HTTP/1.1\r\nHost: a\r\nX: ").expect("read");
        assert_eq!(parts.uri, "/");
    }

    #[test]
    fn an_unreadable_request_line_is_none() {
        assert!(request_line(b"").is_none());
        assert!(request_line(b"\x16\x03\x01\x02\x00").is_none());
        assert!(request_line(b"GET /aaaa").is_none(), "cut short");
        assert!(request_line(b"GET http://[::1/ HTTP/1.1\r\n\r\n").is_none());
    }

    #[test]
    fn the_answer_is_a_complete_plain_text_response() {
        let body = plain_text(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let bytes = response(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, &body);
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut resp = httparse::Response::new(&mut headers);
        let len = match resp.parse(&bytes).expect("parses") {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => panic!("incomplete head"),
        };
        assert_eq!(resp.code, Some(431));
        let header = |name: &str| {
            resp.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
        };
        assert_eq!(header("connection").as_deref(), Some("close"));
        assert_eq!(header("content-length"), Some(body.len().to_string()));
        assert!(header("date").is_some());
        assert_eq!(&bytes[len..], b"431 Request Header Fields Too Large\n");
    }
}
