//! `weir demo`: three small demo apps, the proxy in front of them and the
//! admin listener with its status page.

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
use crate::daemon::Daemon;
use crate::runtime::Workers;

/// The demo's configuration: `config/weir.toml`'s shape.
pub(crate) const DEMO_CONFIG: &str = include_str!("../config/weir.toml");

/// Where the demo's config is said to come from (reloads read it).
const DEMO_CONFIG_PATH: &str = "config/weir.toml";

/// Parses the built-in demo configuration.
pub fn config() -> Result<Config, ConfigError> {
    config::parse(DEMO_CONFIG, std::path::Path::new(DEMO_CONFIG_PATH))
}

/// A started demo: the proxy in front of the demo apps, and what to tell the user.
#[derive(Debug)]
pub struct Demo {
    /// The proxy and its admin listener; `run` it to serve until shutdown.
    pub daemon: Daemon,
    /// Where to curl and where the status page is.
    pub banner: String,
}

/// Starts a demo app on every server address of `config`'s upstreams, then
/// the proxy (and admin listener) in front of them, on `workers`.
///
/// The proxy is pointed at the address each app actually bound, so a config
/// whose addresses use port 0 runs the demo on free ports (as the tests do).
pub async fn start(mut config: Config, workers: Workers) -> Result<Demo, String> {
    let mut apps = Vec::new();
    for server in config.upstreams.iter_mut().flat_map(|u| &mut u.servers) {
        let addr = server.addr;
        server.addr = spawn_app(addr)
            .await
            .map_err(|e| format!("cannot start the demo app on {addr}: {e}"))?;
        apps.push(server.addr);
    }
    let daemon = Daemon::start_on(DEMO_CONFIG_PATH.into(), config, workers)
        .await
        .map_err(|e| e.to_string())?;
    let banner = daemon
        .local_addrs()
        .into_iter()
        .map(|proxy| banner(proxy, &apps, daemon.admin_addr()))
        .collect();
    Ok(Demo { daemon, banner })
}

/// Starts one demo app on `addr`: it answers every request with its own port.
pub(crate) async fn spawn_app(addr: SocketAddr) -> std::io::Result<SocketAddr> {
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

/// What to print once the demo runs: the proxy in front of `apps`, and the
/// status page when there is an `admin` listener.
pub(crate) fn banner(proxy: SocketAddr, apps: &[SocketAddr], admin: Option<SocketAddr>) -> String {
    let apps: Vec<String> = apps.iter().map(SocketAddr::to_string).collect();
    let status = admin.map_or(String::new(), |admin| {
        format!("status: http://{admin}/status\n")
    });
    format!(
        "weir demo: proxy on http://{proxy}/ in front of demo apps on {}\n\
         try:    for i in 1 2 3 4 5 6; do curl -s http://{proxy}/; done\n\
         {status}\
         stop:   Ctrl-C\n",
        apps.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_shows_the_status_page_beside_the_curl_line() {
        let addr = |s: &str| s.parse::<SocketAddr>().expect("address");
        let apps = [addr("127.0.0.1:3000"), addr("127.0.0.1:3001")];
        let text = banner(addr("127.0.0.1:8080"), &apps, Some(addr("127.0.0.1:9090")));
        assert_eq!(
            text,
            "weir demo: proxy on http://127.0.0.1:8080/ in front of demo apps on 127.0.0.1:3000, 127.0.0.1:3001\n\
             try:    for i in 1 2 3 4 5 6; do curl -s http://127.0.0.1:8080/; done\n\
             status: http://127.0.0.1:9090/status\n\
             stop:   Ctrl-C\n"
        );
        let without = banner(addr("127.0.0.1:8080"), &apps, None);
        assert!(!without.contains("status"), "{without}");
    }

    #[test]
    fn the_demo_config_serves_the_admin_listener_on_9090() {
        let config = config().expect("the demo config is valid");
        let admin = config.admin.expect("the demo has an admin listener");
        assert_eq!(admin.listen, SocketAddr::from(([127, 0, 0, 1], 9090)));
        assert_eq!(admin.token, None);
    }
}
