//! weir's own HTTP/1.1 client against upstreams that write exact bytes:
//! framing by RFC 9112 §6.3 (lengths that disagree, chunked with a length,
//! bodies until the close, responses that never have one), interim answers,
//! when a connection may carry another request, pooled connections the
//! server closed, and an answer that streams while the request still uploads.

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Every wait in these tests.
const LIMIT: Duration = Duration::from_secs(10);

/// A raw upstream: each connection it accepts is served by a handler given
/// the socket and the connection's number (from 0).
struct RawUpstream {
    addr: SocketAddr,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawUpstream {
    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn raw_upstream<F, Fut>(serve: F) -> RawUpstream
where
    F: Fn(TcpStream, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let n = count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream, n));
        }
    });
    RawUpstream {
        addr,
        accepted,
        task,
    }
}

/// Reads one request head off `stream` (bytes after it stay in `buf`): its
/// method and declared body length; `None` when the connection ends first.
async fn request_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, usize)> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(len)) = req.parse(buf) {
            let method = req.method.unwrap_or("").to_owned();
            let length = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                .unwrap_or(0);
            buf.drain(..len);
            return Some((method, length));
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// An upstream that answers the `n`th request it receives (over all its
/// connections) with `answers[n]` (the last one once they run out), byte for
/// byte, and closes the connection after an answer when `close` says so.
async fn scripted(answers: &'static [&'static [u8]], close: bool) -> RawUpstream {
    let requests = Arc::new(AtomicUsize::new(0));
    raw_upstream(move |mut stream, _| {
        let requests = requests.clone();
        async move {
            let mut buf = Vec::new();
            while request_head(&mut stream, &mut buf).await.is_some() {
                let n = requests.fetch_add(1, Ordering::SeqCst);
                let answer = answers[n.min(answers.len() - 1)];
                if stream.write_all(answer).await.is_err() || close {
                    return;
                }
            }
        }
    })
    .await
}

/// A weir in front of `upstream` alone, with one worker: every client
/// connection shares its pooled upstream connections.
async fn proxy_for(upstream: &RawUpstream) -> Proxy {
    let toml = one_upstream("round_robin", &[server(upstream.addr)], "");
    spawn_proxy(&with_server_keys(&toml, "threads = 1")).await
}

/// One HTTP/1.1 client connection to `proxy`: its requests stay on one of
/// weir's workers, so they share its pooled upstream connections.
async fn connection<B>(proxy: &Proxy) -> SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    sender
}

/// Sends a bodiless `method` request for `path` on `sender`: the status and
/// the body, or the error that cut the body off.
async fn request(
    sender: &mut SendRequest<Full<Bytes>>,
    method: Method,
    path: &str,
) -> (StatusCode, Result<String, String>) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "h1.test")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let exchange = async {
        sender.ready().await.expect("connection ready");
        let resp = sender.send_request(req).await.expect("response");
        let status = resp.status();
        let body = resp.into_body().collect().await;
        let text = body
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .map_err(|e| e.to_string());
        (status, text)
    };
    tokio::time::timeout(LIMIT, exchange)
        .await
        .expect("answered within 10 s")
}

/// Sends `count` GETs of `/` on one connection; what each got.
async fn gets(proxy: &Proxy, count: usize) -> Vec<(StatusCode, Result<String, String>)> {
    let mut sender = connection(proxy).await;
    let mut answers = Vec::new();
    for _ in 0..count {
        answers.push(request(&mut sender, Method::GET, "/").await);
    }
    answers
}

fn ok(text: &str) -> (StatusCode, Result<String, String>) {
    (StatusCode::OK, Ok(text.to_owned()))
}

#[tokio::test]
async fn content_lengths_that_differ_are_a_502_and_the_same_one_twice_is_fine() {
    let differ = scripted(
        &[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"],
        false,
    )
    .await;
    let proxy = proxy_for(&differ).await;
    let (status, text) = &gets(&proxy, 1).await[0];
    assert_eq!(*status, StatusCode::BAD_GATEWAY);
    assert_eq!(text.as_deref(), Ok("502 Bad Gateway\n"));

    let list = scripted(
        &[b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello"],
        false,
    )
    .await;
    let proxy = proxy_for(&list).await;
    assert_eq!(gets(&proxy, 1).await, vec![ok("hello")]);

    let same = scripted(
        &[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"],
        false,
    )
    .await;
    let proxy = proxy_for(&same).await;
    assert_eq!(gets(&proxy, 3).await, vec![ok("hello"); 3]);
    assert_eq!(same.connections(), 1, "the connection is reused");
}

#[tokio::test]
async fn an_answer_that_leaves_its_connection_in_doubt_is_passed_and_the_connection_not_reused() {
    // Chunked wins over a Content-Length, and the pair may be a smuggling
    // attempt; bytes after a body that came whole with its head are no answer
    // to anything, and never read as the next one's.
    let doubtful: [&'static [&'static [u8]]; 2] = [
        &[b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"],
        &[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\n\r\n"],
    ];
    for answer in doubtful {
        let upstream = scripted(answer, false).await;
        let proxy = proxy_for(&upstream).await;
        assert_eq!(gets(&proxy, 2).await, vec![ok("hello"); 2]);
        assert_eq!(upstream.connections(), 2);
    }
}

#[tokio::test]
async fn a_malformed_first_chunk_is_a_502_and_a_later_one_cuts_the_body() {
    for first in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\x1b\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\nhello\r\n0\r\n\r\n",
    ] {
        let answers: &'static [&'static [u8]] = Box::leak(Box::new([first]));
        let upstream = scripted(answers, false).await;
        let proxy = proxy_for(&upstream).await;
        let (status, _) = &gets(&proxy, 1).await[0];
        assert_eq!(*status, StatusCode::BAD_GATEWAY, "{}", first.escape_ascii());
    }
    for later in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXY5\r\nworld\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5;\x00\r\nworld\r\n0\r\n\r\n",
    ] {
        let answers: &'static [&'static [u8]] = Box::leak(Box::new([later]));
        let upstream = scripted(answers, false).await;
        let proxy = proxy_for(&upstream).await;
        let (status, body) = &gets(&proxy, 1).await[0];
        assert_eq!(*status, StatusCode::OK, "{}", later.escape_ascii());
        assert!(body.is_err(), "{}: {body:?}", later.escape_ascii());
    }
}

#[tokio::test]
async fn interim_answers_before_the_final_one_are_skipped() {
    let upstream = scripted(
        &[
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\
            HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ],
        false,
    )
    .await;
    let proxy = proxy_for(&upstream).await;
    assert_eq!(gets(&proxy, 2).await, vec![ok("ok"); 2]);
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test]
async fn bodiless_answers_pass_no_stray_body_and_keep_the_connection_only_when_clean() {
    // 204 and 304 never have a body, whatever their head says; bytes after
    // the head are no body, and the connection cannot be trusted after them.
    for (answer, reused) in [
        (&b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"[..], true),
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello", false),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", true),
        (b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", false),
    ] {
        let answers: &'static [&'static [u8]] = Box::leak(Box::new([answer]));
        let upstream = scripted(answers, false).await;
        let proxy = proxy_for(&upstream).await;
        let status = StatusCode::from_bytes(&answer[9..12]).expect("status");
        assert_eq!(gets(&proxy, 2).await, vec![(status, Ok(String::new())); 2]);
        let connections = if reused { 1 } else { 2 };
        assert_eq!(upstream.connections(), connections, "{}", answer.escape_ascii());
    }
    // The answer to HEAD has no body either; a GET after it gets its own.
    for (head, reused) in [
        (&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"[..], true),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false),
    ] {
        let answers: &'static [&'static [u8]] = Box::leak(Box::new([
            head,
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nget",
        ]));
        let upstream = scripted(answers, false).await;
        let proxy = proxy_for(&upstream).await;
        let mut sender = connection(&proxy).await;
        let (status, body) = request(&mut sender, Method::HEAD, "/").await;
        assert_eq!((status, body), ok(""));
        assert_eq!(request(&mut sender, Method::GET, "/").await, ok("get"));
        let connections = if reused { 1 } else { 2 };
        assert_eq!(
            upstream.connections(),
            connections,
            "{}",
            head.escape_ascii()
        );
    }
}

#[tokio::test]
async fn a_body_until_the_close_is_passed_whole_and_the_connection_ends_with_it() {
    let upstream = scripted(
        &[b"HTTP/1.1 200 OK\r\n\r\nall of it, until the close"],
        true,
    )
    .await;
    let proxy = proxy_for(&upstream).await;
    assert_eq!(
        gets(&proxy, 2).await,
        vec![ok("all of it, until the close"); 2]
    );
    assert_eq!(upstream.connections(), 2);
    // HTTP/1.0 without keep-alive, and `Connection: close`, end it too; an
    // HTTP/1.0 server that says keep-alive keeps it. (An HTTP/1.0 answer
    // also ends the client's connection, as it did with hyper's client: each
    // request goes on a connection of its own.)
    for (answer, connections) in [
        (&b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"[..], 2),
        (
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
            2,
        ),
        (
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
            1,
        ),
    ] {
        let answers: &'static [&'static [u8]] = Box::leak(Box::new([answer]));
        let upstream = scripted(answers, false).await;
        let proxy = proxy_for(&upstream).await;
        for _ in 0..2 {
            assert_eq!(gets(&proxy, 1).await, vec![ok("ok")]);
        }
        assert_eq!(
            upstream.connections(),
            connections,
            "{}",
            answer.escape_ascii()
        );
    }
}

#[tokio::test]
async fn a_pooled_connection_the_server_closed_while_idle_is_not_used() {
    // The server closes each connection right after its first answer.
    let upstream = scripted(&[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"], true).await;
    let proxy = proxy_for(&upstream).await;
    let mut sender = connection(&proxy).await;
    for _ in 0..5 {
        assert_eq!(request(&mut sender, Method::GET, "/").await, ok("ok"));
    }
    assert_eq!(upstream.connections(), 5);
}

#[tokio::test]
async fn an_idle_pooled_connection_the_server_closed_is_closed_without_waiting_for_a_request() {
    // The server answers, then closes its side as an idle timeout would
    // (Express's `keepAliveTimeout`), and reads on: the end of what it reads
    // is weir closing its side too, rather than leaving it in CLOSE_WAIT
    // until the next request to this server.
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel();
    let upstream = raw_upstream(move |mut stream, _| {
        let closed_tx = closed_tx.clone();
        async move {
            let mut buf = Vec::new();
            if request_head(&mut stream, &mut buf).await.is_none() {
                return;
            }
            let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
            if stream.write_all(answer).await.is_err() || stream.shutdown().await.is_err() {
                return;
            }
            let mut rest = Vec::new();
            let end = stream.read_to_end(&mut rest).await;
            let _ = closed_tx.send(end.map(|_| rest.len()).map_err(|e| e.kind()));
        }
    })
    .await;
    let proxy = proxy_for(&upstream).await;
    let mut sender = connection(&proxy).await;
    assert_eq!(request(&mut sender, Method::GET, "/").await, ok("ok"));
    let closed = tokio::time::timeout(LIMIT, closed_rx.recv())
        .await
        .expect("weir kept the connection the server closed open");
    assert_eq!(
        closed,
        Some(Ok(0)),
        "weir closed it without sending anything"
    );
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test]
async fn a_request_on_a_connection_the_server_closes_as_it_arrives_goes_again() {
    // Each connection answers its first request and closes, unanswered, as
    // the second arrives: what a server's idle timeout racing weir looks like.
    let upstream = raw_upstream(|mut stream, _| async move {
        let mut buf = Vec::new();
        if request_head(&mut stream, &mut buf).await.is_none() {
            return;
        }
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        if stream.write_all(answer).await.is_err() {
            return;
        }
        let _ = request_head(&mut stream, &mut buf).await;
    })
    .await;
    let proxy = proxy_for(&upstream).await;
    let mut sender = connection(&proxy).await;
    for method in [Method::GET, Method::GET, Method::POST, Method::DELETE] {
        assert_eq!(
            request(&mut sender, method.clone(), "/").await,
            ok("ok"),
            "{method}"
        );
    }
    assert_eq!(upstream.connections(), 4);
}

/// An upstream that answers at once and echoes the request body as it reads
/// it, one chunk per read, ending its answer when the body is in.
async fn echo_while_reading() -> RawUpstream {
    raw_upstream(|mut stream, _| async move {
        let mut buf = Vec::new();
        while let Some((_, length)) = request_head(&mut stream, &mut buf).await {
            let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
            if stream.write_all(head).await.is_err() {
                return;
            }
            let mut left = length;
            while left > 0 {
                if buf.is_empty() {
                    let mut chunk = [0u8; 4096];
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let take = left.min(buf.len());
                let data: Vec<u8> = buf.drain(..take).collect();
                left -= take;
                let mut chunk = format!("{take:x}\r\n").into_bytes();
                chunk.extend_from_slice(&data);
                chunk.extend_from_slice(b"\r\n");
                if stream.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            if stream.write_all(b"0\r\n\r\n").await.is_err() {
                return;
            }
        }
    })
    .await
}

type Uploaded =
    StreamBody<futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

/// A body that sends what comes through the returned channel, then ends.
fn uploading() -> (tokio::sync::mpsc::Sender<&'static str>, Uploaded) {
    use futures_util::StreamExt as _;
    let (tx, rx) = tokio::sync::mpsc::channel::<&'static str>(4);
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        let text = rx.recv().await?;
        Some((Ok(Frame::data(Bytes::from_static(text.as_bytes()))), rx))
    });
    (tx, StreamBody::new(frames.boxed()))
}

/// Reads the next data frame of `body`, within the limit.
async fn next_data(body: &mut Incoming) -> Option<Bytes> {
    let frame = tokio::time::timeout(LIMIT, body.frame())
        .await
        .expect("a frame within 10 s")?
        .expect("a good frame");
    frame.into_data().ok()
}

#[tokio::test]
async fn an_answer_streams_back_while_the_request_body_still_uploads() {
    let upstream = echo_while_reading().await;
    let proxy = proxy_for(&upstream).await;
    let mut sender = connection(&proxy).await;
    for round in 0..2 {
        let (tx, body) = uploading();
        let req = Request::post("/echo")
            .header("host", "h1.test")
            .header("content-length", "10")
            .body(body)
            .expect("request");
        sender.ready().await.expect("ready");
        let pending = sender.send_request(req);
        tx.send("hello").await.expect("first part");
        // The head and the first part's echo arrive before the body is whole.
        let resp = tokio::time::timeout(LIMIT, pending)
            .await
            .expect("head within 10 s")
            .expect("response");
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        assert_eq!(
            next_data(&mut body).await.as_deref(),
            Some(&b"hello"[..]),
            "round {round}"
        );
        tx.send("world").await.expect("second part");
        drop(tx);
        let mut rest = Vec::new();
        while let Some(data) = next_data(&mut body).await {
            rest.extend_from_slice(&data);
        }
        assert_eq!(rest, b"world", "round {round}");
    }
    // The body went out whole both times: the connection carried both.
    assert_eq!(upstream.connections(), 1);
}
