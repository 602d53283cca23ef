//! Backends: real hyper HTTP/1.1 servers on ephemeral ports that record what
//! reaches them, and addresses where nothing answers.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

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

/// A backend that answers every request with 200 and `name` as the body.
pub async fn spawn_backend(name: &'static str) -> Backend {
    spawn_backend_with(move |_req| async move { Response::new(full(name)) }).await
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
    spawn(addr, handler, false).await
}

/// Like [`spawn_backend_with`], speaking cleartext HTTP/2 (h2c, prior knowledge).
pub async fn spawn_h2c_backend_with<F, Fut>(handler: F) -> Backend
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    spawn(addr, handler, true).await
}

async fn spawn<F, Fut>(addr: SocketAddr, handler: F, h2c: bool) -> Backend
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
                let io = TokioIo::new(stream);
                let _ = if h2c {
                    http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, service)
                        .await
                } else {
                    http1::Builder::new()
                        .serve_connection(io, service)
                        .with_upgrades()
                        .await
                };
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

/// An address that refuses connections for the rest of the test run: its
/// socket stays bound but never listens, so no later bind (a backend, the
/// proxy, another `closed_port`) can take the port.
pub async fn closed_port() -> SocketAddr {
    static HELD: Mutex<Vec<tokio::net::TcpSocket>> = Mutex::new(Vec::new());
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(([127, 0, 0, 1], 0).into()).expect("bind");
    let addr = socket.local_addr().expect("addr");
    HELD.lock().expect("held sockets").push(socket);
    addr
}
