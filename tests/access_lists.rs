//! Route `allow` / `deny` lists: 403 for clients they refuse, judged on the
//! client address weir resolved (trusted proxies' X-Forwarded-For, PROXY
//! protocol), counted and logged like weir's other own answers.

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;

/// One upstream `app` and routes on `/open`, `/allowed` (allow 127.0.0.1),
/// `/others` (allow 192.0.2.0/24) and `/both` (allow 127/8, deny 127.0.0.1).
fn config(app: std::net::SocketAddr, server_extra: &str) -> String {
    let routes = r#"
[[route]]
path = "/allowed"
upstream = "app"
allow = ["127.0.0.1"]

[[route]]
path = "/others"
upstream = "app"
allow = ["192.0.2.0/24"]

[[route]]
path = "/both"
upstream = "app"
allow = ["127.0.0.0/8"]
deny = ["127.0.0.1/32"]

[[route]]
path = "/denied-xff"
upstream = "app"
deny = ["203.0.113.9"]
"#;
    let toml = config_with("\"127.0.0.1:0\"", &[server(app)], "", server_extra);
    with_admin(&format!("{toml}{routes}"), None)
}

async fn get_from(proxy: &Proxy, path: &str, xff: Option<&str>) -> u16 {
    let mut req = Request::get(proxy.url(path));
    if let Some(xff) = xff {
        req = req.header("x-forwarded-for", xff);
    }
    send(req.body(Full::new(Bytes::new())).expect("request"))
        .await
        .0
        .as_u16()
}

#[tokio::test]
async fn routes_serve_only_the_clients_their_lists_allow() {
    let app = spawn_backend("app").await;
    let proxy = spawn_proxy(&config(app.addr, "")).await;
    assert_eq!(get_from(&proxy, "/", None).await, 200);
    assert_eq!(get_from(&proxy, "/allowed", None).await, 200);
    assert_eq!(get_from(&proxy, "/others", None).await, 403);
    // In both lists: deny wins.
    assert_eq!(get_from(&proxy, "/both", None).await, 403);
    // The peer is not a trusted proxy: a forged X-Forwarded-For changes nothing.
    assert_eq!(get_from(&proxy, "/others", Some("192.0.2.5")).await, 403);
    assert_eq!(
        get_from(&proxy, "/denied-xff", Some("203.0.113.9")).await,
        200
    );
    assert_eq!(app.hits(), 3);

    let scrape = scrape(&proxy).await;
    let refused = metric_value(
        &scrape,
        "weir_requests_total",
        &[("upstream", "app"), ("code", "403")],
    );
    assert_eq!(refused, Some(3.0));
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_judged() {
    let app = spawn_backend("app").await;
    let proxy = spawn_proxy(&config(app.addr, "trusted_proxies = [\"127.0.0.1\"]")).await;
    assert_eq!(get_from(&proxy, "/others", Some("192.0.2.5")).await, 200);
    assert_eq!(
        get_from(&proxy, "/denied-xff", Some("203.0.113.9")).await,
        403
    );
    // The last untrusted hop counts, not an earlier (forgeable) one.
    assert_eq!(
        get_from(&proxy, "/denied-xff", Some("203.0.113.9, 198.51.100.1")).await,
        200
    );
    // Without a forwarded client, the trusted peer itself is the client.
    assert_eq!(get_from(&proxy, "/allowed", None).await, 200);
}

#[tokio::test]
async fn a_proxy_protocol_client_is_judged_by_its_header() {
    let app = spawn_backend("app").await;
    let toml = config(app.addr, "trusted_proxies = [\"127.0.0.1\"]").replace(
        "listen = [\"127.0.0.1:0\"]",
        "listen = [{ addr = \"127.0.0.1:0\", proxy_protocol = true }]",
    );
    let (proxy, _) = spawn_proxy_at(&toml, &["127.0.0.1:0"]).await;
    let request = |path: &str, source: &str| {
        format!(
            "PROXY TCP4 {source} 127.0.0.1 5000 80\r\nGET {path} HTTP/1.1\r\nHost: a\r\n\
             X-Forwarded-For: 192.0.2.5\r\nConnection: close\r\n\r\n"
        )
    };
    let status = |bytes: String| {
        let addr = proxy.addr;
        async move {
            raw_exchange(addr, bytes.as_bytes())
                .await
                .expect("answer")
                .status
        }
    };
    assert_eq!(status(request("/others", "192.0.2.77")).await, 200);
    // The header's client is untrusted: its X-Forwarded-For does not count.
    assert_eq!(status(request("/others", "198.51.100.1")).await, 403);
    assert_eq!(status(request("/allowed", "198.51.100.1")).await, 403);
}
