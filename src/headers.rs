//! Header rewriting between client and upstream (the contract's "What the upstream receives").

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

/// `X-Real-IP`.
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Hop-by-hop headers of RFC 9110 §7.6.1, beside those `Connection` names.
fn fixed_hop_by_hop() -> [&'static HeaderName; 7] {
    [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ]
}

/// Removes hop-by-hop headers: every header named in `Connection`, then the fixed set.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in fixed_hop_by_hop() {
        headers.remove(name);
    }
}

/// The client side of a request, as needed to write the forwarding headers.
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    /// The connection's peer address.
    pub ip: IpAddr,
    /// `http` or `https`: how the client reached weir.
    pub proto: &'static str,
    /// Networks whose forwarding headers are believed.
    pub trusted: &'a [IpNet],
}

impl Peer<'_> {
    fn is_trusted(&self, ip: IpAddr) -> bool {
        is_trusted(self.trusted, ip)
    }
}

fn is_trusted(trusted: &[IpNet], ip: IpAddr) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// Rewrites a request's headers for the upstream: removes hop-by-hop headers,
/// then sets `X-Real-IP`, `X-Forwarded-For`, `-Proto` and `-Host`.
/// `host` is the request's host (the `Host` header or the URI's authority).
pub fn prepare_upstream_request(headers: &mut HeaderMap, peer: Peer<'_>, host: Option<&str>) {
    strip_hop_by_hop(headers);
    let trusted = peer.is_trusted(peer.ip);
    let peer_ip = peer.ip.to_string();

    let forwarded_for = if trusted {
        let chain: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let real = real_client(&chain, peer.trusted).map(str::to_owned);
        let mut value = chain.join(", ");
        if !value.is_empty() {
            value.push_str(", ");
        }
        value.push_str(&peer_ip);
        headers.insert(
            X_REAL_IP.clone(),
            header_value(real.as_deref().unwrap_or(&peer_ip)),
        );
        value
    } else {
        headers.insert(X_REAL_IP.clone(), header_value(&peer_ip));
        peer_ip
    };
    headers.insert(X_FORWARDED_FOR.clone(), header_value(&forwarded_for));

    if !(trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(peer.proto),
        );
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match host.and_then(|h| HeaderValue::from_str(h).ok()) {
            Some(value) => {
                headers.insert(X_FORWARDED_HOST.clone(), value);
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
}

/// The client address behind a chain of trusted proxies: the last address that
/// is not itself trusted, or the first one when every hop is trusted.
fn real_client<'a>(chain: &[&'a str], trusted: &[IpNet]) -> Option<&'a str> {
    let ips: Vec<(&str, IpAddr)> = chain
        .iter()
        .filter_map(|s| s.parse::<IpAddr>().ok().map(|ip| (*s, ip)))
        .collect();
    ips.iter()
        .rev()
        .find(|(_, ip)| !is_trusted(trusted, *ip))
        .or_else(|| ips.first())
        .map(|(s, _)| *s)
}

/// A header value from text weir produced itself (addresses), never invalid.
fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        map
    }

    fn get<'a>(map: &'a HeaderMap, name: &str) -> Option<&'a str> {
        map.get(name).map(|v| v.to_str().expect("ascii"))
    }

    fn peer<'a>(ip: &str, trusted: &'a [IpNet]) -> Peer<'a> {
        Peer {
            ip: ip.parse().expect("ip"),
            proto: "http",
            trusted,
        }
    }

    #[test]
    fn connection_named_and_fixed_hop_by_hop_headers_are_removed() {
        let mut map = headers(&[
            ("connection", "close, X-Foo"),
            ("x-foo", "1"),
            ("x-bar", "2"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
        ]);
        strip_hop_by_hop(&mut map);
        assert_eq!(map.len(), 1);
        assert_eq!(get(&map, "x-bar"), Some("2"));
    }

    #[test]
    fn untrusted_client_cannot_forge_forwarding_headers() {
        let mut map = headers(&[
            ("x-real-ip", "6.6.6.6"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil"),
            ("host", "site.test"),
        ]);
        prepare_upstream_request(&mut map, peer("192.0.2.7", &[]), Some("site.test"));
        assert_eq!(get(&map, "x-real-ip"), Some("192.0.2.7"));
        assert_eq!(get(&map, "x-forwarded-for"), Some("192.0.2.7"));
        assert_eq!(get(&map, "x-forwarded-proto"), Some("http"));
        assert_eq!(get(&map, "x-forwarded-host"), Some("site.test"));
        assert_eq!(get(&map, "host"), Some("site.test"));
    }

    #[test]
    fn trusted_proxy_chain_is_appended_and_real_ip_found() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let mut map = headers(&[
            ("x-forwarded-for", "203.0.113.9, 10.1.1.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "front.test"),
        ]);
        prepare_upstream_request(&mut map, peer("10.0.0.2", &trusted), Some("back.test"));
        assert_eq!(
            get(&map, "x-forwarded-for"),
            Some("203.0.113.9, 10.1.1.1, 10.0.0.2")
        );
        assert_eq!(get(&map, "x-real-ip"), Some("203.0.113.9"));
        assert_eq!(get(&map, "x-forwarded-proto"), Some("https"));
        assert_eq!(get(&map, "x-forwarded-host"), Some("front.test"));
    }

    #[test]
    fn trusted_peer_without_chain_is_the_client() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let mut map = HeaderMap::new();
        prepare_upstream_request(&mut map, peer("10.0.0.2", &trusted), None);
        assert_eq!(get(&map, "x-forwarded-for"), Some("10.0.0.2"));
        assert_eq!(get(&map, "x-real-ip"), Some("10.0.0.2"));
        assert_eq!(get(&map, "x-forwarded-host"), None);
    }

    #[test]
    fn all_trusted_chain_uses_the_first_hop() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        assert_eq!(
            real_client(&["10.0.0.5", "10.0.0.6"], &trusted),
            Some("10.0.0.5")
        );
        assert_eq!(real_client(&["garbage"], &trusted), None);
    }
}
