//! PROXY protocol in: a trusted load balancer's v1/v2 header names the
//! client, which the upstream then sees in X-Real-IP and X-Forwarded-For;
//! anything else is closed before a request is read, and counted.

mod common;
mod proto_support;

use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use ppp::v2;
use proto_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const GET: &[u8] = b"GET /hi HTTP/1.1\r\nHost: site.test\r\n\
    X-Real-IP: 6.6.6.6\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n";

fn header<'a>(parts: &'a http::request::Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).map(|v| v.to_str().expect("ascii"))
}

/// A proxy whose listener wants PROXY headers, trusting `trusted`, in front of
/// `app`, with an admin listener for the counter.
async fn proxy_for(app: &Backend, trusted: &str, listen_extra: &str) -> Proxy {
    let listen = format!(r#"{{ addr = "127.0.0.1:0", proxy_protocol = true{listen_extra} }}"#);
    let toml = config_with(
        &listen,
        &[server(app.addr)],
        "",
        &format!("trusted_proxies = [\"{trusted}\"]"),
    );
    let (proxy, _) = spawn_proxy_at(&with_admin(&toml, None), &["127.0.0.1:0"]).await;
    proxy
}

fn v2_header(command: v2::Command, addresses: impl Into<v2::Addresses>) -> Vec<u8> {
    let protocol = match command {
        v2::Command::Local => v2::Protocol::Unspecified,
        v2::Command::Proxy => v2::Protocol::Stream,
    };
    v2::Builder::with_addresses(v2::Version::Two | command, protocol, addresses)
        .build()
        .expect("v2 header")
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

async fn rejected(proxy: &Proxy, reason: &str) -> f64 {
    let scrape = scrape(proxy).await;
    metric_value(
        &scrape,
        "weir_proxy_protocol_rejected_total",
        &[("reason", reason)],
    )
    .expect("counter exported")
}

#[tokio::test]
async fn a_v1_header_from_a_trusted_proxy_names_the_client() {
    let app = spawn_backend("app").await;
    let proxy = proxy_for(&app, "127.0.0.1", "").await;
    let mut client = RawClient::connect(proxy.addr).await;
    client
        .send(b"PROXY TCP4 203.0.113.9 127.0.0.1 51000 80\r\n")
        .await;
    client.send(GET).await;
    let resp = client.response().await.expect("response");
    assert_eq!(resp.status, 200);
    let seen = app.last_request();
    assert_eq!(header(&seen, "x-real-ip"), Some("203.0.113.9"));
    // The client is not a trusted proxy: its own forwarding headers go.
    assert_eq!(header(&seen, "x-forwarded-for"), Some("203.0.113.9"));
}

#[tokio::test]
async fn a_v2_header_in_the_same_packet_as_the_request_names_the_client() {
    let app = spawn_backend("app").await;
    let proxy = proxy_for(&app, "127.0.0.0/8", "").await;
    let mut bytes = v2_header(
        v2::Command::Proxy,
        (addr("[2001:db8::9]:40000"), addr("[2001:db8::1]:80")),
    );
    // Header and request in one write: the bytes after the header are the request's.
    bytes.extend_from_slice(GET);
    let resp = raw_exchange(proxy.addr, &bytes).await.expect("response");
    assert_eq!(resp.status, 200);
    let seen = app.last_request();
    assert_eq!(header(&seen, "x-real-ip"), Some("2001:db8::9"));
    assert_eq!(header(&seen, "x-forwarded-for"), Some("2001:db8::9"));
}

#[tokio::test]
async fn a_v2_local_header_leaves_the_connection_s_own_peer() {
    let app = spawn_backend("app").await;
    let proxy = proxy_for(&app, "127.0.0.1", "").await;
    let mut bytes = v2_header(v2::Command::Local, v2::Addresses::Unspecified);
    bytes.extend_from_slice(b"GET /health HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n");
    let resp = raw_exchange(proxy.addr, &bytes).await.expect("response");
    assert_eq!(resp.status, 200);
    let seen = app.last_request();
    assert_eq!(header(&seen, "x-real-ip"), Some("127.0.0.1"));
    assert_eq!(header(&seen, "x-forwarded-for"), Some("127.0.0.1"));

    // The peer is the (trusted) load balancer itself, so, as without PROXY
    // protocol, its own X-Forwarded-For is believed and extended.
    let mut bytes = v2_header(v2::Command::Local, v2::Addresses::Unspecified);
    bytes.extend_from_slice(GET);
    raw_exchange(proxy.addr, &bytes).await.expect("response");
    let seen = app.last_request();
    assert_eq!(header(&seen, "x-forwarded-for"), Some("6.6.6.6, 127.0.0.1"));
}

#[tokio::test]
async fn an_untrusted_peer_is_closed_unread_and_counted() {
    let app = spawn_backend("app").await;
    // Linux routes all of 127/8 to lo: the client binds 127.0.0.1, and only
    // 127.0.0.2 is trusted.
    let proxy = proxy_for(&app, "127.0.0.2", "").await;
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(addr("127.0.0.1:0")).expect("bind");
    let mut stream = socket.connect(proxy.addr).await.expect("connect");
    let mut bytes = b"PROXY TCP4 203.0.113.9 127.0.0.1 51000 80\r\n".to_vec();
    bytes.extend_from_slice(GET);
    // The proxy may already have closed; the write may fail, which is fine.
    let _ = stream.write_all(&bytes).await;
    assert!(closed(&mut stream).await, "the connection stays open");
    assert_eq!(rejected(&proxy, "untrusted").await, 1.0);
    assert_eq!(app.hits(), 0);

    // The same header from the trusted address goes through.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(addr("127.0.0.2:0")).expect("bind");
    let mut stream = socket.connect(proxy.addr).await.expect("connect");
    stream.write_all(&bytes).await.expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    );
    read.await.expect("answer in time").expect("read");
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    assert_eq!(
        header(&app.last_request(), "x-real-ip"),
        Some("203.0.113.9")
    );
}

#[tokio::test]
async fn a_missing_or_garbled_header_is_closed_unread_and_counted() {
    let app = spawn_backend("app").await;
    let proxy = proxy_for(&app, "127.0.0.1", "").await;

    let mut client = RawClient::connect(proxy.addr).await;
    let _ = client.try_send(GET).await;
    assert!(client.closed().await, "a request without a header was read");

    let mut client = RawClient::connect(proxy.addr).await;
    let mut bytes = b"PROXY TCP4 not-an-address 127.0.0.1 1 80\r\n".to_vec();
    bytes.extend_from_slice(GET);
    let _ = client.try_send(&bytes).await;
    assert!(client.closed().await, "a garbled header was accepted");

    let mut client = RawClient::connect(proxy.addr).await;
    let mut bad = v2_header(
        v2::Command::Proxy,
        (addr("198.51.100.4:40000"), addr("127.0.0.1:80")),
    );
    bad[12] = 0x31; // version 3
    let _ = client.try_send(&bad).await;
    assert!(
        client.closed().await,
        "a v2 header of an unknown version was accepted"
    );

    assert_eq!(rejected(&proxy, "missing").await, 1.0);
    assert_eq!(rejected(&proxy, "invalid").await, 2.0);
    assert_eq!(app.hits(), 0);
}

#[tokio::test]
async fn on_a_tls_listener_the_header_comes_before_the_handshake() {
    let app = spawn_backend("app").await;
    let pki = Pki::new();
    let leaf = pki.issue("site", &["site.test"]);
    let proxy = proxy_for(&app, "127.0.0.1", &format!(", tls = {}", tls_entry(&leaf))).await;

    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let proxy_header = v2_header(
        v2::Command::Proxy,
        (addr("198.51.100.4:40000"), addr("127.0.0.1:443")),
    );
    stream.write_all(&proxy_header).await.expect("write");
    let config = verifying_client(&pki.ca, &[b"http/1.1"]);
    let name = rustls_pki_types::ServerName::try_from("site.test").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::clone(&config))
        .connect(name, stream)
        .await
        .expect("TLS after the PROXY header");
    tls.write_all(GET).await.expect("write");
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    let seen = app.last_request();
    assert_eq!(header(&seen, "x-real-ip"), Some("198.51.100.4"));
    assert_eq!(header(&seen, "x-forwarded-proto"), Some("https"));
}

/// Whether the proxy closed `stream` (end of stream or reset) within ten seconds.
async fn closed(stream: &mut TcpStream) -> bool {
    let mut chunk = [0u8; 1024];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut chunk));
    matches!(read.await, Ok(Ok(0)) | Ok(Err(_)))
}

#[tokio::test]
async fn the_access_log_and_ip_hashing_see_the_proxied_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.json");
    let (a, b) = (spawn_backend("a").await, spawn_backend("b").await);
    let toml = config_with(
        r#"{ addr = "127.0.0.1:0", proxy_protocol = true }"#,
        &[server(a.addr), server(b.addr)],
        "balance = \"hash\"\nhash_key = \"ip\"",
        "trusted_proxies = [\"127.0.0.1\"]",
    )
    .replace(
        "access = \"off\"",
        &format!(
            "access = {:?}\naccess_format = \"json\"",
            log.display().to_string()
        ),
    );
    let (proxy, _) = spawn_proxy_at(&toml, &["127.0.0.1:0"]).await;
    let ask = |source: String| {
        let addr = proxy.addr;
        async move {
            let mut bytes = format!("PROXY TCP4 {source} 127.0.0.1 5000 80\r\n").into_bytes();
            bytes.extend_from_slice(GET);
            let resp = raw_exchange(addr, &bytes).await.expect("answer");
            assert_eq!(resp.status, 200);
            resp.text()
        }
    };
    // One client always reaches the same server...
    let first = ask("198.51.100.1".into()).await;
    for _ in 0..5 {
        assert_eq!(ask("198.51.100.1".into()).await, first);
    }
    // ...and different clients, all behind the one load balancer, spread.
    let mut seen = std::collections::HashSet::new();
    for i in 0..20 {
        seen.insert(ask(format!("198.51.100.{}", 10 + i)).await);
    }
    assert_eq!(seen.len(), 2, "every client hashed alike: {seen:?}");

    let lines = log_lines(&log, 26).await;
    let v: serde_json::Value = serde_json::from_str(&lines[0]).expect("JSON line");
    assert_eq!(v["client"], "198.51.100.1");
}

#[tokio::test]
async fn a_reload_turns_the_header_requirement_on() {
    let app = spawn_backend("app").await;
    let plain = config_with(
        r#"{ addr = "127.0.0.1:0" }"#,
        &[server(app.addr)],
        "",
        "trusted_proxies = [\"127.0.0.1\"]",
    );
    let (mut proxy, _) = spawn_proxy_at(&plain, &["127.0.0.1:0"]).await;
    assert_eq!(
        raw_exchange(proxy.addr, GET).await.expect("answer").status,
        200
    );
    let wanting = plain.replace(
        r#"{ addr = "127.0.0.1:0" }"#,
        r#"{ addr = "127.0.0.1:0", proxy_protocol = true }"#,
    );
    // The same configured address: the running listener stays and takes the new mode.
    assert!(proxy.reload(&wanting).await);
    let mut client = RawClient::connect(proxy.addr).await;
    let _ = client.try_send(GET).await;
    assert!(
        client.closed().await,
        "a request without a header was served"
    );
    let mut bytes = b"PROXY TCP4 192.0.2.1 127.0.0.1 5000 80\r\n".to_vec();
    bytes.extend_from_slice(GET);
    assert_eq!(
        raw_exchange(proxy.addr, &bytes)
            .await
            .expect("answer")
            .status,
        200
    );
    assert_eq!(header(&app.last_request(), "x-real-ip"), Some("192.0.2.1"));
}
