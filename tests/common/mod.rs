//! Test helpers: real backends, the real proxy and a real client, all on 127.0.0.1 ephemeral ports.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use weir::daemon::{Control, Daemon};
use weir::stats::ReloadCount;

/// A body type backends can answer with.
pub type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A full body from text.
pub fn full(text: impl Into<Bytes>) -> TestBody {
    Full::new(text.into()).map_err(|e| match e {}).boxed()
}

/// A running test backend.
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests it has received (heads only).
    pub requests: Arc<Mutex<Vec<http::request::Parts>>>,
    /// Request count.
    pub hits: Arc<AtomicUsize>,
    /// Connections currently open to it.
    pub open: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Backend {
    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// The head of the last request received.
    pub fn last_request(&self) -> http::request::Parts {
        self.requests
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .expect("backend received no request")
    }

    /// Stops it: its port refuses connections and open connections are cut.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a backend whose responses come from `handler`.
pub async fn spawn_backend_with<F, Fut>(handler: F) -> Backend
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    spawn_backend_at(addr, handler).await
}

/// Like [`spawn_backend_with`], on `addr` (to restart a stopped backend on its port).
pub async fn spawn_backend_at<F, Fut>(addr: SocketAddr, handler: F) -> Backend
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await.expect("bind backend");
    let addr = listener.local_addr().expect("local addr");
    let requests = Arc::new(Mutex::new(Vec::new()));
    let hits = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let (req_log, hit_count, open_count) = (requests.clone(), hits.clone(), open.clone());
    let task = tokio::spawn(async move {
        // Connections live in the set, so aborting the accept task cuts them too.
        let mut connections = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (handler, req_log, hit_count) =
                (handler.clone(), req_log.clone(), hit_count.clone());
            // Counted down on drop, so an aborted connection (a stopped backend) counts too.
            let open_guard = OpenGuard::new(open_count.clone());
            connections.spawn(async move {
                let _open = open_guard;
                let service = service_fn(move |req: Request<Incoming>| {
                    let (handler, req_log, hit_count) =
                        (handler.clone(), req_log.clone(), hit_count.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        req_log.lock().expect("lock").push(parts.clone());
                        hit_count.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, Infallible>(handler(Request::from_parts(parts, body)).await)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
            while connections.try_join_next().is_some() {}
        }
    });
    Backend {
        addr,
        requests,
        hits,
        open,
        task,
    }
}

/// Counts one open backend connection while it lives.
struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    fn new(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A backend that answers every request with 200 and `name` as the body.
pub async fn spawn_backend(name: &'static str) -> Backend {
    spawn_backend_with(move |_req| async move { Response::new(full(name)) }).await
}

/// An address that refuses connections for the rest of the test run: its
/// socket stays bound but never listens, so no later bind (a backend, the
/// proxy, another `closed_port`) can take the port.
pub async fn closed_port() -> SocketAddr {
    static HELD: std::sync::Mutex<Vec<tokio::net::TcpSocket>> = std::sync::Mutex::new(Vec::new());
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(([127, 0, 0, 1], 0).into()).expect("bind");
    let addr = socket.local_addr().expect("addr");
    HELD.lock().expect("held sockets").push(socket);
    addr
}

/// A port free right now, for a listener the test is about to add (bound,
/// then released).
pub async fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

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

impl Proxy {
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
}

impl Proxy {
    /// Idle client connections parked now (`weir_connections_parked`).
    pub fn connections_parked(&self) -> i64 {
        let stats = &self.snapshot.load().stats;
        stats
            .connections_parked
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `http://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
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

/// A config with one upstream `app` over `servers` (TOML server entries) and a `/` route.
pub fn one_upstream(balance: &str, servers: &[String], extra: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]

[log]
access = "off"

[[upstream]]
name = "app"
balance = "{balance}"
servers = [{servers}]
{extra}

[[route]]
path = "/"
upstream = "app"
"#,
        servers = servers.join(", ")
    )
}

/// `"addr"` for a servers list.
pub fn server(addr: SocketAddr) -> String {
    format!("\"{addr}\"")
}

/// A pooled HTTP/1.1 client.
pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// GETs `url` and returns the response as soon as its head arrives (the body
/// still streaming). Bounded by 10 s.
pub async fn get_head(url: &str) -> Response<Incoming> {
    let req = Request::get(url)
        .body(Full::new(Bytes::new()))
        .expect("request");
    tokio::time::timeout(Duration::from_secs(10), client().request(req))
        .await
        .expect("response head within 10 s")
        .expect("request through proxy")
}

/// GETs `url`; returns the status and the body as text. Bounded by 10 s.
pub async fn get(url: &str) -> (StatusCode, String) {
    let req = Request::get(url)
        .body(Full::new(Bytes::new()))
        .expect("request");
    send(req).await
}

/// Sends `req`, returns the status and body text. Bounded by 10 s.
pub async fn send(req: Request<Full<Bytes>>) -> (StatusCode, String) {
    send_with(&client(), req).await
}

/// A pooled client as [`client`] returns.
pub type TestClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// GETs `url` on `client` (reusing its keep-alive connections).
pub async fn get_with(client: &TestClient, url: &str) -> (StatusCode, String) {
    let req = Request::get(url)
        .body(Full::new(Bytes::new()))
        .expect("request");
    send_with(client, req).await
}

/// Sends `req` on `client`; returns the status and body text. Bounded by 10 s.
pub async fn send_with(client: &TestClient, req: Request<Full<Bytes>>) -> (StatusCode, String) {
    let fut = async {
        let resp = client.request(req).await.expect("request through proxy");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .expect("request finished within 10 s")
}

/// A body of `chunks` chunks of `chunk` bytes each, generated as it is read.
pub struct Generated {
    chunk: Bytes,
    left: usize,
}

impl Generated {
    /// `chunks` × `chunk_size` bytes of `b'x'`.
    pub fn new(chunks: usize, chunk_size: usize) -> Self {
        Self {
            chunk: Bytes::from(vec![b'x'; chunk_size]),
            left: chunks,
        }
    }
}

impl hyper::body::Body for Generated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        self.left -= 1;
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(self.chunk.clone()))))
    }
}

/// Counts a body's bytes without keeping them.
pub async fn count_bytes<B>(mut body: B) -> u64
where
    B: hyper::body::Body + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("body frame").into_data() {
            total += bytes::Buf::remaining(&data) as u64;
        }
    }
    total
}

/// A backend answering `name`, whose `/hold` requests wait for a permit of `gate`.
pub async fn holding_backend(name: &'static str, gate: Arc<tokio::sync::Semaphore>) -> Backend {
    spawn_backend_with(move |req| {
        let gate = gate.clone();
        async move {
            if req.uri().path() == "/hold" {
                let _permit = gate.acquire().await.expect("gate open");
            }
            Response::new(full(name))
        }
    })
    .await
}

/// [`get`] with an owned URL, for spawning.
pub async fn get_owned(url: String) -> (StatusCode, String) {
    get(&url).await
}

/// Polls `cond` every 5 ms for up to 5 s.
pub async fn wait_until(cond: impl Fn() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition not reached within 5 s");
}

/// `toml` with an `[admin]` listener on an ephemeral port, and a token when given.
pub fn with_admin(toml: &str, token: Option<&str>) -> String {
    let token = token.map_or(String::new(), |t| format!("token = \"{t}\"\n"));
    format!("{toml}\n[admin]\nlisten = \"127.0.0.1:0\"\n{token}")
}

impl Proxy {
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

/// Clients sending GETs in a loop over keep-alive connections, counting outcomes.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `clients` tasks GETting `url`, each on its own keep-alive client,
    /// until stopped (bounded: 100,000 requests per task at most).
    pub fn start(url: String, clients: usize) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let tasks = (0..clients)
            .map(|_| {
                let (url, stop, ok, failed) =
                    (url.clone(), stop.clone(), ok.clone(), failed.clone());
                tokio::spawn(async move {
                    let client = client();
                    for _ in 0..100_000 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        match get_with(&client, &url).await.0 {
                            StatusCode::OK => ok.fetch_add(1, Ordering::Relaxed),
                            _ => failed.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    /// Requests answered 200 so far.
    pub fn ok(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the clients; returns (succeeded, failed).
    pub async fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("load client task");
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}
