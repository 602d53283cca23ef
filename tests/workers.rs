//! One current-thread runtime per worker with `SO_REUSEPORT` listeners: every
//! worker serves, reloads add and remove listeners on all of them, and a
//! graceful shutdown waits for connections on every worker.

mod common;

use std::time::Duration;

use common::*;
use weir::runtime::Workers;

fn workers() -> Workers {
    Workers::spawn(2).expect("worker threads")
}

#[tokio::test]
async fn every_connection_is_served_whichever_worker_takes_it() {
    let (a, b) = (spawn_backend("a").await, spawn_backend("b").await);
    let toml = one_upstream("round_robin", &[server(a.addr), server(b.addr)], "");
    let (proxy, _) = spawn_proxy_on(&toml, &[], workers()).await;
    // A new client (and so a new connection) per request: the kernel spreads them over both sockets.
    let mut answers = Vec::new();
    for _ in 0..40 {
        let (status, body) = get(&proxy.url("/")).await;
        assert_eq!(status, 200);
        answers.push(body);
    }
    assert!(answers.iter().any(|b| b == "a") && answers.iter().any(|b| b == "b"));
    proxy.shutdown().await;
    tokio::time::timeout(Duration::from_secs(10), proxy.task)
        .await
        .expect("shutdown within 10 s")
        .expect("daemon task");
}

#[tokio::test]
async fn listeners_follow_the_file_on_every_worker() {
    let a = spawn_backend("a").await;
    let base = one_upstream("round_robin", &[server(a.addr)], "");
    let (mut proxy, _) = spawn_proxy_on(&base, &[], workers()).await;
    let extra = free_port().await;
    let with_extra = base.replace(
        "listen = [\"127.0.0.1:0\"]",
        &format!("listen = [\"127.0.0.1:0\", \"{extra}\"]"),
    );
    assert!(proxy.reload(&with_extra).await);
    for _ in 0..10 {
        assert_eq!(get(&format!("http://{extra}/")).await.1, "a");
    }
    assert!(proxy.reload(&base).await);
    for _ in 0..10 {
        assert!(
            tokio::net::TcpStream::connect(extra).await.is_err(),
            "a removed listener still accepts"
        );
    }
    assert_eq!(get(&proxy.url("/")).await.1, "a");
}
