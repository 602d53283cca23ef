//! weir keeps serving when upstreams misbehave: failover, active health checks, safe retries.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_upstream_under_load_fails_no_request() {
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let c = spawn_backend("c").await;
    let servers = [server(a.addr), server(b.addr), server(c.addr)];
    let proxy = spawn_proxy(&one_upstream("round_robin", &servers, "")).await;

    let load = Load::start(proxy.url("/"), 4);
    wait_until(|| load.ok() > 200).await;
    b.stop();
    // Stopping aborts its connections; wait until they are all gone.
    wait_until(|| b.open.load(Ordering::SeqCst) == 0).await;
    let b_hits = b.hits();
    let at_kill = load.ok();
    wait_until(|| load.ok() > at_kill + 300).await;
    let (ok, failed) = load.stop().await;
    eprintln!(
        "failover: {ok} requests succeeded, {failed} failed; b served {b_hits} before it died"
    );
    assert_eq!(failed, 0);
    assert!(
        proxy.server_state("app", b.addr).health(None).passive_down,
        "the dead server is out"
    );
    assert_eq!(b.hits(), b_hits, "nothing reached the dead server");
}

/// A health endpoint whose answers the test switches.
async fn switchable_backend(
    name: &'static str,
    healthy: Arc<AtomicBool>,
    probes: Arc<AtomicUsize>,
) -> Backend {
    spawn_backend_with(move |req| {
        let (healthy, probes) = (healthy.clone(), probes.clone());
        async move {
            if req.uri().path() == "/health" {
                probes.fetch_add(1, Ordering::SeqCst);
                if !healthy.load(Ordering::SeqCst) {
                    let mut resp = Response::new(full("sick"));
                    *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    return resp;
                }
            }
            Response::new(full(name))
        }
    })
    .await
}

const HEALTH: &str = "[upstream.health_check]\npath = \"/health\"\ninterval = \"100ms\"\ntimeout = \"1s\"\nrise = 2\nfall = 3";

#[tokio::test]
async fn a_failing_health_endpoint_takes_a_server_out_after_fall_probes() {
    let healthy = Arc::new(AtomicBool::new(true));
    let probes = Arc::new(AtomicUsize::new(0));
    let a = switchable_backend("a", healthy.clone(), probes.clone()).await;
    let b = spawn_backend("b").await;
    let proxy = spawn_proxy(&one_upstream(
        "round_robin",
        &[server(a.addr), server(b.addr)],
        HEALTH,
    ))
    .await;
    let state = proxy.server_state("app", a.addr);
    wait_until(|| probes.load(Ordering::SeqCst) >= 2).await;
    assert!(!state.health(None).active_down);

    healthy.store(false, Ordering::SeqCst);
    let at_switch = probes.load(Ordering::SeqCst);
    wait_until(|| probes.load(Ordering::SeqCst) >= at_switch + 2).await;
    assert!(
        !state.health(None).active_down,
        "still up after 2 failed probes (fall = 3)"
    );
    wait_until(|| state.health(None).active_down).await;
    let failed = probes.load(Ordering::SeqCst) - at_switch;
    assert!(
        (3..=4).contains(&failed),
        "went down after {failed} failed probes"
    );

    for _ in 0..6 {
        assert_eq!(get(&proxy.url("/")).await.1, "b");
    }
}

#[tokio::test]
async fn a_restarted_server_is_back_after_rise_probes() {
    let healthy = Arc::new(AtomicBool::new(true));
    let probes = Arc::new(AtomicUsize::new(0));
    let a = switchable_backend("a", healthy.clone(), probes.clone()).await;
    let b = spawn_backend("b").await;
    let addr: SocketAddr = a.addr;
    let proxy = spawn_proxy(&one_upstream(
        "round_robin",
        &[server(addr), server(b.addr)],
        HEALTH,
    ))
    .await;
    let state = proxy.server_state("app", addr);

    a.stop();
    wait_until(|| state.health(None).active_down).await;
    assert_eq!(get(&proxy.url("/")).await.1, "b");

    // Restart on the same port; count the probes the new process answers.
    let restarted_probes = Arc::new(AtomicUsize::new(0));
    let _a2 = {
        let (healthy, probes) = (healthy.clone(), restarted_probes.clone());
        spawn_backend_at(addr, move |req| {
            let (_, probes) = (healthy.clone(), probes.clone());
            async move {
                if req.uri().path() == "/health" {
                    probes.fetch_add(1, Ordering::SeqCst);
                }
                Response::new(full("a"))
            }
        })
        .await
    };
    wait_until(|| restarted_probes.load(Ordering::SeqCst) >= 1).await;
    assert!(
        state.health(None).active_down,
        "not back after one good probe (rise = 2)"
    );
    wait_until(|| !state.health(None).active_down).await;
    let good = restarted_probes.load(Ordering::SeqCst);
    assert!((2..=3).contains(&good), "back after {good} good probes");
}

/// A backend that reads a whole request, counts it, and closes the connection without answering.
async fn resetting_backend(received: Arc<AtomicUsize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        for _ in 0..100 {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let received = received.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                // Read until the head and a body of the declared length have arrived.
                for _ in 0..1000 {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    if request_complete(&seen) {
                        received.fetch_add(1, Ordering::SeqCst);
                        let _ = stream.shutdown().await;
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn request_complete(seen: &[u8]) -> bool {
    let text = String::from_utf8_lossy(seen);
    let Some(head_end) = text.find("\r\n\r\n") else {
        return false;
    };
    let length = text[..head_end]
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    seen.len() >= head_end + 4 + length
}

#[tokio::test]
async fn a_post_whose_body_was_sent_is_not_retried_but_a_get_is() {
    let received = Arc::new(AtomicUsize::new(0));
    let r1 = resetting_backend(received.clone()).await;
    let r2 = resetting_backend(received.clone()).await;
    let proxy = spawn_proxy(&one_upstream(
        "round_robin",
        &[server(r1), server(r2)],
        "max_fails = 0",
    ))
    .await;

    let post = Request::post(proxy.url("/order"))
        .body(Full::new(Bytes::from_static(b"one order")))
        .expect("request");
    let (status, _) = send(post).await;
    assert_eq!(status, 502);
    assert_eq!(
        received.load(Ordering::SeqCst),
        1,
        "the POST reached exactly one server"
    );

    let (status, _) = get(&proxy.url("/")).await;
    assert_eq!(status, 502);
    assert_eq!(
        received.load(Ordering::SeqCst),
        3,
        "the GET was tried on both servers"
    );
}

#[tokio::test]
async fn a_post_that_failed_to_connect_is_retried_elsewhere() {
    let app = spawn_backend_with(|req: Request<hyper::body::Incoming>| async move {
        let n = count_bytes(req.into_body()).await;
        Response::new(full(format!("got {n}")))
    })
    .await;
    let servers = [
        server(closed_port().await),
        server(closed_port().await),
        server(app.addr),
    ];
    let proxy = spawn_proxy(&one_upstream("round_robin", &servers, "")).await;
    let post = Request::post(proxy.url("/order"))
        .body(Full::new(Bytes::from_static(b"one order")))
        .expect("request");
    assert_eq!(send(post).await, (StatusCode::OK, "got 9".to_string()));
    assert_eq!(app.hits(), 1);
}
