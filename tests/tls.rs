//! TLS termination: certificates by SNI, ALPN, reload of certificates, HTTPS redirects.

mod common;
mod proto_support;

use std::path::Path;

use common::*;
use proto_support::*;

#[tokio::test]
async fn sni_picks_the_certificate_and_the_first_is_the_default() {
    let backend = spawn_backend("app").await;
    let pki = Pki::new();
    let a = pki.issue("a", &["a.test"]);
    let b = pki.issue("b", &["b.test", "*.b.test"]);
    let listen = format!(
        r#"{{ addr = "127.0.0.1:0", tls = [{}, {}] }}"#,
        tls_entry(&a),
        tls_entry(&b)
    );
    let toml = config_with(&listen, &[server(backend.addr)], "", "");
    let (_proxy, addrs) = spawn_proxy_at(&toml, &["127.0.0.1:0"]).await;
    let addr = addrs[0];

    assert_eq!(cert_for(addr, "a.test").await, a.der);
    assert_eq!(cert_for(addr, "b.test").await, b.der);
    assert_eq!(cert_for(addr, "www.b.test").await, b.der);
    assert_eq!(cert_for(addr, "unknown.test").await, a.der);
}

/// A proxy serving `site.test` over TLS (a certificate from a fresh `Pki`) in
/// front of one backend; returns them all and the TLS listener's address.
async fn site_over_tls() -> (Backend, Pki, Proxy, std::net::SocketAddr) {
    let backend = spawn_backend("app").await;
    let pki = Pki::new();
    let leaf = pki.issue("site", &["site.test"]);
    let listen = format!(r#"{{ addr = "127.0.0.1:0", tls = {} }}"#, tls_entry(&leaf));
    let toml = config_with(&listen, &[server(backend.addr)], "", "");
    let (proxy, addrs) = spawn_proxy_at(&toml, &["127.0.0.1:0"]).await;
    (backend, pki, proxy, addrs[0])
}

#[tokio::test]
async fn alpn_negotiates_h2_and_the_upstream_sees_https() {
    let (backend, pki, _proxy, addr) = site_over_tls().await;

    let client = verifying_client(&pki.ca, &[b"h2", b"http/1.1"]);
    let tls = tls_connect(addr, "site.test", client).await.expect("TLS");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut h2 = h2_client(tls).await;
    let (status, body, _) = h2_get(&mut h2, "https://site.test/hello").await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "app"));
    let seen = backend.last_request();
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.headers["host"], "site.test");
    assert_eq!(seen.version, http::Version::HTTP_11);

    // A client that offers only http/1.1 gets it.
    let client = verifying_client(&pki.ca, &[b"http/1.1"]);
    let tls = tls_connect(addr, "site.test", client).await.expect("TLS");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_both_served() {
    use tokio_rustls::rustls;
    let (_backend, pki, _proxy, addr) = site_over_tls().await;
    // rustls (weir's TLS stack) cannot speak 1.0 or 1.1 at all; both allowed versions work.
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca.clone()).expect("CA");
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .expect("version")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tls = tls_connect(addr, "site.test", std::sync::Arc::new(config))
            .await
            .expect("handshake");
        assert_eq!(tls.get_ref().1.protocol_version(), Some(version.version));
    }
}

#[tokio::test]
async fn a_reload_swaps_certificates_and_a_broken_file_keeps_the_old_ones() {
    let backend = spawn_backend("app").await;
    let pki = Pki::new();
    let first = pki.issue("site", &["site.test"]);
    let listen = format!(r#"{{ addr = "127.0.0.1:0", tls = {} }}"#, tls_entry(&first));
    let toml = config_with(&listen, &[server(backend.addr)], "", "");
    let (mut proxy, addrs) = spawn_proxy_at(&toml, &["127.0.0.1:0"]).await;
    assert_eq!(cert_for(addrs[0], "site.test").await, first.der);

    // Same file names, new contents: the reload re-reads them.
    let second = pki.issue("site", &["site.test"]);
    assert_ne!(first.der, second.der);
    assert!(proxy.reload(&toml).await);
    assert_eq!(cert_for(addrs[0], "site.test").await, second.der);

    // A broken PEM: the reload still applies the rest, the listener keeps `second`.
    std::fs::write(&second.cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").expect("write");
    assert!(proxy.reload(&toml).await);
    assert_eq!(cert_for(addrs[0], "site.test").await, second.der);
    let (status, body) = tls_get(addrs[0], &pki, "/").await;
    assert_eq!((status, body.as_str()), (200, "app"));
}

/// One HTTP/1.1 GET over TLS with SNI `site.test`.
async fn tls_get(addr: std::net::SocketAddr, pki: &Pki, path: &str) -> (u16, String) {
    use http_body_util::{BodyExt, Empty};
    let client = verifying_client(&pki.ca, &[b"http/1.1"]);
    let tls = tls_connect(addr, "site.test", client).await.expect("TLS");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .expect("h1 handshake");
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "site.test")
        .body(Empty::<bytes::Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_missing_or_bad_pem_file_fails_start_naming_file_line_and_key() {
    let pki = Pki::new();
    let leaf = pki.issue("site", &["site.test"]);
    let missing = pki.dir.path().join("missing.pem");
    let listen = format!(
        r#"{{ addr = "127.0.0.1:0", tls = {{ cert = {:?}, key = {:?} }} }}"#,
        missing.to_str().expect("utf-8"),
        leaf.key.to_str().expect("utf-8")
    );
    let toml = config_with(&listen, &["\"127.0.0.1:9\"".into()], "", "");
    let err = start_error(&toml).await;
    assert_eq!(
        (err.line, err.key.as_str()),
        (3, "server.listen[0].tls.cert"),
        "{err}"
    );
    assert!(err.message.contains("missing.pem"), "{err}");

    // A key that belongs to another certificate.
    let other = pki.issue("other", &["other.test"]);
    let listen = format!(
        r#"{{ addr = "127.0.0.1:0", tls = {{ cert = {:?}, key = {:?} }} }}"#,
        leaf.cert.to_str().expect("utf-8"),
        other.key.to_str().expect("utf-8")
    );
    let toml = config_with(&listen, &["\"127.0.0.1:9\"".into()], "", "");
    let err = start_error(&toml).await;
    assert_eq!(err.key, "server.listen[0].tls.key", "{err}");
    assert!(err.message.contains("does not fit"), "{err}");
}

async fn start_error(toml: &str) -> weir::config::ConfigError {
    let cfg = weir::config::parse(toml, Path::new("weir.toml")).expect("valid syntax");
    match weir::daemon::Daemon::start("weir.toml".into(), cfg).await {
        Err(weir::daemon::StartError::Config(e)) => e,
        Err(other) => panic!("expected a config error, got {other}"),
        Ok(_) => panic!("expected start to fail"),
    }
}

#[tokio::test]
async fn redirect_https_answers_301_with_the_https_location() {
    let backend = spawn_backend("app").await;
    let listen = r#"{ addr = "127.0.0.1:0", redirect_https = true }"#;
    let toml = config_with(listen, &[server(backend.addr)], "", "");
    let (_proxy, addrs) = spawn_proxy_at(&toml, &["127.0.0.1:0"]).await;
    let req = http::Request::get(format!("http://{}/path?q=1", addrs[0]))
        .header("host", "site.test:8080")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let resp = tokio::time::timeout(std::time::Duration::from_secs(10), client().request(req))
        .await
        .expect("in time")
        .expect("response");
    assert_eq!(resp.status(), 301);
    assert_eq!(resp.headers()["location"], "https://site.test/path?q=1");
    assert_eq!(backend.hits(), 0);
}

#[tokio::test]
async fn silent_clients_are_cut_after_header_read_timeout_plain_and_tls() {
    use tokio::io::AsyncReadExt;
    let backend = spawn_backend("app").await;
    let pki = Pki::new();
    let leaf = pki.issue("site", &["site.test"]);
    let listen = format!(
        r#""127.0.0.1:0", {{ addr = "127.0.0.2:0", tls = {} }}"#,
        tls_entry(&leaf)
    );
    let toml = config_with(
        &listen,
        &[server(backend.addr)],
        "",
        "header_read_timeout = \"300ms\"",
    );
    let (_proxy, addrs) = spawn_proxy_at(&toml, &["127.0.0.1:0", "127.0.0.2:0"]).await;
    let bounded = std::time::Duration::from_secs(5);

    let started = std::time::Instant::now();
    let mut plain = tokio::net::TcpStream::connect(addrs[0])
        .await
        .expect("connect");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(bounded, plain.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(started.elapsed() >= std::time::Duration::from_millis(250));

    // With ALPN h2 the server's SETTINGS come first (RFC 9113 §3.4); then
    // the silent client is cut off just the same.
    let client = verifying_client(&pki.ca, &[b"h2", b"http/1.1"]);
    let started = std::time::Instant::now();
    let mut tls = tls_connect(addrs[1], "site.test", client)
        .await
        .expect("TLS");
    let mut received = Vec::new();
    let _ = tokio::time::timeout(bounded, tls.read_to_end(&mut received))
        .await
        .expect("closed in time");
    assert!(started.elapsed() >= std::time::Duration::from_millis(250));
}

#[tokio::test]
async fn an_idle_https_connection_is_parked_and_served_again() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (backend, pki, proxy, addr) = site_over_tls().await;
    let client = verifying_client(&pki.ca, &[b"http/1.1"]);
    let mut tls = tls_connect(addr, "site.test", client).await.expect("TLS");
    for round in 0..2 {
        tls.write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
            .await
            .expect("write");
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        // The backend's body, "app", ends the answer.
        for _ in 0..100 {
            if answer.ends_with(b"app") {
                break;
            }
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), tls.read(&mut buf))
                .await
                .expect("answered within 5 s")
                .expect("read");
            assert!(
                n > 0,
                "round {round}: closed (close_notify?) instead of answered"
            );
            answer.extend_from_slice(&buf[..n]);
        }
        assert!(answer.starts_with(b"HTTP/1.1 200"), "round {round}");
        // Parked without a word to the client: no close_notify, no FIN.
        wait_until(|| proxy.connections_parked() == 1).await;
    }
    assert_eq!(backend.hits(), 2);
}

#[tokio::test]
async fn a_bad_head_over_tls_gets_weirs_own_400_and_a_clean_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (backend, pki, _proxy, addr) = site_over_tls().await;
    let client = verifying_client(&pki.ca, &[b"http/1.1"]);
    let mut tls = tls_connect(addr, "site.test", client).await.expect("TLS");
    tls.write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\nbad header\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    // Ends without error: weir sends close_notify after its answer.
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tls.read_to_end(&mut answer),
    )
    .await
    .expect("closed within 10 s")
    .expect("a clean TLS close");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(answer.ends_with("\r\n\r\n400 Bad Request\n"), "{answer}");
    assert_eq!(backend.hits(), 0);
}
