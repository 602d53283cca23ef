//! Request affinity: what ties a request to a server — the key that
//! `balance = "hash"` hashes, and the `sticky` cookie naming the server that
//! answered the client before.
//!
//! A sticky cookie's value is a hash of the upstream's name and the server's
//! address, in hex: it does not show the address, and every weir instance with
//! the same upstream reads it the same way.

use std::fmt::Write as _;

use http::header::{self, HeaderMap, HeaderValue};
use http::Request;

use crate::balance::stable_hash;
use crate::config::{HashKey, StickyConfig, UpstreamConfig};
use crate::headers::Forwarded;

/// What in a request points at a server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Affinity {
    /// The hashed key, for `balance = "hash"`.
    pub(crate) hash: Option<u64>,
    /// The server the `sticky` cookie names, as its [`sticky_id`].
    pub(crate) sticky: Option<u64>,
}

/// What `req`, with its forwarding headers `forwarded`, carries that ties
/// it to a server of `upstream`.
pub(crate) fn of<B>(
    upstream: &UpstreamConfig,
    req: &Request<B>,
    forwarded: &Forwarded<'_>,
) -> Affinity {
    Affinity {
        hash: upstream
            .hash_key
            .as_ref()
            .and_then(|k| request_key(k, req, forwarded)),
        sticky: upstream.sticky.as_ref().and_then(|s| {
            let value = cookie(req.headers(), &s.cookie)?;
            let hex = std::str::from_utf8(value).ok()?;
            (hex.len() == 16).then(|| u64::from_str_radix(hex, 16).ok())?
        }),
    }
}

/// The identity a sticky cookie gives the server at `addr` of `upstream`.
pub(crate) fn sticky_id(upstream: &str, addr: std::net::SocketAddr) -> u64 {
    stable_hash(format!("{upstream}/{addr}").as_bytes())
}

/// The `Set-Cookie` value that ties a client to the server with `id`.
pub(crate) fn set_cookie(sticky: &StickyConfig, id: u64) -> HeaderValue {
    let mut value = format!("{}={id:016x}; Path=/", sticky.cookie);
    if let Some(age) = sticky.max_age {
        let _ = write!(value, "; Max-Age={}", age.as_secs());
    }
    if sticky.secure {
        value.push_str("; Secure");
    }
    if sticky.http_only {
        value.push_str("; HttpOnly");
    }
    let _ = write!(value, "; SameSite={}", sticky.same_site);
    // Made of a validated token, hex digits and fixed words.
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

/// The hashed key of `req` for `balance = "hash"` with `key`; `None` when the
/// request does not carry it (such requests are balanced round robin).
///
/// Read from the request as weir forwards it: the client address is the one
/// weir resolved and writes in `X-Real-IP` (trusted proxies applied).
fn request_key<B>(key: &HashKey, req: &Request<B>, forwarded: &Forwarded<'_>) -> Option<u64> {
    let bytes = match key {
        HashKey::Ip => forwarded.real_ip().as_bytes(),
        HashKey::Uri => req.uri().path_and_query()?.as_str().as_bytes(),
        HashKey::Path => req.uri().path().as_bytes(),
        HashKey::Header(name) => forwarded.get(req.headers(), name)?.as_bytes(),
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

    fn client(ip: &'static str) -> HeaderValue {
        HeaderValue::from_static(ip)
    }

    #[test]
    fn each_key_reads_its_part_of_the_request() {
        let r = req(&[
            ("x-real-ip", "6.6.6.6"),
            ("x-user", "alice"),
            ("cookie", "a=1; sid=abc ; b=2"),
        ]);
        let ip = client("192.0.2.7");
        let fwd = Forwarded::for_client(&ip);
        let h = |k: HashKey| request_key(&k, &r, &fwd);
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
        let ip = client("192.0.2.7");
        let fwd = Forwarded::for_client(&ip);
        assert_eq!(request_key(&HashKey::Cookie("sid".into()), &r, &fwd), None);
        let h = HashKey::Header(http::HeaderName::from_static("x-user"));
        assert_eq!(request_key(&h, &r, &fwd), None);
    }

    #[test]
    fn a_header_key_naming_a_forwarding_header_reads_weirs_value() {
        let r = req(&[("x-real-ip", "6.6.6.6"), ("x-forwarded-for", "6.6.6.6")]);
        let ip = client("192.0.2.7");
        let fwd = Forwarded::for_client(&ip);
        for name in ["x-real-ip", "x-forwarded-for"] {
            let key = HashKey::Header(http::HeaderName::from_static(name));
            assert_eq!(
                request_key(&key, &r, &fwd),
                Some(stable_hash(b"192.0.2.7")),
                "{name}"
            );
        }
    }

    #[test]
    fn cookies_in_several_headers_are_found() {
        let r = req(&[("cookie", "a=1"), ("cookie", "sid=z")]);
        let ip = client("192.0.2.7");
        assert_eq!(
            request_key(
                &HashKey::Cookie("sid".into()),
                &r,
                &Forwarded::for_client(&ip)
            ),
            Some(stable_hash(b"z"))
        );
    }
}

#[cfg(test)]
mod cookie_tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_cookie_names_the_server_by_hash_with_its_attributes() {
        let mut sticky = StickyConfig {
            cookie: "sid".into(),
            max_age: Some(Duration::from_secs(3600)),
            secure: true,
            http_only: true,
            same_site: "Strict",
        };
        let id = sticky_id("app", "127.0.0.1:3000".parse().expect("addr"));
        assert_eq!(
            set_cookie(&sticky, id),
            format!("sid={id:016x}; Path=/; Max-Age=3600; Secure; HttpOnly; SameSite=Strict")
                .as_str()
        );
        sticky.max_age = None;
        sticky.secure = false;
        sticky.http_only = false;
        assert_eq!(
            set_cookie(&sticky, 1),
            "sid=0000000000000001; Path=/; SameSite=Strict"
        );
        // Another upstream with the same server: another identity.
        assert_ne!(
            id,
            sticky_id("api", "127.0.0.1:3000".parse().expect("addr"))
        );
    }
}
