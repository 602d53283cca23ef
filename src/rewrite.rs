//! Rewriting the request target for the upstream: a route's `strip_prefix`.
//!
//! Routing matches plain string prefixes (see `routing`), so the cut follows
//! it: with `path = "/api"`, `/api/users?x=1` becomes `/users?x=1`, `/api`
//! and `/api?x` become `/` and `/?x`, and `/apix` (which the route also
//! matches) becomes `/x`. Whatever is left gets a leading `/` when it has
//! none, as Traefik's `StripPrefix` does, so the target stays in origin form.

use http::Uri;

/// `target` (origin form, its path starting with a route prefix of `len`
/// bytes) without that prefix. A target the prefix does not fit is returned as is.
pub(crate) fn strip_prefix(target: &Uri, len: usize) -> Uri {
    let Some(pq) = target.path_and_query() else {
        return target.clone();
    };
    let path = pq.path();
    // Routing guarantees the prefix; the check only keeps `*` and odd
    // targets from being cut in the middle of a character.
    let Some(rest) = path.get(len..).filter(|_| path.starts_with('/')) else {
        return target.clone();
    };
    let query = pq.query();
    let mut out = String::with_capacity(rest.len() + 2 + query.map_or(0, str::len));
    if !rest.starts_with('/') {
        out.push('/');
    }
    out.push_str(rest);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    // The pieces came from a valid URI, so this parses; if not, the
    // target is forwarded unchanged rather than failing the request.
    Uri::try_from(out).unwrap_or_else(|_| target.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn strip(prefix: &str, target: &str) -> String {
        let uri: Uri = target.parse().expect("uri");
        strip_prefix(&uri, prefix.len()).to_string()
    }

    #[test]
    fn the_route_prefix_is_cut_and_the_query_kept() {
        for (prefix, target, expected) in [
            ("/api", "/api/users?x=1", "/users?x=1"),
            ("/api", "/api", "/"),
            ("/api", "/api?x", "/?x"),
            ("/api", "/api/", "/"),
            ("/api", "/apix", "/x"),
            ("/api/", "/api/users", "/users"),
            ("/api/", "/api/", "/"),
            ("/a/b", "/a/b/c/d?q=1&r=2", "/c/d?q=1&r=2"),
            ("/api", "/api//x", "//x"),
            ("/api", "/api?", "/?"),
        ] {
            assert_eq!(strip(prefix, target), expected, "{prefix} {target}");
        }
    }

    #[test]
    fn a_target_the_prefix_does_not_fit_is_left_alone() {
        assert_eq!(strip("/api", "*"), "*");
        assert_eq!(strip("/api", "/a"), "/a");
    }

    proptest! {
        #[test]
        fn the_result_is_always_origin_form(
            prefix in "/[a-z/]{0,6}",
            rest in "[a-z/]{0,8}",
            query in proptest::option::of("[a-z=&]{0,6}"),
        ) {
            let mut target = format!("{prefix}{rest}");
            if let Some(q) = &query {
                target.push('?');
                target.push_str(q);
            }
            let out = strip(&prefix, &target);
            prop_assert!(out.starts_with('/'), "{out}");
            let (path, q) = match out.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (out.as_str(), None),
            };
            prop_assert_eq!(q, query.as_deref());
            prop_assert_eq!(path.trim_start_matches('/'), rest.trim_start_matches('/'));
        }
    }
}
