//! Rate limits through the real proxy: local buckets (429 and its headers,
//! per-key buckets, the resolved client address, reloads) and global buckets
//! in a real `redis-server` (one budget for two instances, Redis going away
//! and coming back, `fail = "closed"`).

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;

/// A config with one backend behind a `/` route limited by `limit` (an inline
/// table), `[admin]` on, and `extra` appended (e.g. `[redis]`).
fn limited(backend: &Backend, limit: &str, extra: &str) -> String {
    let base = one_upstream("round_robin", &[server(backend.addr)], "");
    let base = base.replace(
        "upstream = \"app\"\n",
        &format!("upstream = \"app\"\nrate_limit = {limit}\n"),
    );
    with_admin(&format!("{base}\n{extra}\n"), None)
}

/// GETs `url` with `headers`; returns the status and the response headers.
async fn get_headers(
    client: &TestClient,
    url: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap) {
    let mut req = Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::new())).expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .expect("answered within 10 s")
        .expect("request through proxy");
    let status = resp.status();
    let headers = resp.headers().clone();
    let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
    (status, headers)
}

/// How many of `n` GETs of `url` with `headers` were let through.
async fn allowed(client: &TestClient, url: &str, headers: &[(&str, &str)], n: usize) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        let (status, _) = get_headers(client, url, headers).await;
        match status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    ok
}

#[tokio::test]
async fn over_a_local_limit_the_answer_is_429_with_when_to_retry() {
    let backend = spawn_backend("a").await;
    // Three at once, then one an hour: the fourth request must wait.
    let proxy = spawn_proxy(&limited(
        &backend,
        "{ requests = 1, per = \"1h\", burst = 3 }",
        "",
    ))
    .await;
    let client = client();
    let url = proxy.url("/x");
    for _ in 0..3 {
        assert_eq!(get_headers(&client, &url, &[]).await.0, StatusCode::OK);
    }
    let (status, headers) = get_headers(&client, &url, &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let retry: u64 = header("retry-after")
        .parse()
        .expect("Retry-After in seconds");
    assert!((3595..=3600).contains(&retry), "Retry-After {retry}");
    assert_eq!(header("ratelimit-policy"), "\"default\";q=3;w=10800");
    assert_eq!(header("ratelimit"), format!("\"default\";r=0;t={retry}"));
    assert_eq!(
        get_headers(&client, &url, &[]).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        backend.hits(),
        3,
        "refused requests never reach the backend"
    );

    let scrape = scrape(&proxy).await;
    assert_eq!(
        metric_value(&scrape, "weir_rate_limited_total", &[("route", "*/")]),
        Some(2.0)
    );
}

#[tokio::test]
async fn each_header_value_has_its_bucket_and_requests_without_it_share_one() {
    let backend = spawn_backend("a").await;
    let proxy = spawn_proxy(&limited(
        &backend,
        "{ requests = 1, per = \"1h\", burst = 2, key = \"header:X-Api-Key\" }",
        "",
    ))
    .await;
    let client = client();
    let url = proxy.url("/");
    assert_eq!(allowed(&client, &url, &[("x-api-key", "a")], 4).await, 2);
    assert_eq!(allowed(&client, &url, &[("x-api-key", "b")], 4).await, 2);
    assert_eq!(allowed(&client, &url, &[], 2).await, 2);
    assert_eq!(allowed(&client, &url, &[], 2).await, 0, "one shared bucket");
    assert_eq!(allowed(&client, &url, &[("x-api-key", "c")], 1).await, 1);
}

#[tokio::test]
async fn the_ip_key_is_the_client_address_weir_resolved() {
    let backend = spawn_backend("a").await;
    let toml = limited(&backend, "{ requests = 1, per = \"1h\", burst = 2 }", "");
    // 127.0.0.1 is a trusted proxy: the client is the last untrusted hop of
    // X-Forwarded-For, as in X-Real-IP.
    let toml = with_server_keys(&toml, "trusted_proxies = [\"127.0.0.1/32\"]");
    let proxy = spawn_proxy(&toml).await;
    let client = client();
    let url = proxy.url("/");
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    assert_eq!(allowed(&client, &url, &from("192.0.2.1"), 3).await, 2);
    assert_eq!(allowed(&client, &url, &from("192.0.2.2"), 3).await, 2);
    assert_eq!(
        allowed(
            &client,
            &url,
            &[("x-forwarded-for", "192.0.2.1, 127.0.0.1")],
            1
        )
        .await,
        0,
        "a trusted hop after the client does not make it a new client"
    );
}

#[tokio::test]
async fn a_reload_keeps_the_buckets_of_a_route_whose_limit_did_not_change() {
    let backend = spawn_backend("a").await;
    let toml = limited(&backend, "{ requests = 1, per = \"1h\", burst = 2 }", "");
    let mut proxy = spawn_proxy(&toml).await;
    let client = client();
    let url = proxy.url("/");
    assert_eq!(allowed(&client, &url, &[], 3).await, 2);
    // Another route added, this one untouched: its clients stay limited.
    let other = format!("{toml}\n[[route]]\npath = \"/other\"\nupstream = \"app\"\n");
    assert!(proxy.reload(&other).await);
    assert_eq!(allowed(&client, &url, &[], 1).await, 0, "buckets kept");
    // The limit changed: new buckets under the new limit.
    let changed = other.replace("burst = 2", "burst = 3");
    assert!(proxy.reload(&changed).await);
    assert_eq!(allowed(&client, &url, &[], 4).await, 3);
    let scrape = scrape(&proxy).await;
    assert_eq!(
        metric_value(&scrape, "weir_rate_limited_total", &[("route", "*/")]),
        Some(3.0),
        "the count goes on across reloads"
    );
}

/// A global limit with `redis` and `fail`, a 100 ms Redis timeout.
fn global(backend: &Backend, redis: &RedisServer, burst: u32, fail: &str) -> String {
    limited(
        backend,
        &format!("{{ requests = 1, per = \"1h\", burst = {burst}, scope = \"global\" }}"),
        &format!(
            "[redis]\nurl = \"{}\"\nfail = \"{fail}\"\ntimeout = \"100ms\"\n",
            redis.url()
        ),
    )
}

#[tokio::test]
async fn two_instances_share_one_global_budget_in_one_round_trip_each() {
    let redis = RedisServer::start();
    let backend = spawn_backend("a").await;
    // A bucket of 12: two for the warm-up, ten for the count.
    let toml = global(&backend, &redis, 12, "open");
    let (a, b) = (spawn_proxy(&toml).await, spawn_proxy(&toml).await);
    let client = client();
    // Warm both instances up: connected, and the script cached in Redis.
    for proxy in [&a, &b] {
        assert_eq!(allowed(&client, &proxy.url("/"), &[], 1).await, 1);
    }
    let calls_before = redis.calls("evalsha") + redis.calls("eval");
    let mut ok = 0;
    for i in 0..30 {
        let proxy = if i % 2 == 0 { &a } else { &b };
        ok += allowed(&client, &proxy.url("/"), &[], 1).await;
    }
    assert_eq!(ok, 10, "10 in total across both instances, not 10 each");
    let calls = redis.calls("evalsha") + redis.calls("eval") - calls_before;
    assert_eq!(calls, 30, "one script call per request");
    let (status, headers) = get_headers(&client, &a.url("/"), &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(headers.contains_key("retry-after"));
    let scrape_a = scrape(&a).await;
    let scrape_b = scrape(&b).await;
    let limited = |s| metric_value(s, "weir_rate_limited_total", &[("route", "*/")]);
    assert_eq!(
        limited(&scrape_a).unwrap_or(0.0) + limited(&scrape_b).unwrap_or(0.0),
        21.0
    );
}

/// Sends GETs to `url` every 50 ms until one is answered `want`; panics after `within`.
async fn until_status(client: &TestClient, url: &str, want: StatusCode, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if get_headers(client, url, &[]).await.0 == want {
            return;
        }
        assert!(Instant::now() < deadline, "no {want} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn without_redis_a_global_limit_fails_open_and_applies_again_when_redis_is_back() {
    let mut redis = RedisServer::start();
    let port = redis.addr.port();
    let backend = spawn_backend("a").await;
    let proxy = spawn_proxy(&global(&backend, &redis, 2, "open")).await;
    let client = client();
    let url = proxy.url("/");
    assert_eq!(allowed(&client, &url, &[], 3).await, 2);

    redis.stop();
    let started = Instant::now();
    assert_eq!(allowed(&client, &url, &[], 20).await, 20, "served on");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "requests did not wait on Redis: {:?}",
        started.elapsed()
    );
    let errors = metric_value(&scrape(&proxy).await, "weir_redis_errors_total", &[]);
    assert!(errors.is_some_and(|e| e >= 1.0), "{errors:?}");

    // Back on the same port, empty: two allowed, then 429 again.
    let _redis = RedisServer::start_on(port);
    until_status(
        &client,
        &url,
        StatusCode::TOO_MANY_REQUESTS,
        Duration::from_secs(15),
    )
    .await;
}

#[tokio::test]
async fn without_redis_a_global_limit_with_fail_closed_answers_503() {
    let mut redis = RedisServer::start();
    let port = redis.addr.port();
    let backend = spawn_backend("a").await;
    let proxy = spawn_proxy(&global(&backend, &redis, 100, "closed")).await;
    let client = client();
    let url = proxy.url("/");
    assert_eq!(allowed(&client, &url, &[], 2).await, 2);
    redis.stop();
    let started = Instant::now();
    for _ in 0..10 {
        assert_eq!(
            get_headers(&client, &url, &[]).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let _redis = RedisServer::start_on(port);
    until_status(&client, &url, StatusCode::OK, Duration::from_secs(15)).await;
}
