//! A minimal HTTP/1.1 backend for `benches/compare.sh`.
//!
//! `bench_backend PORT [PORT...]` listens on 127.0.0.1:PORT (each port given)
//! on a single current-thread tokio runtime and answers every request with
//! `200 OK` and the same 94-byte body, keep-alive on. The comparison script
//! starts one process per port so that each backend can be pinned and its CPU
//! time read on its own. `GET /backend-requests` answers how many other
//! requests the process has answered (`benches/cache.sh` reads it).
//!
//! Build: `cargo build --release --example bench_backend`.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The response body: 94 bytes, like the backends behind BENCHMARKING.md's figures.
const BODY: &[u8; 94] = b"{\"service\":\"bench-backend\",\"status\":\"ok\",\"message\":\"hello from the weir benchmark backend!!\"}\n";

/// Requests answered, but for `/backend-requests` itself.
static ANSWERED: AtomicU64 = AtomicU64::new(0);

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/backend-requests" {
        let count = ANSWERED.load(Ordering::Relaxed).to_string();
        return Ok(Response::new(Full::new(Bytes::from(count))));
    }
    ANSWERED.fetch_add(1, Ordering::Relaxed);
    let mut resp = Response::new(Full::new(Bytes::from_static(BODY)));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

async fn serve(listener: TcpListener) {
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(err) => {
                // EMFILE and friends: report, back off a little, keep serving.
                eprintln!("bench_backend: accept: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            // Errors here are client resets and the like; nothing to do about them.
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}

fn main() -> ExitCode {
    let mut ports = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.parse::<u16>() {
            Ok(port) if port != 0 => ports.push(port),
            _ => {
                eprintln!("usage: bench_backend PORT [PORT...]  (bad port: {arg:?})");
                return ExitCode::from(2);
            }
        }
    }
    if ports.is_empty() {
        eprintln!("usage: bench_backend PORT [PORT...]");
        return ExitCode::from(2);
    }

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("bench_backend: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };

    runtime.block_on(async move {
        let mut tasks = Vec::new();
        for port in ports {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            // weir's backlog (4096), not tokio's 128: a proxy opening hundreds
            // of upstream connections at once must not see SYNs dropped.
            match weir::server::listening_socket(addr, false).and_then(TcpListener::from_std) {
                Ok(listener) => tasks.push(tokio::spawn(serve(listener))),
                Err(err) => {
                    eprintln!("bench_backend: cannot bind {addr}: {err}");
                    return ExitCode::FAILURE;
                }
            }
        }
        for task in tasks {
            let _ = task.await;
        }
        ExitCode::SUCCESS
    })
}
