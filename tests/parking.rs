//! Idle HTTP/1.1 keep-alive connections are parked (hyper's buffers released)
//! and served again when their client sends, with nothing lost.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until `count` complete responses (each ending in the backend's
/// `Content-Length` body) have arrived; returns the text. Bounded by 5 s.
async fn read_responses(stream: &mut TcpStream, count: usize) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..100 {
        let text = String::from_utf8_lossy(&out);
        if text.matches("HTTP/1.1 200").count() == count && text.ends_with("parked") {
            break;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("answered within 5 s")
            .expect("read");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits (up to 5 s) for the proxy to close `stream` without sending anything.
async fn assert_closed_silently(stream: &mut TcpStream) {
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("closed within 5 s")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without a word");
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: park.test\r\n\r\n";

async fn proxy_with(server_keys: &str) -> (Proxy, Backend) {
    let app = spawn_backend("parked").await;
    let toml = with_server_keys(
        &one_upstream("round_robin", &[server(app.addr)], ""),
        server_keys,
    );
    (spawn_proxy(&toml).await, app)
}

/// Sends a request on a new connection and waits until the proxy has parked it.
async fn parked_connection(proxy: &Proxy) -> TcpStream {
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream.write_all(GET).await.expect("write");
    read_responses(&mut stream, 1).await;
    assert_eq!(
        proxy.connections_parked(),
        0,
        "not parked while the answer is fresh"
    );
    wait_until(|| proxy.connections_parked() == 1).await;
    stream
}

#[tokio::test]
async fn a_parked_connection_serves_split_and_pipelined_requests() {
    let (proxy, app) = proxy_with("").await;
    let mut stream = parked_connection(&proxy).await;

    // A head that arrives in pieces wakes the connection with its first piece.
    let (first, rest) = GET.split_at(7);
    stream.write_all(first).await.expect("write");
    wait_until(|| proxy.connections_parked() == 0).await;
    stream.write_all(rest).await.expect("write");
    let answer = read_responses(&mut stream, 1).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Parked again, then woken by two pipelined requests in one write.
    wait_until(|| proxy.connections_parked() == 1).await;
    stream.write_all(&[GET, GET].concat()).await.expect("write");
    let answers = read_responses(&mut stream, 2).await;
    assert_eq!(answers.matches("HTTP/1.1 200").count(), 2, "{answers}");
    assert_eq!(app.hits(), 4);
}

#[tokio::test]
async fn a_parked_connection_still_closes_at_idle_timeout() {
    let (proxy, _app) = proxy_with("idle_timeout = \"2s\"").await;
    let started = Instant::now();
    let mut stream = parked_connection(&proxy).await;
    assert_closed_silently(&mut stream).await;
    let closed = started.elapsed();
    assert!(
        closed >= Duration::from_millis(1900) && closed <= Duration::from_millis(3000),
        "closed after {closed:?}, expected about 2 s"
    );
    wait_until(|| proxy.connections_parked() == 0).await;
}

#[tokio::test]
async fn shutdown_closes_parked_connections_at_once() {
    let (proxy, _app) = proxy_with("").await;
    let mut stream = parked_connection(&proxy).await;
    proxy.shutdown().await;
    assert_closed_silently(&mut stream).await;
}

#[tokio::test]
async fn a_pipelined_head_cut_short_gets_the_header_timeout() {
    let (proxy, app) = proxy_with("header_read_timeout = \"1s\"\nidle_timeout = \"30s\"").await;
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    // The second head starts arriving while the first request is in progress.
    stream
        .write_all(&[GET, &GET[..9]].concat())
        .await
        .expect("write");
    read_responses(&mut stream, 1).await;
    let answered = Instant::now();
    // Idle after a second, then the header deadline for the rest of the head:
    // closed within about two seconds, not at idle_timeout.
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        for _ in 0..100 {
            if matches!(stream.read(&mut buf).await, Ok(0) | Err(_)) {
                return;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "still open 5 s after the answer");
    let after = answered.elapsed();
    assert!(
        after >= Duration::from_millis(900) && after <= Duration::from_millis(3500),
        "closed {after:?} after the answer"
    );
    assert_eq!(app.hits(), 1);
    assert_eq!(proxy.connections_parked(), 0);
}
