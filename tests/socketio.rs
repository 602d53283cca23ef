//! Socket.IO's HTTP long-polling across three Node processes with the default
//! in-memory adapter works through weir with `sticky`, and fails without it.
//!
//! The Node packages are in `tests/socketio/` and installed there by `.ci/run`
//! (`npm ci`); without `node` or them, the test says it skipped, loudly.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/socketio")
}

/// A Node process killed when dropped.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts one Socket.IO server and returns it with its port.
fn socketio_server() -> (Node, u16) {
    let mut child = Command::new("node")
        .arg(dir().join("server.js"))
        .current_dir(dir())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start node");
    let stdout = child.stdout.take().expect("stdout");
    let node = Node(child);
    // The server prints its port once it listens (a blocking read: bounded by
    // node's own start, and the process is killed on any failure).
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the port");
    let port: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    let port = port["port"].as_u64().and_then(|p| u16::try_from(p).ok());
    (node, port.expect("a port"))
}

/// Runs `clients` polling clients against `url`: (acknowledged, failed) messages.
async fn run_clients(url: String, clients: usize) -> (u64, u64) {
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args(["60", "node"])
            .arg(dir().join("client.js"))
            .args([url, clients.to_string(), "5".to_string()])
            .current_dir(dir())
            .output()
            .expect("run the clients")
    })
    .await
    .expect("join");
    let text = String::from_utf8_lossy(&out.stdout);
    let result: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_else(|_| {
        panic!(
            "client output {text:?}, stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (
        result["ok"].as_u64().expect("ok"),
        result["failed"].as_u64().expect("failed"),
    )
}

#[tokio::test]
async fn socketio_polling_works_across_three_processes_with_sticky_and_not_without() {
    let installed = Command::new("node").arg("--version").output().is_ok()
        && dir().join("node_modules/socket.io").is_dir()
        && dir().join("node_modules/socket.io-client").is_dir();
    if !installed {
        eprintln!(
            "SKIPPED: node or tests/socketio/node_modules missing; run `npm ci` in tests/socketio"
        );
        return;
    }
    let nodes: Vec<(Node, u16)> = (0..3).map(|_| socketio_server()).collect();
    let servers: Vec<String> = nodes
        .iter()
        .map(|(_, port)| format!("\"127.0.0.1:{port}\""))
        .collect();

    let sticky = spawn_proxy(&one_upstream(
        "round_robin",
        &servers,
        "sticky = { cookie = \"io_server\" }",
    ))
    .await;
    let (ok, failed) = run_clients(sticky.url("/"), 20).await;
    assert_eq!((ok, failed), (100, 0), "with sticky");

    // Without sticky, consecutive polls reach other processes, which do not
    // know the session: the handshake's "Session ID unknown".
    let plain = spawn_proxy(&one_upstream("round_robin", &servers, "")).await;
    let (_, failed) = run_clients(plain.url("/"), 5).await;
    assert!(
        failed > 0,
        "polling worked without sticky: the test proves nothing"
    );
}
