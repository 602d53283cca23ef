//! Graceful shutdown: stop accepting, finish what runs, close keep-alive, bounded by shutdown_timeout.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

#[tokio::test]
async fn in_flight_requests_finish_with_connection_close_and_new_ones_are_refused() {
    let gate = Arc::new(Semaphore::new(0));
    let a = holding_backend("a", gate.clone()).await;
    let proxy = spawn_proxy(&one_upstream("round_robin", &[server(a.addr)], "")).await;

    let stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::get("/hold")
        .header("host", "a.test")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let in_flight = tokio::spawn(sender.send_request(req));
    wait_until(|| a.hits() == 1).await;

    proxy.shutdown().await;
    // The listener closes promptly; a new client is refused.
    let mut refused = false;
    for _ in 0..200 {
        if TcpStream::connect(proxy.addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(refused, "the listener still accepts after shutdown began");

    gate.add_permits(1);
    let resp = in_flight.await.expect("task").expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    assert_eq!(
        resp.into_body().collect().await.expect("body").to_bytes(),
        "a"
    );
    tokio::time::timeout(Duration::from_secs(5), proxy.task)
        .await
        .expect("daemon stopped once the request finished")
        .expect("daemon task");
}

#[tokio::test]
async fn shutdown_timeout_bounds_the_wait() {
    let gate = Arc::new(Semaphore::new(0));
    let a = holding_backend("a", gate.clone()).await;
    let toml = with_server_keys(
        &one_upstream("round_robin", &[server(a.addr)], ""),
        "shutdown_timeout = \"300ms\"",
    );
    let proxy = spawn_proxy(&toml).await;
    let _held = tokio::spawn(get_owned(proxy.url("/hold")));
    wait_until(|| a.hits() == 1).await;

    let started = Instant::now();
    proxy.shutdown().await;
    tokio::time::timeout(Duration::from_secs(5), proxy.task)
        .await
        .expect("daemon stopped")
        .expect("daemon task");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "took {took:?}"
    );
}

#[tokio::test]
async fn a_second_shutdown_stops_at_once() {
    let gate = Arc::new(Semaphore::new(0));
    let a = holding_backend("a", gate.clone()).await;
    let proxy = spawn_proxy(&one_upstream("round_robin", &[server(a.addr)], "")).await;
    let _held = tokio::spawn(get_owned(proxy.url("/hold")));
    wait_until(|| a.hits() == 1).await;
    proxy.shutdown().await;
    proxy.shutdown().await;
    tokio::time::timeout(Duration::from_secs(5), proxy.task)
        .await
        .expect("daemon stopped on the second shutdown, well before shutdown_timeout (30 s)")
        .expect("daemon task");
}
