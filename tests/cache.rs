//! The response cache through the real proxy, against origins that count
//! what reaches them. Time moves through the cache's own clock
//! (`Cache::advance_clock`), so expiry is tested without waiting.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};

/// A config with one cached `/` route to `origin` (`route_cache` is the
/// inside of `cache = { ... }`), `[cache]` keys `cache_keys`, and an admin listener.
fn cached(origin: &Origin, route_cache: &str, cache_keys: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]

[log]
access = "off"

[admin]
listen = "127.0.0.1:0"

[cache]
{cache_keys}

[[upstream]]
name = "app"
servers = ["{addr}"]

[[route]]
path = "/"
upstream = "app"
cache = {{ {route_cache} }}
"#,
        addr = origin.backend.addr
    )
}

/// One answer as the test sees it.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    x_cache: String,
    age: Option<u64>,
    length: Option<u64>,
    body: String,
}

async fn fetch(proxy: &Proxy, path: &str, headers: &[(&str, &str)]) -> Answer {
    fetch_method(proxy, "GET", path, headers).await
}

async fn fetch_method(proxy: &Proxy, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = Request::builder().method(method).uri(proxy.url(path));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let req = req.body(Full::new(Bytes::new())).expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(10), client().request(req))
        .await
        .expect("answer within 10 s")
        .expect("request through proxy");
    let status = resp.status();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let x_cache = header("x-cache").unwrap_or_default();
    let age = header("age").and_then(|a| a.parse().ok());
    let length = header("content-length").and_then(|a| a.parse().ok());
    let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .expect("body within 10 s")
        .expect("body")
        .to_bytes();
    Answer {
        status,
        x_cache,
        age,
        length,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn advance(proxy: &Proxy, by: Duration) {
    proxy
        .snapshot
        .load()
        .cache
        .as_ref()
        .expect("cache configured")
        .advance_clock(by);
}

#[tokio::test]
async fn a_fresh_answer_is_served_from_the_cache_until_it_expires() {
    let origin = spawn_origin(&[("cache-control", "max-age=60")]).await;
    let proxy = spawn_proxy(&cached(&origin, "", "")).await;

    let first = fetch(&proxy, "/a?x=1", &[]).await;
    assert_eq!(
        (first.status, first.x_cache.as_str()),
        (StatusCode::OK, "MISS")
    );
    let second = fetch(&proxy, "/a?x=1", &[]).await;
    assert_eq!(second.x_cache, "HIT");
    assert_eq!(second.body, first.body);
    assert!(second.age.is_some(), "{second:?}");
    assert_eq!(origin.hits(), 1);

    // Another query is another key; HEAD is stored apart from GET.
    assert_eq!(fetch(&proxy, "/a?x=2", &[]).await.x_cache, "MISS");
    assert_eq!(
        fetch_method(&proxy, "HEAD", "/a?x=1", &[]).await.x_cache,
        "MISS"
    );
    let head = fetch_method(&proxy, "HEAD", "/a?x=1", &[]).await;
    assert_eq!((head.x_cache.as_str(), head.body.as_str()), ("HIT", ""));
    assert_eq!(
        head.length,
        Some(first.body.len() as u64),
        "HEAD keeps the length"
    );
    assert_eq!(origin.hits(), 3);

    advance(&proxy, Duration::from_secs(30));
    let aged = fetch(&proxy, "/a?x=1", &[]).await;
    assert_eq!(aged.x_cache, "HIT");
    assert!(aged.age.is_some_and(|a| a >= 30), "{aged:?}");

    advance(&proxy, Duration::from_secs(31));
    let expired = fetch(&proxy, "/a?x=1", &[]).await;
    assert_eq!(expired.x_cache, "MISS");
    assert_ne!(expired.body, first.body);
    assert_eq!(origin.hits(), 4);
    assert_eq!(fetch(&proxy, "/a?x=1", &[]).await.x_cache, "HIT");
}

/// Header name-value pairs.
type Headers<'a> = &'a [(&'static str, &'a str)];

#[tokio::test]
async fn what_must_not_be_stored_is_never_stored() {
    let cases: &[(Headers, Headers)] = &[
        (&[("cache-control", "no-store")], &[]),
        (&[("cache-control", "private, max-age=60")], &[]),
        (&[("cache-control", "no-cache")], &[]),
        (
            &[
                ("cache-control", "public, max-age=60"),
                ("set-cookie", "s=1"),
            ],
            &[],
        ),
        (&[("cache-control", "max-age=60"), ("vary", "*")], &[]),
        (
            &[("cache-control", "max-age=60")],
            &[("authorization", "Bearer t")],
        ),
        (
            &[("cache-control", "s-maxage=60")],
            &[("authorization", "Bearer t")],
        ),
        (
            &[("cache-control", "max-age=60")],
            &[("cache-control", "no-store")],
        ),
        (&[], &[]),
    ];
    for (i, (response, request)) in cases.iter().enumerate() {
        let origin = spawn_origin(response).await;
        let proxy = spawn_proxy(&cached(&origin, "", "")).await;
        for _ in 0..2 {
            let answer = fetch(&proxy, "/", request).await;
            assert_eq!(answer.status, StatusCode::OK);
            assert_eq!(
                answer.x_cache, "BYPASS",
                "case {i}: {response:?} {request:?}"
            );
        }
        assert_eq!(origin.hits(), 2, "case {i}: {response:?} {request:?}");
    }
    // `public` lets an answer to a request with credentials be stored.
    let origin = spawn_origin(&[("cache-control", "public, max-age=60")]).await;
    let proxy = spawn_proxy(&cached(&origin, "", "")).await;
    let auth = [("authorization", "Bearer t")];
    assert_eq!(fetch(&proxy, "/", &auth).await.x_cache, "MISS");
    assert_eq!(fetch(&proxy, "/", &auth).await.x_cache, "HIT");
    // Any method but GET and HEAD bypasses the cache, and one that may
    // change the resource drops its stored answers.
    let post = fetch_method(&proxy, "POST", "/", &[]).await;
    assert_eq!(post.x_cache, "BYPASS");
    assert_eq!(origin.hits(), 2);
    assert_eq!(fetch(&proxy, "/", &auth).await.x_cache, "MISS");
    assert_eq!(origin.hits(), 3);
}

#[tokio::test]
async fn the_route_ttl_applies_only_to_answers_without_freshness() {
    let origin = spawn_origin(&[]).await;
    let proxy = spawn_proxy(&cached(&origin, "ttl = \"10s\"", "")).await;
    assert_eq!(fetch(&proxy, "/", &[]).await.x_cache, "MISS");
    assert_eq!(fetch(&proxy, "/", &[]).await.x_cache, "HIT");
    advance(&proxy, Duration::from_secs(11));
    assert_eq!(fetch(&proxy, "/", &[]).await.x_cache, "MISS");
    assert_eq!(origin.hits(), 2);

    // Its own max-age (shorter than the ttl) wins.
    origin.set_headers(&[("cache-control", "max-age=2")]);
    assert_eq!(fetch(&proxy, "/own", &[]).await.x_cache, "MISS");
    advance(&proxy, Duration::from_secs(3));
    assert_eq!(fetch(&proxy, "/own", &[]).await.x_cache, "MISS");
    assert_eq!(origin.hits(), 4);
}

#[tokio::test]
async fn vary_keeps_a_variant_per_header_value() {
    let origin =
        spawn_origin(&[("cache-control", "max-age=60"), ("vary", "Accept-Language")]).await;
    let proxy = spawn_proxy(&cached(&origin, "", "")).await;
    let en = [("accept-language", "en")];
    let fr = [("accept-language", "fr")];
    let first_en = fetch(&proxy, "/", &en).await;
    let first_fr = fetch(&proxy, "/", &fr).await;
    assert_eq!(
        (first_en.x_cache.as_str(), first_fr.x_cache.as_str()),
        ("MISS", "MISS")
    );
    let again_en = fetch(&proxy, "/", &en).await;
    let again_fr = fetch(&proxy, "/", &fr).await;
    assert_eq!(
        (again_en.x_cache.as_str(), again_fr.x_cache.as_str()),
        ("HIT", "HIT")
    );
    assert!(again_en.body.ends_with(" en") && again_fr.body.ends_with(" fr"));
    assert_eq!(again_en.body, first_en.body);
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn concurrent_cold_misses_send_one_request_upstream() {
    let origin = spawn_origin(&[("cache-control", "max-age=60")]).await;
    let proxy = spawn_proxy(&cached(&origin, "", "")).await;
    origin.hold();
    let url = proxy.url("/hot");
    let clients: Vec<_> = (0..50)
        .map(|_| tokio::spawn(get_owned(url.clone())))
        .collect();
    wait_until(|| origin.hits() >= 1).await;
    // Give every client time to arrive and find the fetch under way.
    tokio::time::sleep(Duration::from_millis(300)).await;
    origin.release();
    let mut bodies = Vec::new();
    for c in clients {
        let (status, body) = c.await.expect("client");
        assert_eq!(status, StatusCode::OK);
        bodies.push(body);
    }
    assert_eq!(origin.hits(), 1, "one request reached the origin");
    assert!(bodies.iter().all(|b| *b == bodies[0]));
}

#[tokio::test]
async fn waiters_go_upstream_themselves_after_the_lock_timeout() {
    let origin = spawn_origin(&[("cache-control", "max-age=60")]).await;
    let proxy = spawn_proxy(&cached(&origin, "", "lock_timeout = \"200ms\"")).await;
    origin.hold();
    let url = proxy.url("/slow");
    let clients: Vec<_> = (0..3)
        .map(|_| tokio::spawn(get_owned(url.clone())))
        .collect();
    wait_until(|| origin.hits() >= 3).await;
    origin.release();
    for c in clients {
        assert_eq!(c.await.expect("client").0, StatusCode::OK);
    }
}

#[tokio::test]
async fn stale_while_revalidate_serves_stale_and_refreshes_once() {
    let origin = spawn_origin(&[("cache-control", "max-age=1")]).await;
    let proxy = spawn_proxy(&cached(&origin, "stale_while_revalidate = \"30s\"", "")).await;
    let first = fetch(&proxy, "/", &[]).await;
    advance(&proxy, Duration::from_secs(2));
    origin.hold();
    for _ in 0..5 {
        let stale = fetch(&proxy, "/", &[]).await;
        assert_eq!(stale.x_cache, "STALE");
        assert_eq!(stale.body, first.body);
    }
    wait_until(|| origin.hits() == 2).await;
    origin.release();
    wait_until(|| {
        proxy
            .snapshot
            .load()
            .cache
            .as_ref()
            .is_some_and(|c| c.usage().0 == 1)
    })
    .await;
    // The refresh lands; then the new answer is a hit.
    let mut refreshed = None;
    for _ in 0..200 {
        let answer = fetch(&proxy, "/", &[]).await;
        if answer.x_cache == "HIT" {
            refreshed = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refreshed = refreshed.expect("the refreshed entry is a hit");
    assert_ne!(refreshed.body, first.body);
    assert_eq!(origin.hits(), 2, "one background refresh");

    // Past the window, the stale entry is not served.
    advance(&proxy, Duration::from_secs(60));
    assert_eq!(fetch(&proxy, "/", &[]).await.x_cache, "MISS");
}

#[tokio::test]
async fn stale_if_error_stands_in_for_a_failing_or_dead_upstream() {
    let origin = spawn_origin(&[("cache-control", "max-age=1")]).await;
    let proxy = spawn_proxy(&cached(&origin, "stale_if_error = \"1m\"", "")).await;
    let first = fetch(&proxy, "/", &[]).await;
    advance(&proxy, Duration::from_secs(2));

    origin.fail_with.store(503, Ordering::SeqCst);
    let stale = fetch(&proxy, "/", &[]).await;
    assert_eq!(
        (stale.status, stale.x_cache.as_str()),
        (StatusCode::OK, "STALE")
    );
    assert_eq!(stale.body, first.body);

    origin.backend.stop();
    let stale = fetch(&proxy, "/", &[]).await;
    assert_eq!(
        (stale.status, stale.x_cache.as_str()),
        (StatusCode::OK, "STALE")
    );
    assert_eq!(stale.body, first.body);

    // Past the window, the error is the answer.
    advance(&proxy, Duration::from_secs(120));
    let failed = fetch(&proxy, "/", &[]).await;
    assert!(failed.status.is_server_error(), "{failed:?}");
}

#[tokio::test]
async fn stale_entries_are_revalidated_and_conditional_requests_answered() {
    let origin = spawn_origin(&[("cache-control", "max-age=1"), ("etag", "\"v1\"")]).await;
    let proxy = spawn_proxy(&cached(&origin, "", "")).await;
    let first = fetch(&proxy, "/", &[]).await;
    assert_eq!(first.x_cache, "MISS");

    // A client's conditional request on a fresh entry: 304 from the cache.
    let cond = fetch(&proxy, "/", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(
        (cond.status, cond.x_cache.as_str()),
        (StatusCode::NOT_MODIFIED, "HIT")
    );
    assert_eq!(cond.body, "");
    let other = fetch(&proxy, "/", &[("if-none-match", "\"v0\"")]).await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(origin.hits(), 1);

    // Stale: revalidated with If-None-Match; the origin's 304 refreshes it.
    advance(&proxy, Duration::from_secs(2));
    let revalidated = fetch(&proxy, "/", &[]).await;
    assert_eq!(revalidated.status, StatusCode::OK);
    assert_eq!(revalidated.x_cache, "HIT");
    assert_eq!(revalidated.body, first.body);
    assert_eq!(origin.not_modified.load(Ordering::SeqCst), 1);
    assert_eq!(
        origin
            .backend
            .last_request()
            .headers
            .get("if-none-match")
            .map(|v| v.as_bytes()),
        Some(&b"\"v1\""[..])
    );
    // Fresh again, without another request.
    assert_eq!(fetch(&proxy, "/", &[]).await.x_cache, "HIT");
    assert_eq!(origin.hits(), 2);

    // A changed resource replaces the entry.
    origin.set_headers(&[("cache-control", "max-age=60"), ("etag", "\"v2\"")]);
    advance(&proxy, Duration::from_secs(2));
    let changed = fetch(&proxy, "/", &[]).await;
    assert_eq!(changed.x_cache, "MISS");
    assert_ne!(changed.body, first.body);
    assert_eq!(fetch(&proxy, "/", &[]).await.body, changed.body);
}

#[tokio::test]
async fn purge_drops_entries_by_host_and_path_prefix() {
    let origin = spawn_origin(&[("cache-control", "max-age=600")]).await;
    let proxy = spawn_proxy(&cached(&origin, "", "")).await;
    for path in ["/a/1", "/a/2", "/b"] {
        fetch(&proxy, path, &[]).await;
    }
    assert_eq!(origin.hits(), 3);
    let (status, body) = proxy.admin_post("/api/cache/purge?path=/a").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("\"purged\":2"), "{body}");
    assert_eq!(fetch(&proxy, "/a/1", &[]).await.x_cache, "MISS");
    assert_eq!(fetch(&proxy, "/b", &[]).await.x_cache, "HIT");

    // Another host's purge leaves these alone; this host's takes them.
    let (status, _) = proxy
        .admin_post("/api/cache/purge?host=other.test&path=/")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetch(&proxy, "/b", &[]).await.x_cache, "HIT");
    let (status, _) = proxy
        .admin_post("/api/cache/purge?host=127.0.0.1&path=/")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetch(&proxy, "/b", &[]).await.x_cache, "MISS");

    let (status, _) = proxy.admin_get("/api/cache/purge", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn large_bodies_stream_through_unstored() {
    let origin = spawn_origin(&[("cache-control", "max-age=60")]).await;
    origin.script.lock().expect("script").padding = 4096;
    let proxy = spawn_proxy(&cached(&origin, "", "max_entry_size = \"1KiB\"")).await;
    let big = fetch(&proxy, "/big", &[]).await;
    assert!(big.body.len() > 4096);
    assert_eq!(big.x_cache, "BYPASS");
    assert_eq!(fetch(&proxy, "/big", &[]).await.body.len(), big.body.len());
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn memory_stays_bounded_under_ten_thousand_keys() {
    let origin = spawn_origin(&[("cache-control", "max-age=600")]).await;
    origin.script.lock().expect("script").padding = 1000;
    let proxy = spawn_proxy(&cached(&origin, "", "memory = \"1MiB\"")).await;
    let url = proxy.url("/");
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = client();
                for i in (t..10_000).step_by(8) {
                    let (status, _) = get_with(&client, &format!("{url}k{i}")).await;
                    assert_eq!(status, StatusCode::OK);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("load");
    }
    assert_eq!(origin.hits(), 10_000);
    let scrape = scrape(&proxy).await;
    let bytes = metric_value(&scrape, "weir_cache_bytes", &[]).expect("bytes gauge");
    let entries = metric_value(&scrape, "weir_cache_entries", &[]).expect("entries gauge");
    assert!(bytes <= 1024.0 * 1024.0, "{bytes} bytes held");
    assert!(entries > 100.0 && entries < 10_000.0, "{entries} entries");
}

#[tokio::test]
async fn metrics_status_and_logs_count_cached_answers() {
    let origin = spawn_origin(&[("cache-control", "max-age=60")]).await;
    let proxy = spawn_proxy(&cached(&origin, "", "")).await;
    fetch(&proxy, "/", &[]).await;
    fetch(&proxy, "/", &[]).await;
    fetch(&proxy, "/", &[]).await;
    fetch_method(&proxy, "POST", "/", &[]).await;
    let scrape = scrape(&proxy).await;
    let count = |result| {
        metric_value(
            &scrape,
            "weir_cache_requests_total",
            &[("route", "*/"), ("result", result)],
        )
    };
    assert_eq!(count("hit"), Some(2.0));
    assert_eq!(count("miss"), Some(1.0));
    assert_eq!(count("bypass"), Some(1.0));
    assert_eq!(count("stale"), Some(0.0));
    // Hits are requests like any other in the request metrics.
    let requests = metric_value(
        &scrape,
        "weir_requests_total",
        &[("upstream", "app"), ("server", ""), ("code", "200")],
    );
    assert_eq!(requests, Some(2.0));
    let status = proxy.status_json().await;
    let route = &status["cache"]["routes"][0];
    assert_eq!(route["route"], "*/");
    assert!((route["hit_ratio"].as_f64().expect("ratio") - 2.0 / 3.0).abs() < 0.001);
    let (_, page) = proxy.admin_get("/status", None).await;
    assert!(page.contains("Hit ratio"));
}

#[tokio::test]
async fn the_cache_survives_a_reload_that_changes_its_settings() {
    let origin = spawn_origin(&[("cache-control", "max-age=600")]).await;
    let mut proxy = spawn_proxy(&cached(&origin, "", "")).await;
    fetch(&proxy, "/", &[]).await;
    assert!(
        proxy
            .reload(&cached(
                &origin,
                "ttl = \"5s\", stale_if_error = \"1m\"",
                "memory = \"64MiB\""
            ))
            .await
    );
    assert_eq!(fetch(&proxy, "/", &[]).await.x_cache, "HIT");
    assert_eq!(origin.hits(), 1);
    let scrape = scrape(&proxy).await;
    assert_eq!(
        metric_value(
            &scrape,
            "weir_cache_requests_total",
            &[("route", "*/"), ("result", "hit")],
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn routes_without_cache_are_untouched() {
    let origin = spawn_origin(&[("cache-control", "max-age=60")]).await;
    let toml = one_upstream("round_robin", &[server(origin.backend.addr)], "");
    let proxy = spawn_proxy(&toml).await;
    let answer = fetch(&proxy, "/", &[]).await;
    assert_eq!(answer.x_cache, "");
    fetch(&proxy, "/", &[]).await;
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn answers_from_the_cache_are_logged() {
    let origin = spawn_origin(&[("cache-control", "max-age=60")]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("access.log");
    let toml = cached(&origin, "", "").replace(
        "access = \"off\"",
        &format!("access = \"{}\"\naccess_format = \"json\"", log.display()),
    );
    let proxy = spawn_proxy(&toml).await;
    fetch(&proxy, "/logged", &[]).await;
    fetch(&proxy, "/logged", &[]).await;
    let lines = log_lines(&log, 2).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("/logged") && l.contains("200")),
        "{lines:?}"
    );
}

/// Not a check but a measurement, run by hand:
/// `cargo test --test cache -- --ignored --nocapture measure`.
/// Same-run figures for a debug build: sequential keep-alive requests served
/// from the cache, passed through on the same route (`no-store` request),
/// and proxied by a route without a cache; then the origin's load for a hot
/// key under 16 clients with and without a 1 s micro-cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_hits_against_misses() {
    const N: usize = 3000;
    let origin = spawn_origin(&[("cache-control", "max-age=600")]).await;
    origin.script.lock().expect("script").padding = 1024;
    let cached_proxy = spawn_proxy(&cached(&origin, "", "")).await;
    let plain = spawn_proxy(&one_upstream(
        "round_robin",
        &[server(origin.backend.addr)],
        "",
    ))
    .await;
    let client = client();
    let run = |proxy: &Proxy, no_store: bool| {
        let url = proxy.url("/measured");
        let client = client.clone();
        async move {
            let started = std::time::Instant::now();
            for _ in 0..N {
                let mut req = Request::get(&url);
                if no_store {
                    req = req.header("cache-control", "no-store");
                }
                let (status, _) =
                    send_with(&client, req.body(Full::new(Bytes::new())).expect("req")).await;
                assert_eq!(status, StatusCode::OK);
            }
            started.elapsed() / N as u32
        }
    };
    run(&cached_proxy, false).await;
    let before = origin.hits();
    let hit = run(&cached_proxy, false).await;
    assert_eq!(origin.hits(), before, "all hits");
    let bypass = run(&cached_proxy, true).await;
    let proxied = run(&plain, false).await;
    println!(
        "per request: cache hit {hit:?}, cache route bypassed {bypass:?}, no cache {proxied:?}"
    );

    let micro = spawn_origin(&[]).await;
    let hot = spawn_proxy(&cached(&micro, "ttl = \"1s\"", "")).await;
    for (name, proxy) in [("ttl = 1s", &hot), ("no cache", &plain)] {
        let start_hits = if name == "no cache" {
            origin.hits()
        } else {
            micro.hits()
        };
        let load = Load::start(proxy.url("/hot"), 16);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (ok, failed) = load.stop().await;
        let hits = if name == "no cache" {
            origin.hits()
        } else {
            micro.hits()
        } - start_hits;
        println!(
            "hot key, 16 clients, 3 s, {name}: {ok} answered ({failed} failed), origin saw {hits}"
        );
    }
}
