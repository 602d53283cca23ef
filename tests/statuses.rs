//! Every status weir answers with itself, each with a short plain-text body.

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn no_route_is_404() {
    let app = spawn_backend("app").await;
    let toml = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
[log]
access = "off"
[[upstream]]
name = "app"
servers = ["{}"]
[[route]]
host = "known.test"
upstream = "app"
"#,
        app.addr
    );
    let proxy = spawn_proxy(&toml).await;
    let (status, body) = get(&proxy.url("/")).await;
    assert_eq!(status, 404);
    assert_eq!(body, "404 Not Found\n");
    assert_eq!(app.hits(), 0);
}

#[tokio::test]
async fn closed_port_is_502_then_503_once_every_server_is_out() {
    let servers = [server(closed_port().await), server(closed_port().await)];
    let proxy = spawn_proxy(&one_upstream("round_robin", &servers, "")).await;
    let (status, body) = get(&proxy.url("/")).await;
    assert_eq!(status, 502);
    assert_eq!(body, "502 Bad Gateway\n");
    // Both servers failed once (max_fails = 1): they are out for fail_timeout.
    let started = Instant::now();
    let (status, body) = get(&proxy.url("/")).await;
    assert_eq!(status, 503);
    assert_eq!(body, "503 Service Unavailable\n");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "503 is immediate"
    );
}

#[tokio::test]
async fn slow_upstream_is_504_at_response_timeout() {
    let slow = spawn_backend_with(|_req| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Response::new(full("late"))
    })
    .await;
    let servers = [server(slow.addr)];
    let proxy = spawn_proxy(&one_upstream(
        "round_robin",
        &servers,
        "response_timeout = \"300ms\"",
    ))
    .await;
    let started = Instant::now();
    let (status, body) = get(&proxy.url("/")).await;
    let took = started.elapsed();
    assert_eq!(status, 504);
    assert_eq!(body, "504 Gateway Timeout\n");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(2000),
        "took {took:?}"
    );
}

/// Sends raw bytes and returns what the proxy answered (until it closes, max 5 s).
async fn raw_exchange(proxy: &Proxy, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out));
    let _ = read.await.expect("proxy answered and closed within 5 s");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn malformed_request_is_400_and_oversized_head_is_431() {
    let app = spawn_backend("app").await;
    let proxy = spawn_proxy(&one_upstream("round_robin", &[server(app.addr)], "")).await;

    let answer = raw_exchange(&proxy, b"GET / HTTP/1.1\r\nHost: a\r\nbad header\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    let huge = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "x".repeat(128 * 1024)
    );
    let answer = raw_exchange(&proxy, huge.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(app.hits(), 0);
}

#[tokio::test]
async fn garbage_from_clients_never_takes_the_proxy_down() {
    let app = spawn_backend("app").await;
    let proxy = spawn_proxy(&one_upstream("round_robin", &[server(app.addr)], "")).await;
    let inputs: Vec<Vec<u8>> = vec![
        b"\r\n\r\n".to_vec(),
        b"GET\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n".to_vec(),
        b"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n".to_vec(),
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"
            .to_vec(),
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        b"GET http://[::1/ HTTP/1.1\r\n\r\n".to_vec(),
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n".to_vec(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00garbage".to_vec(),
        (0..=255u8).cycle().take(4096).collect(),
    ];
    for input in &inputs {
        let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
        let _ = stream.write_all(input).await;
        let _ = stream.shutdown().await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
        let answer = String::from_utf8_lossy(&out);
        // The HTTP/2 preface gets HTTP/2 frames (SETTINGS, GOAWAY) back.
        let h2 = input.starts_with(b"PRI * HTTP/2.0");
        assert!(
            h2 || answer.is_empty() || answer.starts_with("HTTP/"),
            "odd answer to {input:?}: {answer}"
        );
        assert!(
            !answer.starts_with("HTTP/1.1 5"),
            "a server error for {input:?}: {answer}"
        );
    }
    assert_eq!(get(&proxy.url("/")).await.1, "app");
}
