//! The proxy under test: the real daemon started in-process from a TOML text,
//! with the controls signals would give (reload, shutdown) and views of its
//! live state.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use weir::daemon::{Control, Daemon};
use weir::stats::ReloadCount;

use super::clients::send;

/// A running proxy (the real daemon, in-process).
pub struct Proxy {
    /// Where it accepts clients.
    pub addr: SocketAddr,
    /// Where the admin listener is, when the config has `[admin]`.
    pub admin: Option<SocketAddr>,
    /// Sends reload and shutdown requests, as signals would.
    pub control: mpsc::Sender<Control>,
    /// The config file; rewrite it and send `Control::Reload`.
    pub config: tempfile::NamedTempFile,
    /// The daemon's run loop.
    pub task: JoinHandle<()>,
    /// Reload outcomes, to wait for a reload to finish.
    pub reloads: tokio::sync::watch::Receiver<ReloadCount>,
    /// The live routing table, to look at server state.
    pub snapshot: Arc<arc_swap::ArcSwap<weir::snapshot::Snapshot>>,
}

/// Starts the proxy with `toml` (listening on 127.0.0.1:0 somewhere in it).
pub async fn spawn_proxy(toml: &str) -> Proxy {
    spawn_proxy_at(toml, &[]).await.0
}

/// Starts the proxy with `toml`; returns it and the bound address of each
/// listener named in `configured` as written in the file (the first is `Proxy::addr`).
pub async fn spawn_proxy_at(toml: &str, configured: &[&str]) -> (Proxy, Vec<SocketAddr>) {
    spawn_proxy_on(toml, configured, weir::runtime::Workers::current()).await
}

/// Like [`spawn_proxy_at`], serving connections on `workers`.
pub async fn spawn_proxy_on(
    toml: &str,
    configured: &[&str],
    workers: weir::runtime::Workers,
) -> (Proxy, Vec<SocketAddr>) {
    let mut config = tempfile::NamedTempFile::new().expect("temp config");
    config.write_all(toml.as_bytes()).expect("write config");
    let cfg = weir::config::parse(toml, config.path()).expect("valid test config");
    let daemon = Daemon::start_on(config.path().to_path_buf(), cfg, workers)
        .await
        .expect("proxy starts");
    let addrs: Vec<SocketAddr> = configured
        .iter()
        .map(|c| {
            let addr = c.parse().expect("configured address");
            daemon.local_addr_of(addr).expect("listener bound")
        })
        .collect();
    let addr = addrs.first().copied().unwrap_or(daemon.local_addrs()[0]);
    let admin = daemon.admin_addr();
    let reloads = daemon.reloads();
    let snapshot = daemon.snapshot();
    let (control, rx) = mpsc::channel(8);
    let task = tokio::spawn(daemon.run(rx));
    let proxy = Proxy {
        addr,
        admin,
        control,
        config,
        task,
        reloads,
        snapshot,
    };
    (proxy, addrs)
}

impl Proxy {
    /// `http://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Runtime state of server `addr` of upstream `upstream` in the current snapshot.
    pub fn server_state(
        &self,
        upstream: &str,
        addr: SocketAddr,
    ) -> Arc<weir::upstream::ServerState> {
        let snapshot = self.snapshot.load();
        let upstream = snapshot.upstream(upstream).expect("upstream exists");
        upstream.server(addr).expect("server exists").state.clone()
    }

    /// Idle client connections parked now (`weir_connections_parked`).
    pub fn connections_parked(&self) -> i64 {
        let stats = &self.snapshot.load().stats;
        stats
            .connections_parked
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Rewrites the config file and reloads; returns once the reload was
    /// applied (true) or refused (false).
    pub async fn reload(&mut self, toml: &str) -> bool {
        let file = self.config.as_file_mut();
        file.set_len(0).expect("truncate");
        std::io::Seek::rewind(file).expect("rewind");
        file.write_all(toml.as_bytes()).expect("write config");
        file.flush().expect("flush");
        let before = *self.reloads.borrow_and_update();
        self.control
            .send(Control::Reload)
            .await
            .expect("daemon gone");
        tokio::time::timeout(Duration::from_secs(10), self.reloads.changed())
            .await
            .expect("reload finished within 10 s")
            .expect("daemon gone");
        self.reloads.borrow().ok > before.ok
    }

    /// Asks for a graceful shutdown.
    pub async fn shutdown(&self) {
        self.control
            .send(Control::Shutdown)
            .await
            .expect("daemon gone");
    }

    /// `http://admin` + `path`; panics when the proxy has no admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin.expect("admin listener"), path)
    }

    /// GETs an admin endpoint, with a bearer token when given.
    pub async fn admin_get(&self, path: &str, token: Option<&str>) -> (StatusCode, String) {
        self.admin_call(http::Method::GET, path, token).await
    }

    /// POSTs to an admin endpoint without a token.
    pub async fn admin_post(&self, path: &str) -> (StatusCode, String) {
        self.admin_call(http::Method::POST, path, None).await
    }

    async fn admin_call(
        &self,
        method: http::Method,
        path: &str,
        token: Option<&str>,
    ) -> (StatusCode, String) {
        let mut req = Request::builder().method(method).uri(self.admin_url(path));
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        send(req.body(Full::new(Bytes::new())).expect("request")).await
    }

    /// `/status.json`, parsed.
    pub async fn status_json(&self) -> serde_json::Value {
        let (status, body) = self.admin_get("/status.json", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_str(&body).expect("status.json is JSON")
    }
}

/// A port free right now, for a listener the test is about to add (bound,
/// then released).
pub async fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

/// Polls `cond` (on the proxy's or a backend's state) every 5 ms for up to 5 s.
pub async fn wait_until(cond: impl Fn() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition not reached within 5 s");
}
