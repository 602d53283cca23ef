//! Clients: pooled hyper HTTP/1.1 clients that send one request, bodies to
//! upload and count, and a steady load of GETs. Every wait is bounded.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinHandle;

/// A pooled client as [`client`] returns.
pub type TestClient = Client<HttpConnector, Full<Bytes>>;

/// A pooled HTTP/1.1 client.
pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A bodiless GET of `url`.
fn get_request(url: &str) -> Request<Full<Bytes>> {
    Request::get(url)
        .body(Full::new(Bytes::new()))
        .expect("request")
}

/// GETs `url`; returns the status and the body as text. Bounded by 10 s.
pub async fn get(url: &str) -> (StatusCode, String) {
    send(get_request(url)).await
}

/// [`get`] with an owned URL, for spawning.
pub async fn get_owned(url: String) -> (StatusCode, String) {
    get(&url).await
}

/// GETs `url` on `client` (reusing its keep-alive connections).
pub async fn get_with(client: &TestClient, url: &str) -> (StatusCode, String) {
    send_with(client, get_request(url)).await
}

/// GETs `url` and returns the response as soon as its head arrives (the body
/// still streaming). Bounded by 10 s.
pub async fn get_head(url: &str) -> Response<Incoming> {
    tokio::time::timeout(Duration::from_secs(10), client().request(get_request(url)))
        .await
        .expect("response head within 10 s")
        .expect("request through proxy")
}

/// Sends `req`, returns the status and body text. Bounded by 10 s.
pub async fn send(req: Request<Full<Bytes>>) -> (StatusCode, String) {
    send_with(&client(), req).await
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

/// Clients sending GETs in a loop over keep-alive connections, counting outcomes.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `clients` tasks GETting `url`, each on its own keep-alive client,
    /// until stopped (bounded: 100,000 requests per task at most).
    pub fn start(url: String, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
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
