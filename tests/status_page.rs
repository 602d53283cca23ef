//! End to end: headless Chromium loads `/status`, runs its script, and the
//! rendered DOM shows the servers and charts with data points.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// The first Chromium on PATH.
fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|bin| {
        Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Runs headless Chromium on `url` and returns the DOM after its scripts ran (bounded by 90 s).
fn dump_dom(bin: &str, url: &str) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", url])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    for _ in 0..900 {
        if child.try_wait().expect("wait chromium").is_some() {
            let out = child.wait_with_output().expect("chromium output");
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("chromium did not finish within 90 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_renders_servers_and_charts() {
    let Some(bin) = chromium() else {
        println!("SKIPPED status_page_renders_servers_and_charts: no chromium or chromium-browser on PATH");
        return;
    };
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let pool = [server(a.addr), server(b.addr)];
    let proxy = spawn_proxy(&with_admin(&one_upstream("round_robin", &pool, ""), None)).await;
    // Traffic across at least two history samples (one a second), so the charts have lines.
    for _ in 0..400 {
        get(&proxy.url("/")).await;
        let doc = proxy.status_json().await;
        let points = doc["upstreams"][0]["history"]["t"]
            .as_array()
            .map_or(0, Vec::len);
        if points >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let url = proxy.admin_url("/status");
    let dom = tokio::task::spawn_blocking(move || dump_dom(bin, &url))
        .await
        .expect("chromium task");
    // Only the rendered markup counts, not the script's own source text.
    let dom = dom.split("<script").next().unwrap_or_default();

    assert!(
        dom.contains("data-upstream=\"app\""),
        "upstream card missing:\n{dom}"
    );
    for addr in [a.addr, b.addr] {
        assert!(
            dom.contains(&format!("data-addr=\"{addr}\"")),
            "{addr} missing:\n{dom}"
        );
    }
    assert_eq!(
        dom.matches("<svg class=\"chart\"").count(),
        2,
        "two charts:\n{dom}"
    );
    let drawn: Vec<u64> = dom
        .split("data-points=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next()?.parse().ok())
        .collect();
    assert!(
        drawn.len() == 2 && drawn.iter().all(|n| *n >= 2),
        "chart points {drawn:?}:\n{dom}"
    );
    assert!(dom.contains("<polyline"), "no chart lines:\n{dom}");
    assert!(
        dom.contains("live · updated"),
        "page did not refresh from /status.json:\n{dom}"
    );
}
