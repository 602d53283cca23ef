//! Upstream servers by DNS name and SRV record, against a real DNS server
//! whose zone the tests change while weir runs.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use http::{Response, StatusCode};

/// Three backends on 127.0.0.1, .2 and .3, all on one port (a name gives one
/// port to all its addresses); each answers with its own address.
async fn three_backends() -> (u16, Vec<Backend>) {
    for _ in 0..20 {
        let first = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = first.local_addr().expect("addr").port();
        let free = ["127.0.0.2", "127.0.0.3"]
            .iter()
            .all(|ip| std::net::TcpListener::bind((*ip, port)).is_ok());
        drop(first);
        if !free {
            continue;
        }
        let mut backends = Vec::new();
        for ip in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
            let addr: SocketAddr = format!("{ip}:{port}").parse().expect("addr");
            let name = addr.ip().to_string();
            backends.push(
                spawn_backend_at(addr, move |_req| {
                    let name = name.clone();
                    async move { Response::new(full(name)) }
                })
                .await,
            );
        }
        return (port, backends);
    }
    panic!("no port free on 127.0.0.1-3");
}

fn config(dns: SocketAddr, upstream: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\naccess = \"off\"\n\
         [resolver]\nnameservers = [\"{dns}\"]\nmin_ttl = \"1s\"\nmax_ttl = \"1s\"\n\
         [[upstream]]\nname = \"app\"\nmax_fails = 0\n{upstream}\n[[route]]\nupstream = \"app\"\n"
    )
}

/// Sends `n` requests one after another; every one must succeed. Counts answers by body.
async fn spread(proxy: &Proxy, n: usize) -> HashMap<String, usize> {
    let client = client();
    let mut seen = HashMap::new();
    for _ in 0..n {
        let (status, body) = get_with(&client, &proxy.url("/")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        *seen.entry(body).or_insert(0) += 1;
    }
    seen
}

/// Whether upstream `app` has server `addr` in the live snapshot.
fn has(proxy: &Proxy, addr: SocketAddr) -> bool {
    let snapshot = proxy.snapshot.load();
    let app = snapshot.upstream("app").expect("upstream app");
    app.server(addr).is_some()
}

/// How many servers upstream `app` has in the live snapshot.
fn count(proxy: &Proxy) -> usize {
    proxy
        .snapshot
        .load()
        .upstream("app")
        .expect("upstream app")
        .servers
        .len()
}

/// Sends requests until `done` holds (at most `limit`), asserting every one
/// succeeds; returns how long it took.
async fn load_until(proxy: &Proxy, limit: Duration, done: impl Fn() -> bool) -> Duration {
    let client = client();
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "not reached within {limit:?}");
        let (status, body) = get_with(&client, &proxy.url("/")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    start.elapsed()
}

async fn resolutions(proxy: &Proxy, result: &str) -> f64 {
    let scrape = scrape(proxy).await;
    metric_value(
        &scrape,
        "weir_dns_resolutions_total",
        &[("upstream", "app"), ("result", result)],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_follows_its_addresses_as_dns_changes_and_outlives_its_dns_server() {
    let mut dns = DnsServer::start().await;
    let (port, backends) = three_backends().await;
    dns.set_addrs("app.test.", &["127.0.0.1", "127.0.0.2", "127.0.0.3"], 1)
        .await;
    let proxy = spawn_proxy(&config(
        dns.addr,
        &format!("servers = [\"app.test:{port}\"]"),
    ))
    .await;
    let seen = spread(&proxy, 30).await;
    assert_eq!(seen.len(), 3, "{seen:?}");

    let status = proxy.status_json().await;
    let listed = &status["upstreams"][0]["servers"];
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{status}");
    let from = format!("app.test:{port}");
    assert!(
        listed
            .as_array()
            .into_iter()
            .flatten()
            .all(|s| s["from"] == from.as_str()),
        "{listed}"
    );

    // One address goes: within a TTL (1 s) plus margin no request reaches it, and none fails.
    dns.set_addrs("app.test.", &["127.0.0.1", "127.0.0.2"], 1)
        .await;
    let gone: SocketAddr = format!("127.0.0.3:{port}").parse().expect("addr");
    let took = load_until(&proxy, Duration::from_secs(4), || !has(&proxy, gone)).await;
    eprintln!("removal followed in {took:?}");
    let before = backends[2].hits();
    let seen = spread(&proxy, 30).await;
    assert_eq!(backends[2].hits(), before, "{seen:?}");
    assert_eq!(seen.len(), 2, "{seen:?}");

    // It comes back.
    dns.set_addrs("app.test.", &["127.0.0.1", "127.0.0.2", "127.0.0.3"], 1)
        .await;
    let took = load_until(&proxy, Duration::from_secs(4), || has(&proxy, gone)).await;
    eprintln!("return followed in {took:?}");
    let seen = spread(&proxy, 30).await;
    assert_eq!(seen.get("127.0.0.3"), Some(&10), "{seen:?}");
    assert!(resolutions(&proxy, "ok").await >= 3.0);

    // An empty answer keeps the last addresses.
    dns.set_addrs("app.test.", &[], 1).await;
    let waited = Instant::now();
    while resolutions(&proxy, "empty").await < 1.0 {
        assert!(
            waited.elapsed() < Duration::from_secs(5),
            "no empty answer counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(spread(&proxy, 30).await.len(), 3);

    // The DNS server goes away: weir keeps serving the last addresses.
    dns.stop().await;
    let waited = Instant::now();
    while resolutions(&proxy, "error").await < 1.0 {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "no failed lookup counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(spread(&proxy, 30).await.len(), 3);
    assert_eq!(count(&proxy), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_give_servers_ports_and_weights() {
    let dns = DnsServer::start().await;
    let (a, b, c) = (
        spawn_backend("a").await,
        spawn_backend("b").await,
        spawn_backend("c").await,
    );
    dns.set_addrs("host.test.", &["127.0.0.1"], 1).await;
    let srv = "_http._tcp.app.test.";
    dns.set_srv(
        srv,
        &[
            (10, 3, a.addr.port(), "host.test."),
            (10, 1, b.addr.port(), "host.test."),
            (20, 5, c.addr.port(), "host.test."),
        ],
        1,
    )
    .await;
    let proxy = spawn_proxy(&config(dns.addr, "discover = \"_http._tcp.app.test\"")).await;
    // Smooth weighted round robin: 3 to 1 exactly; the priority-20 record is a backup.
    let seen = spread(&proxy, 40).await;
    assert_eq!(
        (seen.get("a"), seen.get("b"), seen.get("c")),
        (Some(&30), Some(&10), None)
    );

    // The primaries' records go: the backup's priority is now the lowest, so it serves.
    dns.set_srv(srv, &[(20, 5, c.addr.port(), "host.test.")], 1)
        .await;
    let took = load_until(&proxy, Duration::from_secs(4), || {
        count(&proxy) == 1 && has(&proxy, c.addr)
    })
    .await;
    eprintln!("SRV change followed in {took:?}");
    let seen = spread(&proxy, 20).await;
    assert_eq!(seen.get("c"), Some(&20), "{seen:?}");
    let status = proxy.status_json().await;
    assert_eq!(
        status["upstreams"][0]["servers"][0]["from"],
        "_http._tcp.app.test"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_address_finishes_its_requests_and_a_returning_one_ramps_up() {
    let dns = DnsServer::start().await;
    let (port, _plain) = three_backends().await;
    // 127.0.0.4 holds `/hold` until the gate opens; the others answer at once.
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let held: SocketAddr = format!("127.0.0.4:{port}").parse().expect("addr");
    let _holding = spawn_backend_at(held, {
        let gate = gate.clone();
        move |req: http::Request<hyper::body::Incoming>| {
            let gate = gate.clone();
            async move {
                if req.uri().path() == "/hold" {
                    let _permit = gate.acquire().await.expect("gate open");
                }
                Response::new(full("held"))
            }
        }
    })
    .await;
    dns.set_addrs("app.test.", &["127.0.0.1", "127.0.0.4"], 1)
        .await;
    let toml = config(
        dns.addr,
        &format!("servers = [\"app.test:{port}\"]\nslow_start = \"30s\""),
    );
    let proxy = spawn_proxy(&toml).await;
    // Round robin: of two requests, one lands on the holding server.
    let first = tokio::spawn(get_owned(proxy.url("/hold")));
    let second = tokio::spawn(get_owned(proxy.url("/hold")));
    let state = proxy.server_state("app", held);
    wait_until(|| state.in_flight() == 1).await;

    dns.set_addrs("app.test.", &["127.0.0.1"], 1).await;
    load_until(&proxy, Duration::from_secs(4), || !has(&proxy, held)).await;
    assert_eq!(
        state.in_flight(),
        1,
        "the request on the vanished server goes on"
    );
    gate.add_permits(1);
    let mut bodies = [
        first.await.expect("first request"),
        second.await.expect("second request"),
    ];
    bodies.sort();
    assert_eq!(bodies[0], (StatusCode::OK, "127.0.0.1".to_owned()));
    assert_eq!(bodies[1], (StatusCode::OK, "held".to_owned()));
    assert_eq!(state.in_flight(), 0);

    dns.set_addrs("app.test.", &["127.0.0.1", "127.0.0.4"], 1)
        .await;
    load_until(&proxy, Duration::from_secs(4), || has(&proxy, held)).await;
    let back = proxy.server_state("app", held);
    let ramp = back.health(Some(Duration::from_secs(30))).ramp;
    assert!(ramp.is_some_and(|share| share < 0.5), "{ramp:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_check_says_what_names_resolve_to_and_fails_on_one_that_does_not() {
    let dns = DnsServer::start().await;
    dns.set_addrs("app.test.", &["127.0.0.2", "127.0.0.1"], 30)
        .await;
    let good = write_config(&config(dns.addr, "servers = [\"app.test:3000\"]"));
    let bad = write_config(&config(
        dns.addr,
        "servers = [\"app.test:3000\", \"nowhere.test:80\"]",
    ));
    let check = |file: &tempfile::NamedTempFile| {
        let path = file.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(WEIR)
                .args(["check", "-c"])
                .arg(path)
                .output()
                .expect("weir check runs")
        })
    };
    let out = check(&good).await.expect("weir check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(
            "upstream app: app.test:3000 -> 127.0.0.2:3000 weight 1, 127.0.0.1:3000 weight 1"
        ),
        "{stdout}"
    );
    let out = check(&bad).await.expect("weir check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("upstream app: nowhere.test:80: no records"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_name_that_never_resolved_fails_the_start_but_not_a_reload() {
    let dns = DnsServer::start().await;
    let backend = spawn_backend("fixed").await;
    let missing = config(
        dns.addr,
        &format!("servers = [\"{}\", \"nowhere.test:80\"]", backend.addr),
    );
    let path = tempfile::NamedTempFile::new().expect("temp");
    let parsed = weir::config::parse(&missing, path.path()).expect("valid");
    let error = weir::daemon::Daemon::start(path.path().to_path_buf(), parsed)
        .await
        .expect_err("an unresolved name fails the start");
    assert!(error.to_string().contains("nowhere.test:80"), "{error}");

    let fine = config(dns.addr, &format!("servers = [\"{}\"]", backend.addr));
    let mut proxy = spawn_proxy(&fine).await;
    assert!(proxy.reload(&missing).await, "the reload stands");
    assert_eq!(spread(&proxy, 5).await.get("fixed"), Some(&5));
    // With nothing but an unresolved name, the upstream has no server: 503, no panic.
    let only = config(dns.addr, "servers = [\"nowhere.test:80\"]");
    assert!(proxy.reload(&only).await, "the reload stands");
    assert_eq!(count(&proxy), 0);
    let (status, _) = get(&proxy.url("/")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let _ = ZONE;
}
