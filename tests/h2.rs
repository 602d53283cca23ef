//! HTTP/2: downstream over TLS (ALPN) and h2c, upstream h2c with trailers,
//! and the RFC 9113 checks hyper/h2 apply on weir's behalf.

mod common;
mod proto_support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use proto_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Sends `n` GETs at once on one h2 connection; returns the bodies.
async fn concurrent_gets(
    sender: &hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    authority: &str,
    n: usize,
) -> Vec<String> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let mut sender = sender.clone();
        let uri = format!("http://{authority}/req/{i}");
        tasks.push(tokio::spawn(async move { h2_get(&mut sender, &uri).await }));
    }
    let mut bodies = Vec::new();
    for task in tasks {
        let (status, body, _) = task.await.expect("request task");
        assert_eq!(status, 200);
        bodies.push(body);
    }
    bodies
}

fn assert_spread(backends: &[Backend], n: usize) {
    let hits: Vec<usize> = backends.iter().map(Backend::hits).collect();
    assert_eq!(hits.iter().sum::<usize>(), n, "{hits:?}");
    assert!(hits.iter().all(|h| *h >= n / 6), "uneven spread {hits:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_streams_spread_over_upstreams() {
    let backends = [
        spawn_backend("a").await,
        spawn_backend("b").await,
        spawn_backend("c").await,
    ];
    let servers: Vec<String> = backends.iter().map(|b| server(b.addr)).collect();
    let toml = config_with("\"127.0.0.1:0\"", &servers, "", "");
    let (_proxy, addrs) = spawn_proxy_at(&toml, &["127.0.0.1:0"]).await;

    let tcp = TcpStream::connect(addrs[0]).await.expect("connect");
    let sender = h2_client(tcp).await;
    let bodies = concurrent_gets(&sender, "site.test", 50).await;
    assert!(bodies.iter().all(|b| ["a", "b", "c"].contains(&b.as_str())));
    assert_spread(&backends, 50);

    // :authority becomes Host; the upstream speaks HTTP/1.1 and sees http.
    let seen = backends[0].last_request();
    assert_eq!(seen.headers["host"], "site.test");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.version, http::Version::HTTP_11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_over_tls_streams_spread_over_upstreams() {
    let backends = [spawn_backend("a").await, spawn_backend("b").await];
    let servers: Vec<String> = backends.iter().map(|b| server(b.addr)).collect();
    let pki = Pki::new();
    let leaf = pki.issue("site", &["site.test"]);
    let listen = format!(r#"{{ addr = "127.0.0.1:0", tls = {} }}"#, tls_entry(&leaf));
    let toml = config_with(&listen, &servers, "", "");
    let (_proxy, addrs) = spawn_proxy_at(&toml, &["127.0.0.1:0"]).await;

    let client = verifying_client(&pki.ca, &[b"h2"]);
    let tls = tls_connect(addrs[0], "site.test", client)
        .await
        .expect("TLS");
    let sender = h2_client(tls).await;
    concurrent_gets(&sender, "site.test", 50).await;
    assert_spread(&backends, 50);
    assert_eq!(
        backends[1].last_request().headers["x-forwarded-proto"],
        "https"
    );
}

/// An h2c backend answering `hello` with a `grpc-status: 0` trailer; counts
/// its connections and records each request's `te`.
struct H2Backend {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    te: Arc<Mutex<Vec<Option<HeaderValue>>>>,
}

async fn spawn_h2_backend() -> H2Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let te = Arc::new(Mutex::new(Vec::new()));
    let (count, te_log) = (connections.clone(), te.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let te_log = te_log.clone();
            let service = service_fn(move |req: Request<Incoming>| {
                te_log
                    .lock()
                    .expect("lock")
                    .push(req.headers().get("te").cloned());
                async move {
                    let body = Full::new(Bytes::from_static(b"hello")).with_trailers(async {
                        let mut trailers = HeaderMap::new();
                        trailers.insert("grpc-status", HeaderValue::from_static("0"));
                        Some(Ok::<_, Infallible>(trailers))
                    });
                    Ok::<_, Infallible>(Response::new(body))
                }
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    H2Backend {
        addr,
        connections,
        te,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upstream_is_multiplexed_and_passes_trailers() {
    let backend = spawn_h2_backend().await;
    let toml = config_with(
        "\"127.0.0.1:0\"",
        &[server(backend.addr)],
        "protocol = \"h2c\"",
        "",
    );
    let (_proxy, addrs) = spawn_proxy_at(&toml, &["127.0.0.1:0"]).await;

    // An h2 client with `te: trailers`, as gRPC sends, sees the trailers.
    let tcp = TcpStream::connect(addrs[0]).await.expect("connect");
    let mut sender = h2_client(tcp).await;
    let req = Request::get("http://site.test/rpc")
        .header("te", "trailers")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.expect("body");
    let trailers = collected.trailers().cloned().expect("trailers arrived");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(collected.to_bytes(), "hello");
    assert_eq!(
        backend.te.lock().expect("lock").last().cloned().flatten(),
        Some(HeaderValue::from_static("trailers"))
    );

    // Many concurrent streams share one upstream connection.
    let bodies = concurrent_gets(&sender, "site.test", 50).await;
    assert!(bodies.iter().all(|b| b == "hello"));
    assert_eq!(backend.connections.load(Ordering::SeqCst), 1);

    // An HTTP/1.1 client gets the whole body; its response just has no trailers.
    let (status, body) = get(&format!("http://{}/rpc", addrs[0])).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "hello"));
}

#[tokio::test]
async fn health_checks_speak_h2c_to_an_h2c_upstream() {
    let backend = spawn_h2_backend().await;
    let checks = "protocol = \"h2c\"\n[upstream.health_check]\npath = \"/health\"\n\
                  interval = \"50ms\"\ntimeout = \"1s\"\nrise = 1\nfall = 1";
    let toml = config_with("\"127.0.0.1:0\"", &[server(backend.addr)], checks, "");
    let (proxy, _) = spawn_proxy_at(&toml, &["127.0.0.1:0"]).await;
    // Each probe opens a connection; one failed probe would take the server out.
    wait_until(|| backend.connections.load(Ordering::SeqCst) >= 4).await;
    assert!(
        !proxy
            .server_state("app", backend.addr)
            .health(None)
            .active_down,
        "h2c probes pass"
    );
}

/// One HPACK "literal header field without indexing, new name" (RFC 7541 §6.2.2).
fn literal(block: &mut Vec<u8>, name: &str, value: &str) {
    block.push(0);
    block.push(u8::try_from(name.len()).expect("short name"));
    block.extend_from_slice(name.as_bytes());
    block.push(u8::try_from(value.len()).expect("short value"));
    block.extend_from_slice(value.as_bytes());
}

/// A HEADERS frame with END_STREAM and END_HEADERS for a GET with `extra` headers.
fn get_frame(stream: u32, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "site.test"),
    ]
    .iter()
    .chain(extra)
    {
        literal(&mut block, name, value);
    }
    let len = u32::try_from(block.len()).expect("short block");
    let mut frame = len.to_be_bytes()[1..].to_vec();
    frame.extend_from_slice(&[0x1, 0x5]);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(&block);
    frame
}

/// Reads frames until one on `stream`; returns its type and payload.
async fn frame_on(conn: &mut TcpStream, stream: u32) -> (u8, Vec<u8>) {
    let read = async {
        for _ in 0..50 {
            let mut head = [0u8; 9];
            conn.read_exact(&mut head).await.expect("frame header");
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0u8; len];
            conn.read_exact(&mut payload).await.expect("frame payload");
            if id == stream {
                return (head[3], payload);
            }
        }
        panic!("no frame on stream {stream} among 50");
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("frame within 5 s")
}

#[tokio::test]
async fn connection_specific_headers_are_rejected_per_rfc_9113() {
    let backend = spawn_backend("app").await;
    let toml = config_with("\"127.0.0.1:0\"", &[server(backend.addr)], "", "");
    let (_proxy, addrs) = spawn_proxy_at(&toml, &["127.0.0.1:0"]).await;

    let mut conn = TcpStream::connect(addrs[0]).await.expect("connect");
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("preface");
    conn.write_all(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0])
        .await
        .expect("settings");
    // RFC 9113 §8.2.2: each of these makes the request malformed.
    let bad: [(&str, &str); 5] = [
        ("connection", "keep-alive"),
        ("upgrade", "websocket"),
        ("transfer-encoding", "chunked"),
        ("keep-alive", "timeout=5"),
        ("te", "gzip"),
    ];
    for (i, header) in bad.iter().enumerate() {
        let stream = 1 + 2 * u32::try_from(i).expect("small");
        conn.write_all(&get_frame(stream, &[*header]))
            .await
            .expect("headers");
        let (kind, payload) = frame_on(&mut conn, stream).await;
        assert_eq!(kind, 0x3, "{header:?} must be answered with RST_STREAM");
        assert_eq!(payload, [0, 0, 0, 1], "{header:?}: PROTOCOL_ERROR");
    }
    // `te: trailers` is allowed, and the connection still serves.
    conn.write_all(&get_frame(11, &[("te", "trailers")]))
        .await
        .expect("headers");
    let (kind, _) = frame_on(&mut conn, 11).await;
    assert_eq!(kind, 0x1, "a valid request gets a HEADERS response");
    assert_eq!(
        backend.hits(),
        1,
        "no malformed request reached the upstream"
    );
}
