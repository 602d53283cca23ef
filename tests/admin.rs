//! The admin listener: metrics move with traffic, reloads and drains; status
//! JSON, drain/enable and token checks, all through real sockets.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use http::StatusCode;
use tokio::sync::Semaphore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_requests_failures_reloads_and_drains() {
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let dead = closed_port().await;
    let pool = [server(a.addr), server(b.addr)];
    let mut proxy = spawn_proxy(&with_admin(&one_upstream("round_robin", &pool, ""), None)).await;
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());

    for _ in 0..4 {
        assert_eq!(get(&proxy.url("/")).await.0, StatusCode::OK);
    }
    let m = scrape(&proxy).await;
    let ok_a = [
        ("upstream", "app"),
        ("server", a_addr.as_str()),
        ("code", "200"),
    ];
    assert_eq!(metric_value(&m, "weir_requests_total", &ok_a), Some(2.0));
    assert_eq!(
        metric_value(&m, "weir_request_duration_seconds", &[("upstream", "app")]),
        Some(4.0)
    );
    assert_eq!(
        metric_value(
            &m,
            "weir_upstream_server_up",
            &[("server", a_addr.as_str())]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &m,
            "weir_upstream_in_flight",
            &[("server", b_addr.as_str())]
        ),
        Some(0.0)
    );
    assert_eq!(
        metric_value(&m, "weir_config_reloads_total", &[("result", "ok")]),
        Some(0.0)
    );
    assert!(
        metric_value(
            &m,
            "weir_upstream_response_bytes_total",
            &[("server", a_addr.as_str())]
        ) >= Some(2.0)
    );
    assert!(metric_value(&m, "weir_connections_open", &[]).is_some());
    let start_ts =
        metric_value(&m, "weir_config_last_reload_success_timestamp_seconds", &[]).expect("ts");
    assert!(start_ts > 1.6e9);

    // A dead server: 502, counted against it; a passive health transition; a removed server disappears.
    let only_dead = one_upstream(
        "round_robin",
        &[server(dead), server(a.addr)],
        "retries = 0",
    );
    assert!(proxy.reload(&with_admin(&only_dead, None)).await);
    let mut codes = HashMap::new();
    for _ in 0..2 {
        *codes.entry(get(&proxy.url("/")).await.0).or_insert(0) += 1;
    }
    assert_eq!(codes.get(&StatusCode::BAD_GATEWAY), Some(&1), "{codes:?}");
    let m = scrape(&proxy).await;
    let dead_addr = dead.to_string();
    let bad = [("server", dead_addr.as_str()), ("code", "502")];
    assert_eq!(metric_value(&m, "weir_requests_total", &bad), Some(1.0));
    let down = [
        ("server", dead_addr.as_str()),
        ("check", "passive"),
        ("to", "down"),
    ];
    assert_eq!(
        metric_value(&m, "weir_upstream_health_transitions_total", &down),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &m,
            "weir_upstream_server_up",
            &[("server", dead_addr.as_str())]
        ),
        Some(0.0)
    );
    assert!(
        m.samples
            .iter()
            .all(|s| s.labels.get("server") != Some(b_addr.as_str())),
        "a removed server's series must disappear"
    );
    assert_eq!(
        metric_value(&m, "weir_config_reloads_total", &[("result", "ok")]),
        Some(1.0)
    );
    // Counters carried over for a server that stayed.
    assert_eq!(
        metric_value(&m, "weir_requests_total", &ok_a).map(|v| v >= 2.0),
        Some(true)
    );

    // A refused reload counts as an error; draining shows as a gauge.
    assert!(!proxy.reload("this is not toml [").await);
    let (status, _) = proxy
        .admin_post(&format!("/api/upstreams/app/servers/{a_addr}/drain"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let m = scrape(&proxy).await;
    assert_eq!(
        metric_value(&m, "weir_config_reloads_total", &[("result", "error")]),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &m,
            "weir_upstream_server_draining",
            &[("server", a_addr.as_str())]
        ),
        Some(1.0)
    );

    // Unrouted requests count under upstream="".
    let routed_only = one_upstream("round_robin", &[server(a.addr)], "")
        .replace("path = \"/\"", "path = \"/app\"");
    assert!(proxy.reload(&with_admin(&routed_only, None)).await);
    assert_eq!(get(&proxy.url("/nowhere")).await.0, StatusCode::NOT_FOUND);
    let m = scrape(&proxy).await;
    let unrouted = [("upstream", ""), ("server", ""), ("code", "404")];
    assert_eq!(
        metric_value(&m, "weir_requests_total", &unrouted),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_and_drain_show_in_status_json_and_steer_traffic() {
    let gate = Arc::new(Semaphore::new(0));
    let a = holding_backend("a", gate.clone()).await;
    let b = spawn_backend("b").await;
    let pool = [server(a.addr), server(b.addr)];
    let toml = with_admin(&one_upstream("round_robin", &pool, ""), None);
    let mut proxy = spawn_proxy(&toml).await;
    let a_addr = a.addr.to_string();

    // A held request shows as in flight on its server.
    let held = tokio::spawn(get_owned(proxy.url("/hold")));
    wait_until(|| a.hits() == 1).await;
    let doc = proxy.status_json().await;
    let servers = &doc["upstreams"][0]["servers"];
    assert_eq!(servers[0]["addr"], a_addr.as_str());
    assert_eq!(servers[0]["in_flight"], 1);
    assert_eq!(servers[0]["state"], "up");

    // Drain: the held request still finishes; new requests all go to b.
    let (status, body) = proxy
        .admin_post(&format!("/api/upstreams/app/servers/{a_addr}/drain"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        proxy.status_json().await["upstreams"][0]["servers"][0]["state"],
        "draining"
    );
    for _ in 0..6 {
        assert_eq!(get(&proxy.url("/")).await.1, "b");
    }
    gate.add_permits(1);
    assert_eq!(held.await.expect("held request").0, StatusCode::OK);
    let (_, list) = proxy.admin_get("/api/upstreams", None).await;
    let list: serde_json::Value = serde_json::from_str(&list).expect("json");
    assert_eq!(list["upstreams"][0]["servers"][0]["in_flight"], 0);
    assert_eq!(list["upstreams"][0]["servers"][0]["draining"], true);

    // Draining survives a reload that keeps the server.
    assert!(proxy.reload(&toml).await);
    assert_eq!(
        proxy.status_json().await["upstreams"][0]["servers"][0]["draining"],
        true
    );
    assert_eq!(get(&proxy.url("/")).await.1, "b");

    // Enable: a gets traffic again.
    let (status, _) = proxy
        .admin_post(&format!("/api/upstreams/app/servers/{a_addr}/enable"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut bodies = Vec::new();
    for _ in 0..4 {
        bodies.push(get(&proxy.url("/")).await.1);
    }
    assert!(bodies.contains(&"a".to_string()), "{bodies:?}");

    // Errors are clear.
    let (status, body) = proxy
        .admin_post("/api/upstreams/nope/servers/127.0.0.1:1/drain")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("no upstream named \"nope\""), "{body}");
    let (status, body) = proxy
        .admin_post("/api/upstreams/app/servers/127.0.0.1:1/drain")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("has no server 127.0.0.1:1"), "{body}");
    let (status, _) = proxy
        .admin_get(&format!("/api/upstreams/app/servers/{a_addr}/drain"), None)
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        proxy.admin_post("/metrics").await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        proxy.admin_get("/nothing", None).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_token_guards_everything_but_healthz() {
    let a = spawn_backend("a").await;
    let toml = with_admin(
        &one_upstream("round_robin", &[server(a.addr)], ""),
        Some("s3cret"),
    );
    let proxy = spawn_proxy(&toml).await;
    for path in ["/metrics", "/status", "/status.json", "/api/upstreams"] {
        assert_eq!(
            proxy.admin_get(path, None).await.0,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            proxy.admin_get(path, Some("wrong")).await.0,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            proxy.admin_get(path, Some("s3cret")).await.0,
            StatusCode::OK,
            "{path}"
        );
    }
    let drain = format!("/api/upstreams/app/servers/{}/drain", a.addr);
    assert_eq!(proxy.admin_post(&drain).await.0, StatusCode::UNAUTHORIZED);
    let url = proxy.admin_url("/status.json?access_token=s3cret");
    assert_eq!(get(&url).await.0, StatusCode::OK);
    assert_eq!(
        proxy.admin_get("/healthz", None).await,
        (StatusCode::OK, "ok".to_string())
    );
}

#[tokio::test]
async fn a_query_token_is_percent_decoded_and_the_bearer_scheme_is_case_insensitive() {
    let a = spawn_backend("a").await;
    let toml = with_admin(
        &one_upstream("round_robin", &[server(a.addr)], ""),
        Some("a+b&c d%"),
    );
    let proxy = spawn_proxy(&toml).await;
    let encoded = proxy.admin_url("/status.json?x=1&access_token=a%2Bb%26c%20d%25");
    assert_eq!(get(&encoded).await.0, StatusCode::OK);
    let raw = proxy.admin_url("/status.json?access_token=a+b");
    assert_eq!(get(&raw).await.0, StatusCode::UNAUTHORIZED);
    let req = http::Request::get(proxy.admin_url("/status.json"))
        .header("authorization", "bearer a+b&c d%")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    assert_eq!(send(req).await.0, StatusCode::OK);
}
