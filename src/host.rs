//! The host a request is for, and whether weir may forward it (RFC 9112 §3.2,
//! RFC 9113 §8.3.1).
//!
//! An HTTP/1.1 request has exactly one `Host`; any request with several, or
//! with one that is not a `host[:port]`, is refused. An absolute-form target
//! (or HTTP/2's `:authority`) names the host instead, and the upstream gets a
//! `Host` equal to it. Checked here, before routing: a request refused for its
//! host never reaches an upstream.

use std::net::Ipv6Addr;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Uri, Version};

use crate::error::HostError;
use crate::headers::decimal;

/// The request's host: the target's authority when it has one (absolute
/// form, HTTP/2 `:authority`), else its `Host` header; `None` when a request
/// may go without (HTTP/1.0, HTTP/2).
pub(crate) fn request_host(
    version: Version,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Option<HeaderValue>, HostError> {
    let mut all = headers.get_all(header::HOST).iter();
    let host = all.next();
    if all.next().is_some() {
        return Err(HostError::Several);
    }
    if host.is_some_and(|h| !is_host_value(h.as_bytes())) {
        return Err(HostError::Invalid);
    }
    if host.is_none() && version == Version::HTTP_11 {
        return Err(HostError::Missing);
    }
    let Some(authority) = uri.authority() else {
        return Ok(host.cloned());
    };
    let authority = authority.as_str();
    if !is_authority(authority.as_bytes()) {
        return Err(HostError::InvalidTarget);
    }
    if version == Version::HTTP_2
        && host.is_some_and(|h| !h.as_bytes().eq_ignore_ascii_case(authority.as_bytes()))
    {
        return Err(HostError::Mismatch);
    }
    // Valid header text: `is_authority` allows only visible ASCII.
    HeaderValue::from_str(authority)
        .map(Some)
        .map_err(|_| HostError::InvalidTarget)
}

/// A `Host` field value: `host[:port]`, or empty (a target without an authority).
fn is_host_value(value: &[u8]) -> bool {
    value.is_empty() || is_authority(value)
}

/// `uri-host [ ":" port ]` of RFC 3986 without userinfo: an IPv6 literal in
/// brackets, or a non-empty name of unreserved characters and sub-delims
/// (which covers IPv4 addresses). Stricter than `http::uri::Authority`, which
/// also lets userinfo through; everything accepted here it parses too.
fn is_authority(value: &[u8]) -> bool {
    let (host, port) = match value.strip_prefix(b"[") {
        Some(literal) => {
            let Some(end) = literal.iter().position(|&b| b == b']') else {
                return false;
            };
            let is_ipv6 =
                std::str::from_utf8(&literal[..end]).is_ok_and(|ip| ip.parse::<Ipv6Addr>().is_ok());
            if !is_ipv6 {
                return false;
            }
            (None, &literal[end + 1..])
        }
        None => match value.iter().rposition(|&b| b == b':') {
            Some(colon) => (Some(&value[..colon]), &value[colon..]),
            None => (Some(value), &value[value.len()..]),
        },
    };
    let host_ok = host.is_none_or(|name| !name.is_empty() && name.iter().all(|&b| is_name_byte(b)));
    host_ok && is_port(port)
}

/// RFC 3986 `unreserved` and `sub-delims`: what a host name may hold (no
/// percent-encoding, which no DNS name needs and `http` refuses).
fn is_name_byte(b: u8) -> bool {
    NAME_BYTES[usize::from(b)]
}

/// [`is_name_byte`] as a table: every request's host is checked byte by byte.
const NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < SUB_DELIMS_AND_MARKS.len() {
        table[SUB_DELIMS_AND_MARKS[i] as usize] = true;
        i += 1;
    }
    table
};

/// The bytes besides letters and digits a host name may hold.
const SUB_DELIMS_AND_MARKS: &[u8] = b"-._~!$&'()*+,;=";

/// Nothing, or `:` and a port number (RFC 3986 also allows an empty port).
fn is_port(port: &[u8]) -> bool {
    match port.strip_prefix(b":") {
        None => port.is_empty(),
        Some([]) => true,
        // A number below 65536, leading zeros allowed.
        Some(digits) => decimal(digits).is_some_and(|n| n <= u64::from(u16::MAX)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(version: Version, uri: &str, hosts: &[&[u8]]) -> Result<Option<String>, HostError> {
        let mut headers = HeaderMap::new();
        for host in hosts {
            headers.append(
                header::HOST,
                HeaderValue::from_bytes(host).expect("header value"),
            );
        }
        let uri: Uri = uri.parse().expect("uri");
        request_host(version, &uri, &headers)
            .map(|h| h.map(|v| v.to_str().expect("ascii").to_owned()))
    }

    #[test]
    fn the_name_byte_table_is_letters_digits_and_the_sub_delims() {
        for b in 0..=u8::MAX {
            let expected = b.is_ascii_alphanumeric() || SUB_DELIMS_AND_MARKS.contains(&b);
            assert_eq!(is_name_byte(b), expected, "{b:#04x}");
        }
    }

    #[test]
    fn valid_hosts_are_names_addresses_and_ports() {
        for host in [
            "example.com",
            "example.com:8080",
            "EXAMPLE.com.",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[2001:db8::7]:443",
            "a-b_c~d",
            "host:",
        ] {
            assert!(is_host_value(host.as_bytes()), "{host}");
        }
        assert!(
            is_host_value(b""),
            "an empty Host is allowed (RFC 9112 §3.2)"
        );
    }

    #[test]
    fn invalid_hosts_are_refused() {
        for host in [
            &b"user@example.com"[..],
            b"user:pw@example.com",
            b"example.com/path",
            b"example.com?q",
            b"exa mple.com",
            b"example.com\t",
            b"ex\x01ample",
            b"ex\x7fample",
            b"ex\xc3\xa9mple",
            b"example.com:80:80",
            b"example.com:http",
            b"example.com:65536",
            b":80",
            b"[::1",
            b"[not-an-ip]",
            b"[::1]x",
            b"ex%41mple",
            b"a\"b",
        ] {
            assert!(!is_host_value(host), "{}", host.escape_ascii());
        }
    }

    #[test]
    fn http11_needs_exactly_one_valid_host() {
        assert_eq!(
            check(Version::HTTP_11, "/", &[b"a.test"]),
            Ok(Some("a.test".into()))
        );
        assert_eq!(check(Version::HTTP_11, "/", &[]), Err(HostError::Missing));
        assert_eq!(
            check(Version::HTTP_11, "/", &[b"a.test", b"b.test"]),
            Err(HostError::Several)
        );
        assert_eq!(
            check(Version::HTTP_11, "/", &[b"a.test/x"]),
            Err(HostError::Invalid)
        );
    }

    #[test]
    fn http10_may_go_without_but_not_with_two() {
        assert_eq!(check(Version::HTTP_10, "/", &[]), Ok(None));
        assert_eq!(
            check(Version::HTTP_10, "/", &[b"a", b"a"]),
            Err(HostError::Several)
        );
        assert_eq!(
            check(Version::HTTP_10, "/", &[b"a b"]),
            Err(HostError::Invalid)
        );
    }

    #[test]
    fn an_absolute_form_target_wins_over_host() {
        assert_eq!(
            check(Version::HTTP_11, "http://abs.test:81/x", &[b"other.test"]),
            Ok(Some("abs.test:81".into()))
        );
        assert_eq!(
            check(Version::HTTP_11, "http://abs.test/x", &[]),
            Err(HostError::Missing),
            "HTTP/1.1 needs a Host even then"
        );
        assert_eq!(
            check(Version::HTTP_10, "http://abs.test/x", &[]),
            Ok(Some("abs.test".into()))
        );
        assert_eq!(
            check(Version::HTTP_11, "http://user@abs.test/x", &[b"abs.test"]),
            Err(HostError::InvalidTarget)
        );
    }

    #[test]
    fn http2_authority_and_host_must_agree() {
        let h2 = Version::HTTP_2;
        assert_eq!(check(h2, "https://a.test/", &[]), Ok(Some("a.test".into())));
        assert_eq!(
            check(h2, "https://a.test/", &[b"A.Test"]),
            Ok(Some("a.test".into()))
        );
        assert_eq!(
            check(h2, "https://a.test/", &[b"b.test"]),
            Err(HostError::Mismatch)
        );
        assert_eq!(check(h2, "/", &[b"b.test"]), Ok(Some("b.test".into())));
        assert_eq!(check(h2, "/", &[]), Ok(None));
    }

    proptest! {
        /// Whatever weir accepts as a host, `http` parses to the same host and
        /// port (the h2c path turns `Host` into an `Authority`).
        #[test]
        fn accepted_hosts_parse_as_authorities(bytes in proptest::collection::vec(
            prop_oneof![
                Just(b'a'), Just(b'Z'), Just(b'7'), Just(b'.'), Just(b'-'), Just(b':'),
                Just(b'['), Just(b']'), Just(b'@'), Just(b'/'), Just(b' '), Just(b'%'),
                Just(b'\x01'), Just(b'!'), Just(b'0'), Just(b'f'),
            ],
            0..24,
        )) {
            if is_authority(&bytes) {
                let authority = http::uri::Authority::try_from(&bytes[..]);
                prop_assert!(authority.is_ok(), "{}", bytes.escape_ascii());
                let authority = authority.expect("checked");
                prop_assert!(!authority.as_str().contains('@'));
                prop_assert_eq!(authority.as_str().as_bytes(), &bytes[..]);
            }
        }

        /// A port is what `u16` parses: digits only, leading zeros allowed.
        #[test]
        fn ports_are_what_u16_parses(port in "[0-9]{1,8}|[0-9a ]{0,4}") {
            let parses = !port.starts_with('+') && port.parse::<u16>().is_ok();
            prop_assert_eq!(is_port(format!(":{port}").as_bytes()), parses || port.is_empty());
        }
    }
}
