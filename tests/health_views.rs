//! A server's health is reported the same way everywhere: `/status.json`
//! (which the status page draws), `/api/upstreams`, `/metrics` and the
//! balancer's own choice agree, whether active checks, passive failures or an
//! operator took the server out.

mod common;

use std::net::SocketAddr;

use common::*;
use http::{Response, StatusCode};
use serde_json::Value;

/// A backend answering `name`, whose `/health` always fails with 500.
async fn sick_backend(name: &'static str) -> Backend {
    spawn_backend_with(move |req| async move {
        if req.uri().path() == "/health" {
            let mut resp = Response::new(full("sick"));
            *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            return resp;
        }
        Response::new(full(name))
    })
    .await
}

/// Probes every 50 ms; one failed probe takes a server out.
const CHECKS: &str =
    "[upstream.health_check]\npath = \"/health\"\ninterval = \"50ms\"\ntimeout = \"1s\"\nrise = 1\nfall = 1";

/// What the views say about one server, once they were found to agree.
#[derive(Debug, PartialEq)]
struct Seen {
    /// `state`: up, down, draining or backup.
    state: String,
    /// `healthy`, and `weir_upstream_server_up` as a bool.
    healthy: bool,
    /// `down_by`: which checks keep it out.
    down_by: Vec<String>,
    /// `draining`, and `weir_upstream_server_draining` as a bool.
    draining: bool,
    /// `slow_start`: the share a returning server may take, when ramping.
    slow_start: Option<f64>,
}

/// The row of server `addr` in a document with `upstreams[0].servers`.
fn row(doc: &Value, addr: SocketAddr) -> &Value {
    doc["upstreams"][0]["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .find(|s| s["addr"] == addr.to_string().as_str())
        .unwrap_or_else(|| panic!("no row for {addr} in {doc}"))
}

fn seen(row: &Value) -> Seen {
    Seen {
        state: row["state"].as_str().expect("state").to_owned(),
        healthy: row["healthy"].as_bool().expect("healthy"),
        down_by: row["down_by"]
            .as_array()
            .expect("down_by")
            .iter()
            .map(|c| c.as_str().expect("check").to_owned())
            .collect(),
        draining: row["draining"].as_bool().expect("draining"),
        slow_start: row["slow_start"].as_f64(),
    }
}

/// Reads server `addr` of upstream `app` from `/status.json`, `/api/upstreams`
/// and `/metrics`, asserts they agree, and returns what they say.
async fn views(proxy: &Proxy, addr: SocketAddr) -> Seen {
    let status = seen(row(&proxy.status_json().await, addr));
    let (code, body) = proxy.admin_get("/api/upstreams", None).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let api = seen(row(&serde_json::from_str(&body).expect("json"), addr));
    assert_eq!(status, api, "/status.json and /api/upstreams disagree");

    let m = scrape(proxy).await;
    let addr = addr.to_string();
    let labels = [("upstream", "app"), ("server", addr.as_str())];
    let up = metric_value(&m, "weir_upstream_server_up", &labels);
    assert_eq!(up, Some(f64::from(u8::from(status.healthy))), "{status:?}");
    let draining = metric_value(&m, "weir_upstream_server_draining", &labels);
    assert_eq!(draining, Some(f64::from(u8::from(status.draining))));
    status
}

/// The bodies of `n` requests, each naming the server that answered.
async fn answered_by(proxy: &Proxy, n: usize) -> Vec<String> {
    let mut names = Vec::with_capacity(n);
    for _ in 0..n {
        let (status, body) = get(&proxy.url("/")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        names.push(body);
    }
    names
}

#[tokio::test]
async fn a_server_taken_out_by_active_checks_is_down_in_every_view() {
    let a = sick_backend("a").await;
    let b = spawn_backend("b").await;
    let c = sick_backend("c").await;
    let pool = [
        server(a.addr),
        server(b.addr),
        format!("{{ addr = \"{}\", backup = true }}", c.addr),
    ];
    let proxy = spawn_proxy(&with_admin(
        &one_upstream("round_robin", &pool, CHECKS),
        None,
    ))
    .await;
    // `b` passes its probes: the first probe of every server has run once
    // both sick ones are out.
    let (a_state, c_state) = (
        proxy.server_state("app", a.addr),
        proxy.server_state("app", c.addr),
    );
    wait_until(|| a_state.health(None).active_down && c_state.health(None).active_down).await;

    let down = Seen {
        state: "down".into(),
        healthy: false,
        down_by: vec!["active".into()],
        draining: false,
        slow_start: None,
    };
    assert_eq!(views(&proxy, a.addr).await, down);
    assert_eq!(views(&proxy, c.addr).await, down, "a backup that is down");
    let b_seen = views(&proxy, b.addr).await;
    assert_eq!((b_seen.state.as_str(), b_seen.healthy), ("up", true));
    assert!(answered_by(&proxy, 6).await.iter().all(|n| n == "b"));

    // With `b` drained too, nothing is usable: the down backup is not used.
    let (status, body) = proxy
        .admin_post(&format!("/api/upstreams/app/servers/{}/drain", b.addr))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        get(&proxy.url("/")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn a_server_taken_out_by_passive_failures_is_down_in_every_view() {
    let dead = closed_port().await;
    let b = spawn_backend("b").await;
    let pool = [server(dead), server(b.addr)];
    let proxy = spawn_proxy(&with_admin(
        &one_upstream("round_robin", &pool, "retries = 0"),
        None,
    ))
    .await;
    // Round robin sends one of the first two requests to the dead server.
    for _ in 0..2 {
        get(&proxy.url("/")).await;
    }
    assert_eq!(
        views(&proxy, dead).await,
        Seen {
            state: "down".into(),
            healthy: false,
            down_by: vec!["passive".into()],
            draining: false,
            slow_start: None,
        }
    );
    let doc = proxy.status_json().await;
    assert_eq!(
        row(&doc, dead)["errors_total"],
        1,
        "its 502 counts against it"
    );
    assert!(views(&proxy, b.addr).await.healthy);
    assert!(answered_by(&proxy, 6).await.iter().all(|n| n == "b"));
}

#[tokio::test]
async fn a_drained_server_is_draining_in_every_view_and_ramps_up_when_enabled() {
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let pool = [server(a.addr), server(b.addr)];
    let proxy = spawn_proxy(&with_admin(
        &one_upstream("round_robin", &pool, "slow_start = \"1h\""),
        None,
    ))
    .await;
    let (status, body) = proxy
        .admin_post(&format!("/api/upstreams/app/servers/{}/drain", a.addr))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        views(&proxy, a.addr).await,
        Seen {
            state: "draining".into(),
            healthy: true,
            down_by: vec![],
            draining: true,
            slow_start: None,
        }
    );
    assert!(answered_by(&proxy, 6).await.iter().all(|n| n == "b"));

    // Enabled under a one-hour slow_start, it is up with a share near zero.
    let (status, _) = proxy
        .admin_post(&format!("/api/upstreams/app/servers/{}/enable", a.addr))
        .await;
    assert_eq!(status, StatusCode::OK);
    let back = views(&proxy, a.addr).await;
    assert_eq!((back.state.as_str(), back.healthy), ("up", true));
    assert!(
        back.slow_start.is_some_and(|share| share < 0.01),
        "{back:?}"
    );
    assert_eq!(views(&proxy, b.addr).await.slow_start, None);
    assert!(answered_by(&proxy, 20).await.iter().all(|n| n == "b"));
}
