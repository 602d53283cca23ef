//! A backend that answers every request with one file's bytes, for
//! `benches/compress.sh`.
//!
//! `payload_backend FILE CONTENT_TYPE PORT` listens on 127.0.0.1:PORT on a
//! single current-thread runtime and answers each request `200` with the
//! bytes of FILE (read once at start), `Content-Type: CONTENT_TYPE` and a
//! `Content-Length`, keep-alive on.
//!
//! Build: `cargo build --release --example payload_backend`.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const USAGE: &str = "usage: payload_backend FILE CONTENT_TYPE PORT";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [file, content_type, port] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let Ok(port) = port.parse::<u16>() else {
        eprintln!("{USAGE} (bad port: {port:?})");
        return ExitCode::from(2);
    };
    let body = match std::fs::read(file) {
        Ok(bytes) => Bytes::from(bytes),
        Err(err) => {
            eprintln!("payload_backend: {file}: {err}");
            return ExitCode::FAILURE;
        }
    };
    let Ok(content_type) = HeaderValue::from_str(content_type) else {
        eprintln!("{USAGE} (bad content type)");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("payload_backend: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(err) => {
                eprintln!("payload_backend: bind {addr}: {err}");
                return ExitCode::FAILURE;
            }
        };
        loop {
            let (stream, _peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(err) => {
                    // EMFILE and friends: report, back off a little, keep serving.
                    eprintln!("payload_backend: accept: {err}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            let content_type = content_type.clone();
            let answer = move |_req: Request<Incoming>| {
                let mut resp = Response::new(Full::new(body.clone()));
                resp.headers_mut()
                    .insert(CONTENT_TYPE, content_type.clone());
                async move { Ok::<_, Infallible>(resp) }
            };
            tokio::spawn(async move {
                // Errors here are client resets and the like; nothing to do about them.
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service_fn(answer))
                    .await;
            });
        }
    })
}
