//! Every status weir answers itself is a real answer: the short plain-text
//! body, a log line with the reason, an access log line and a count in
//! `weir_requests_total` — heads hyper cannot read and the HTTPS redirect
//! included — and weir's own bodies are never counted as a server's bytes.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A proxy with an access log (`format`) in a temporary directory and an
/// admin listener, in front of a recording backend.
struct Setup {
    proxy: Proxy,
    backend: RecordingBackend,
    access: PathBuf,
    _dir: tempfile::TempDir,
}

async fn setup(format: &str) -> Setup {
    setup_with(format, "listen = [\"127.0.0.1:0\"]").await
}

/// [`setup`] with `listen` as the `[server]` listen line.
async fn setup_with(format: &str, listen: &str) -> Setup {
    let backend = spawn_recording_backend().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let access = dir.path().join("access.log");
    let toml = one_upstream("round_robin", &[server(backend.addr)], "")
        .replace("listen = [\"127.0.0.1:0\"]", listen)
        .replace(
            "access = \"off\"",
            &format!("access = {access:?}\naccess_format = \"{format}\""),
        );
    let proxy = spawn_proxy(&with_admin(&toml, None)).await;
    Setup {
        proxy,
        backend,
        access,
        _dir: dir,
    }
}

/// The JSON access line number `n` (from 0), once written.
async fn json_line(path: &Path, n: usize) -> serde_json::Value {
    let lines = log_lines(path, n + 1).await;
    serde_json::from_str(&lines[n]).expect("a JSON line")
}

/// `weir_requests_total` for requests weir answered without a route.
async fn unrouted_count(proxy: &Proxy, code: &str) -> Option<f64> {
    let labels = [("upstream", ""), ("server", ""), ("code", code)];
    metric_value(&scrape(proxy).await, "weir_requests_total", &labels)
}

/// Asserts `resp` is weir's own plain-text answer with `status`, closing the connection.
fn assert_own_answer(resp: &RawResponse, status: u16, text: &str) {
    assert_eq!(resp.status, status);
    assert_eq!(resp.text(), format!("{status} {text}\n"));
    assert_eq!(
        resp.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(resp.header("connection"), Some("close"));
}

#[tokio::test]
async fn a_malformed_head_gets_weirs_own_400() {
    let (logs, _guard) = capture_logs();
    let s = setup("json").await;
    let mut client = RawClient::connect(s.proxy.addr).await;
    client
        .send(b"POST /upload?x=1 HTTP/1.1\r\nHost: a\r\nbad header\r\n\r\n")
        .await;
    let resp = client.response().await.expect("an answer");
    assert_own_answer(&resp, 400, "Bad Request");
    assert!(client.closed().await);

    let line = json_line(&s.access, 0).await;
    assert_eq!(line["status"], 400);
    assert_eq!(line["method"], "POST");
    assert_eq!(line["path"], "/upload?x=1");
    assert_eq!(line["bytes"], 16);
    assert_eq!(line["upstream"], serde_json::Value::Null);
    assert_eq!(unrouted_count(&s.proxy, "400").await, Some(1.0));
    // The log line may follow the answer on the wire.
    let wanted = ["WARN", "request failed", "status=400", "reason="];
    wait_until(|| !logs.matching(&wanted).is_empty()).await;
    let logged = logs.matching(&wanted);
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(s.backend.received(), "");
}

#[tokio::test]
async fn an_oversized_head_gets_weirs_own_431() {
    let (logs, _guard) = capture_logs();
    let s = setup("json").await;
    let head = format!(
        "GET /big HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(100_000)
    );
    let resp = raw_exchange(s.proxy.addr, head.as_bytes())
        .await
        .expect("an answer");
    assert_own_answer(&resp, 431, "Request Header Fields Too Large");
    let mut lines = String::from("GET /many HTTP/1.1\r\nHost: a\r\n");
    for i in 0..100 {
        lines.push_str(&format!("X-{i}: {i}\r\n"));
    }
    lines.push_str("\r\n");
    let resp = raw_exchange(s.proxy.addr, lines.as_bytes())
        .await
        .expect("an answer");
    assert_own_answer(&resp, 431, "Request Header Fields Too Large");

    for (n, path) in ["/big", "/many"].into_iter().enumerate() {
        let line = json_line(&s.access, n).await;
        assert_eq!(line["status"], 431);
        assert_eq!(line["path"], path);
    }
    assert_eq!(unrouted_count(&s.proxy, "431").await, Some(2.0));
    let wanted = ["WARN", "request failed", "status=431"];
    wait_until(|| logs.matching(&wanted).len() >= 2).await;
    let logged = logs.matching(&wanted);
    assert_eq!(logged.len(), 2, "{logged:?}");
    assert_eq!(s.backend.received(), "");
}

#[tokio::test]
async fn bytes_that_are_no_request_line_are_logged_as_dash() {
    let s = setup("combined").await;
    // A TLS ClientHello's first bytes, sent to a cleartext listener.
    let resp = raw_exchange(
        s.proxy.addr,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    )
    .await
    .expect("an answer");
    assert_own_answer(&resp, 400, "Bad Request");
    let line = &log_lines(&s.access, 1).await[0];
    assert!(line.contains(" \"-\" 400 16 "), "{line}");
    assert_eq!(unrouted_count(&s.proxy, "400").await, Some(1.0));
}

#[tokio::test]
async fn a_bad_head_after_good_requests_on_one_connection_gets_weirs_answer() {
    let s = setup("json").await;
    let mut client = RawClient::connect(s.proxy.addr).await;
    // Pipelined behind a good request, then sent after a second one was answered.
    client
        .send(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n")
        .await;
    for _ in 0..2 {
        assert_eq!(client.response().await.expect("answered").status, 200);
    }
    client
        .send(b"GET /three HTTP/1.1\r\nHost: a\r\n\r\nGET /four HTTP/1.1\r\nHo st: a\r\n\r\n")
        .await;
    let three = client.response().await.expect("answered");
    assert_eq!((three.status, three.text()), (200, "got 0 bytes".into()));
    let four = client.response().await.expect("answered");
    assert_own_answer(&four, 400, "Bad Request");
    assert_eq!(json_line(&s.access, 3).await["path"], "/four");
}

#[tokio::test]
async fn a_parked_connection_woken_by_a_bad_head_gets_weirs_answer() {
    let s = setup("json").await;
    let mut client = RawClient::connect(s.proxy.addr).await;
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(client.response().await.expect("answered").status, 200);
    wait_until(|| s.proxy.connections_parked() == 1).await;
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n:\r\n\r\n").await;
    let resp = client.response().await.expect("an answer");
    assert_own_answer(&resp, 400, "Bad Request");
}

#[tokio::test]
async fn the_https_redirect_is_access_logged_and_counted() {
    let (logs, _guard) = capture_logs();
    let listen = "listen = [{ addr = \"127.0.0.1:0\", redirect_https = true }]";
    let s = setup_with("json", listen).await;
    let proxy = &s.proxy;

    let resp = raw_exchange(
        proxy.addr,
        b"GET /a?b=1 HTTP/1.1\r\nHost: site.test\r\n\r\n",
    )
    .await
    .expect("an answer");
    assert_eq!(resp.status, 301);
    assert_eq!(resp.header("location"), Some("https://site.test/a?b=1"));
    assert_eq!(resp.text(), "301 Moved Permanently\n");
    let resp = raw_exchange(proxy.addr, b"GET / HTTP/1.0\r\n\r\n")
        .await
        .expect("an answer");
    assert_eq!(
        (resp.status, resp.text()),
        (400, "400 Bad Request\n".into())
    );

    let line = json_line(&s.access, 0).await;
    assert_eq!(line["status"], 301);
    assert_eq!(line["path"], "/a?b=1");
    assert_eq!(json_line(&s.access, 1).await["status"], 400);
    let scraped = scrape(proxy).await;
    for code in ["301", "400"] {
        let labels = [("upstream", ""), ("server", ""), ("code", code)];
        let count = metric_value(&scraped, "weir_requests_total", &labels);
        assert_eq!(count, Some(1.0), "code {code}");
    }
    assert_eq!(logs.matching(&["DEBUG", "redirected to HTTPS"]).len(), 1);
    let wanted = ["WARN", "request failed", "status=400", "no host"];
    wait_until(|| !logs.matching(&wanted).is_empty()).await;
    assert_eq!(logs.matching(&wanted).len(), 1);
}

#[tokio::test]
async fn weirs_own_502_body_is_not_counted_as_the_servers_bytes() {
    let closed = closed_port().await;
    let toml = with_admin(&one_upstream("round_robin", &[server(closed)], ""), None);
    let proxy = spawn_proxy(&toml).await;
    let (status, body) = get(&proxy.url("/")).await;
    assert_eq!((status.as_u16(), body.as_str()), (502, "502 Bad Gateway\n"));
    let scraped = scrape(&proxy).await;
    let addr = closed.to_string();
    let server = [("upstream", "app"), ("server", addr.as_str())];
    let code = [server[0], server[1], ("code", "502")];
    assert_eq!(
        metric_value(&scraped, "weir_requests_total", &code),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&scraped, "weir_upstream_response_bytes_total", &server),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_target_too_long_for_hyper_gets_weirs_own_414() {
    let s = setup_with(
        "json",
        "listen = [\"127.0.0.1:0\"]\nmax_header_size = \"128KiB\"",
    )
    .await;
    let head = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(70_000));
    let resp = raw_exchange(s.proxy.addr, head.as_bytes())
        .await
        .expect("an answer");
    assert_own_answer(&resp, 414, "URI Too Long");
    assert_eq!(unrouted_count(&s.proxy, "414").await, Some(1.0));
    assert_eq!(s.backend.received(), "");
}
