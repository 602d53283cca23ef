//! The admin listener: health, metrics, the status page and drain controls.
//!
//! It runs on the proxy's runtime but on its own socket, apart from the client
//! listeners, so it neither counts against `max_connections` nor shows up in
//! the request metrics. Everything it reports is read from the live snapshot
//! when asked; the only state of its own is the status page's history ring.

mod api;
mod cache;
mod history;
mod metrics;
mod status;

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::config::AdminSettings;
use crate::snapshot::Snapshot;
use crate::stats::ReloadCount;

pub use history::History;

/// A running admin listener; dropping it stops the listener and its sampler.
#[derive(Debug)]
pub struct Admin {
    /// The bound address (the real port when the config said 0).
    pub local: SocketAddr,
    /// The accept loop.
    task: JoinHandle<()>,
    /// Fills the status page's history once a second.
    sampler: JoinHandle<()>,
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.task.abort();
        self.sampler.abort();
    }
}

/// What every admin request reads.
#[derive(Debug)]
struct State {
    /// The proxy's live routing table.
    snapshot: Arc<ArcSwap<Snapshot>>,
    /// Reload outcomes published by the daemon.
    reloads: watch::Receiver<ReloadCount>,
    /// Required bearer token, when configured.
    token: Option<String>,
    /// Per-second samples for the status page's charts.
    history: Mutex<History>,
    /// For the uptime shown on the status page.
    started: Instant,
}

/// The admin response body.
type Body = Full<Bytes>;

/// Binds the admin listener and starts serving it and the history sampler.
pub async fn start(
    settings: &AdminSettings,
    snapshot: Arc<ArcSwap<Snapshot>>,
    reloads: watch::Receiver<ReloadCount>,
) -> std::io::Result<Admin> {
    let listener = TcpListener::from_std(crate::server::listening_socket(settings.listen, false)?)?;
    let local = listener.local_addr()?;
    let state = Arc::new(State {
        snapshot,
        reloads,
        token: settings.token.clone(),
        history: Mutex::new(History::default()),
        started: Instant::now(),
    });
    let sampler = tokio::spawn(history::run_sampler(
        state.snapshot.clone(),
        Arc::downgrade(&state),
    ));
    let task = tokio::spawn(accept_loop(listener, state));
    info!(listen = %local, "admin listening");
    Ok(Admin {
        local,
        task,
        sampler,
    })
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(client = %peer, %error, "admin connection ended with an error");
            }
        });
    }
}

/// Routes one admin request.
async fn handle(state: &State, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    if path == "/healthz" {
        return only_get(&method).unwrap_or_else(|| text(StatusCode::OK, "ok"));
    }
    if !authorized(state, &req) {
        let mut resp = text(
            StatusCode::UNAUTHORIZED,
            "401 Unauthorized: a bearer token is required\n",
        );
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"weir admin\""),
        );
        return resp;
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["metrics"] => only_get(&method).unwrap_or_else(|| metrics::render(state)),
        ["status"] => only_get(&method).unwrap_or_else(status::page),
        ["status.json"] => only_get(&method).unwrap_or_else(|| json(&status::document(state))),
        ["api", "upstreams"] => only_get(&method).unwrap_or_else(|| json(&api::list(state))),
        ["api", "upstreams", name, "servers", addr, action @ ("drain" | "enable")] => {
            if method != Method::POST {
                return not_allowed("POST");
            }
            api::set_draining(state, name, addr, *action == "drain")
        }
        ["api", "cache", "purge"] => {
            if method != Method::POST {
                return not_allowed("POST");
            }
            cache::purge(state, req.uri().query()).await
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "404 Not Found: no such admin endpoint\n",
        ),
    }
}

/// `None` for GET and HEAD, else the 405 answer.
fn only_get(method: &Method) -> Option<Response<Body>> {
    (method != Method::GET && method != Method::HEAD).then(|| not_allowed("GET, HEAD"))
}

fn not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp = text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("405 Method Not Allowed: use {allow}\n"),
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

/// Whether the request carries the configured token: as `Authorization: Bearer`
/// or, for browsers opening the status page, as RFC 6750's `access_token` query parameter.
fn authorized(state: &State, req: &Request<Incoming>) -> bool {
    let Some(token) = state.token.as_deref() else {
        return true;
    };
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .map(Cow::Borrowed);
    // Percent-decoded, as the status page's script encodes it.
    let query = req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find_map(|(key, value)| (key == "access_token").then_some(value))
    });
    [bearer, query]
        .into_iter()
        .flatten()
        .any(|given| constant_time_eq(given.as_bytes(), token.as_bytes()))
}

/// The token of an `Authorization: Bearer` value; the scheme name is
/// case-insensitive (RFC 9110 §11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Compares without an early exit, so timing does not reveal how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A plain-text response.
fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", body.into())
}

/// A JSON response.
fn json(value: &serde_json::Value) -> Response<Body> {
    respond(StatusCode::OK, "application/json", value.to_string().into())
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer s3cret"), Some("s3cret"));
        assert_eq!(bearer_token("bearer s3cret"), Some("s3cret"));
        assert_eq!(bearer_token("BEARER  s3cret "), Some("s3cret"));
        assert_eq!(bearer_token("Basic czNjcmV0"), None);
        assert_eq!(bearer_token("Bearer"), None);
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secrets"));
    }
}
