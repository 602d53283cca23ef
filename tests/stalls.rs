//! Clients that stall: a request body that sends nothing for
//! `body_read_timeout` gets 408 and its upstream request is cancelled, while a
//! body that drips steadily is never cut off; a request head begun and not
//! finished within `header_read_timeout` gets 408 before the connection
//! closes, and a connection that sent nothing is just closed.

mod common;
mod proto_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use proto_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a backend saw of each request body: its length, or the read error.
type Outcomes = Arc<Mutex<Vec<Result<usize, String>>>>;

/// A backend, HTTP/1.1 or h2c, that reads each request body whole, records
/// how that went and answers with it.
async fn body_reading_backend(outcomes: Outcomes, h2c: bool) -> Backend {
    let handler = move |req: Request<Incoming>| {
        let outcomes = outcomes.clone();
        async move {
            let outcome = match req.into_body().collect().await {
                Ok(body) => Ok(body.to_bytes().len()),
                Err(e) => Err(e.to_string()),
            };
            outcomes.lock().expect("lock").push(outcome.clone());
            Response::new(full(format!("{outcome:?}")))
        }
    };
    if h2c {
        spawn_h2c_backend_with(handler).await
    } else {
        spawn_backend_with(handler).await
    }
}

const STALL: Duration = Duration::from_millis(300);

/// Servers behind weir with `body_read_timeout = "300ms"` and, as with the
/// defaults, a `response_timeout` as long; an admin listener, one failure
/// enough to take a server out, and `upstream_extra`.
fn stall_config(servers: &[String], upstream_extra: &str) -> String {
    let toml = one_upstream(
        "round_robin",
        servers,
        &format!("max_fails = 1\nresponse_timeout = \"300ms\"\n{upstream_extra}"),
    );
    with_admin(
        &with_server_keys(&toml, "body_read_timeout = \"300ms\""),
        None,
    )
}

#[tokio::test]
async fn a_body_that_stalls_gets_408_and_its_upstream_request_is_cancelled() {
    a_stalled_body_is_cut_off(false).await;
}

#[tokio::test]
async fn a_body_that_stalls_on_its_way_to_an_h2c_upstream_gets_408_too() {
    // Over HTTP/2 the cut-off body shows upstream as a reset stream, not as
    // the body's own error.
    a_stalled_body_is_cut_off(true).await;
}

async fn a_stalled_body_is_cut_off(h2c: bool) {
    let outcomes = Outcomes::default();
    let a = body_reading_backend(outcomes.clone(), h2c).await;
    let b = body_reading_backend(outcomes.clone(), h2c).await;
    let protocol = if h2c { "protocol = \"h2c\"" } else { "" };
    let proxy = spawn_proxy(&stall_config(&[server(a.addr), server(b.addr)], protocol)).await;

    let mut client = RawClient::connect(proxy.addr).await;
    let started = Instant::now();
    client
        .send(b"POST /upload HTTP/1.1\r\nHost: stall.test\r\nContent-Length: 100\r\n\r\n")
        .await;
    client.send(&[b'x'; 50]).await;
    let resp = client.response().await.expect("a response");
    let waited = started.elapsed();
    assert_eq!(resp.status, 408, "{}", resp.text());
    assert_eq!(resp.text(), "408 Request Timeout\n");
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(
        waited >= STALL && waited < STALL + Duration::from_secs(1),
        "408 after {waited:?}"
    );
    assert!(
        client.closed().await,
        "the connection is closed after the 408"
    );

    // The backend's read of the body failed: its request was cancelled.
    wait_until(|| !outcomes.lock().expect("lock").is_empty()).await;
    let seen = outcomes.lock().expect("lock").clone();
    assert!(matches!(seen.as_slice(), [Err(_)]), "{seen:?}");

    // Counted as the client's doing, not against either server.
    let m = scrape(&proxy).await;
    let body = [("upstream", "app"), ("phase", "body")];
    assert_eq!(
        metric_value(&m, "weir_client_timeouts_total", &body),
        Some(1.0)
    );
    let timed_out = [("upstream", "app"), ("server", ""), ("code", "408")];
    assert_eq!(
        metric_value(&m, "weir_requests_total", &timed_out),
        Some(1.0)
    );
    for backend in [&a, &b] {
        let health = proxy.server_state("app", backend.addr).health(None);
        assert!(health.usable(), "{health:?}");
    }
}

#[tokio::test]
async fn a_body_that_drips_steadily_is_never_cut_off() {
    let outcomes = Outcomes::default();
    let a = body_reading_backend(outcomes.clone(), false).await;
    let proxy = spawn_proxy(&stall_config(&[server(a.addr)], "")).await;

    let mut client = RawClient::connect(proxy.addr).await;
    client
        .send(b"POST /upload HTTP/1.1\r\nHost: drip.test\r\nContent-Length: 150\r\n\r\n")
        .await;
    // 10 bytes every 100 ms: 1.5 s in all, five times the timeout.
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.send(&[b'x'; 10]).await;
    }
    let resp = client.response().await.expect("a response");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.text(), "Ok(150)");
    let m = scrape(&proxy).await;
    let body = [("upstream", "app"), ("phase", "body")];
    assert_eq!(
        metric_value(&m, "weir_client_timeouts_total", &body),
        Some(0.0)
    );
}

/// One backend behind weir with `header_read_timeout = "300ms"` and an admin listener.
fn head_config(app: &Backend) -> String {
    let toml = one_upstream("round_robin", &[server(app.addr)], "");
    with_admin(
        &with_server_keys(&toml, "header_read_timeout = \"300ms\""),
        None,
    )
}

/// `weir_client_timeouts_total{phase="header"}`.
async fn header_timeouts(proxy: &Proxy) -> Option<f64> {
    let header = [("upstream", ""), ("phase", "header")];
    metric_value(&scrape(proxy).await, "weir_client_timeouts_total", &header)
}

/// Asserts that `resp` is weir's 408 for a request head that timed out.
fn assert_head_timeout_answer(resp: &RawResponse) {
    assert_eq!(resp.status, 408, "{}", resp.text());
    assert_eq!(resp.header("connection"), Some("close"));
    assert_eq!(
        resp.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(resp.text(), "408 Request Timeout\n");
}

#[tokio::test]
async fn a_head_begun_and_not_finished_gets_408_before_the_connection_closes() {
    let app = spawn_backend("app").await;
    let proxy = spawn_proxy(&head_config(&app)).await;
    let mut client = RawClient::connect(proxy.addr).await;
    let started = Instant::now();
    client.send(b"GET / HTTP/1.1\r\nHost: slow.test\r\n").await;
    let resp = client.response().await.expect("a 408 before the close");
    let waited = started.elapsed();
    assert_head_timeout_answer(&resp);
    assert!(
        waited >= STALL && waited < STALL + Duration::from_secs(1),
        "408 after {waited:?}"
    );
    assert!(client.closed().await);
    assert_eq!(app.hits(), 0);
    // Like every status weir answers itself, it is counted (and logged).
    assert_eq!(header_timeouts(&proxy).await, Some(1.0));
    let m = scrape(&proxy).await;
    let answered = [("upstream", ""), ("server", ""), ("code", "408")];
    assert_eq!(
        metric_value(&m, "weir_requests_total", &answered),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_connection_that_sent_nothing_is_closed_without_an_answer() {
    let app = spawn_backend("app").await;
    let proxy = spawn_proxy(&head_config(&app)).await;
    let mut client = RawClient::connect(proxy.addr).await;
    let started = Instant::now();
    assert!(client.closed().await, "closed, and not a byte sent");
    let waited = started.elapsed();
    assert!(
        waited >= STALL && waited < STALL + Duration::from_secs(1),
        "closed after {waited:?}"
    );
    assert_eq!(header_timeouts(&proxy).await, Some(0.0));
}

#[tokio::test]
async fn a_pipelined_head_left_unfinished_gets_408_after_the_answer_before_it() {
    let app = spawn_backend("app").await;
    let proxy = spawn_proxy(&head_config(&app)).await;
    let mut client = RawClient::connect(proxy.addr).await;
    client
        .send(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\nGET /next HTTP/1.1\r\nHost: a")
        .await;
    let first = client.response().await.expect("the first answer");
    assert_eq!((first.status, first.text().as_str()), (200, "app"));
    let second = client.response().await.expect("a 408 for the second");
    assert_head_timeout_answer(&second);
    assert!(client.closed().await);
    assert_eq!(app.hits(), 1);
    assert_eq!(header_timeouts(&proxy).await, Some(1.0));
}

#[tokio::test]
async fn over_tls_the_408_for_an_unfinished_head_is_encrypted() {
    let app = spawn_backend("app").await;
    let pki = Pki::new();
    let leaf = pki.issue("site", &["site.test"]);
    let listen = format!(r#"{{ addr = "127.0.0.1:0", tls = {} }}"#, tls_entry(&leaf));
    let toml = config_with(
        &listen,
        &[server(app.addr)],
        "",
        "header_read_timeout = \"300ms\"",
    );
    let (_proxy, addrs) = spawn_proxy_at(&toml, &["127.0.0.1:0"]).await;
    let client = verifying_client(&pki.ca, &[b"http/1.1"]);
    let mut tls = tls_connect(addrs[0], "site.test", client.clone())
        .await
        .expect("handshake");
    tls.write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\n")
        .await
        .expect("write");
    let answer = String::from_utf8_lossy(&read_to_close(&mut tls).await).into_owned();
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer:?}"
    );
    assert!(
        answer.ends_with("\r\n\r\n408 Request Timeout\n"),
        "{answer:?}"
    );
    assert_eq!(app.hits(), 0);

    // The handshake is not part of a head: a client that sent nothing after
    // it is closed without an answer.
    let mut silent = tls_connect(addrs[0], "site.test", client)
        .await
        .expect("handshake");
    assert_eq!(read_to_close(&mut silent).await, b"");
}

/// What the peer sends until it closes (a reset after the last byte counts
/// as the close).
async fn read_to_close(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got))
        .await
        .expect("closed within 10 s");
    got
}
