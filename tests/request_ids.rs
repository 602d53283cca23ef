//! `[server] request_id`: a client's valid id is kept, any other request gets
//! a UUID v7; the upstream, the client (weir's own answers included) and both
//! access log formats see the same id.

mod common;

use std::path::Path;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;

fn config(backend: std::net::SocketAddr, log: &Path, format: &str) -> String {
    let toml = one_upstream("round_robin", &[server(backend)], "").replace(
        "access = \"off\"",
        &format!(
            "access = {:?}\naccess_format = \"{format}\"",
            log.display().to_string()
        ),
    );
    // A second route to nowhere, for one of weir's own answers (403).
    let toml = with_server_keys(&toml, "request_id = \"X-Request-Id\"");
    format!("{toml}\n[[route]]\npath = \"/closed\"\nupstream = \"app\"\nallow = [\"192.0.2.1\"]\n")
}

/// Sends GET `path` with `id` (if any) in `X-Request-Id`; returns the status
/// and the id on the response.
async fn get_id(proxy: &Proxy, path: &str, id: Option<&str>) -> (u16, String) {
    let mut req = Request::get(proxy.url(path));
    if let Some(id) = id {
        req = req.header("x-request-id", id);
    }
    let req = req.body(Full::new(Bytes::new())).expect("request");
    let resp = tokio::time::timeout(std::time::Duration::from_secs(10), client().request(req))
        .await
        .expect("response within 10 s")
        .expect("response");
    let id = resp
        .headers()
        .get("x-request-id")
        .expect("an id on the response")
        .to_str()
        .expect("ascii")
        .to_owned();
    (resp.status().as_u16(), id)
}

fn is_uuid_v7(id: &str) -> bool {
    let parts: Vec<&str> = id.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && parts[2].starts_with('7')
        && id.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit())
}

#[tokio::test]
async fn ids_are_kept_or_made_and_seen_by_upstream_client_and_json_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.json");
    let app = spawn_backend("app").await;
    let proxy = spawn_proxy(&config(app.addr, &log, "json")).await;

    let (status, id) = get_id(&proxy, "/a", Some("client-id-42")).await;
    assert_eq!((status, id.as_str()), (200, "client-id-42"));
    assert_eq!(app.last_request().headers["x-request-id"], "client-id-42");

    let (status, made) = get_id(&proxy, "/b", None).await;
    assert_eq!(status, 200);
    assert!(is_uuid_v7(&made), "{made}");
    assert_eq!(app.last_request().headers["x-request-id"], made.as_str());

    // Not printable ASCII, or too long: replaced.
    let long = "x".repeat(201);
    for bad in ["has space", long.as_str()] {
        let (_, id) = get_id(&proxy, "/c", Some(bad)).await;
        assert!(is_uuid_v7(&id), "{bad:?} gave {id}");
    }

    // weir's own answer carries one too.
    let (status, own) = get_id(&proxy, "/closed", None).await;
    assert_eq!(status, 403);
    assert!(is_uuid_v7(&own), "{own}");
    assert_eq!(app.hits(), 4);

    let lines = log_lines(&log, 5).await;
    let ids: Vec<String> = lines
        .iter()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
            v["request_id"]
                .as_str()
                .expect("request_id field")
                .to_owned()
        })
        .collect();
    assert_eq!(ids[0], "client-id-42");
    assert_eq!(ids[1], made);
    assert_eq!(ids[4], own);
}

#[tokio::test]
async fn the_combined_format_ends_with_the_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    let app = spawn_backend("app").await;
    let proxy = spawn_proxy(&config(app.addr, &log, "combined")).await;
    let (_, id) = get_id(&proxy, "/a", Some("abc")).await;
    assert_eq!(id, "abc");
    let (_, made) = get_id(&proxy, "/closed", None).await;
    let lines = log_lines(&log, 2).await;
    assert!(lines[0].ends_with(" request_id=abc"), "{}", lines[0]);
    assert!(
        lines[1].ends_with(&format!(" request_id={made}")),
        "{}",
        lines[1]
    );
}

#[tokio::test]
async fn without_the_key_no_id_is_added() {
    let app = spawn_backend("app").await;
    let proxy = spawn_proxy(&one_upstream("round_robin", &[server(app.addr)], "")).await;
    let resp = get_head(&proxy.url("/")).await;
    assert!(resp.headers().get("x-request-id").is_none());
    assert!(app.last_request().headers.get("x-request-id").is_none());
}

#[tokio::test]
async fn a_redirect_listener_s_answer_carries_an_id_too() {
    let app = spawn_backend("app").await;
    let toml = config_with(
        r#"{ addr = "127.0.0.1:0", redirect_https = true }"#,
        &[server(app.addr)],
        "",
        "request_id = \"X-Request-Id\"",
    );
    let (proxy, _) = spawn_proxy_at(&toml, &["127.0.0.1:0"]).await;
    let resp = raw_exchange(
        proxy.addr,
        b"GET /x HTTP/1.1\r\nHost: site.test\r\nX-Request-Id: mine\r\n\r\n",
    )
    .await
    .expect("answer");
    assert_eq!(resp.status, 301);
    assert_eq!(resp.header("x-request-id"), Some("mine"));
    let resp = raw_exchange(proxy.addr, b"GET /x HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .await
        .expect("answer");
    assert!(is_uuid_v7(resp.header("x-request-id").expect("an id")));
}
