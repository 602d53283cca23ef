//! What a listener does with its connections: plain HTTP, TLS, or redirects to HTTPS.
//!
//! Each running listener holds its [`Mode`] behind an `ArcSwap`, so a reload
//! can swap certificates (or the listener's kind) without rebinding, and a
//! certificate that fails to load leaves the old mode serving.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use tokio_rustls::rustls::ServerConfig;
use tracing::{error, info};

use crate::config::{ConfigError, ListenerConfig};
use crate::exchange::{Exchange, ResponseBody};
use crate::proxy::plain_response;

/// How a listener serves a connection it accepted.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Cleartext HTTP/1.1, or HTTP/2 with prior knowledge (h2c).
    Plain,
    /// Cleartext; every request gets a 301 to the same URL over `https://`.
    RedirectHttps,
    /// TLS with this configuration, then HTTP/1.1 or HTTP/2 by ALPN.
    Tls(Arc<ServerConfig>),
}

/// A listener's mode, swapped on reload.
pub type SharedMode = Arc<ArcSwap<Mode>>;

impl Mode {
    /// The mode `config` asks for; loads its certificates when it is a TLS listener.
    pub fn load(config: &ListenerConfig) -> Result<Self, ConfigError> {
        Ok(match &config.tls {
            Some(tls) => Mode::Tls(super::tls::server_config(tls)?),
            None if config.redirect_https => Mode::RedirectHttps,
            None => Mode::Plain,
        })
    }
}

/// Reloads the mode of a running listener from `config`. A certificate that
/// cannot be loaded is logged and the listener keeps its current mode.
pub fn reload(shared: &SharedMode, config: &ListenerConfig) {
    match Mode::load(config) {
        Ok(mode) => {
            if config.tls.is_some() {
                info!(listen = %config.addr, "TLS certificates reloaded");
            }
            shared.store(Arc::new(mode));
        }
        Err(error) => {
            error!(listen = %config.addr, %error,
                "cannot load TLS certificates; the listener keeps its current ones");
        }
    }
}

/// The 301 a `redirect_https` listener answers every request with:
/// `https://{host without port}{path and query}` (400 without a usable host).
pub fn redirect<B>(req: &Request<B>) -> Response<ResponseBody> {
    let host = req
        .uri()
        .host()
        .map(str::to_owned)
        .or_else(|| {
            let value = req.headers().get(header::HOST)?.to_str().ok()?;
            let authority: http::uri::Authority = value.parse().ok()?;
            Some(authority.host().to_owned())
        })
        .filter(|h| !h.is_empty());
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = host.and_then(|h| HeaderValue::from_str(&format!("https://{h}{path}")).ok());
    let Some(location) = location else {
        return plain_response(StatusCode::BAD_REQUEST, Exchange::default());
    };
    let mut resp = plain_response(StatusCode::MOVED_PERMANENTLY, Exchange::default());
    resp.headers_mut().insert(header::LOCATION, location);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(req: Request<()>) -> (StatusCode, Option<String>) {
        let resp = redirect(&req);
        let loc = resp
            .headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().expect("ascii").to_owned());
        (resp.status(), loc)
    }

    #[test]
    fn redirect_keeps_path_and_query_and_drops_the_port() {
        let req = Request::get("/a/b?c=1")
            .header("host", "Example.com:8080")
            .body(())
            .expect("request");
        assert_eq!(
            location(req),
            (
                StatusCode::MOVED_PERMANENTLY,
                Some("https://Example.com/a/b?c=1".into())
            )
        );
    }

    #[test]
    fn redirect_prefers_the_absolute_form_authority() {
        let req = Request::get("http://site.test/x")
            .header("host", "other.test")
            .body(())
            .expect("request");
        assert_eq!(location(req).1.as_deref(), Some("https://site.test/x"));
    }

    #[test]
    fn redirect_without_host_is_a_bad_request() {
        let req = Request::get("/").body(()).expect("request");
        assert_eq!(location(req), (StatusCode::BAD_REQUEST, None));
        let req = Request::get("/")
            .header("host", "bad host")
            .body(())
            .expect("request");
        assert_eq!(location(req).0, StatusCode::BAD_REQUEST);
    }
}
