//! The real `weir` binary: exit codes, real signals, memory during a large upload.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn check_accepts_a_valid_file_and_names_the_line_of_an_error() {
    let good = Command::new(WEIR)
        .args(["check", "-c", "config/weir.toml"])
        .output()
        .expect("run weir check");
    assert_eq!(good.status.code(), Some(0));
    let summary = String::from_utf8_lossy(&good.stdout);
    assert!(summary.contains("express_servers"), "{summary}");

    let bad = write_config("[server]\nlisten = [\"127.0.0.1:0\"]\n\n[[upstream]]\nname = \"a\"\nservers = [\"nonsense\"]\n");
    let out = Command::new(WEIR)
        .args(["check", "-c"])
        .arg(bad.path())
        .output()
        .expect("run weir check");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let expected = format!("{}:6:", bad.path().display());
    assert!(err.starts_with(&expected), "{err}");
    assert!(err.contains("upstream[0].servers[0]"), "{err}");
}

#[test]
fn usage_errors_exit_2_and_a_bad_config_exits_1() {
    let usage = Command::new(WEIR).arg("frobnicate").output().expect("run");
    assert_eq!(usage.status.code(), Some(2));
    let missing = Command::new(WEIR)
        .args(["run", "-c", "/nonexistent/weir.toml"])
        .output()
        .expect("run");
    assert_eq!(missing.status.code(), Some(1));
}

#[tokio::test]
async fn sighup_reloads_and_sigterm_exits_cleanly() {
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let mut file = write_config(&one_upstream("round_robin", &[server(a.addr)], ""));
    // Stand in for systemd: weir reports its state on NOTIFY_SOCKET.
    let dir = tempfile::tempdir().expect("temp dir");
    let socket_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("bind notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let weir = Running::start_with(file.path(), &[("NOTIFY_SOCKET", socket_path.as_os_str())]);
    let next_notification = || {
        let mut buf = [0u8; 512];
        let n = notify.recv(&mut buf).expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next_notification(), "READY=1\n");
    let url = format!("http://{}/", weir.addr);
    assert_eq!(get(&url).await.1, "a");

    let next = one_upstream("round_robin", &[server(b.addr)], "");
    file.as_file_mut().set_len(0).expect("truncate");
    std::fs::write(file.path(), next).expect("rewrite config");
    weir.signal("HUP");
    weir.wait_for_line("configuration reloaded");
    let reloading = next_notification();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading:?}"
    );
    assert_eq!(next_notification(), "READY=1\n");
    assert_eq!(get(&url).await.1, "b");

    weir.signal("TERM");
    assert_eq!(weir.wait_exit(), Some(0));
    assert_eq!(next_notification(), "STOPPING=1\n");
}

#[tokio::test]
async fn a_200_mb_upload_passes_with_flat_memory() {
    let app = spawn_backend_with(|req: http::Request<hyper::body::Incoming>| async move {
        let received = count_bytes(req.into_body()).await;
        http::Response::new(full(received.to_string()))
    })
    .await;
    let file = write_config(&one_upstream("round_robin", &[server(app.addr)], ""));
    let weir = Running::start(file.path());
    let before = weir.peak_rss_kib();

    let stream = tokio::net::TcpStream::connect(weir.addr)
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    const MIB: usize = 1024 * 1024;
    let req = http::Request::post("/")
        .header("host", "upload.test")
        .body(Generated::new(200, MIB))
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(120), sender.send_request(req))
        .await
        .expect("upload within 120 s")
        .expect("response");
    let text = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(text, (200 * MIB).to_string());

    let after = weir.peak_rss_kib();
    eprintln!("weir peak RSS: {before} KiB before, {after} KiB after a 200 MiB upload");
    assert!(
        after < before + 32 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB"
    );
}
