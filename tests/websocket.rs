//! WebSocket (and other `Upgrade`) tunnels through weir.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket echo server on a raw listener (tokio-tungstenite's own handshake).
async fn spawn_ws_echo() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

async fn connect(proxy: SocketAddr) -> Ws {
    let url = format!("ws://{proxy}/chat");
    let (ws, resp) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    assert_eq!(resp.status(), 101);
    ws
}

async fn echo(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
    let reply = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("echo in time")
        .expect("stream open")
        .expect("message");
    assert_eq!(reply, Message::text(text));
}

/// Waits (bounded) for the tunnel to be closed under the client.
async fn closed(ws: &mut Ws) {
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    });
    end.await.expect("tunnel closed within 10 s");
}

#[tokio::test]
async fn echo_both_ways_survives_a_reload_and_counts_as_in_flight() {
    let (echo_addr, _echo) = spawn_ws_echo().await;
    let other = spawn_backend("other").await;
    let toml = config_with(
        "\"127.0.0.1:0\"",
        &[server(echo_addr)],
        "balance = \"least_conn\"",
        "",
    );
    let (mut proxy, addrs) = spawn_proxy_at(&toml, &["127.0.0.1:0"]).await;
    let snapshot = proxy.snapshot.clone();
    let state = snapshot.load().upstreams[0].servers[0].state.clone();

    let mut ws = connect(addrs[0]).await;
    echo(&mut ws, "hello").await;
    ws.send(Message::binary(vec![1u8, 2, 3]))
        .await
        .expect("send");
    let reply = ws.next().await.expect("open").expect("message");
    assert_eq!(reply, Message::binary(vec![1u8, 2, 3]));
    assert_eq!(state.in_flight(), 1, "a tunnel counts for least_conn");

    // The reload even removes the tunnel's server: the tunnel carries on.
    let reloaded = config_with("\"127.0.0.1:0\"", &[server(other.addr)], "", "");
    assert!(proxy.reload(&reloaded).await);
    assert_eq!(get(&proxy.url("/")).await.1, "other");
    for i in 0..20 {
        echo(&mut ws, &format!("after reload {i}")).await;
    }

    ws.close(None).await.expect("close");
    closed(&mut ws).await;
    // A tunnel ends when both directions have ended (half-closes pass through).
    drop(ws);
    wait_until(|| state.in_flight() == 0).await;
}

#[tokio::test]
async fn a_refused_upgrade_opens_no_tunnel_and_the_connection_stays_http() {
    let backend = spawn_backend_with(|req| async move {
        let status = match (req.uri().path(), req.headers().get("upgrade")) {
            ("/refuse", Some(_)) => 426,
            _ => 200,
        };
        let mut resp = http::Response::new(full(format!("plain {}", req.uri().path())));
        *resp.status_mut() = http::StatusCode::from_u16(status).expect("status");
        resp
    })
    .await;
    let toml = config_with("\"127.0.0.1:0\"", &[server(backend.addr)], "", "");
    let (_proxy, addrs) = spawn_proxy_at(&toml, &["127.0.0.1:0"]).await;

    let stream = TcpStream::connect(addrs[0]).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn.with_upgrades());
    // 426 (the upstream refuses), then 200 (the upstream ignores the upgrade).
    for (path, status) in [("/refuse", 426), ("/ignore", 200)] {
        let req = http::Request::get(path)
            .header("host", "site.test")
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = sender.send_request(req).await.expect("response");
        assert_eq!(resp.status(), status);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(body, format!("plain {path}"));
        let seen = backend.last_request();
        assert_eq!(seen.headers["upgrade"], "websocket");
        assert_eq!(seen.headers["connection"], "upgrade");

        // The same connection is still parsed as HTTP.
        sender.ready().await.expect("connection still open");
        let req = http::Request::get("/next")
            .header("host", "site.test")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = sender.send_request(req).await.expect("next response");
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(body, "plain /next");
        assert!(backend.last_request().headers.get("upgrade").is_none());
    }
    assert_eq!(backend.hits(), 4);
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_after_tunnel_idle_timeout() {
    let (echo_addr, _echo) = spawn_ws_echo().await;
    let toml = config_with(
        "\"127.0.0.1:0\"",
        &[server(echo_addr)],
        "",
        "tunnel_idle_timeout = \"300ms\"",
    );
    let (_proxy, addrs) = spawn_proxy_at(&toml, &["127.0.0.1:0"]).await;
    let mut ws = connect(addrs[0]).await;
    // Traffic keeps it open past the timeout...
    for i in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        echo(&mut ws, &format!("{i}")).await;
    }
    // ...silence closes it.
    let quiet = Instant::now();
    closed(&mut ws).await;
    assert!(
        quiet.elapsed() >= Duration::from_millis(250),
        "{:?}",
        quiet.elapsed()
    );
}

#[tokio::test]
async fn shutdown_waits_for_a_tunnel_then_closes_it_after_shutdown_timeout() {
    let (echo_addr, _echo) = spawn_ws_echo().await;
    let toml = config_with(
        "\"127.0.0.1:0\"",
        &[server(echo_addr)],
        "",
        "shutdown_timeout = \"1s\"",
    );
    let (proxy, addrs) = spawn_proxy_at(&toml, &["127.0.0.1:0"]).await;
    let mut ws = connect(addrs[0]).await;
    let started = Instant::now();
    proxy.shutdown().await;
    echo(&mut ws, "still here during shutdown").await;
    closed(&mut ws).await;
    let waited = started.elapsed();
    tokio::time::timeout(Duration::from_secs(10), proxy.task)
        .await
        .expect("daemon stopped in time")
        .expect("daemon task");
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}"
    );
}
