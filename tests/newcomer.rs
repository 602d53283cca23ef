//! A newcomer's first five minutes: the demo shows the status page, a single
//! listener is a plain string, and `weir check` lists every mistake at once.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use http::StatusCode;
use tokio::sync::mpsc;

use common::{get, write_config, WEIR};
use weir::daemon::Control;

fn weir_check(config: &std::path::Path) -> std::process::Output {
    Command::new(WEIR)
        .args(["check", "-c"])
        .arg(config)
        .output()
        .expect("run weir check")
}

/// `addr` moved to port 0, after checking it is where the demo documents it.
fn on_port_zero(addr: &mut SocketAddr, documented: &str) {
    assert_eq!(
        addr.to_string(),
        documented,
        "the demo's documented address"
    );
    addr.set_port(0);
}

#[tokio::test]
async fn the_demo_serves_the_status_page_beside_the_proxy() {
    // The demo's own config, with every address on a free port.
    let mut config = weir::demo::config().expect("the demo config is valid");
    config.log.access = weir::config::AccessLog::Off;
    on_port_zero(&mut config.server.listen[0].addr, "127.0.0.1:8080");
    let admin = config.admin.as_mut().expect("the demo has [admin]");
    on_port_zero(&mut admin.listen, "127.0.0.1:9090");
    let servers = &mut config.upstreams[0].servers;
    for (server, port) in servers.iter_mut().zip(3000..) {
        on_port_zero(&mut server.addr, &format!("127.0.0.1:{port}"));
    }

    let demo = weir::demo::start(config, weir::runtime::Workers::current())
        .await
        .expect("the demo starts");
    let admin = demo.daemon.admin_addr().expect("admin listener bound");
    let proxy = demo.daemon.local_addrs()[0];
    assert!(
        demo.banner.contains(&format!(
            "curl -s http://{proxy}/; done\nstatus: http://{admin}/status\n"
        )),
        "{}",
        demo.banner
    );
    let (control, rx) = mpsc::channel(1);
    let task = tokio::spawn(demo.daemon.run(rx));

    let (status, body) = get(&format!("http://{admin}/healthz")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    let (status, page) = get(&format!("http://{admin}/status")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.starts_with("<!doctype html>"), "{page}");
    let (status, json) = get(&format!("http://{admin}/status.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(json.contains("\"express_servers\""), "{json}");
    let (status, body) = get(&format!("http://{proxy}/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.starts_with("hello from the demo app on port "),
        "{body}"
    );

    control
        .send(Control::Shutdown)
        .await
        .expect("daemon running");
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the demo stops within 10 s")
        .expect("the demo's task");
}

#[test]
fn check_accepts_a_single_listener_written_as_a_string() {
    let file = write_config(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[[upstream]]\nname = \"a\"\n\
         servers = [\"127.0.0.1:3000\"]\n\n[[route]]\nupstream = \"a\"\n",
    );
    let out = weir_check(file.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("listen: 127.0.0.1:0\n"), "{stdout}");
}

#[test]
fn check_reports_three_mistakes_on_three_lines() {
    let file = write_config(
        "[server]\nlisten = \"127.0.0.1:0\"\nidle_timeout = \"soon\"\n\n\
         [[upstream]]\nname = \"a\"\nservers = [\"127.0.0.1:3000\", \"nowhere\"]\n\n\
         [[route]]\nupstream = \"b\"\n",
    );
    let out = weir_check(file.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let file = file.path().display();
    let expected = [
        format!("{file}:3:16: server.idle_timeout: invalid duration \"soon\""),
        format!("{file}:7:30: upstream[0].servers[1]: invalid address \"nowhere\""),
        format!("{file}:10:12: route[0].upstream: no upstream named \"b\""),
    ];
    assert_eq!(lines.len(), expected.len(), "{stderr}");
    for (line, expected) in lines.iter().zip(&expected) {
        assert!(
            line.starts_with(expected.as_str()),
            "{line:?} is not {expected:?}…"
        );
    }
}

#[test]
fn run_reports_every_mistake_too_and_exits_1() {
    let file = write_config(
        "[server]\nlisten = \"nowhere\"\n\n[[upstream]]\nname = \"a\"\n\
         servers = [\"127.0.0.1:3000\"]\nretries = -1\n\n[[route]]\nupstream = \"a\"\n",
    );
    let out = Command::new(WEIR)
        .args(["run", "-c"])
        .arg(file.path())
        .output()
        .expect("run weir run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let keys: Vec<&str> = stderr
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .collect();
    assert_eq!(keys, ["server.listen", "upstream[0].retries"], "{stderr}");
}
