//! A route's rules through the real proxy: `strip_prefix`, and
//! `request_headers` / `response_headers`.

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};

/// A config with one upstream `app` over `backend` and the given `[[route]]` bodies.
fn routes(backend: std::net::SocketAddr, routes: &[&str]) -> String {
    let mut toml = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[log]\naccess = \"off\"\n\n\
         [[upstream]]\nname = \"app\"\nservers = [\"{backend}\"]\n"
    );
    for route in routes {
        toml.push_str(&format!("\n[[route]]\nupstream = \"app\"\n{route}\n"));
    }
    toml
}

/// A backend answering 200 with the target it received as its body.
async fn echo_target() -> Backend {
    spawn_backend_with(|req| async move {
        let target = req.uri().to_string();
        Response::new(full(target))
    })
    .await
}

#[tokio::test]
async fn strip_prefix_cuts_the_route_path_before_forwarding() {
    let app = echo_target().await;
    let proxy = spawn_proxy(&routes(
        app.addr,
        &[
            "path = \"/api\"\nstrip_prefix = true",
            "path = \"/static/\"\nstrip_prefix = true",
            "path = \"/keep\"",
            "path = \"/\"",
        ],
    ))
    .await;
    for (sent, received) in [
        ("/api/users?x=1", "/users?x=1"),
        ("/api", "/"),
        ("/api?x", "/?x"),
        ("/api/", "/"),
        ("/apix/y", "/x/y"),
        ("/static/app.js", "/app.js"),
        ("/keep/users", "/keep/users"),
        ("/other?q", "/other?q"),
    ] {
        let (status, body) = get(&proxy.url(sent)).await;
        assert_eq!(status, StatusCode::OK, "{sent}");
        assert_eq!(body, received, "{sent}");
    }
}

#[tokio::test]
async fn header_rules_change_the_request_and_the_response_but_not_weir_s_headers() {
    let app = spawn_backend_with(|_req| async move {
        Response::builder()
            .header("x-powered-by", "Express")
            .header("strict-transport-security", "max-age=1")
            .header("x-kept", "yes")
            .body(full("ok"))
            .expect("response")
    })
    .await;
    let proxy = spawn_proxy(&routes(
        app.addr,
        &[
            "path = \"/\"\n\
             request_headers = { set = { \"X-Env\" = \"prod\" }, remove = [\"X-Debug\"] }\n\
             response_headers = { set = { \"Strict-Transport-Security\" = \"max-age=63072000\" }, \
             remove = [\"X-Powered-By\"] }",
            "path = \"/bare\"",
        ],
    ))
    .await;
    let send = |path: &str| {
        let req = Request::get(proxy.url(path))
            .header("x-env", "dev")
            .header("x-env", "staging")
            .header("x-debug", "1")
            .header("x-forwarded-for", "6.6.6.6")
            .body(Full::new(Bytes::new()))
            .expect("request");
        async move {
            let resp = client().request(req).await.expect("request through proxy");
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.expect("body").to_bytes();
            (parts, body)
        }
    };

    let (resp, body) = send("/x").await;
    assert_eq!((resp.status, &body[..]), (StatusCode::OK, &b"ok"[..]));
    let req = app.last_request();
    let env: Vec<_> = req.headers.get_all("x-env").iter().collect();
    assert_eq!(env, ["prod"], "set replaces every value the client sent");
    assert!(!req.headers.contains_key("x-debug"));
    // weir's own forwarding headers are as always.
    assert_eq!(req.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(req.headers["x-real-ip"], "127.0.0.1");
    assert!(!resp.headers.contains_key("x-powered-by"));
    assert_eq!(
        resp.headers["strict-transport-security"],
        "max-age=63072000"
    );
    assert_eq!(
        resp.headers
            .get_all("strict-transport-security")
            .iter()
            .count(),
        1
    );
    assert_eq!(resp.headers["x-kept"], "yes");

    // A route without rules changes nothing.
    let (resp, _) = send("/bare").await;
    let req = app.last_request();
    assert_eq!(req.headers.get_all("x-env").iter().count(), 2);
    assert_eq!(req.headers["x-debug"], "1");
    assert_eq!(resp.headers["x-powered-by"], "Express");
    assert_eq!(resp.headers["strict-transport-security"], "max-age=1");
}

#[tokio::test]
async fn response_rules_apply_to_upstream_answers_only() {
    let dead = closed_port().await;
    let proxy = spawn_proxy(&routes(
        dead,
        &["path = \"/\"\nresponse_headers = { set = { \"X-Frame-Options\" = \"DENY\" } }"],
    ))
    .await;
    let resp = get_head(&proxy.url("/")).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert!(!resp.headers().contains_key("x-frame-options"));
}
