//! Sticky sessions: a cookie ties a client to the server that first answered
//! it, on every weir instance with the same upstream, until that server goes.

mod common;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};

use common::*;

const STICKY: &str =
    "sticky = { cookie = \"weir_server\", max_age = \"1h\", secure = false, http_only = true }";

/// One GET with `cookie` (if any): the backend that answered and the cookie
/// weir set, as `name=value`.
async fn visit(client: &TestClient, url: &str, cookie: Option<&str>) -> (String, Option<String>) {
    let mut req = Request::get(url);
    if let Some(cookie) = cookie {
        req = req.header(header::COOKIE, format!("other=1; {cookie}"));
    }
    let req = req.body(Full::new(Bytes::new())).expect("request");
    let resp = client.request(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let set = resp
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let pair = set
        .as_deref()
        .and_then(|s| s.split(';').next())
        .map(str::to_string);
    if let Some(set) = &set {
        for attribute in ["Path=/", "Max-Age=3600", "HttpOnly", "SameSite=Lax"] {
            assert!(set.contains(attribute), "{set} lacks {attribute}");
        }
        assert!(!set.contains("Secure"), "{set}");
    }
    (String::from_utf8_lossy(&body).into_owned(), pair)
}

#[tokio::test]
async fn a_client_with_the_cookie_stays_on_its_server_until_it_goes() {
    let backends = [
        spawn_backend("a").await,
        spawn_backend("b").await,
        spawn_backend("c").await,
    ];
    let servers: Vec<String> = backends.iter().map(|b| server(b.addr)).collect();
    let toml = one_upstream("round_robin", &servers, STICKY);
    let proxy = spawn_proxy(&toml).await;
    let client = client();
    let url = proxy.url("/");

    let (first, cookie) = visit(&client, &url, None).await;
    let cookie = cookie.expect("the first response sets the cookie");
    assert!(cookie.starts_with("weir_server="), "{cookie}");
    // The cookie does not show the server's address.
    let port = backends[0].addr.port().to_string();
    assert!(
        !cookie.contains(&port) && !cookie.contains("127.0.0.1"),
        "{cookie}"
    );

    let mut others = std::collections::HashSet::new();
    for _ in 0..100 {
        let (server, set) = visit(&client, &url, Some(&cookie)).await;
        assert_eq!(server, first, "the sticky client moved");
        assert_eq!(
            set, None,
            "a client already on its server gets no new cookie"
        );
        // Clients without the cookie rotate, and each is given one.
        let (other, set) = visit(&client, &url, None).await;
        assert!(set.is_some());
        others.insert(other);
    }
    assert_eq!(others.len(), 3, "{others:?}");

    // A second weir with the same upstream reads the cookie the same way.
    let second = spawn_proxy(&toml).await;
    let (server, set) = visit(&client, &second.url("/"), Some(&cookie)).await;
    assert_eq!((server, set), (first.clone(), None));

    // Its server goes: the client is balanced again and gets a new cookie.
    let owner = ["a", "b", "c"]
        .iter()
        .position(|n| *n == first)
        .expect("a backend's name");
    backends[owner].stop();
    let (moved, set) = visit(&client, &url, Some(&cookie)).await;
    assert_ne!(moved, first);
    let fresh = set.expect("a new cookie");
    assert_ne!(fresh, cookie);
    let (again, set) = visit(&client, &url, Some(&fresh)).await;
    assert_eq!((again, set), (moved, None));
}

#[tokio::test]
async fn a_forged_or_stale_cookie_is_balanced_normally() {
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let toml = one_upstream("round_robin", &[server(a.addr), server(b.addr)], STICKY);
    let proxy = spawn_proxy(&toml).await;
    let client = client();
    for forged in [
        "weir_server=0000000000000000",
        "weir_server=127.0.0.1:1",
        "weir_server=",
    ] {
        let (_, set) = visit(&client, &proxy.url("/"), Some(forged)).await;
        assert!(set.is_some(), "{forged}: no new cookie");
    }
}
