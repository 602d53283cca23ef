//! Raw sockets for tests where a peer must misbehave: a client that writes
//! arbitrary bytes and reads back what the proxy answers, and a backend that
//! records every byte that reaches it. Responses are parsed with `httparse`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::backends::full;

/// How long a raw read waits before the test fails.
const READ_LIMIT: Duration = Duration::from_secs(10);

/// One HTTP/1.1 response as a raw client read it.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// Header names (lower-cased) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body (by `Content-Length`, or up to the close).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection that sends whatever bytes a test gives it.
pub struct RawClient {
    stream: TcpStream,
    /// Bytes read but not yet consumed by a parsed response.
    buf: Vec<u8>,
}

impl RawClient {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes `bytes` as they are.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Writes `bytes`, reporting whether the peer still took them.
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Reads one response; `None` if the connection closed before a whole
    /// head arrived. Panics after ten seconds without one.
    pub async fn response(&mut self) -> Option<RawResponse> {
        tokio::time::timeout(READ_LIMIT, self.read_response(true))
            .await
            .expect("no response within 10 s")
    }

    /// Reads the response to a `HEAD`: its head alone, whatever its
    /// `Content-Length` says.
    pub async fn head_response(&mut self) -> Option<RawResponse> {
        tokio::time::timeout(READ_LIMIT, self.read_response(false))
            .await
            .expect("no response within 10 s")
    }

    async fn read_response(&mut self, has_body: bool) -> Option<RawResponse> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(len) = parsed.parse(&self.buf).expect("valid head") {
                let status = parsed.code.expect("status");
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                self.buf.drain(..len);
                let length = headers
                    .iter()
                    .find(|(n, _)| n == "content-length")
                    .map(|(_, v)| v.parse::<usize>().expect("numeric content-length"));
                let body = match length {
                    _ if !has_body => Vec::new(),
                    Some(n) => {
                        while self.buf.len() < n {
                            if !self.fill().await {
                                break;
                            }
                        }
                        self.buf.drain(..n.min(self.buf.len())).collect()
                    }
                    None if status == 101 || status == 204 || status == 304 => Vec::new(),
                    None => {
                        while self.fill().await {}
                        std::mem::take(&mut self.buf)
                    }
                };
                return Some(RawResponse {
                    status,
                    headers,
                    body,
                });
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Reads more bytes into the buffer; false at the end of the stream.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Whether the proxy closed the connection (read end reached, or reset)
    /// within ten seconds, with no further bytes.
    pub async fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        matches!(
            tokio::time::timeout(READ_LIMIT, self.stream.read(&mut chunk)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// Sends `bytes` on a new connection and reads one response.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Option<RawResponse> {
    let mut client = RawClient::connect(addr).await;
    client.send(bytes).await;
    client.response().await
}

/// A hyper backend that records every byte each connection sent it, in
/// arrival order: what weir framed, byte for byte.
pub struct RecordingBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// All bytes received, over all connections.
    pub received: Arc<Mutex<Vec<u8>>>,
    /// The bytes of each connection apart, in the order they were accepted.
    connections: Arc<Mutex<Vec<Log>>>,
    task: JoinHandle<()>,
}

impl RecordingBackend {
    /// The bytes received so far, as text.
    pub fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().expect("lock")).into_owned()
    }

    /// The bytes received on each connection so far, in the order they were accepted.
    pub fn connections(&self) -> Vec<Vec<u8>> {
        let connections = self.connections.lock().expect("lock");
        connections
            .iter()
            .map(|c| c.lock().expect("lock").clone())
            .collect()
    }
}

impl Drop for RecordingBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a backend that reads each request whole and answers 200 with the
/// request body's length, recording the raw bytes it was sent.
pub async fn spawn_recording_backend() -> RecordingBackend {
    use http_body_util::BodyExt;
    recording(|stream, log| async move {
        let io = Recorded { inner: stream, log };
        let service =
            hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async {
                let len = match req.into_body().collect().await {
                    Ok(body) => body.to_bytes().len(),
                    Err(_) => 0,
                };
                Ok::<_, std::convert::Infallible>(http::Response::new(full(format!(
                    "got {len} bytes"
                ))))
            });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(io), service)
            .await;
    })
    .await
}

/// Starts a backend that answers each request head it receives with `answer`,
/// byte for byte (a server that misbehaves), recording every byte it is sent.
/// Request bodies are not looked for: the requests sent to it have none.
pub async fn spawn_scripted_backend(answer: &'static [u8]) -> RecordingBackend {
    recording(move |mut stream, log| async move {
        let mut pending = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            log.record(&chunk[..n]);
            pending.extend_from_slice(&chunk[..n]);
            while let Some(len) = head_length(&pending) {
                pending.drain(..len);
                if stream.write_all(answer).await.is_err() {
                    return;
                }
            }
        }
    })
    .await
}

/// A backend on a new port whose connections are each served by `serve`,
/// given where to record the bytes it receives.
async fn recording<F, Fut>(serve: F) -> RecordingBackend
where
    F: Fn(TcpStream, ConnLog) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let received = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(Mutex::new(Vec::new()));
    let (log, each) = (received.clone(), connections.clone());
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let own = Arc::new(Mutex::new(Vec::new()));
            each.lock().expect("lock").push(own.clone());
            conns.spawn(serve(
                stream,
                ConnLog {
                    all: log.clone(),
                    own,
                },
            ));
        }
    });
    RecordingBackend {
        addr,
        received,
        connections,
        task,
    }
}

/// The length of the complete request head at the start of `bytes`, if there is one.
fn head_length(bytes: &[u8]) -> Option<usize> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    match httparse::Request::new(&mut headers).parse(bytes) {
        Ok(httparse::Status::Complete(len)) => Some(len),
        _ => None,
    }
}

/// Bytes received, shared between the socket that reads them and the test.
type Log = Arc<Mutex<Vec<u8>>>;

/// Where one connection's received bytes go: the log all connections
/// share, and its own.
struct ConnLog {
    all: Log,
    own: Log,
}

impl ConnLog {
    fn record(&self, bytes: &[u8]) {
        self.all.lock().expect("lock").extend_from_slice(bytes);
        self.own.lock().expect("lock").extend_from_slice(bytes);
    }
}

/// A socket that records what it reads.
struct Recorded {
    inner: TcpStream,
    log: ConnLog,
}

impl AsyncRead for Recorded {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        if poll.is_ready() {
            this.log.record(&buf.filled()[before..]);
        }
        poll
    }
}

impl AsyncWrite for Recorded {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
