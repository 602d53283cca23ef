//! Timeouts and limits: slow upstreams, slow or idle clients, oversized requests.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn slow_backend(delay: Duration) -> Backend {
    spawn_backend_with(move |_req| async move {
        tokio::time::sleep(delay).await;
        Response::new(full("late"))
    })
    .await
}

#[tokio::test]
async fn response_timeout_gives_504_on_time() {
    let slow = slow_backend(Duration::from_secs(10)).await;
    let toml = one_upstream(
        "round_robin",
        &[server(slow.addr)],
        "response_timeout = \"1s\"",
    );
    let proxy = spawn_proxy(&toml).await;
    let started = Instant::now();
    let (status, _) = get(&proxy.url("/")).await;
    let took = started.elapsed();
    assert_eq!(status, 504);
    assert!(
        took >= Duration::from_millis(1000) && took <= Duration::from_millis(1500),
        "504 after {took:?}, expected 1 s ± 0.5 s"
    );
}

#[tokio::test]
async fn request_timeout_bounds_the_whole_exchange() {
    let slow = slow_backend(Duration::from_secs(10)).await;
    let app = spawn_backend("fast").await;
    let toml = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
[log]
access = "off"
[[upstream]]
name = "slow"
servers = ["{}"]
[[upstream]]
name = "fast"
servers = ["{}"]
[[route]]
path = "/slow"
upstream = "slow"
request_timeout = "500ms"
[[route]]
path = "/"
upstream = "fast"
"#,
        slow.addr, app.addr
    );
    let proxy = spawn_proxy(&toml).await;
    let started = Instant::now();
    assert_eq!(get(&proxy.url("/slow")).await.0, 504);
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert_eq!(get(&proxy.url("/")).await.1, "fast");
}

/// Reads until the proxy closes the connection; returns what it sent and when it closed.
async fn read_until_closed(stream: &mut TcpStream, started: Instant) -> (String, Duration) {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    for _ in 0..1000 {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the proxy kept the connection open for 10 s"),
        }
    }
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn a_slowloris_client_is_cut_off_at_header_read_timeout() {
    let app = spawn_backend("app").await;
    let toml = with_server_keys(
        &one_upstream("round_robin", &[server(app.addr)], ""),
        "header_read_timeout = \"1s\"",
    );
    let proxy = spawn_proxy(&toml).await;
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let started = Instant::now();
    let head =
        b"GET / HTTP/1.1\r\nHost: slow.test\r\nX-Drip: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut = None;
    // One byte every 100 ms: the whole head would take over 6 s.
    for byte in head.iter() {
        if stream.write_all(&[*byte]).await.is_err() {
            cut = Some(started.elapsed());
            break;
        }
        let mut probe = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut = Some(started.elapsed());
                break;
            }
            _ => {}
        }
    }
    let cut = cut.expect("the proxy never closed the slow connection");
    assert!(
        cut >= Duration::from_millis(900) && cut <= Duration::from_millis(1500),
        "cut after {cut:?}, expected about 1 s"
    );
    assert_eq!(app.hits(), 0);
}

#[tokio::test]
async fn idle_keep_alive_connections_close_after_idle_timeout_but_busy_ones_do_not() {
    let slow = slow_backend(Duration::from_millis(800)).await;
    let toml = with_server_keys(
        &one_upstream("round_robin", &[server(slow.addr)], ""),
        "idle_timeout = \"400ms\"",
    );
    let proxy = spawn_proxy(&toml).await;
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: idle.test\r\n\r\n")
        .await
        .expect("write");
    // The request takes 800 ms, longer than idle_timeout: it must still be answered.
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("answered")
        .expect("read");
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answered = Instant::now();
    let (_, closed_after) = read_until_closed(&mut stream, answered).await;
    assert!(
        closed_after >= Duration::from_millis(350) && closed_after <= Duration::from_millis(1000),
        "idle connection closed after {closed_after:?}, expected about 400 ms"
    );
}

#[tokio::test]
async fn an_oversized_body_is_413_declared_or_streamed() {
    let app = spawn_backend_with(|req: Request<hyper::body::Incoming>| async move {
        let n = count_bytes(req.into_body()).await;
        Response::new(full(n.to_string()))
    })
    .await;
    let toml = with_server_keys(
        &one_upstream("round_robin", &[server(app.addr)], ""),
        "max_body_size = 1024",
    );
    let proxy = spawn_proxy(&toml).await;

    let small = Request::post(proxy.url("/")).body(Full::new(Bytes::from(vec![b'x'; 1024])));
    assert_eq!(
        send(small.expect("req")).await,
        (StatusCode::OK, "1024".into())
    );

    let declared = Request::post(proxy.url("/")).body(Full::new(Bytes::from(vec![b'x'; 2048])));
    let (status, body) = send(declared.expect("req")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "413 Payload Too Large\n")
    );
    assert_eq!(
        app.hits(),
        1,
        "a declared oversized body never reaches the upstream"
    );

    // Chunked: the size is only known while streaming.
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: big.test\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .expect("write head");
    let chunk = format!("400\r\n{}\r\n", "y".repeat(0x400));
    for _ in 0..4 {
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let (answer, _) = read_until_closed(&mut stream, Instant::now()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

#[tokio::test]
async fn over_max_connections_new_clients_wait_for_a_free_slot() {
    let app = spawn_backend("app").await;
    let toml = with_server_keys(
        &one_upstream("round_robin", &[server(app.addr)], ""),
        "max_connections = 2",
    );
    let proxy = spawn_proxy(&toml).await;
    let request = b"GET / HTTP/1.1\r\nHost: limit.test\r\n\r\n";
    async fn answered(stream: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 1024];
        matches!(
            tokio::time::timeout(within, stream.read(&mut buf)).await,
            Ok(Ok(n)) if n > 0
        )
    }
    let mut first = TcpStream::connect(proxy.addr).await.expect("connect");
    let mut second = TcpStream::connect(proxy.addr).await.expect("connect");
    for stream in [&mut first, &mut second] {
        stream.write_all(request).await.expect("write");
        assert!(answered(stream, Duration::from_secs(5)).await);
    }
    // The kernel accepts the third connection, but weir does not serve it yet.
    let mut third = TcpStream::connect(proxy.addr).await.expect("connect");
    third.write_all(request).await.expect("write");
    assert!(!answered(&mut third, Duration::from_millis(300)).await);
    drop(first);
    assert!(answered(&mut third, Duration::from_secs(5)).await);
}
