//! Reloads swap the routing table atomically: nothing is lost, state carries over.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::sync::Semaphore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_storm_under_load_loses_no_request() {
    let backends = [
        spawn_backend("a").await,
        spawn_backend("b").await,
        spawn_backend("c").await,
        spawn_backend("d").await,
    ];
    let pools: Vec<Vec<String>> = vec![
        vec![
            server(backends[0].addr),
            server(backends[1].addr),
            server(backends[2].addr),
        ],
        vec![server(backends[0].addr), server(backends[1].addr)],
        vec![
            server(backends[1].addr),
            server(backends[2].addr),
            server(backends[3].addr),
        ],
        vec![server(backends[3].addr)],
    ];
    let mut proxy = spawn_proxy(&one_upstream("round_robin", &pools[0], "")).await;

    let load = Load::start(proxy.url("/"), 4);
    for i in 0..60 {
        let pool = &pools[i % 3];
        let balance = if i % 2 == 0 {
            "round_robin"
        } else {
            "least_conn"
        };
        assert!(proxy.reload(&one_upstream(balance, pool, "")).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        proxy
            .reload(&one_upstream("round_robin", &pools[3], ""))
            .await
    );
    let (ok, failed) = load.stop().await;
    eprintln!("reload storm: {ok} requests succeeded, {failed} failed over 61 reloads");
    assert_eq!(failed, 0);
    assert!(ok > 100, "only {ok} requests ran during the storm");

    for _ in 0..10 {
        assert_eq!(get(&proxy.url("/")).await.1, "d");
    }
}

#[tokio::test]
async fn an_in_flight_request_survives_a_reload_that_removes_its_server() {
    let gate = Arc::new(Semaphore::new(0));
    let a = holding_backend("a", gate.clone()).await;
    let b = spawn_backend("b").await;
    let mut proxy = spawn_proxy(&one_upstream("round_robin", &[server(a.addr)], "")).await;
    let held = tokio::spawn(get_owned(proxy.url("/hold")));
    wait_until(|| a.hits() == 1).await;

    assert!(
        proxy
            .reload(&one_upstream("round_robin", &[server(b.addr)], ""))
            .await
    );
    assert_eq!(get(&proxy.url("/")).await.1, "b");

    gate.add_permits(1);
    let (status, body) = held.await.expect("held request");
    assert_eq!((status.as_u16(), body.as_str()), (200, "a"));
}

#[tokio::test]
async fn least_conn_in_flight_counts_survive_a_reload() {
    let gate = Arc::new(Semaphore::new(0));
    let a = holding_backend("a", gate.clone()).await;
    let b = holding_backend("b", gate.clone()).await;
    let c = holding_backend("c", gate.clone()).await;
    let servers = [server(a.addr), server(b.addr), server(c.addr)];
    let mut proxy = spawn_proxy(&one_upstream("least_conn", &servers, "")).await;
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(get_owned(proxy.url("/hold"))))
        .collect();
    wait_until(|| a.hits() + b.hits() + c.hits() == 2).await;
    let idle = [("a", &a), ("b", &b), ("c", &c)]
        .into_iter()
        .find(|(_, backend)| backend.hits() == 0)
        .map(|(name, _)| name)
        .expect("one idle server");

    // Same servers, another setting changed: the in-flight counts must carry over.
    let reloaded = one_upstream("least_conn", &servers, "retries = 1");
    assert!(proxy.reload(&reloaded).await);
    for _ in 0..4 {
        assert_eq!(get(&proxy.url("/")).await.1, idle);
    }
    gate.add_permits(2);
    for h in held {
        assert_eq!(h.await.expect("held").0, 200);
    }
}

#[tokio::test]
async fn an_invalid_file_changes_nothing_and_the_next_valid_one_applies() {
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let mut proxy = spawn_proxy(&one_upstream("round_robin", &[server(a.addr)], "")).await;

    let broken = one_upstream("round_robin", &[server(b.addr)], "bogus_key = 1");
    assert!(!proxy.reload(&broken).await, "an invalid file is refused");
    assert_eq!(proxy.reloads.borrow().failed, 1);
    assert_eq!(get(&proxy.url("/")).await.1, "a");

    assert!(
        proxy
            .reload(&one_upstream("round_robin", &[server(b.addr)], ""))
            .await
    );
    assert_eq!(get(&proxy.url("/")).await.1, "b");
}

#[tokio::test]
async fn listeners_follow_the_file() {
    let a = spawn_backend("a").await;
    let base = one_upstream("round_robin", &[server(a.addr)], "");
    let mut proxy = spawn_proxy(&base).await;
    let extra = free_port().await;
    let with_extra = base.replace(
        "listen = [\"127.0.0.1:0\"]",
        &format!("listen = [\"127.0.0.1:0\", \"{extra}\"]"),
    );
    assert!(proxy.reload(&with_extra).await);
    assert_eq!(get(&format!("http://{extra}/")).await.1, "a");

    assert!(proxy.reload(&base).await);
    assert!(
        tokio::net::TcpStream::connect(extra).await.is_err(),
        "the removed listener still accepts"
    );
    assert_eq!(get(&proxy.url("/")).await.1, "a");
}

#[tokio::test]
async fn a_removed_server_loses_its_idle_pooled_connections() {
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let mut proxy = spawn_proxy(&one_upstream("round_robin", &[server(a.addr)], "")).await;
    assert_eq!(get(&proxy.url("/")).await.1, "a");
    wait_until(|| a.open.load(Ordering::SeqCst) == 1).await;

    assert!(
        proxy
            .reload(&one_upstream("round_robin", &[server(b.addr)], ""))
            .await
    );
    assert_eq!(get(&proxy.url("/")).await.1, "b");
    wait_until(|| a.open.load(Ordering::SeqCst) == 0).await;
}
