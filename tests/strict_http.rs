//! Strict HTTP where the RFCs say MUST: the request's `Host`, bodies that
//! are never dropped, upstream answers weir did not ask for, chunk extensions
//! with control characters, and headers spelled with underscores. Each test
//! checks what the client sees and what the backend received.

mod common;
mod proto_support;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Empty};
use proto_support::h2_client;
use tokio::net::TcpStream;

/// A proxy in front of a backend that records the bytes it receives.
async fn recorded() -> (Proxy, RecordingBackend) {
    let app = spawn_recording_backend().await;
    let proxy = spawn_proxy(&one_upstream("round_robin", &[server(app.addr)], "")).await;
    (proxy, app)
}

/// Sends `request` on a new connection; returns the status and body weir answered.
async fn answer(proxy: &Proxy, request: &[u8]) -> (u16, String) {
    let resp = raw_exchange(proxy.addr, request)
        .await
        .unwrap_or_else(|| panic!("no answer to {}", request.escape_ascii()));
    (resp.status, resp.text())
}

#[tokio::test]
async fn an_http11_request_without_exactly_one_valid_host_is_400_and_never_forwarded() {
    let (proxy, app) = recorded().await;
    let requests: [&[u8]; 9] = [
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: a.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: user@a.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test/x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a .test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test:http\r\n\r\n",
        b"GET http://a.test/ HTTP/1.1\r\n\r\n",
        b"GET http://user@a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
    ];
    for request in requests {
        assert_eq!(
            answer(&proxy, request).await,
            (400, "400 Bad Request\n".to_owned()),
            "{}",
            request.escape_ascii()
        );
    }
    // Control bytes in a Host value are refused by hyper's parser already.
    let (status, _) = answer(&proxy, b"GET / HTTP/1.1\r\nHost: a\x01b\r\n\r\n").await;
    assert_eq!(status, 400);
    assert_eq!(app.received(), "", "nothing reached the upstream");

    // What stays allowed: HTTP/1.0 without Host, and an IPv6 literal with a port.
    for request in [
        &b"GET /old HTTP/1.0\r\n\r\n"[..],
        b"GET /v6 HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
    ] {
        let (status, _) = answer(&proxy, request).await;
        assert_eq!(status, 200, "{}", request.escape_ascii());
    }
    let received = app.received();
    assert!(received.starts_with("GET /old HTTP/1.1\r\n"), "{received}");
    assert!(received.contains("\r\nhost: [::1]:8080\r\n"), "{received}");
}

#[tokio::test]
async fn an_absolute_form_target_wins_over_host_and_the_upstream_gets_its_host() {
    let (proxy, app) = recorded().await;
    let (status, _) = answer(
        &proxy,
        b"GET http://abs.test:8080/x?y=1 HTTP/1.1\r\nHost: other.test\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    let received = app.received();
    assert!(
        received.starts_with("GET /x?y=1 HTTP/1.1\r\n"),
        "{received}"
    );
    assert!(
        received.contains("\r\nhost: abs.test:8080\r\n"),
        "{received}"
    );
    assert!(!received.contains("other.test"), "{received}");

    // A target without a path goes upstream as `/` (found by fuzzing: it
    // went as `GET  HTTP/1.1`, which the backend could not parse).
    for (target, origin) in [
        ("http://abs.test#x", "GET / HTTP/1.1\r\n"),
        ("http://abs.test?q=1", "GET /?q=1 HTTP/1.1\r\n"),
    ] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: abs.test\r\n\r\n");
        let (status, _) = answer(&proxy, request.as_bytes()).await;
        assert_eq!(status, 200, "{target}");
        let received = app.received();
        let last = &received[received.rfind("GET ").unwrap_or(0)..];
        assert!(last.starts_with(origin), "{target}: {last}");
    }
}

#[tokio::test]
async fn http2_authority_and_host_that_disagree_are_400() {
    let (proxy, app) = recorded().await;
    let mut sender = h2_client(TcpStream::connect(proxy.addr).await.expect("connect")).await;
    let url = format!("http://{}/h2", proxy.addr);
    for (host, expected) in [("elsewhere.test", 400), ("", 400)] {
        let req = Request::get(&url)
            .header("host", host)
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = sender.send_request(req).await.expect("h2 response");
        assert_eq!(resp.status(), expected, "host {host:?}");
    }
    assert_eq!(app.received(), "");
    let req = Request::get(&url)
        .header("host", proxy.addr.to_string())
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("h2 response");
    assert_eq!(resp.status(), 200);
    let received = app.received();
    assert!(
        received.contains(&format!("\r\nhost: {}\r\n", proxy.addr)),
        "{received}"
    );
}

#[tokio::test]
async fn a_chunked_get_reaches_the_upstream_with_its_body() {
    let (proxy, app) = recorded().await;
    for method in ["GET", "HEAD", "DELETE"] {
        let request = format!(
            "{method} /with-body HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        );
        let before = app.received().len();
        let mut client = RawClient::connect(proxy.addr).await;
        client.send(request.as_bytes()).await;
        let resp = if method == "HEAD" {
            client.head_response().await
        } else {
            client.response().await
        };
        let resp = resp.expect("an answer");
        assert_eq!(resp.status, 200, "{method}");
        if method != "HEAD" {
            assert_eq!(resp.text(), "got 11 bytes", "{method}");
        }
        let received = app.received()[before..].to_owned();
        assert!(
            received.contains("\r\ntransfer-encoding: chunked\r\n"),
            "{received}"
        );
        assert!(
            received.ends_with("\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "{method}: {received}"
        );
    }
}

#[tokio::test]
async fn an_http2_get_with_a_body_of_unknown_length_reaches_an_http1_upstream_whole() {
    let (proxy, app) = recorded().await;
    let mut sender = h2_client(TcpStream::connect(proxy.addr).await.expect("connect")).await;
    let req = Request::get(format!("http://{}/h2-body", proxy.addr))
        .body(Generated::new(2, 5))
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("answer within 10 s")
        .expect("h2 response");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body, "got 10 bytes");
    let received = app.received();
    assert!(
        received.contains("\r\ntransfer-encoding: chunked\r\n"),
        "{received}"
    );
    assert!(
        received.ends_with("\r\n\r\n5\r\nxxxxx\r\n5\r\nxxxxx\r\n0\r\n\r\n"),
        "{received}"
    );
}

#[tokio::test]
async fn an_unsolicited_101_is_a_502_never_passed_on() {
    let app = spawn_scripted_backend(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: evil\r\nConnection: upgrade\r\n\r\nraw bytes",
    )
    .await;
    let toml = with_admin(&one_upstream("round_robin", &[server(app.addr)], ""), None);
    let proxy = spawn_proxy(&toml).await;
    let mut client = RawClient::connect(proxy.addr).await;
    client
        .send(b"GET /plain HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await;
    let resp = client.response().await.expect("an answer");
    assert_eq!(resp.status, 502);
    assert_eq!(resp.text(), "502 Bad Gateway\n");
    assert_eq!(resp.header("upgrade"), None);
    // The client connection is still HTTP: a second request gets an answer.
    client
        .send(b"GET /again HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await;
    assert_eq!(client.response().await.expect("an answer").status, 502);
    let (_, metrics) = proxy.admin_get("/metrics", None).await;
    let counted = format!(
        "weir_requests_total{{upstream=\"app\",server=\"{}\",code=\"502\"}} 2",
        app.addr
    );
    assert!(metrics.contains(&counted), "{metrics}");
}

#[tokio::test]
async fn a_request_chunk_extension_with_a_control_character_is_400() {
    let (proxy, app) = recorded().await;
    for ext in [
        &b"a=\x01b"[..],
        b"\x00",
        b"a=\"\x1b[31m\"",
        b"x\x7f",
        b"x\rz",
    ] {
        let mut request =
            b"POST /ext HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n5;".to_vec();
        request.extend_from_slice(ext);
        request.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        let (status, _) = answer(&proxy, &request).await;
        assert_eq!(status, 400, "{}", ext.escape_ascii());
    }
    assert!(!app.received().contains("hello"), "{}", app.received());
    // Extensions made of tokens, quoted strings and tabs still pass, without
    // reaching the upstream: weir frames the body anew.
    let (status, text) = answer(
        &proxy,
        b"POST /ext HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;name=value;\tq=\"a b\"\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!((status, text.as_str()), (200, "got 5 bytes"));
    assert!(
        app.received().ends_with("\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        "{}",
        app.received()
    );
}

#[tokio::test]
async fn an_upstream_chunk_extension_with_a_control_character_is_a_502() {
    let app = spawn_scripted_backend(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=\x01\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let proxy = spawn_proxy(&one_upstream("round_robin", &[server(app.addr)], "")).await;
    let (status, text) = answer(&proxy, b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    assert_eq!((status, text.as_str()), (502, "502 Bad Gateway\n"));
}

#[tokio::test]
async fn an_upstream_chunk_extension_with_a_control_character_later_cuts_the_response() {
    let app = spawn_scripted_backend(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5;x=\x01\r\nworld\r\n0\r\n\r\n",
    )
    .await;
    let proxy = spawn_proxy(&one_upstream("round_robin", &[server(app.addr)], "")).await;
    let mut client = RawClient::connect(proxy.addr).await;
    client.send(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    // The head went out with the first chunk; the rest is never sent, and
    // the body ends without its last chunk when weir closes the connection.
    let resp = client.response().await.expect("a head");
    assert_eq!(resp.status, 200);
    assert!(!resp.text().contains("world"), "{}", resp.text());
    assert!(!resp.text().ends_with("0\r\n\r\n"), "{}", resp.text());
}

#[tokio::test]
async fn headers_spelled_with_underscores_are_dropped_unless_kept() {
    let app = spawn_recording_backend().await;
    let toml = one_upstream("round_robin", &[server(app.addr)], "");
    let mut proxy = spawn_proxy(&toml).await;
    let request = b"GET / HTTP/1.1\r\nHost: a.test\r\nX_Real_IP: 6.6.6.6\r\n\
        X_Forwarded_For: 6.6.6.6\r\nX_Forwarded_Host: evil.test\r\n\
        Transfer_Encoding: chunked\r\nX-Kept: 1\r\n\r\n";
    assert_eq!(answer(&proxy, request).await.0, 200);
    let received = app.received().to_ascii_lowercase();
    assert!(!received.contains('_'), "{received}");
    assert!(
        received.contains("\r\nx-real-ip: 127.0.0.1\r\n"),
        "{received}"
    );
    assert!(received.contains("\r\nx-kept: 1\r\n"), "{received}");

    // `underscores_in_headers = true` keeps them; the key applies on reload.
    assert!(
        proxy
            .reload(&with_server_keys(&toml, "underscores_in_headers = true"))
            .await
    );
    let before = app.received().len();
    assert_eq!(answer(&proxy, request).await.0, 200);
    let received = app.received()[before..].to_ascii_lowercase();
    assert!(
        received.contains("\r\nx_real_ip: 6.6.6.6\r\n"),
        "{received}"
    );
    assert!(
        received.contains("\r\ntransfer_encoding: chunked\r\n"),
        "{received}"
    );
    assert!(
        received.contains("\r\nx-real-ip: 127.0.0.1\r\n"),
        "{received}"
    );
}
