//! What a listener does with its connections: plain HTTP, TLS, or redirects to HTTPS.
//!
//! Each running listener holds its [`Mode`] behind an `ArcSwap`, so a reload
//! can swap certificates (or the listener's kind, or whether it expects
//! PROXY protocol headers) without rebinding, and a certificate that fails
//! to load leaves the old mode serving.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use tokio_rustls::rustls::ServerConfig;
use tracing::{debug, error, info, warn};

use crate::config::{ConfigError, ListenerConfig};
use crate::exchange::ResponseBody;
use crate::pass::{plain_response, ConnInfo};
use crate::proxy::unrouted_exchange;
use crate::snapshot::Snapshot;

/// How a listener serves a connection it accepted.
#[derive(Debug, Clone)]
pub struct Mode {
    /// What it speaks once the connection is established.
    pub(crate) kind: Kind,
    /// Whether each connection must open with a PROXY protocol header
    /// (before TLS, on a TLS listener).
    pub(crate) proxy_protocol: bool,
}

/// What a listener speaks.
#[derive(Debug, Clone)]
pub enum Kind {
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
        let kind = match &config.tls {
            Some(tls) => Kind::Tls(super::tls::server_config(tls)?),
            None if config.redirect_https => Kind::RedirectHttps,
            None => Kind::Plain,
        };
        Ok(Mode {
            kind,
            proxy_protocol: config.proxy_protocol,
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
            // The rest of the listener's settings still follow the file.
            let mut kept = Mode::clone(&shared.load());
            kept.proxy_protocol = config.proxy_protocol;
            shared.store(Arc::new(kept));
        }
    }
}

/// The 301 a `redirect_https` listener answers every request with (400
/// without a usable host). Both are access-logged and counted under the
/// unrouted upstream `""`; the 400 is also logged with its reason.
pub(crate) fn redirect<B>(
    mut req: Request<B>,
    snapshot: &Snapshot,
    conn: &ConnInfo,
) -> Response<ResponseBody> {
    // `request_id`: logged, and on the answer, as on a proxied request's.
    let id = snapshot
        .config
        .server
        .request_id
        .as_ref()
        .map(|name| (name, crate::request_id::ensure(req.headers_mut(), name)));
    let mut resp = redirect_answer(req, snapshot, conn);
    if let Some((name, id)) = id {
        resp.headers_mut().insert(name.clone(), id);
    }
    resp
}

/// [`redirect`]'s answer, before the request id.
fn redirect_answer<B>(
    req: Request<B>,
    snapshot: &Snapshot,
    conn: &ConnInfo,
) -> Response<ResponseBody> {
    let (parts, _body) = req.into_parts();
    let Some(location) = https_location(&parts) else {
        let status = StatusCode::BAD_REQUEST;
        warn!(status = status.as_u16(), client = %conn.peer, method = %parts.method,
            path = parts.uri.path(), reason = "no host to redirect to", "request failed");
        return plain_response(status, unrouted_exchange(snapshot, conn, &parts, status));
    };
    let status = StatusCode::MOVED_PERMANENTLY;
    debug!(client = %conn.peer, ?location, "redirected to HTTPS");
    let exchange = unrouted_exchange(snapshot, conn, &parts, status);
    let mut resp = plain_response(status, exchange);
    resp.headers_mut().insert(header::LOCATION, location);
    resp
}

/// `https://{host without port}{path and query}`, the host from an
/// absolute-form target or else `Host`; `None` without a usable host.
fn https_location(parts: &http::request::Parts) -> Option<HeaderValue> {
    let host = parts
        .uri
        .host()
        .map(str::to_owned)
        .or_else(|| {
            let value = parts.headers.get(header::HOST)?.to_str().ok()?;
            let authority: http::uri::Authority = value.parse().ok()?;
            Some(authority.host().to_owned())
        })
        .filter(|h| !h.is_empty())?;
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    HeaderValue::from_str(&format!("https://{host}{path}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(req: Request<()>) -> Option<String> {
        let (parts, ()) = req.into_parts();
        https_location(&parts).map(|v| v.to_str().expect("ascii").to_owned())
    }

    #[test]
    fn redirect_keeps_path_and_query_and_drops_the_port() {
        let req = Request::get("/a/b?c=1")
            .header("host", "Example.com:8080")
            .body(())
            .expect("request");
        assert_eq!(
            location(req).as_deref(),
            Some("https://Example.com/a/b?c=1")
        );
    }

    #[test]
    fn redirect_prefers_the_absolute_form_authority() {
        let req = Request::get("http://site.test/x")
            .header("host", "other.test")
            .body(())
            .expect("request");
        assert_eq!(location(req).as_deref(), Some("https://site.test/x"));
    }

    #[test]
    fn redirect_without_a_usable_host_has_no_location() {
        let req = Request::get("/").body(()).expect("request");
        assert_eq!(location(req), None);
        let req = Request::get("/")
            .header("host", "bad host")
            .body(())
            .expect("request");
        assert_eq!(location(req), None);
    }
}
