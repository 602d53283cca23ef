//! Request routing by host and path prefix.
//!
//! # How a request finds its route
//!
//! 1. **Host.** The request's `Host` (or `:authority`) is compared without
//!    regard to ASCII case, a port (`example.com:8080`) or one trailing dot
//!    (`example.com.`). An IPv6 literal such as `[::1]:8080` is the address
//!    `::1`; a route may spell it `[::1]` or `::1`. A request without a host (or
//!    with an empty one) only matches routes without `host`.
//! 2. **Tiers.** Routes are tried in tiers, and the first tier with a route
//!    whose path prefix matches decides:
//!    1. routes whose exact `host` equals the request's host;
//!    2. wildcard routes, `*.example.com`, which match `a.example.com` and
//!       `a.b.example.com` but not `example.com`; when several wildcards match
//!       (`*.b.example.com` and `*.example.com`), the longest one is its own
//!       tier and is tried first;
//!    3. routes without `host`.
//! 3. **Path.** Within that tier the **longest** matching path prefix wins. A
//!    prefix is a plain string prefix, as nginx's prefix locations are: `/api`
//!    matches `/api`, `/api/users` and also `/apix`; write `/api/` to exclude
//!    the last. Paths are compared as sent, without decoding or normalising.
//!
//! If two routes have the same host and path (config validation rejects that),
//! the first one wins.
//!
//! # Cost
//!
//! A lookup never scans routes: it is one hash probe for the exact host, one per
//! dot in the host for wildcards (only while there are wildcard routes of that
//! length), and per tier one hash probe per distinct prefix length no longer
//! than the path. None of these grow with the number of routes. The host is
//! lowercased into a new string only when it has upper-case letters, and not
//! looked at when no route has a `host`.

use std::borrow::Cow;
// foldhash rather than std's SipHash: the tables are fixed by the config, so
// a request can only look keys up, never lengthen a probe; and every request
// hashes its path here.
use foldhash::HashMap;

use crate::config::HostPattern;

/// A routing table mapping (host, path) to a value (the daemon stores an upstream handle).
#[derive(Debug)]
pub struct Router<T> {
    /// Routes by exact host, normalised (lower case, no trailing dot or brackets).
    exact: HashMap<String, PathTable<T>>,
    /// Wildcard routes by suffix, with its leading dot: `*.example.com` is `.example.com`.
    wildcard: HashMap<String, PathTable<T>>,
    /// The longest wildcard suffix, so that longer suffixes of a host are not probed.
    longest_wildcard: usize,
    /// Routes without a host.
    any_host: PathTable<T>,
}

impl<T> Router<T> {
    /// Builds the table. (Duplicates were already rejected by config validation; if any remain, the first wins.)
    pub fn new(routes: Vec<(Option<HostPattern>, String, T)>) -> Self {
        let mut exact: HashMap<String, PathTable<T>> = HashMap::default();
        let mut wildcard: HashMap<String, PathTable<T>> = HashMap::default();
        let mut any_host = PathTable::default();
        for (host, path, value) in routes {
            let table = match host {
                None => &mut any_host,
                Some(HostPattern::Exact(host)) => exact.entry(exact_key(&host)).or_default(),
                Some(HostPattern::Wildcard(suffix)) => {
                    wildcard.entry(wildcard_key(&suffix)).or_default()
                }
            };
            table.insert(path, value);
        }
        let longest_wildcard = wildcard.keys().map(String::len).max().unwrap_or(0);
        for table in exact.values_mut().chain(wildcard.values_mut()) {
            table.finish();
        }
        any_host.finish();
        Router {
            exact,
            wildcard,
            longest_wildcard,
            any_host,
        }
    }

    /// Finds the route for a request. `host` is the raw Host header / authority value (may carry a port, mixed case, a trailing dot, or be an IPv6 literal like `[::1]:8080`); `path` is the request path (no query).
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&T> {
        // Without routes by host (one app behind weir), the host decides nothing.
        let by_host = !(self.exact.is_empty() && self.wildcard.is_empty());
        let host = host
            .filter(|_| by_host)
            .map(request_host)
            .filter(|h| !h.is_empty());
        if let Some(host) = host.as_deref() {
            if let Some(value) = self.exact.get(host).and_then(|t| t.lookup(path)) {
                return Some(value);
            }
            if let Some(value) = self.wildcard_route(host, path) {
                return Some(value);
            }
        }
        self.any_host.lookup(path)
    }

    /// Tries each wildcard suffix of `host`, longest first.
    fn wildcard_route(&self, host: &str, path: &str) -> Option<&T> {
        if self.wildcard.is_empty() {
            return None;
        }
        // A dot at index 0 would make the whole host a suffix: `*.example.com`
        // must not match `.example.com`, which has no label of its own.
        host.match_indices('.')
            .map(|(dot, _)| dot)
            .filter(|&dot| dot > 0 && host.len() - dot <= self.longest_wildcard)
            .find_map(|dot| self.wildcard.get(&host[dot..])?.lookup(path))
    }
}

/// The routes of one host tier, by path prefix.
#[derive(Debug)]
struct PathTable<T> {
    /// Value by exact prefix string.
    prefixes: HashMap<String, T>,
    /// The distinct prefix lengths in bytes, longest first.
    lengths: Vec<usize>,
}

impl<T> Default for PathTable<T> {
    fn default() -> Self {
        PathTable {
            prefixes: HashMap::default(),
            lengths: Vec::new(),
        }
    }
}

impl<T> PathTable<T> {
    /// Adds a prefix unless it is already there (the first route wins).
    fn insert(&mut self, prefix: String, value: T) {
        self.prefixes.entry(prefix).or_insert(value);
    }

    /// Computes the probe order once all prefixes are in.
    fn finish(&mut self) {
        let mut lengths: Vec<usize> = self.prefixes.keys().map(String::len).collect();
        lengths.sort_unstable_by(|a, b| b.cmp(a));
        lengths.dedup();
        self.lengths = lengths;
    }

    /// The value of the longest prefix of `path`.
    fn lookup(&self, path: &str) -> Option<&T> {
        let fitting = self.lengths.partition_point(|&len| len > path.len());
        self.lengths[fitting..]
            .iter()
            // `get` is None where `len` splits a UTF-8 character; no prefix (a
            // whole string) can end there anyway.
            .find_map(|&len| self.prefixes.get(path.get(..len)?))
    }
}

/// A request's host as routes store it: no port, no trailing dot, lower case.
fn request_host(raw: &str) -> Cow<'_, str> {
    let host = if let Some(bracketed) = raw.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or(bracketed)
    } else {
        match raw.rsplit_once(':') {
            // More than one colon without brackets: a bare IPv6 address, no port.
            Some((name, _)) if !name.contains(':') => name,
            _ => raw,
        }
    };
    lowercase(host.strip_suffix('.').unwrap_or(host))
}

/// An exact route host in the form [`request_host`] produces.
fn exact_key(host: &str) -> String {
    let host = host.strip_suffix('.').unwrap_or(host);
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.to_ascii_lowercase()
}

/// A wildcard suffix with exactly one leading dot, whether given as
/// `.example.com` (the validated form) or `*.example.com`.
fn wildcard_key(suffix: &str) -> String {
    let suffix = suffix.strip_suffix('.').unwrap_or(suffix);
    let suffix = suffix.strip_prefix('*').unwrap_or(suffix);
    let suffix = suffix.strip_prefix('.').unwrap_or(suffix);
    format!(".{}", suffix.to_ascii_lowercase())
}

fn lowercase(host: &str) -> Cow<'_, str> {
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Route = (Option<HostPattern>, String, usize);

    fn exact(host: &str) -> Option<HostPattern> {
        Some(HostPattern::Exact(host.to_owned()))
    }

    fn wild(suffix: &str) -> Option<HostPattern> {
        Some(HostPattern::Wildcard(suffix.to_owned()))
    }

    /// Numbers the routes in order, so a lookup's answer names the route.
    fn router(routes: &[(Option<HostPattern>, &str)]) -> Router<usize> {
        Router::new(numbered(routes))
    }

    fn numbered(routes: &[(Option<HostPattern>, &str)]) -> Vec<Route> {
        let routes = routes.iter().cloned().enumerate();
        routes.map(|(i, (h, p))| (h, p.to_owned(), i)).collect()
    }

    #[test]
    fn exact_beats_wildcard_beats_any_host() {
        let r = router(&[
            (None, "/"),
            (wild(".example.com"), "/"),
            (exact("www.example.com"), "/"),
        ]);
        assert_eq!(r.route(Some("www.example.com"), "/x"), Some(&2));
        assert_eq!(r.route(Some("api.example.com"), "/x"), Some(&1));
        assert_eq!(r.route(Some("other.org"), "/x"), Some(&0));
    }

    #[test]
    fn a_tier_without_a_matching_path_falls_through() {
        let r = router(&[
            (None, "/"),
            (wild(".example.com"), "/static"),
            (exact("www.example.com"), "/api"),
        ]);
        assert_eq!(r.route(Some("www.example.com"), "/api/v1"), Some(&2));
        assert_eq!(r.route(Some("www.example.com"), "/static/a.css"), Some(&1));
        assert_eq!(r.route(Some("www.example.com"), "/"), Some(&0));
    }

    #[test]
    fn longest_prefix_wins_within_a_tier() {
        let r = router(&[(None, "/"), (None, "/api/v1"), (None, "/api")]);
        assert_eq!(r.route(None, "/api/v1/users"), Some(&1));
        assert_eq!(r.route(None, "/api/v2"), Some(&2));
        assert_eq!(r.route(None, "/apix"), Some(&2), "a plain string prefix");
        assert_eq!(r.route(None, "/ap"), Some(&0));
        assert_eq!(r.route(None, ""), None);
    }

    #[test]
    fn host_ignores_case_port_and_trailing_dot() {
        let r = router(&[(exact("example.com"), "/"), (wild(".example.org"), "/")]);
        for host in [
            "example.com",
            "EXAMPLE.com",
            "example.com:8080",
            "Example.COM.:443",
        ] {
            assert_eq!(r.route(Some(host), "/"), Some(&0), "{host}");
        }
        assert_eq!(r.route(Some("WWW.Example.Org.:80"), "/"), Some(&1));
        assert_eq!(r.route(Some("example.comx"), "/"), None);
    }

    #[test]
    fn ipv6_literals() {
        let r = router(&[(exact("[::1]"), "/a"), (exact("fe80::1"), "/b")]);
        assert_eq!(r.route(Some("[::1]:8080"), "/a"), Some(&0));
        assert_eq!(r.route(Some("[::1]"), "/a"), Some(&0));
        assert_eq!(r.route(Some("::1"), "/a"), Some(&0), "bare, no port");
        assert_eq!(r.route(Some("[FE80::1]:443"), "/b"), Some(&1));
        assert_eq!(r.route(Some("[::2]:8080"), "/a"), None);
    }

    #[test]
    fn wildcards_match_any_depth_longest_suffix_first() {
        let r = router(&[(wild(".example.com"), "/"), (wild(".b.example.com"), "/")]);
        assert_eq!(r.route(Some("a.example.com"), "/"), Some(&0));
        assert_eq!(r.route(Some("x.a.example.com"), "/"), Some(&0));
        assert_eq!(r.route(Some("a.b.example.com"), "/"), Some(&1));
        assert_eq!(r.route(Some("x.a.b.example.com"), "/"), Some(&1));
        assert_eq!(r.route(Some("b.example.com"), "/"), Some(&0));
        assert_eq!(r.route(Some("example.com"), "/"), None);
        assert_eq!(r.route(Some(".example.com"), "/"), None);
        assert_eq!(r.route(Some("aexample.com"), "/"), None);
    }

    #[test]
    fn wildcard_written_with_a_star_is_the_same() {
        let r = router(&[(wild("*.Example.com"), "/")]);
        assert_eq!(r.route(Some("a.example.com"), "/"), Some(&0));
    }

    #[test]
    fn no_host_matches_only_host_less_routes() {
        let r = router(&[(exact("example.com"), "/"), (wild(".example.com"), "/")]);
        assert_eq!(r.route(None, "/"), None);
        assert_eq!(r.route(Some(""), "/"), None);
        let r = router(&[(exact("example.com"), "/api"), (None, "/")]);
        assert_eq!(r.route(None, "/api"), Some(&1));
        assert_eq!(r.route(Some(":80"), "/api"), Some(&1));
    }

    #[test]
    fn nothing_matches() {
        let r = router(&[(exact("example.com"), "/api")]);
        assert_eq!(r.route(Some("example.com"), "/"), None);
        assert_eq!(r.route(Some("other.com"), "/api"), None);
        assert_eq!(Router::<usize>::new(Vec::new()).route(Some("a"), "/"), None);
    }

    #[test]
    fn non_ascii_paths_are_safe() {
        let r = router(&[(None, "/é"), (None, "/"), (None, "/日本/")]);
        assert_eq!(r.route(None, "/é/x"), Some(&0));
        // Byte length 2 splits "é" and the 2-byte prefix "/é" is never probed there.
        assert_eq!(r.route(None, "/ée"), Some(&0));
        assert_eq!(r.route(None, "/日本/x"), Some(&2));
        assert_eq!(r.route(None, "/日本"), Some(&1));
        assert_eq!(r.route(None, "/\u{1F600}"), Some(&1));
    }

    #[test]
    fn duplicates_first_wins() {
        let r = router(&[(exact("A.com"), "/"), (exact("a.com."), "/"), (None, "/")]);
        assert_eq!(r.route(Some("a.com"), "/"), Some(&0));
    }

    /// The rules above as a linear scan over every route.
    fn reference<'a>(routes: &'a [Route], host: Option<&str>, path: &str) -> Option<&'a usize> {
        let best = |in_tier: &dyn Fn(&Option<HostPattern>) -> bool| {
            let matching = routes
                .iter()
                .filter(|r| in_tier(&r.0) && path.starts_with(&r.1));
            // max_by_key keeps the last maximum; reversing keeps the first.
            matching.rev().max_by_key(|r| r.1.len()).map(|r| &r.2)
        };
        let host = host.map(request_host).filter(|h| !h.is_empty());
        if let Some(host) = host.as_deref() {
            let is_exact = |h: &Option<HostPattern>| matches!(h, Some(HostPattern::Exact(e)) if exact_key(e) == host);
            if let Some(found) = best(&is_exact) {
                return Some(found);
            }
            let mut suffixes: Vec<String> = routes
                .iter()
                .filter_map(|r| match &r.0 {
                    Some(HostPattern::Wildcard(s)) => Some(wildcard_key(s)),
                    _ => None,
                })
                .filter(|s| host.len() > s.len() && host.ends_with(s.as_str()))
                .collect();
            suffixes.sort_by_key(|s| std::cmp::Reverse(s.len()));
            for suffix in suffixes {
                let is_this = |h: &Option<HostPattern>| matches!(h, Some(HostPattern::Wildcard(w)) if wildcard_key(w) == suffix);
                if let Some(found) = best(&is_this) {
                    return Some(found);
                }
            }
        }
        best(&|h| h.is_none())
    }

    fn name() -> impl Strategy<Value = String> {
        prop::collection::vec(prop_oneof!["a", "b", "c"], 1..=3).prop_map(|l| l.join("."))
    }

    fn pattern() -> impl Strategy<Value = Option<HostPattern>> {
        prop_oneof![
            Just(None),
            name().prop_map(|n| Some(HostPattern::Exact(n))),
            name().prop_map(|n| Some(HostPattern::Wildcard(format!(".{n}")))),
        ]
    }

    fn request_host_variant() -> impl Strategy<Value = Option<String>> {
        let flags = (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            prop::bool::weighted(0.1),
        );
        let decorated = (name(), flags).prop_map(|(name, (upper, dot, port, leading_dot))| {
            let mut host = if upper { name.to_uppercase() } else { name };
            if leading_dot {
                host.insert(0, '.');
            }
            if dot {
                host.push('.');
            }
            if port {
                host.push_str(":8080");
            }
            host
        });
        prop::option::weighted(0.9, decorated)
    }

    proptest! {
        #[test]
        fn agrees_with_a_linear_scan(
            routes in prop::collection::vec((pattern(), "/[ab/é]{0,3}"), 0..30),
            requests in prop::collection::vec((request_host_variant(), "/?[ab/é]{0,5}"), 1..20),
        ) {
            let routes: Vec<Route> = routes
                .into_iter()
                .enumerate()
                .map(|(i, (host, path))| (host, path, i))
                .collect();
            let router = Router::new(routes.clone());
            for (host, path) in &requests {
                prop_assert_eq!(
                    router.route(host.as_deref(), path),
                    reference(&routes, host.as_deref(), path),
                    "host {:?} path {:?}", host, path
                );
            }
        }
    }
}
