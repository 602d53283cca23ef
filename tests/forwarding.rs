//! What crosses the proxy: the forwarding headers of the README's "What the upstream receives", and bodies streamed both ways.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

fn header<'a>(parts: &'a http::request::Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get(name)
        .map(|v| v.to_str().expect("ascii header"))
}

#[tokio::test]
async fn upstream_sees_the_forwarding_headers_and_forged_ones_do_not_survive() {
    let app = spawn_backend("app").await;
    let proxy = spawn_proxy(&one_upstream("round_robin", &[server(app.addr)], "")).await;
    let req = Request::get(proxy.url("/path?q=1"))
        .header("host", "site.test:8080")
        .header("x-real-ip", "6.6.6.6")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("connection", "keep-alive, X-Foo")
        .header("x-foo", "secret")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("x-kept", "yes")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (status, _) = send(req).await;
    assert_eq!(status, 200);

    let seen = app.last_request();
    assert_eq!(seen.uri, "/path?q=1");
    assert_eq!(header(&seen, "host"), Some("site.test:8080"));
    assert_eq!(header(&seen, "x-real-ip"), Some("127.0.0.1"));
    assert_eq!(header(&seen, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(header(&seen, "x-forwarded-proto"), Some("http"));
    assert_eq!(header(&seen, "x-forwarded-host"), Some("site.test:8080"));
    assert_eq!(header(&seen, "x-kept"), Some("yes"));
    for gone in [
        "x-foo",
        "keep-alive",
        "te",
        "connection",
        "upgrade",
        "proxy-connection",
    ] {
        assert_eq!(header(&seen, gone), None, "{gone} was forwarded");
    }
}

#[tokio::test]
async fn a_trusted_proxy_chain_is_appended_to() {
    let app = spawn_backend("app").await;
    let toml = with_server_keys(
        &one_upstream("round_robin", &[server(app.addr)], ""),
        "trusted_proxies = [\"127.0.0.1\"]",
    );
    let proxy = spawn_proxy(&toml).await;
    let req = Request::get(proxy.url("/"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("x-real-ip", "6.6.6.6")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (status, _) = send(req).await;
    assert_eq!(status, 200);
    let seen = app.last_request();
    assert_eq!(
        header(&seen, "x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(header(&seen, "x-real-ip"), Some("203.0.113.9"));
    assert_eq!(header(&seen, "x-forwarded-proto"), Some("https"));
}

#[tokio::test]
async fn response_hop_by_hop_headers_are_removed() {
    let app = spawn_backend_with(|_req| async {
        Response::builder()
            .header("connection", "x-internal")
            .header("x-internal", "1")
            .header("x-public", "1")
            .body(full("ok"))
            .expect("response")
    })
    .await;
    let proxy = spawn_proxy(&one_upstream("round_robin", &[server(app.addr)], "")).await;
    let resp = get_head(&proxy.url("/")).await;
    assert_eq!(
        resp.headers().get("x-public").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    assert!(resp.headers().get("x-internal").is_none());
}

#[tokio::test]
async fn a_response_is_streamed_before_the_upstream_finishes_it() {
    let release = Arc::new(Notify::new());
    let gate = release.clone();
    let app = spawn_backend_with(move |_req| {
        let gate = gate.clone();
        async move {
            let (tx, rx) = tokio::sync::mpsc::channel::<
                Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>,
            >(4);
            tokio::spawn(async move {
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from_static(b"first;"))))
                    .await;
                gate.notified().await;
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from_static(b"second"))))
                    .await;
            });
            let stream = tokio_stream_from(rx);
            Response::new(StreamBody::new(stream).boxed())
        }
    })
    .await;
    let proxy = spawn_proxy(&one_upstream("round_robin", &[server(app.addr)], "")).await;
    let resp = get_head(&proxy.url("/")).await;
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("first chunk arrives while the upstream still holds the rest")
        .expect("a frame")
        .expect("no error");
    assert_eq!(first.into_data().expect("data"), "first;");
    release.notify_one();
    let rest = body.collect().await.expect("rest").to_bytes();
    assert_eq!(rest, "second");
}

/// A `Stream` over an mpsc receiver, without pulling in a streams crate.
fn tokio_stream_from<T>(rx: tokio::sync::mpsc::Receiver<T>) -> ReceiverStream<T> {
    ReceiverStream(rx)
}

struct ReceiverStream<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> futures_core::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

#[tokio::test]
async fn a_client_that_half_closes_after_its_request_still_gets_the_answer() {
    // RFC 9112 §9.6: a client may close its sending side once the request is
    // out. weir answers, as HAProxy does, and does not take the early FIN for
    // an abort.
    let app = spawn_backend("app").await;
    let proxy = spawn_proxy(&one_upstream("round_robin", &[server(app.addr)], "")).await;
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: site.test\r\n\r\n")
        .await
        .expect("write");
    stream.shutdown().await.expect("half-close");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("answered, then closed, within 10 s")
        .expect("read");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("\r\n\r\napp"), "{text}");
    assert_eq!(app.hits(), 1);
}

/// Sends a streamed upload through a fresh HTTP/1.1 connection; returns status and body.
async fn upload(proxy: &Proxy, body: Generated) -> (http::StatusCode, String) {
    let stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::post("/upload")
        .header("host", "upload.test")
        .body(body)
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(60), sender.send_request(req))
        .await
        .expect("upload finished within 60 s")
        .expect("response");
    let status = resp.status();
    let text = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&text).into_owned())
}

const MIB: usize = 1024 * 1024;

#[tokio::test]
async fn large_upload_and_download_pass_through_whole() {
    let app = spawn_backend_with(|req: Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/upload" {
            let received = count_bytes(req.into_body()).await;
            Response::new(full(received.to_string()))
        } else {
            Response::new(Generated::new(64, MIB).map_err(|e| match e {}).boxed())
        }
    })
    .await;
    let proxy = spawn_proxy(&one_upstream("round_robin", &[server(app.addr)], "")).await;

    let (status, received) = upload(&proxy, Generated::new(64, MIB)).await;
    assert_eq!(status, 200);
    assert_eq!(received, (64 * MIB).to_string());

    let resp = get_head(&proxy.url("/download")).await;
    assert_eq!(resp.status(), 200);
    let n = tokio::time::timeout(Duration::from_secs(60), count_bytes(resp.into_body()))
        .await
        .expect("download finished within 60 s");
    assert_eq!(n, (64 * MIB) as u64);
}

#[tokio::test]
async fn a_raw_request_reaches_the_upstream_as_one_head_weir_framed() {
    let app = spawn_recording_backend().await;
    let proxy = spawn_proxy(&one_upstream("round_robin", &[server(app.addr)], "")).await;
    let resp = raw_exchange(
        proxy.addr,
        b"POST /raw HTTP/1.1\r\nHost: raw.test\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await
    .expect("a response");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "got 5 bytes");
    let received = app.received();
    assert!(received.starts_with("POST /raw HTTP/1.1\r\n"), "{received}");
    assert!(
        received
            .to_ascii_lowercase()
            .contains("\r\nx-forwarded-for: 127.0.0.1\r\n"),
        "{received}"
    );
    assert!(received.ends_with("\r\n\r\nhello"), "{received}");
}
