//! The access log: both formats parse, and a file is reopened on `Control::ReopenLogs` (SIGUSR1).

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use weir::daemon::Control;

fn config(backend: std::net::SocketAddr, log: &Path, format: &str) -> String {
    one_upstream("round_robin", &[server(backend)], "").replace(
        "access = \"off\"",
        &format!(
            "access = {:?}\naccess_format = \"{format}\"",
            log.display().to_string()
        ),
    )
}

/// Splits a combined line into its fields: bare words, `[...]` and `"..."` (with `\"` escapes).
fn split_combined(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            ' ' => {
                chars.next();
            }
            '"' | '[' => {
                let close = if c == '"' { '"' } else { ']' };
                chars.next();
                let mut field = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => field.extend(chars.next()),
                        c if c == close => break,
                        c => field.push(c),
                    }
                }
                fields.push(field);
            }
            _ => {
                let mut field = String::new();
                while let Some(&c) = chars.peek() {
                    if c == ' ' {
                        break;
                    }
                    field.push(c);
                    chars.next();
                }
                fields.push(field);
            }
        }
    }
    fields
}

#[tokio::test]
async fn json_lines_parse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.json");
    let a = spawn_backend("a").await;
    let proxy = spawn_proxy(&config(a.addr, &log, "json")).await;
    assert_eq!(get(&proxy.url("/x?y=1")).await.0, 200);
    let line = &log_lines(&log, 1).await[0];
    let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
    assert_eq!(v["status"], 200);
    assert_eq!(v["path"], "/x?y=1");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["upstream"], "app");
    assert_eq!(v["server"], a.addr.to_string().as_str());
    assert_eq!(v["bytes"], 1);
    assert!(v["duration"].as_f64().is_some_and(|d| d >= 0.0));
    assert!(v["upstream_time"].as_f64().is_some());
}

#[tokio::test]
async fn combined_lines_parse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    let a = spawn_backend("a").await;
    let proxy = spawn_proxy(&config(a.addr, &log, "combined")).await;
    let req = http::Request::get(proxy.url("/p"))
        .header("user-agent", "test \"agent\"")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    assert_eq!(send(req).await.0, 200);
    let fields = split_combined(&log_lines(&log, 1).await[0]);
    assert_eq!(fields[0], "127.0.0.1");
    assert_eq!((fields[1].as_str(), fields[2].as_str()), ("-", "-"));
    assert!(fields[3].ends_with("+0000"), "{fields:?}");
    assert_eq!(fields[4], "GET /p HTTP/1.1");
    assert_eq!(fields[5], "200");
    assert_eq!(fields[6], "1");
    assert_eq!(fields[8], "test \"agent\"");
    assert_eq!(fields[9], format!("upstream={}", a.addr));
    assert!(fields[10].starts_with("upstream_time="), "{fields:?}");
    assert!(fields[11].starts_with("request_time="), "{fields:?}");
}

#[tokio::test]
async fn reopen_moves_lines_to_a_fresh_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let a = spawn_backend("a").await;
    let proxy = spawn_proxy(&config(a.addr, &log, "combined")).await;
    get(&proxy.url("/before")).await;
    log_lines(&log, 1).await;

    std::fs::rename(&log, &rotated).expect("rotate");
    proxy
        .control
        .send(Control::ReopenLogs)
        .await
        .expect("daemon");
    // The writer creates the new file when it reopens; the next line must land there.
    for _ in 0..1000 {
        if log.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    get(&proxy.url("/after")).await;
    let new = log_lines(&log, 1).await;
    assert!(new[0].contains("GET /after "), "{new:?}");
    let old = log_lines(&rotated, 1).await;
    assert_eq!(old.len(), 1);
    assert!(old[0].contains("GET /before "), "{old:?}");
}
