//! `max_header_size` and `max_headers` hold to the byte and to the line, for
//! HTTP/1.1 heads however they arrive, and for HTTP/2 header lists.

mod common;
mod proto_support;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Empty;
use proto_support::h2_client;
use tokio::net::TcpStream;

const START: &str = "GET / HTTP/1.1\r\nHost: limits.test\r\nX-Pad: ";
const END: &str = "\r\n\r\n";

/// A request head of exactly `len` bytes, request line to blank line.
fn head_of(len: usize) -> Vec<u8> {
    let pad = len - START.len() - END.len();
    format!("{START}{}{END}", "p".repeat(pad)).into_bytes()
}

/// A request head with `lines` header lines, `Host` included.
fn head_with_lines(lines: usize) -> Vec<u8> {
    let mut head = String::from("GET / HTTP/1.1\r\nHost: limits.test\r\n");
    for i in 1..lines {
        head.push_str(&format!("X-Line-{i}: {i}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Sends `head` on a new connection in pieces of `piece` bytes and reads the answer's status.
async fn status_for(proxy: &Proxy, head: &[u8], piece: usize) -> u16 {
    let mut client = RawClient::connect(proxy.addr).await;
    for part in head.chunks(piece) {
        if client.try_send(part).await.is_err() {
            break;
        }
    }
    client.response().await.expect("an answer").status
}

async fn proxy_with(backend: &RecordingBackend, keys: &str) -> Proxy {
    let toml = one_upstream("round_robin", &[server(backend.addr)], "");
    spawn_proxy(&with_server_keys(&toml, keys)).await
}

#[tokio::test]
async fn heads_past_the_default_64_kib_get_431_and_reach_no_server() {
    let backend = spawn_recording_backend().await;
    let proxy = proxy_with(&backend, "").await;
    for len in [65_537, 66_000, 80_000, 100_000] {
        assert_eq!(
            status_for(&proxy, &head_of(len), len).await,
            431,
            "a {len}-byte head in one write"
        );
    }
    assert_eq!(backend.received(), "", "no oversized head was forwarded");
    assert_eq!(status_for(&proxy, &head_of(65_536), 65_536).await, 200);
    assert!(backend.received().contains("x-pad: ppp"));
}

#[tokio::test]
async fn a_head_sent_in_pieces_is_measured_to_the_byte() {
    let backend = spawn_recording_backend().await;
    let proxy = proxy_with(&backend, "max_header_size = \"16KiB\"").await;
    assert_eq!(status_for(&proxy, &head_of(16_385), 1000).await, 431);
    assert_eq!(status_for(&proxy, &head_of(16_385), 16_385).await, 431);
    assert_eq!(backend.received(), "");
    assert_eq!(status_for(&proxy, &head_of(16_384), 1000).await, 200);
    assert_eq!(status_for(&proxy, &head_of(16_384), 16_384).await, 200);
}

#[tokio::test]
async fn a_pipelined_head_after_a_small_one_is_held_to_the_limit_too() {
    let backend = spawn_recording_backend().await;
    let proxy = proxy_with(&backend, "max_header_size = \"16KiB\"").await;
    let mut client = RawClient::connect(proxy.addr).await;
    let mut both = b"GET /first HTTP/1.1\r\nHost: limits.test\r\n\r\n".to_vec();
    both.extend_from_slice(&head_of(16_385));
    client.send(&both).await;
    assert_eq!(client.response().await.expect("first").status, 200);
    assert_eq!(client.response().await.expect("second").status, 431);
    assert_eq!(backend.received().matches("GET ").count(), 1);
}

#[tokio::test]
async fn more_than_100_header_lines_get_431_by_default() {
    let backend = spawn_recording_backend().await;
    let proxy = proxy_with(&backend, "").await;
    let head = head_with_lines(101);
    assert_eq!(status_for(&proxy, &head, head.len()).await, 431);
    assert_eq!(backend.received(), "");
    // Forwarded, with weir's own X-Forwarded-* and X-Real-IP added: more
    // than the backend's own (hyper's) 100 lines, which is its business.
    let head = head_with_lines(100);
    status_for(&proxy, &head, head.len()).await;
    assert!(backend.received().contains("x-line-99: 99"));
}

#[tokio::test]
async fn max_headers_sets_the_line_limit() {
    let backend = spawn_recording_backend().await;
    let proxy = proxy_with(&backend, "max_headers = 20").await;
    let head = head_with_lines(21);
    assert_eq!(status_for(&proxy, &head, head.len()).await, 431);
    assert_eq!(backend.received(), "");
    let head = head_with_lines(20);
    assert_eq!(status_for(&proxy, &head, head.len()).await, 200);
}

/// An h2c GET whose header list (RFC 9113 §6.5.2: name + value + 32 per field,
/// pseudo-headers included) is exactly `size` bytes.
async fn h2_status_for(proxy: &Proxy, size: usize) -> Result<StatusCode, hyper::Error> {
    let authority = proxy.addr.to_string();
    let field = |name: &str, value: usize| name.len() + value + 32;
    let fixed = field(":method", 3)
        + field(":scheme", 4)
        + field(":authority", authority.len())
        + field(":path", 1)
        + field("x-pad", 0);
    let req = Request::get(format!("http://{authority}/"))
        .header("x-pad", "p".repeat(size - fixed))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let tcp = TcpStream::connect(proxy.addr).await.expect("connect");
    let mut sender = h2_client(tcp).await;
    let sent = tokio::time::timeout(std::time::Duration::from_secs(10), sender.send_request(req));
    Ok(sent.await.expect("an answer within 10 s")?.status())
}

#[tokio::test]
async fn http2_header_lists_are_held_to_max_header_size_to_the_byte() {
    let backend = spawn_recording_backend().await;
    let proxy = proxy_with(&backend, "max_header_size = \"16KiB\"").await;
    // The h2 layer refuses the stream with 431 (RFC 9113 §10.5.1).
    let over = h2_status_for(&proxy, 16_385).await;
    assert!(
        matches!(over, Ok(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)),
        "{over:?}"
    );
    assert_eq!(backend.received(), "");
    let at = h2_status_for(&proxy, 16_384).await.expect("answered");
    assert_eq!(at, StatusCode::OK);
    // Not the fixed 64 KiB of before.
    let backend = spawn_recording_backend().await;
    let proxy = proxy_with(&backend, "max_header_size = \"128KiB\"").await;
    let big = h2_status_for(&proxy, 100_000).await.expect("answered");
    assert_eq!(big, StatusCode::OK);
}

#[tokio::test]
async fn a_reload_keeps_the_limits_of_the_start() {
    let backend = spawn_recording_backend().await;
    let toml = one_upstream("round_robin", &[server(backend.addr)], "");
    let mut proxy = spawn_proxy(&toml).await;
    let changed = with_server_keys(&toml, "max_header_size = \"16KiB\"\nmax_headers = 10");
    assert!(
        proxy.reload(&changed).await,
        "the rest of the reload applies"
    );
    assert_eq!(status_for(&proxy, &head_of(60_000), 60_000).await, 200);
    let head = head_with_lines(50);
    assert_eq!(status_for(&proxy, &head, head.len()).await, 200);
}
