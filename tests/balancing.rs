//! Traffic spreads over the pool as configured: round robin, weights, least_conn, backups.

mod common;

use std::collections::HashMap;

use std::sync::Arc;

use common::*;
use tokio::sync::Semaphore;

async fn bodies(proxy: &Proxy, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (status, body) = get(&proxy.url("/")).await;
        assert_eq!(status, 200, "body: {body}");
        out.push(body);
    }
    out
}

fn counts(bodies: &[String]) -> HashMap<&str, usize> {
    let mut map = HashMap::new();
    for b in bodies {
        *map.entry(b.as_str()).or_default() += 1;
    }
    map
}

#[tokio::test]
async fn round_robin_spreads_exactly_evenly() {
    let (a, b, c) = (
        spawn_backend("a").await,
        spawn_backend("b").await,
        spawn_backend("c").await,
    );
    let servers = [server(a.addr), server(b.addr), server(c.addr)];
    let proxy = spawn_proxy(&one_upstream("round_robin", &servers, "")).await;
    let n = 20;
    let got = bodies(&proxy, 3 * n).await;
    let counts = counts(&got);
    assert_eq!(counts.get("a"), Some(&n));
    assert_eq!(counts.get("b"), Some(&n));
    assert_eq!(counts.get("c"), Some(&n));
}

#[tokio::test]
async fn weights_are_smooth_without_bursts() {
    let (a, b, c) = (
        spawn_backend("a").await,
        spawn_backend("b").await,
        spawn_backend("c").await,
    );
    let servers = [
        format!("{{ addr = \"{}\", weight = 5 }}", a.addr),
        server(b.addr),
        server(c.addr),
    ];
    let proxy = spawn_proxy(&one_upstream("round_robin", &servers, "")).await;
    let got = bodies(&proxy, 7).await;
    let counts = counts(&got);
    assert_eq!(
        (counts["a"], counts["b"], counts["c"]),
        (5, 1, 1),
        "{got:?}"
    );
    let longest_a_run = got
        .split(|b| b != "a")
        .map(<[String]>::len)
        .max()
        .unwrap_or(0);
    assert!(longest_a_run < 5, "a burst of {longest_a_run}: {got:?}");
}

#[tokio::test]
async fn least_conn_avoids_busy_servers_and_rotates_ties() {
    let gate = Arc::new(Semaphore::new(0));
    let a = holding_backend("a", gate.clone()).await;
    let b = holding_backend("b", gate.clone()).await;
    let c = holding_backend("c", gate.clone()).await;
    let servers = [server(a.addr), server(b.addr), server(c.addr)];
    let proxy = spawn_proxy(&one_upstream("least_conn", &servers, "")).await;

    // Idle pool: ties rotate over all three instead of always the first.
    let got = bodies(&proxy, 6).await;
    let counts = counts(&got);
    assert_eq!(
        (counts["a"], counts["b"], counts["c"]),
        (2, 2, 2),
        "{got:?}"
    );

    // Hold one request open on each of two servers.
    let url = proxy.url("/hold");
    let first = tokio::spawn(get_owned(url.clone()));
    let second = tokio::spawn(get_owned(url.clone()));
    wait_until(|| a.hits() + b.hits() + c.hits() == 8).await;
    let busy: Vec<&str> = [("a", &a), ("b", &b), ("c", &c)]
        .iter()
        .filter(|(_, backend)| backend.last_request().uri.path() == "/hold")
        .map(|(name, _)| *name)
        .collect();
    assert_eq!(busy.len(), 2, "two servers hold a request: {busy:?}");

    // Every new request goes to the one idle server.
    let got = bodies(&proxy, 5).await;
    assert!(
        got.iter().all(|b| !busy.contains(&b.as_str())),
        "{got:?} while {busy:?} busy"
    );

    gate.add_permits(2);
    for held in [first, second] {
        let (status, _) = held.await.expect("held request task");
        assert_eq!(status, 200);
    }
}

#[tokio::test]
async fn backups_only_when_primaries_are_down() {
    let primary = spawn_backend("primary").await;
    let backup = spawn_backend("backup").await;
    let servers = [
        server(primary.addr),
        format!("{{ addr = \"{}\", backup = true }}", backup.addr),
    ];
    let proxy = spawn_proxy(&one_upstream("round_robin", &servers, "")).await;
    let got = bodies(&proxy, 10).await;
    assert!(got.iter().all(|b| b == "primary"), "{got:?}");
    assert_eq!(backup.hits(), 0);

    primary.stop();
    // The first request finds the primary refusing and goes on to the backup.
    let got = bodies(&proxy, 5).await;
    assert!(got.iter().all(|b| b == "backup"), "{got:?}");
}
