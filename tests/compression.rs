//! `compress = true` through the real proxy: each coding round-trips
//! byte-exact, every response that must stay as it is does, and the head
//! (`Vary`, `ETag`, `Content-Length`) changes as HTTP requires.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;

/// A JSON document of about `size` bytes, as an API would send it.
fn json_payload(size: usize) -> Bytes {
    let mut out = String::with_capacity(size + 200);
    out.push('[');
    let mut i = 0u64;
    while out.len() < size {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            "{{\"id\":{i},\"name\":\"user {i}\",\"email\":\"user{i}@example.com\",\
             \"active\":{},\"score\":{},\"tags\":[\"t{}\",\"t{}\"]}}",
            i.is_multiple_of(3),
            (i * 7919) % 1000,
            i % 17,
            i % 5
        ));
        i += 1;
    }
    out.push(']');
    Bytes::from(out)
}

const MIB: usize = 1024 * 1024;

/// The backend: `/stream` sends a 1 MiB JSON body in 16 KiB chunks without a
/// length; other paths answer what the skip cases need.
async fn app() -> Backend {
    spawn_backend_with(|req| async move {
        let payload = json_payload(MIB);
        let text = || full(payload.slice(..4096));
        let builder = Response::builder().header("content-type", "application/json");
        let resp = match req.uri().path() {
            "/stream" => {
                let chunks: Vec<_> = payload
                    .chunks(16 * 1024)
                    .map(|c| {
                        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(
                            Bytes::copy_from_slice(c),
                        ))
                    })
                    .collect();
                builder
                    .header("etag", "\"v1\"")
                    .header("vary", "Origin")
                    .body(StreamBody::new(futures_util::stream::iter(chunks)).boxed())
            }
            "/sized" => builder
                .header("etag", "W/\"weak\"")
                .header("accept-ranges", "bytes")
                .body(full(payload)),
            "/encoded" => builder.header("content-encoding", "gzip").body(text()),
            "/range" => builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header("content-range", "bytes 0-4095/1048576")
                .body(text()),
            "/no-transform" => builder
                .header("cache-control", "public, no-transform")
                .body(text()),
            "/small" => builder.body(full(payload.slice(..1023))),
            "/png" => Response::builder()
                .header("content-type", "image/png")
                .body(text()),
            "/no-content" => builder.status(StatusCode::NO_CONTENT).body(full("")),
            "/not-modified" => builder
                .status(StatusCode::NOT_MODIFIED)
                .header("etag", "\"v1\"")
                .body(full("")),
            _ => builder.status(StatusCode::NOT_FOUND).body(text()),
        };
        resp.expect("response")
    })
    .await
}

/// One upstream over `backend`: `/` compresses, `/plain/` does not.
fn config(backend: SocketAddr) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[log]\naccess = \"off\"\n\n\
         [[upstream]]\nname = \"app\"\nservers = [\"{backend}\"]\n\n\
         [[route]]\npath = \"/\"\nupstream = \"app\"\ncompress = true\n\n\
         [[route]]\npath = \"/plain/\"\nupstream = \"app\"\nstrip_prefix = true\n"
    )
}

/// Sends `method path` with `Accept-Encoding: accept` (none when `None`);
/// returns the status, head and the body bytes. Bounded by 20 s.
async fn fetch(
    proxy: &Proxy,
    method: Method,
    path: &str,
    accept: Option<&str>,
) -> (StatusCode, HeaderMap, Bytes) {
    let mut req = Request::builder().method(method).uri(proxy.url(path));
    if let Some(accept) = accept {
        req = req.header("accept-encoding", accept);
    }
    let req = req.body(Full::new(Bytes::new())).expect("request");
    let fut = async {
        let resp = client().request(req).await.expect("request through proxy");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        (parts.status, parts.headers, body)
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .expect("answered within 20 s")
}

fn decode(coding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => {
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut out)
                .expect("valid gzip");
        }
        "br" => {
            brotli::Decompressor::new(bytes, 4096)
                .read_to_end(&mut out)
                .expect("valid brotli");
        }
        "zstd" => out = zstd::decode_all(bytes).expect("valid zstd"),
        other => panic!("unexpected coding {other}"),
    }
    out
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().expect("ascii"))
}

#[tokio::test]
async fn each_coding_round_trips_a_streamed_megabyte_byte_exact() {
    let app = app().await;
    let proxy = spawn_proxy(&config(app.addr)).await;
    let payload = json_payload(MIB);
    for coding in ["gzip", "br", "zstd"] {
        let (status, headers, body) = fetch(&proxy, Method::GET, "/stream", Some(coding)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(header(&headers, "content-encoding"), Some(coding));
        assert_eq!(header(&headers, "content-length"), None);
        assert_eq!(header(&headers, "vary"), Some("Origin, Accept-Encoding"));
        assert_eq!(header(&headers, "etag"), Some("W/\"v1\""));
        assert!(
            body.len() < payload.len() / 4,
            "{coding}: {} bytes compressed",
            body.len()
        );
        assert!(
            decode(coding, &body) == payload,
            "{coding} did not round-trip"
        );
    }
}

#[tokio::test]
async fn a_body_of_known_length_loses_its_length_and_ranges() {
    let app = app().await;
    let proxy = spawn_proxy(&config(app.addr)).await;
    let (_, headers, body) = fetch(&proxy, Method::GET, "/sized", Some("gzip, br")).await;
    assert_eq!(header(&headers, "content-encoding"), Some("br"));
    assert_eq!(header(&headers, "content-length"), None);
    assert_eq!(header(&headers, "accept-ranges"), None);
    assert_eq!(header(&headers, "etag"), Some("W/\"weak\""));
    assert_eq!(header(&headers, "vary"), Some("Accept-Encoding"));
    assert!(decode("br", &body) == json_payload(MIB));
}

#[tokio::test]
async fn the_client_s_q_values_choose_the_coding() {
    let app = app().await;
    let proxy = spawn_proxy(&config(app.addr)).await;
    for (accept, chosen) in [
        ("gzip, deflate, br, zstd", Some("zstd")),
        ("br;q=0.9, gzip", Some("gzip")),
        ("*;q=0.5, zstd;q=0", Some("br")),
        ("gzip;q=0, deflate", None),
        ("identity", None),
    ] {
        let (_, headers, _) = fetch(&proxy, Method::GET, "/sized", Some(accept)).await;
        assert_eq!(header(&headers, "content-encoding"), chosen, "{accept}");
    }
}

#[tokio::test]
async fn a_client_without_accept_encoding_gets_the_upstream_s_bytes() {
    let app = app().await;
    let proxy = spawn_proxy(&config(app.addr)).await;
    let payload = json_payload(MIB);
    let (_, headers, body) = fetch(&proxy, Method::GET, "/stream", None).await;
    assert!(body == payload, "body changed");
    assert_eq!(header(&headers, "content-encoding"), None);
    assert_eq!(header(&headers, "etag"), Some("\"v1\""));
    // The answer would differ for another client, so caches must know.
    assert_eq!(header(&headers, "vary"), Some("Origin, Accept-Encoding"));
    let (_, headers, body) = fetch(&proxy, Method::GET, "/sized", None).await;
    assert!(body == payload, "body changed");
    assert_eq!(
        header(&headers, "content-length"),
        Some(payload.len().to_string().as_str())
    );
}

#[tokio::test]
async fn responses_that_must_stay_as_they_are_are_passed_through() {
    let app = app().await;
    let proxy = spawn_proxy(&config(app.addr)).await;
    let payload = json_payload(MIB);
    for (path, status, len) in [
        ("/encoded", StatusCode::OK, 4096),
        ("/range", StatusCode::PARTIAL_CONTENT, 4096),
        ("/no-transform", StatusCode::OK, 4096),
        ("/small", StatusCode::OK, 1023),
        ("/png", StatusCode::OK, 4096),
        ("/no-content", StatusCode::NO_CONTENT, 0),
        ("/not-modified", StatusCode::NOT_MODIFIED, 0),
        ("/plain/sized", StatusCode::OK, MIB),
    ] {
        let (got, headers, body) = fetch(&proxy, Method::GET, path, Some("gzip, br, zstd")).await;
        assert_eq!(got, status, "{path}");
        let expected_coding = (path == "/encoded").then_some("gzip");
        assert_eq!(
            header(&headers, "content-encoding"),
            expected_coding,
            "{path}"
        );
        assert!(body[..] == payload[..body.len()], "{path}: body changed");
        if len > 0 {
            assert!(body.len() >= len.min(payload.len()), "{path}: body cut");
        }
        assert!(
            header(&headers, "vary").is_none(),
            "{path}: Vary on a response never compressed"
        );
    }
    // A HEAD gets the head a plain GET would: its length, no coding.
    let (_, headers, body) = fetch(&proxy, Method::HEAD, "/sized", Some("gzip")).await;
    assert!(body.is_empty());
    assert_eq!(header(&headers, "content-encoding"), None);
    assert_eq!(
        header(&headers, "content-length"),
        Some(payload.len().to_string().as_str())
    );
    assert_eq!(header(&headers, "vary"), Some("Accept-Encoding"));
}

#[tokio::test]
async fn a_compressed_exchange_releases_its_server_and_connection() {
    let app = app().await;
    let proxy = spawn_proxy(&config(app.addr)).await;
    for coding in ["gzip", "br", "zstd", "gzip"] {
        let (status, headers, _) = fetch(&proxy, Method::GET, "/stream", Some(coding)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(header(&headers, "content-encoding"), Some(coding));
    }
    let state = proxy.server_state("app", app.addr);
    wait_until(|| state.in_flight() == 0).await;
    // Every body was read to its end, so one pooled connection served all.
    assert_eq!(app.open.load(Ordering::SeqCst), 1);
    assert_eq!(app.hits(), 4);
}

/// The receiving end of a channel as a body stream.
struct Chunks(tokio::sync::mpsc::Receiver<Bytes>);

impl futures_core::Stream for Chunks {
    type Item = Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|c| c.map(|c| Ok(Frame::data(c))))
    }
}

#[tokio::test]
async fn a_slow_stream_reaches_the_client_as_it_is_sent() {
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let app = spawn_backend_with(move |_req| {
        let gate = gate.clone();
        async move {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tokio::spawn(async move {
                let _ = tx.send(Bytes::from_static(b"data: hello\n\n")).await;
                gate.notified().await;
                let _ = tx.send(Bytes::from_static(b"data: bye\n\n")).await;
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(StreamBody::new(Chunks(rx)).boxed())
                .expect("response")
        }
    })
    .await;
    let proxy = spawn_proxy(&config(app.addr)).await;
    let req = Request::get(proxy.url("/events"))
        .header("accept-encoding", "gzip")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(10), client().request(req))
        .await
        .expect("head within 10 s")
        .expect("response");
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let mut body = resp.into_body();
    // Everything compressed so far is flushed while the upstream waits.
    let mut seen = Vec::new();
    let mut text = String::new();
    for _ in 0..10 {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("the first event arrives while the upstream holds the rest")
            .expect("a frame")
            .expect("no error");
        seen.extend_from_slice(&frame.into_data().expect("data"));
        let mut decoder = flate2::read::GzDecoder::new(&seen[..]);
        let mut buf = [0u8; 64];
        if let Ok(n) = decoder.read(&mut buf) {
            text = String::from_utf8_lossy(&buf[..n]).into_owned();
        }
        if text.contains("hello") {
            break;
        }
    }
    assert_eq!(text, "data: hello\n\n");
    release.notify_one();
    let rest = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("the end within 10 s")
        .expect("body")
        .to_bytes();
    seen.extend_from_slice(&rest);
    assert_eq!(decode("gzip", &seen), b"data: hello\n\ndata: bye\n\n");
}
