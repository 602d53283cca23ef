//! What the cache stores and how a stored answer is judged: the key, the
//! entry with its RFC 9111 policy (from `http-cache-semantics`), the rules
//! that keep a response out of the cache, and the answers built from an entry.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_cache_semantics::{BeforeRequest, CacheOptions, CachePolicy};

use crate::config::RouteCacheConfig;

/// `X-Cache`, the header that says how the cache answered.
pub(crate) static X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// How the cache answered a request; also the `result` label of its metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered from a fresh (or revalidated) entry.
    Hit,
    /// Fetched from the upstream and stored (or being stored).
    Miss,
    /// Answered from a stale entry: revalidating in the background, or the upstream failed.
    Stale,
    /// Not cacheable: the request or the response said so.
    Bypass,
}

impl Outcome {
    /// The `X-Cache` value.
    pub(crate) fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Outcome::Hit => "HIT",
            Outcome::Miss => "MISS",
            Outcome::Stale => "STALE",
            Outcome::Bypass => "BYPASS",
        })
    }
}

/// Where an answer is stored: method, host and target (path and query).
///
/// The shape never depends on a route's settings, so a reload that changes
/// them keeps every entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// `HEAD` answers are stored apart from `GET` ones.
    pub(crate) head: bool,
    /// The request's host, lower case.
    pub(crate) host: Box<str>,
    /// Path and query as sent.
    pub(crate) target: Box<str>,
}

impl Key {
    /// The key of a `GET` or `HEAD` request; `None` for other methods.
    pub(crate) fn of<B>(req: &Request<B>) -> Option<Key> {
        let head = match *req.method() {
            Method::GET => false,
            Method::HEAD => true,
            _ => return None,
        };
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let target = req
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        Some(Key {
            head,
            host: host.into(),
            target: target.into(),
        })
    }

    /// The host without a port, as purges name it.
    pub(crate) fn hostname(&self) -> &str {
        match self.host.rsplit_once(':') {
            // An IPv6 literal's colons are inside brackets.
            Some((name, port)) if !port.contains(']') => name,
            _ => &self.host,
        }
    }

    /// Whether a purge of `host` (any host when `None`) and path prefix `path` covers it.
    pub(crate) fn purged_by(&self, host: Option<&str>, path: &str) -> bool {
        host.is_none_or(|h| self.hostname().eq_ignore_ascii_case(h) || *self.host == *h)
            && self.target.starts_with(path)
    }

    /// Bytes the key takes, for the memory bound.
    pub(crate) fn weight(&self) -> usize {
        self.host.len() + self.target.len() + 32
    }
}

/// One stored answer.
#[derive(Debug)]
pub struct Entry {
    /// The RFC 9111 decisions: freshness, age, Vary, revalidation.
    pub(crate) policy: CachePolicy,
    /// The answer's status.
    pub(crate) status: StatusCode,
    /// The answer's headers as the client got them (hop-by-hop ones removed).
    pub(crate) headers: HeaderMap,
    /// The whole body.
    pub(crate) body: Bytes,
    /// When it went (or goes) stale: stale windows count from here.
    pub(crate) stale_at: SystemTime,
    /// The upstream forbade serving it stale (`must-revalidate`, `proxy-revalidate`).
    pub(crate) no_stale: bool,
    /// Bytes it takes: body, headers and the policy's copies of both heads.
    pub(crate) size: usize,
}

/// How a stored entry stands for a request.
#[derive(Debug)]
pub(crate) enum Standing {
    /// Usable as is.
    Fresh,
    /// The right variant, but it must be revalidated first.
    Stale,
    /// Another variant (`Vary`) or another resource.
    Other,
}

impl Entry {
    /// Builds an entry for the answer `status`/`headers` to `req` received at
    /// `now`, if it may be stored; the body follows later.
    pub(crate) fn policy_for<B>(
        req: &Request<B>,
        status: StatusCode,
        headers: &HeaderMap,
        route: &RouteCacheConfig,
        now: SystemTime,
    ) -> Option<Pending> {
        if !may_store(req.headers(), headers) {
            return None;
        }
        let res = policy_response(status, headers, route.ttl);
        let policy = CachePolicy::new_options(req, &res, now, CacheOptions::default());
        if !policy.is_storable() {
            return None;
        }
        let ttl = policy.time_to_live(now);
        let validators =
            headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED);
        // An answer that is stale at once and cannot be revalidated would only
        // be of use to stale_if_error.
        if ttl.is_zero() && !validators && route.stale_if_error.is_zero() {
            return None;
        }
        Some(Pending {
            policy,
            status,
            headers: headers.clone(),
            stale_at: now + ttl,
            no_stale: has_directive(headers, "must-revalidate")
                || has_directive(headers, "proxy-revalidate"),
        })
    }

    /// How the entry stands for `req` at `now`.
    pub(crate) fn standing<B>(&self, req: &Request<B>, now: SystemTime) -> Standing {
        match self.policy.before_request(req, now) {
            BeforeRequest::Fresh(_) => Standing::Fresh,
            BeforeRequest::Stale { matches: true, .. } => Standing::Stale,
            BeforeRequest::Stale { matches: false, .. } => Standing::Other,
        }
    }

    /// How long it has been stale at `now` (zero while fresh).
    pub(crate) fn stale_for(&self, now: SystemTime) -> Duration {
        now.duration_since(self.stale_at).unwrap_or_default()
    }

    /// Whether it may be served stale at `now` within a window of `window`.
    pub(crate) fn within(&self, window: Duration, now: SystemTime) -> bool {
        !self.no_stale && !window.is_zero() && self.policy.is_stale(now) && {
            self.stale_for(now) < window
        }
    }

    /// The conditional headers that revalidate it upstream.
    pub(crate) fn validators(&self) -> impl Iterator<Item = (HeaderName, HeaderValue)> + '_ {
        let etag = self
            .headers
            .get(header::ETAG)
            .map(|v| (header::IF_NONE_MATCH, v.clone()));
        let modified = self
            .headers
            .get(header::LAST_MODIFIED)
            .map(|v| (header::IF_MODIFIED_SINCE, v.clone()));
        etag.into_iter().chain(modified)
    }

    /// The same answer with the headers of a `304` that revalidated it.
    pub(crate) fn revalidated<B>(
        &self,
        req: &Request<B>,
        not_modified: &HeaderMap,
        route: &RouteCacheConfig,
        now: SystemTime,
    ) -> Option<Entry> {
        let mut headers = self.headers.clone();
        for (name, value) in not_modified {
            // The stored body's own framing and coding stay.
            if !matches!(
                *name,
                header::CONTENT_LENGTH | header::CONTENT_ENCODING | header::TRANSFER_ENCODING
            ) {
                headers.insert(name.clone(), value.clone());
            }
        }
        let pending = Entry::policy_for(req, self.status, &headers, route, now)?;
        Some(pending.with_body(self.body.clone()))
    }

    /// The answer to a client: the stored one with its `Age` at `now` and
    /// `X-Cache: outcome`. A client whose conditional request the entry
    /// satisfies gets `304`.
    pub(crate) fn answer(
        &self,
        method: &Method,
        req: &HeaderMap,
        outcome: Outcome,
        now: SystemTime,
    ) -> Response<Bytes> {
        let mut headers = self.headers.clone();
        let mut age = itoa::Buffer::new();
        headers.insert(
            header::AGE,
            HeaderValue::from_str(age.format(self.policy.age(now).as_secs()))
                .unwrap_or(HeaderValue::from_static("0")),
        );
        headers.insert(X_CACHE.clone(), outcome.header());
        let not_modified = self.status == StatusCode::OK && not_modified(req, &headers);
        let (status, body) = if not_modified {
            headers.remove(header::CONTENT_LENGTH);
            (StatusCode::NOT_MODIFIED, Bytes::new())
        } else if method == Method::HEAD {
            (self.status, Bytes::new())
        } else {
            (self.status, self.body.clone())
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        resp
    }
}

/// An entry whose body is on its way.
#[derive(Debug)]
pub(crate) struct Pending {
    policy: CachePolicy,
    status: StatusCode,
    headers: HeaderMap,
    stale_at: SystemTime,
    no_stale: bool,
}

impl Pending {
    /// An entry read back from the shared tier, but for its body.
    pub(crate) fn restored(
        policy: CachePolicy,
        status: StatusCode,
        headers: HeaderMap,
        stale_at: SystemTime,
        no_stale: bool,
    ) -> Self {
        Pending {
            policy,
            status,
            headers,
            stale_at,
            no_stale,
        }
    }

    /// The entry, with its whole body.
    pub(crate) fn with_body(self, body: Bytes) -> Entry {
        let heads = header_bytes(&self.headers) * 2 + 256;
        Entry {
            size: body.len() + heads,
            policy: self.policy,
            status: self.status,
            headers: self.headers,
            body,
            stale_at: self.stale_at,
            no_stale: self.no_stale,
        }
    }
}

/// All stored variants (`Vary`) of one key.
#[derive(Debug, Default)]
pub struct Variants {
    /// Newest first.
    pub(crate) entries: Vec<Arc<Entry>>,
}

/// Variants kept per key: a `Vary` on a header with many values must not
/// crowd a key's list without end.
const MAX_VARIANTS: usize = 16;

impl Variants {
    /// The variant that answers `req`, with how it stands at `now`.
    pub(crate) fn find<B>(
        &self,
        req: &Request<B>,
        now: SystemTime,
    ) -> Option<(Arc<Entry>, Standing)> {
        self.entries
            .iter()
            .find_map(|e| match e.standing(req, now) {
                Standing::Other => None,
                standing => Some((e.clone(), standing)),
            })
    }

    /// These variants with `entry` in place of the one it replaces, for `req`.
    pub(crate) fn with<B>(&self, entry: Arc<Entry>, req: &Request<B>, now: SystemTime) -> Variants {
        let mut entries = Vec::with_capacity(self.entries.len() + 1);
        entries.push(entry);
        entries.extend(
            self.entries
                .iter()
                .filter(|e| matches!(e.standing(req, now), Standing::Other))
                .take(MAX_VARIANTS - 1)
                .cloned(),
        );
        Variants { entries }
    }

    /// Bytes they take.
    pub(crate) fn weight(&self) -> usize {
        self.entries.iter().map(|e| e.size).sum()
    }
}

/// The rules `http-cache-semantics` leaves to the cache: nothing that sets a
/// cookie, nothing asked for with credentials unless the answer says
/// `public`, no `Vary: *`, and nothing the client asked not to store.
fn may_store(req: &HeaderMap, res: &HeaderMap) -> bool {
    !res.contains_key(header::SET_COOKIE)
        && (!req.contains_key(header::AUTHORIZATION) || has_directive(res, "public"))
        && !res.get_all(header::VARY).iter().any(|v| {
            v.to_str()
                .map_or(true, |v| v.split(',').any(|f| f.trim() == "*"))
        })
        && !has_directive(req, "no-store")
}

/// The response as the policy sees it: with the route's `ttl` as `s-maxage`
/// when it declares no freshness of its own (and does not ask to be
/// revalidated every time).
fn policy_response(status: StatusCode, headers: &HeaderMap, ttl: Option<Duration>) -> Response<()> {
    let mut res = Response::new(());
    *res.status_mut() = status;
    *res.headers_mut() = headers.clone();
    let own_freshness = headers.contains_key(header::EXPIRES)
        || ["max-age", "s-maxage", "no-cache", "no-store"]
            .iter()
            .any(|d| has_directive(headers, d));
    if let Some(ttl) = ttl.filter(|_| !own_freshness) {
        if let Ok(value) = HeaderValue::try_from(format!("s-maxage={}", ttl.as_secs().max(1))) {
            res.headers_mut().append(header::CACHE_CONTROL, value);
        }
    }
    res
}

/// Whether `Cache-Control` in `headers` names the directive `name`. Only
/// directive names are looked at (values are left to `http-cache-semantics`).
pub(crate) fn has_directive(headers: &HeaderMap, name: &str) -> bool {
    headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|d| {
                d.split('=')
                    .next()
                    .is_some_and(|d| d.trim().eq_ignore_ascii_case(name))
            })
        })
    })
}

/// Whether a client's conditional headers match an answer with `headers`
/// (RFC 9110 §13.1.2–3: `If-None-Match` wins over `If-Modified-Since`).
fn not_modified(req: &HeaderMap, headers: &HeaderMap) -> bool {
    if let Some(inm) = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        let Some(etag) = headers.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let opaque = |t: &str| t.trim().trim_start_matches("W/").to_owned();
        let etag = opaque(etag);
        return inm.split(',').any(|t| t.trim() == "*" || opaque(t) == etag);
    }
    let since = req
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let modified = headers
        .get(header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    matches!((since, modified), (Some(since), Some(modified)) if modified <= since)
}

/// The bytes of a header block, roughly as sent.
fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Request<()> {
        let mut r = Request::get("/a?b").header("host", "Example.com:8080");
        for (n, v) in headers {
            r = r.header(*n, *v);
        }
        r.body(()).expect("request")
    }

    fn res(headers: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in headers {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    const ROUTE: RouteCacheConfig = RouteCacheConfig {
        ttl: None,
        stale_if_error: Duration::ZERO,
        stale_while_revalidate: Duration::ZERO,
        shared: false,
    };

    fn stored(req: &Request<()>, headers: &[(&str, &str)], route: &RouteCacheConfig) -> bool {
        Entry::policy_for(req, StatusCode::OK, &res(headers), route, SystemTime::now()).is_some()
    }

    #[test]
    fn keys_name_method_host_and_target() {
        let key = Key::of(&req(&[])).expect("key");
        assert_eq!(&*key.host, "example.com:8080");
        assert_eq!(key.hostname(), "example.com");
        assert_eq!(&*key.target, "/a?b");
        assert!(key.purged_by(Some("example.com"), "/a"));
        assert!(key.purged_by(None, "/"));
        assert!(!key.purged_by(Some("other.com"), "/"));
        assert!(!key.purged_by(None, "/b"));
        let post = Request::post("/").body(()).expect("request");
        assert!(Key::of(&post).is_none());
    }

    #[test]
    fn what_is_never_stored() {
        let r = req(&[]);
        assert!(stored(&r, &[("cache-control", "max-age=60")], &ROUTE));
        assert!(!stored(&r, &[("cache-control", "no-store")], &ROUTE));
        assert!(!stored(
            &r,
            &[("cache-control", "private, max-age=60")],
            &ROUTE
        ));
        assert!(!stored(
            &r,
            &[
                ("cache-control", "public, max-age=60"),
                ("set-cookie", "a=b")
            ],
            &ROUTE
        ));
        assert!(!stored(
            &r,
            &[("cache-control", "max-age=60"), ("vary", "*")],
            &ROUTE
        ));
        let auth = req(&[("authorization", "Basic eDp5")]);
        assert!(!stored(&auth, &[("cache-control", "max-age=60")], &ROUTE));
        assert!(!stored(&auth, &[("cache-control", "s-maxage=60")], &ROUTE));
        assert!(stored(
            &auth,
            &[("cache-control", "public, max-age=60")],
            &ROUTE
        ));
        let no_store = req(&[("cache-control", "no-store")]);
        assert!(!stored(
            &no_store,
            &[("cache-control", "max-age=60")],
            &ROUTE
        ));
        // No freshness, no validator, no ttl: nothing to gain from storing it.
        assert!(!stored(&r, &[], &ROUTE));
        assert!(stored(&r, &[("etag", "\"v1\"")], &ROUTE));
    }

    #[test]
    fn the_route_ttl_only_fills_in_missing_freshness() {
        let now = SystemTime::now();
        let route = RouteCacheConfig {
            ttl: Some(Duration::from_secs(30)),
            ..ROUTE
        };
        let r = req(&[]);
        let ttl = |headers: &[(&str, &str)]| {
            Entry::policy_for(&r, StatusCode::OK, &res(headers), &route, now)
                .map(|p| p.stale_at.duration_since(now).unwrap_or_default())
        };
        assert_eq!(ttl(&[]), Some(Duration::from_secs(30)));
        assert_eq!(
            ttl(&[("cache-control", "max-age=5")]),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            ttl(&[("cache-control", "no-cache"), ("etag", "\"x\"")]),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn conditional_requests_match_etags_and_dates() {
        let headers = res(&[
            ("etag", "W/\"v1\""),
            ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        assert!(not_modified(&res(&[("if-none-match", "\"v1\"")]), &headers));
        assert!(not_modified(
            &res(&[("if-none-match", "\"v0\", W/\"v1\"")]),
            &headers
        ));
        assert!(!not_modified(
            &res(&[("if-none-match", "\"v2\"")]),
            &headers
        ));
        assert!(not_modified(
            &res(&[("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")]),
            &headers
        ));
        assert!(!not_modified(
            &res(&[("if-modified-since", "Sat, 05 Nov 1994 08:49:37 GMT")]),
            &headers
        ));
    }
}
