//! The shared (Redis) cache tier across two weir instances, with a real
//! `redis-server` (`common::RedisServer`) started on a free port for each
//! test, and killed mid-test.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};

fn shared_config(origin: &Origin, redis: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]

[log]
access = "off"

[admin]
listen = "127.0.0.1:0"

[cache]
memory = "16MiB"

[redis]
url = "{redis}"

[[upstream]]
name = "app"
servers = ["{addr}"]

[[route]]
path = "/"
upstream = "app"
cache = {{ shared = true }}
"#,
        addr = origin.backend.addr
    )
}

/// GETs `path` with `Host: shared.test`; the status, `X-Cache` and body.
async fn fetch(proxy: &Proxy, path: &str) -> (StatusCode, String, String) {
    let req = Request::get(proxy.url(path))
        .header("host", "shared.test")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(10), client().request(req))
        .await
        .expect("answer within 10 s")
        .expect("request through proxy");
    let status = resp.status();
    let x_cache = resp
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, x_cache, String::from_utf8_lossy(&body).into_owned())
}

/// Whether Redis holds `key`.
fn exists(redis: &RedisServer, key: &str) -> bool {
    redis.command(&["EXISTS", key]).as_deref() == Some(":1")
}

async fn wait_for_key(redis: &RedisServer, key: &str) {
    for _ in 0..500 {
        if exists(redis, key) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{key} never reached redis");
}

#[tokio::test]
async fn an_entry_fetched_by_one_instance_is_a_hit_on_another() {
    let redis = RedisServer::start();
    let origin = spawn_origin(&[("cache-control", "max-age=600")]).await;
    let a = spawn_proxy(&shared_config(&origin, &redis.url())).await;
    let b = spawn_proxy(&shared_config(&origin, &redis.url())).await;

    let (status, x_cache, body) = fetch(&a, "/page").await;
    assert_eq!((status, x_cache.as_str()), (StatusCode::OK, "MISS"));
    wait_for_key(&redis, "weir:cache:G:shared.test /page").await;
    let (status, x_cache, from_b) = fetch(&b, "/page").await;
    assert_eq!((status, x_cache.as_str()), (StatusCode::OK, "HIT"));
    assert_eq!(from_b, body);
    assert_eq!(origin.hits(), 1);

    // A purge on one instance also purges Redis: the other, which never
    // held the entry in memory, fetches it anew.
    fetch(&a, "/other").await;
    wait_for_key(&redis, "weir:cache:G:shared.test /other").await;
    let (status, _) = a.admin_post("/api/cache/purge?path=/other").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!exists(&redis, "weir:cache:G:shared.test /other"));
    assert_eq!(fetch(&b, "/other").await.1, "MISS");
}

#[tokio::test]
async fn redis_going_away_degrades_to_memory_only() {
    let mut redis = RedisServer::start();
    let origin = spawn_origin(&[("cache-control", "max-age=600")]).await;
    let a = spawn_proxy(&shared_config(&origin, &redis.url())).await;
    let b = spawn_proxy(&shared_config(&origin, &redis.url())).await;
    fetch(&a, "/before").await;
    wait_for_key(&redis, "weir:cache:G:shared.test /before").await;

    redis.stop();
    let started = Instant::now();
    for path in ["/after", "/after", "/before"] {
        let (status, _, _) = fetch(&a, path).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(fetch(&a, "/after").await.1, "HIT", "memory still serves");
    // The other instance misses Redis and goes to the origin, without error.
    let (status, x_cache, _) = fetch(&b, "/before").await;
    assert_eq!((status, x_cache.as_str()), (StatusCode::OK, "MISS"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "requests did not wait on the dead Redis: {:?}",
        started.elapsed()
    );
    assert_eq!(origin.hits(), 3);
}
