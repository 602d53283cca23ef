//! An origin for cache tests: it answers with the headers a test sets
//! (`Cache-Control`, `ETag`, `Vary`, ...), counts what reaches it, answers
//! `If-None-Match` with `304` when its `ETag` matches, and can be held
//! (answers wait until released) or made to fail with a status.

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http::{HeaderName, HeaderValue, Response, StatusCode};
use tokio::sync::Semaphore;

use super::backends::{full, spawn_backend_with, Backend};

/// What the origin answers with; change it while the test runs.
#[derive(Debug, Default)]
pub struct Script {
    /// Headers on every answer.
    pub headers: Vec<(&'static str, String)>,
    /// Bytes appended to every body (to make it large).
    pub padding: usize,
}

/// A running origin.
pub struct Origin {
    /// The server.
    pub backend: Backend,
    /// What it answers with.
    pub script: Arc<Mutex<Script>>,
    /// `304`s it sent.
    pub not_modified: Arc<AtomicUsize>,
    /// When set, the status every answer has (a failing origin).
    pub fail_with: Arc<AtomicU16>,
    /// While held, answers wait for a permit.
    pub gate: Arc<Semaphore>,
}

impl Origin {
    /// Requests that reached it.
    pub fn hits(&self) -> usize {
        self.backend.hits()
    }

    /// Replaces its answer headers.
    pub fn set_headers(&self, headers: &[(&'static str, &str)]) {
        self.script.lock().expect("script").headers =
            headers.iter().map(|(n, v)| (*n, (*v).to_owned())).collect();
    }

    /// Makes answers wait until [`Origin::release`].
    pub fn hold(&self) {
        self.gate.forget_permits(usize::MAX >> 4);
    }

    /// Lets every held and future answer go.
    pub fn release(&self) {
        self.gate.add_permits(Semaphore::MAX_PERMITS >> 4);
    }
}

/// An origin answering `200` with body `"<path> #<n>"` (n counts requests)
/// and the headers `headers`.
pub async fn spawn_origin(headers: &[(&'static str, &str)]) -> Origin {
    let script = Arc::new(Mutex::new(Script::default()));
    let not_modified = Arc::new(AtomicUsize::new(0));
    let fail_with = Arc::new(AtomicU16::new(0));
    let gate = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS >> 4));
    let count = Arc::new(AtomicUsize::new(0));
    let handler = {
        let (script, not_modified, fail_with, gate) = (
            script.clone(),
            not_modified.clone(),
            fail_with.clone(),
            gate.clone(),
        );
        move |req: http::Request<hyper::body::Incoming>| {
            let (script, not_modified, fail_with, gate, count) = (
                script.clone(),
                not_modified.clone(),
                fail_with.clone(),
                gate.clone(),
                count.clone(),
            );
            async move {
                let _permit = gate.acquire().await.expect("gate");
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                let failing = fail_with.load(Ordering::SeqCst);
                if failing != 0 {
                    let mut resp = Response::new(full("origin failed\n"));
                    *resp.status_mut() = StatusCode::from_u16(failing).expect("status");
                    return resp;
                }
                let (headers, padding) = {
                    let s = script.lock().expect("script");
                    (s.headers.clone(), s.padding)
                };
                let etag = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("etag"))
                    .map(|(_, v)| v.clone());
                let inm = req
                    .headers()
                    .get("if-none-match")
                    .and_then(|v| v.to_str().ok());
                let matched = matches!((&etag, inm), (Some(e), Some(i)) if i.split(',').any(|t| t.trim() == e));
                let vary_value = req
                    .headers()
                    .get("accept-language")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned();
                let mut resp = if matched {
                    not_modified.fetch_add(1, Ordering::SeqCst);
                    let mut r = Response::new(full(""));
                    *r.status_mut() = StatusCode::NOT_MODIFIED;
                    r
                } else {
                    let text = format!("{} #{n} {vary_value}{}", req.uri(), "x".repeat(padding));
                    Response::new(full(text))
                };
                for (name, value) in headers {
                    resp.headers_mut().append(
                        HeaderName::from_static(name),
                        HeaderValue::from_str(&value).expect("header value"),
                    );
                }
                resp
            }
        }
    };
    let backend = spawn_backend_with(handler).await;
    let origin = Origin {
        backend,
        script,
        not_modified,
        fail_with,
        gate,
    };
    origin.set_headers(headers);
    origin
}
