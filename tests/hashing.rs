//! `balance = "hash"` across real weir processes: the same keys land on the
//! same servers in every instance, by weight, and removing a server moves
//! only its own keys.

mod common;

use std::collections::HashMap;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use common::*;

const KEYS: usize = 1000;

/// Which backend answers each of the keys `user-0` .. `user-999` through `addr`.
async fn owners(addr: std::net::SocketAddr) -> Vec<String> {
    let client = client();
    let mut owners = Vec::with_capacity(KEYS);
    for k in 0..KEYS {
        let req = Request::get(format!("http://{addr}/"))
            .header("x-user", format!("user-{k}"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let (status, body) = send_with(&client, req).await;
        assert_eq!(status, 200, "key {k}");
        owners.push(body);
    }
    owners
}

fn config(servers: &[String]) -> String {
    one_upstream("hash", servers, "hash_key = \"header:X-User\"")
}

fn weighted(addr: std::net::SocketAddr, weight: u32) -> String {
    format!("{{ addr = \"{addr}\", weight = {weight} }}")
}

#[tokio::test]
async fn two_weir_processes_agree_on_every_key_and_removing_a_server_moves_only_its_keys() {
    let (a, b, c) = (
        spawn_backend("a").await,
        spawn_backend("b").await,
        spawn_backend("c").await,
    );
    let all = [
        weighted(a.addr, 1),
        weighted(b.addr, 2),
        weighted(c.addr, 1),
    ];
    let file = write_config(&config(&all));
    let first = Running::start(file.path());
    // The second lists the servers in another order: positions must not matter.
    let reordered = [all[2].clone(), all[0].clone(), all[1].clone()];
    let other_file = write_config(&config(&reordered));
    let second = Running::start(other_file.path());

    let before = owners(first.addr).await;
    assert_eq!(
        before,
        owners(second.addr).await,
        "the two processes disagree"
    );
    assert_eq!(before, owners(first.addr).await, "keys are not sticky");

    // Spread within ±20 % of the weights 1:2:1.
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for owner in &before {
        *counts.entry(owner.as_str()).or_default() += 1;
    }
    // Printed for the record (`cargo test --test hashing -- --nocapture`).
    println!("keys per server, weights a=1 b=2 c=1: {counts:?}");
    for (name, weight) in [("a", 1.0), ("b", 2.0), ("c", 1.0)] {
        let expected = KEYS as f64 * weight / 4.0;
        let got = counts.get(name).copied().unwrap_or(0) as f64;
        assert!(
            (got / expected - 1.0).abs() <= 0.2,
            "{name}: {got} keys for {expected} expected ({counts:?})"
        );
    }

    // Remove the middle server and reload the first process.
    let without_b = config(&[all[0].clone(), all[2].clone()]);
    std::fs::write(file.path(), without_b).expect("rewrite");
    first.signal("HUP");
    first.wait_for_line("configuration reloaded");
    let after = owners(first.addr).await;
    let kept = before
        .iter()
        .zip(&after)
        .filter(|(was, _)| *was != "b")
        .filter(|(was, now)| was == now)
        .count();
    let others = before.iter().filter(|was| *was != "b").count();
    println!("b removed: {kept} of the {others} keys of a and c stayed put");
    assert!(
        kept as f64 >= 0.95 * others as f64,
        "only {kept} of the {others} keys of a and c stayed put"
    );
    assert!(after.iter().all(|o| o != "b"));
}

#[tokio::test]
async fn a_key_whose_server_is_down_goes_to_its_next_choice_and_requests_without_it_rotate() {
    let (a, b, c) = (
        spawn_backend("a").await,
        spawn_backend("b").await,
        spawn_backend("c").await,
    );
    let servers = [server(a.addr), server(b.addr), server(c.addr)];
    let proxy = spawn_proxy(&config(&servers)).await;
    let before = owners(proxy.addr).await;
    // The same keys against the two servers other than the down one decide
    // where that server's keys must go.
    let down = before[0].clone();
    let (gone, rest): (Vec<_>, Vec<_>) = [("a", &a), ("b", &b), ("c", &c)]
        .into_iter()
        .partition(|(name, _)| *name == down);
    gone[0].1.stop();
    let reference = spawn_proxy(&config(
        &rest.iter().map(|(_, s)| server(s.addr)).collect::<Vec<_>>(),
    ))
    .await;
    let expected = owners(reference.addr).await;
    // The first request to the stopped server fails over (and takes it out).
    let now = owners(proxy.addr).await;
    assert_eq!(
        now, expected,
        "keys of the down server went elsewhere than their next choice"
    );

    // Without the header: round robin over the two that are up.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..10 {
        let (_, body) = get(&proxy.url("/")).await;
        *seen.entry(body).or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.values().all(|&n| n == 5), "{seen:?}");
}
