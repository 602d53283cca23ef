//! A bulk-transfer backend for `benches/bulk.sh`.
//!
//! `bulk_backend PORT` listens on 127.0.0.1:PORT (one current-thread runtime):
//!
//! - `GET /bytes/N` answers `200` with N bytes (zeros, `Content-Length: N`),
//!   streamed in 64 KiB frames that share one buffer;
//! - `POST` or `PUT` (any path) reads the whole body, discards it and answers
//!   `200` with the byte count as text.
//!
//! Build: `cargo build --release --example bulk_backend`.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::process::ExitCode;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Bytes per body frame.
const CHUNK: usize = 64 * 1024;

/// A response body of `remaining` zero bytes.
struct Zeros {
    chunk: Bytes,
    remaining: u64,
}

impl Body for Zeros {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(CHUNK as u64);
        self.remaining -= n;
        let frame = self.chunk.slice(..n as usize);
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

type Reply = Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>;

fn text(status: StatusCode, body: String) -> Reply {
    let mut resp = Response::new(Full::new(Bytes::from(body)).boxed());
    *resp.status_mut() = status;
    resp
}

async fn answer(req: Request<Incoming>, chunk: Bytes) -> Result<Reply, Infallible> {
    if req.method() == Method::POST || req.method() == Method::PUT {
        let mut body = req.into_body();
        let mut total: u64 = 0;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => total += frame.data_ref().map_or(0, |d| d.len() as u64),
                Err(error) => return Ok(text(StatusCode::BAD_REQUEST, format!("{error}\n"))),
            }
        }
        return Ok(text(StatusCode::OK, format!("{total}\n")));
    }
    let size = req
        .uri()
        .path()
        .strip_prefix("/bytes/")
        .and_then(|n| n.parse::<u64>().ok());
    match size {
        Some(remaining) => Ok(Response::new(Zeros { chunk, remaining }.boxed())),
        None => Ok(text(
            StatusCode::NOT_FOUND,
            "GET /bytes/N, or POST a body\n".to_owned(),
        )),
    }
}

async fn serve(listener: TcpListener) {
    let chunk = Bytes::from(vec![0u8; CHUNK]);
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(err) => {
                eprintln!("bulk_backend: accept: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        // A 64 KiB frame is one loopback segment and a few bytes: with Nagle on,
        // that tail can wait for a delayed ACK.
        let _ = stream.set_nodelay(true);
        let chunk = chunk.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, chunk.clone()));
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn main() -> ExitCode {
    let port = match std::env::args().nth(1).map(|a| a.parse::<u16>()) {
        Some(Ok(port)) if port != 0 => port,
        _ => {
            eprintln!("usage: bulk_backend PORT");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("bulk_backend: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        match weir::server::listening_socket(addr, false).and_then(TcpListener::from_std) {
            Ok(listener) => {
                serve(listener).await;
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("bulk_backend: cannot bind {addr}: {err}");
                ExitCode::FAILURE
            }
        }
    })
}
