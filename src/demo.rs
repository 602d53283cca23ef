//! `weir demo`: three small demo apps and the proxy in front of them.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{debug, info};

use crate::config::{self, Config, ConfigError};

/// The demo's configuration: `config/weir.toml`'s shape.
pub const DEMO_CONFIG: &str = include_str!("../config/weir.toml");

/// The demo apps' ports.
pub const DEMO_PORTS: [u16; 3] = [3000, 3001, 3002];

/// Parses the built-in demo configuration.
pub fn config() -> Result<Config, ConfigError> {
    config::parse(DEMO_CONFIG, std::path::Path::new("config/weir.toml"))
}

/// Starts one demo app on `addr`: it answers every request with its own port.
pub async fn spawn_app(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| async move {
                    let text = format!(
                        "hello from the demo app on port {} ({} {})\n",
                        local.port(),
                        req.method(),
                        req.uri().path()
                    );
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                });
                if let Err(error) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    debug!(%error, "demo app connection error");
                }
            });
        }
    });
    info!(app = %local, "demo app listening");
    Ok(local)
}

/// What to print once the demo runs.
pub fn banner(proxy: SocketAddr) -> String {
    format!(
        "weir demo: proxy on http://{proxy}/ in front of demo apps on 127.0.0.1:3000-3002\n\
         try:   for i in 1 2 3 4 5 6; do curl -s http://{proxy}/; done\n\
         stop:  Ctrl-C\n"
    )
}
