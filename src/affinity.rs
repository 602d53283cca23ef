//! Request affinity: what ties a request to a server. Today the key that
//! `balance = "hash"` hashes, taken from the request as it goes upstream.

use http::header::{self, HeaderMap};
use http::Request;

use crate::balance::stable_hash;
use crate::config::HashKey;

/// The hashed key of `req` for `balance = "hash"` with `key`; `None` when the
/// request does not carry it (such requests are balanced round robin).
///
/// Read from the request as weir forwards it: the client address is the one
/// weir resolved and wrote in `X-Real-IP` (trusted proxies applied).
pub(crate) fn request_key<B>(key: &HashKey, req: &Request<B>) -> Option<u64> {
    let bytes = match key {
        HashKey::Ip => req.headers().get("x-real-ip")?.as_bytes(),
        HashKey::Uri => req.uri().path_and_query()?.as_str().as_bytes(),
        HashKey::Path => req.uri().path().as_bytes(),
        HashKey::Header(name) => req.headers().get(name)?.as_bytes(),
        HashKey::Cookie(name) => cookie(req.headers(), name)?,
    };
    Some(stable_hash(bytes))
}

/// The value of cookie `name` in the request's `Cookie` headers (RFC 6265
/// §5.4: `name=value` pairs separated by `; `), the first if repeated.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get("/a/b?x=1");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request")
    }

    #[test]
    fn each_key_reads_its_part_of_the_request() {
        let r = req(&[
            ("x-real-ip", "192.0.2.7"),
            ("x-user", "alice"),
            ("cookie", "a=1; sid=abc ; b=2"),
        ]);
        let h = |k: HashKey| request_key(&k, &r);
        assert_eq!(h(HashKey::Ip), Some(stable_hash(b"192.0.2.7")));
        assert_eq!(h(HashKey::Uri), Some(stable_hash(b"/a/b?x=1")));
        assert_eq!(h(HashKey::Path), Some(stable_hash(b"/a/b")));
        let user = HashKey::Header(http::HeaderName::from_static("x-user"));
        assert_eq!(h(user), Some(stable_hash(b"alice")));
        assert_eq!(h(HashKey::Cookie("sid".into())), Some(stable_hash(b"abc")));
    }

    #[test]
    fn a_missing_key_is_none() {
        let r = req(&[("cookie", "sidx=1; xsid=2")]);
        assert_eq!(request_key(&HashKey::Cookie("sid".into()), &r), None);
        let h = HashKey::Header(http::HeaderName::from_static("x-user"));
        assert_eq!(request_key(&h, &r), None);
        assert_eq!(request_key(&HashKey::Ip, &r), None);
    }

    #[test]
    fn cookies_in_several_headers_are_found() {
        let r = req(&[("cookie", "a=1"), ("cookie", "sid=z")]);
        assert_eq!(
            request_key(&HashKey::Cookie("sid".into()), &r),
            Some(stable_hash(b"z"))
        );
    }
}
