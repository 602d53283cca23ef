//! Header rewriting between client and upstream (the README's "What the upstream receives").

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use tracing::debug;

/// `X-Real-IP`.
pub(crate) static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// `X-Forwarded-For`.
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub(crate) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Whether `name` is a hop-by-hop header of RFC 9110 §7.6.1 that is one
/// whatever `Connection` names: one match on the name's text.
fn is_fixed_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Removes hop-by-hop headers: every header named in `Connection`, then the fixed set.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them: one pass over their few names costs
    // less than eight hashed removals (a quarter of the instructions with five headers).
    if headers.keys().any(is_fixed_hop_by_hop) {
        remove_hop_by_hop(headers);
    }
}

/// Whether request headers whose names hold an underscore go upstream
/// (`[server] underscores_in_headers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Underscores {
    /// Dropped, as nginx does by default: gateways that read `_` as `-` would
    /// take `X_Real_IP` for weir's `X-Real-IP`.
    Drop,
    /// Forwarded like any other header.
    Keep,
}

/// What one pass over a request's header names found to remove.
#[derive(Debug, Default)]
struct Found {
    hop_by_hop: bool,
    underscored: bool,
    /// One of the four forwarding headers, which weir writes itself.
    forwarding: bool,
}

impl Found {
    fn in_request(headers: &HeaderMap, underscores: Underscores) -> Self {
        let drop_underscored = underscores == Underscores::Drop;
        let mut found = Found::default();
        for name in headers.keys() {
            found.hop_by_hop |= is_fixed_hop_by_hop(name);
            found.forwarding |= is_forwarding(name);
            found.underscored |= drop_underscored && name.as_str().as_bytes().contains(&b'_');
        }
        found
    }
}

/// Whether `name` is one of the forwarding headers weir writes.
fn is_forwarding(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "x-real-ip" | "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host"
    )
}

fn remove_hop_by_hop(headers: &mut HeaderMap) {
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
    // Bounded: each pass removes one of the seven names.
    while let Some(name) = headers.keys().find(|n| is_fixed_hop_by_hop(n)).cloned() {
        headers.remove(name);
    }
}

/// The client side of a request, as needed to write the forwarding headers.
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    /// The connection's peer address.
    pub ip: IpAddr,
    /// `ip` as a header value, rendered once per connection ([`ip_value`]):
    /// formatting an address costs more than the rest of the rewrite.
    pub ip_value: &'a HeaderValue,
    /// Whether the client reached weir over TLS (`https`).
    pub tls: bool,
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

/// The forwarding headers weir sets on a request for its upstream:
/// `X-Real-IP`, `X-Forwarded-For`, `-Proto` and `-Host`.
///
/// Kept beside the request's header map rather than in it: weir's own
/// HTTP/1.1 client writes them straight into the request head, which costs
/// far less than four hashed insertions into the map and their removal
/// after. hyper's clients (h2c, upgrades) and the cache, which read the map,
/// get them inserted there ([`Forwarded::insert_into`]); what reads them
/// before the request goes (hash and rate-limit keys) asks [`Forwarded::get`].
#[derive(Debug, Clone)]
pub struct Forwarded<'a> {
    /// `X-Real-IP` and `X-Forwarded-For`.
    addresses: Addresses<'a>,
    /// `None` when a trusted proxy's own `X-Forwarded-Proto` stays in the map.
    proto: Option<&'static HeaderValue>,
    /// `None` when a trusted proxy's own `X-Forwarded-Host` stays in the
    /// map, or when the request has no host (and the map none either).
    host: Option<HeaderValue>,
}

/// `X-Real-IP` and `X-Forwarded-For`: both the connection's peer address
/// (rendered once per connection), or, behind a trusted proxy, worked out
/// for the request (boxed: the request's state is moved whole, and most
/// requests come straight from their client).
#[derive(Debug, Clone)]
enum Addresses<'a> {
    Peer(&'a HeaderValue),
    Resolved(Box<[HeaderValue; 2]>),
}

/// `X-Forwarded-Proto` values.
static HTTP: HeaderValue = HeaderValue::from_static("http");
static HTTPS: HeaderValue = HeaderValue::from_static("https");

impl<'a> Forwarded<'a> {
    /// The fields in the order they are written, name and value.
    pub fn fields(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        [
            (&X_REAL_IP, Some(self.real_ip())),
            (&X_FORWARDED_FOR, Some(self.forwarded_for())),
            (&X_FORWARDED_PROTO, self.proto),
            (&X_FORWARDED_HOST, self.host.as_ref()),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
    }

    fn forwarded_for(&self) -> &HeaderValue {
        match &self.addresses {
            Addresses::Peer(peer) => peer,
            Addresses::Resolved(values) => &values[1],
        }
    }

    /// `X-Real-IP`: the client address weir resolved.
    pub fn real_ip(&self) -> &HeaderValue {
        match &self.addresses {
            Addresses::Peer(peer) => peer,
            Addresses::Resolved(values) => &values[0],
        }
    }

    /// The value of `name` in the request as it goes upstream: these
    /// headers' own, the map's for any other.
    pub fn get<'b>(&'b self, headers: &'b HeaderMap, name: &HeaderName) -> Option<&'b HeaderValue> {
        let own = match name.as_str() {
            "x-real-ip" => Some(self.real_ip()),
            "x-forwarded-for" => Some(self.forwarded_for()),
            "x-forwarded-proto" => self.proto,
            "x-forwarded-host" => self.host.as_ref(),
            _ => None,
        };
        own.or_else(|| headers.get(name))
    }

    /// The headers of a request straight from `client`, over plain HTTP, without a host.
    #[cfg(test)]
    pub fn for_client(client: &'a HeaderValue) -> Self {
        Forwarded {
            addresses: Addresses::Peer(client),
            proto: Some(&HTTP),
            host: None,
        }
    }

    /// Puts the headers into `headers`, for a client that sends the map as it is.
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        for (name, value) in self.fields() {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// Rewrites a request's headers for the upstream: removes hop-by-hop headers
/// (and those spelled with underscores unless `underscores` keeps them), and
/// works out `X-Real-IP`, `X-Forwarded-For`, `-Proto` and `-Host`, taking
/// any the client sent out of the map unless a trusted proxy's stay.
/// `host` is the request's host (the `Host` header or the URI's authority).
pub fn prepare_upstream_request<'a>(
    headers: &mut HeaderMap,
    peer: Peer<'a>,
    host: Option<&HeaderValue>,
    underscores: Underscores,
) -> Forwarded<'a> {
    // One pass over the names: most requests have nothing to remove.
    let found = Found::in_request(headers, underscores);
    if found.hop_by_hop {
        remove_hop_by_hop(headers);
    }
    if found.underscored {
        remove_underscored(headers, peer.ip);
    }
    let trusted = peer.is_trusted(peer.ip);
    let addresses = if trusted {
        let peer_ip = peer.ip.to_string();
        let chain = forwarded_chain(headers);
        let real = real_client(&chain, peer.trusted).map(header_value);
        let mut value = chain.join(", ");
        if !value.is_empty() {
            value.push_str(", ");
        }
        value.push_str(&peer_ip);
        Addresses::Resolved(Box::new([
            real.unwrap_or_else(|| header_value(&peer_ip)),
            header_value(&value),
        ]))
    } else {
        Addresses::Peer(peer.ip_value)
    };
    // A trusted proxy's own `-Proto` and `-Host` are believed and stay.
    let keep_proto = trusted && headers.contains_key(&X_FORWARDED_PROTO);
    let keep_host = trusted && headers.contains_key(&X_FORWARDED_HOST);
    if found.forwarding {
        headers.remove(&X_REAL_IP);
        headers.remove(&X_FORWARDED_FOR);
        if !keep_proto {
            headers.remove(&X_FORWARDED_PROTO);
        }
        if !keep_host {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
    Forwarded {
        addresses,
        proto: (!keep_proto).then_some(if peer.tls { &HTTPS } else { &HTTP }),
        host: host.filter(|_| !keep_host).cloned(),
    }
}

/// Removes the headers whose names hold an underscore.
fn remove_underscored(headers: &mut HeaderMap, client: IpAddr) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().contains('_'))
        .cloned()
        .collect();
    for name in names {
        debug!(%client, header = %name, "request header with an underscore dropped");
        headers.remove(name);
    }
}

/// The client address weir resolved for a request, the one `X-Real-IP`
/// carries: the peer (which is the PROXY header's client on such a
/// listener), or, when the peer is a trusted proxy, the last address of its
/// `X-Forwarded-For` that is not itself trusted. Access lists use it, and
/// so should every feature keyed by the client, so that all agree.
pub fn client_ip(headers: &HeaderMap, peer: &Peer<'_>) -> IpAddr {
    if !peer.is_trusted(peer.ip) {
        return peer.ip;
    }
    let chain = forwarded_chain(headers);
    real_client(&chain, peer.trusted)
        .and_then(|ip| ip.parse().ok())
        .unwrap_or(peer.ip)
}

/// The hops of a request's `X-Forwarded-For` headers, in order.
fn forwarded_chain(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
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

/// The number `digits` spell in decimal (a `Content-Length`, a port): one
/// digit or more, nothing else, below 2^64; leading zeros allowed.
pub(crate) fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        let d = d.is_ascii_digit().then(|| u64::from(d - b'0'))?;
        n.checked_mul(10)?.checked_add(d)
    })
}

/// `ip` as a header value (`192.0.2.7`, `2001:db8::1`), for [`Peer::ip_value`].
pub fn ip_value(ip: IpAddr) -> HeaderValue {
    header_value(&ip.to_string())
}

/// A header value from text weir produced itself (addresses), never invalid.
fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_hop_by_hop_headers_are_exactly_the_seven() {
        for name in [
            header::CONNECTION,
            HeaderName::from_static("keep-alive"),
            HeaderName::from_static("proxy-connection"),
            header::TE,
            header::TRAILER,
            header::TRANSFER_ENCODING,
            header::UPGRADE,
        ] {
            assert!(is_fixed_hop_by_hop(&name), "{name}");
        }
        for name in [
            "host",
            "x-forwarded-for",
            "content-length",
            "tee",
            "upgrades",
            "x-te",
        ] {
            let name = HeaderName::from_static(name);
            assert!(!is_fixed_hop_by_hop(&name), "{name}");
        }
    }

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

    /// Rewrites `map` as for a request from `ip` for `host`.
    fn rewrite(map: &mut HeaderMap, ip: &str, trusted: &[IpNet], host: Option<&str>) {
        let ip: IpAddr = ip.parse().expect("ip");
        let value = ip_value(ip);
        let peer = Peer {
            ip,
            ip_value: &value,
            tls: false,
            trusted,
        };
        let host = host.map(|h| HeaderValue::from_str(h).expect("host"));
        prepare_upstream_request(map, peer, host.as_ref(), Underscores::Drop).insert_into(map);
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
    fn headers_spelled_with_underscores_are_dropped_unless_kept() {
        let sent = [
            ("x_real_ip", "6.6.6.6"),
            ("transfer_encoding", "chunked"),
            ("x-ok", "1"),
            ("connection", "close"),
        ];
        let mut map = headers(&sent);
        rewrite(&mut map, "192.0.2.7", &[], None);
        assert!(
            map.keys().all(|name| !name.as_str().contains('_')),
            "{map:?}"
        );
        assert_eq!(get(&map, "x-ok"), Some("1"));
        assert_eq!(get(&map, "x-real-ip"), Some("192.0.2.7"));
        assert_eq!(get(&map, "connection"), None);

        let mut map = headers(&sent);
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        let value = ip_value(ip);
        let peer = Peer {
            ip,
            ip_value: &value,
            tls: false,
            trusted: &[],
        };
        prepare_upstream_request(&mut map, peer, None, Underscores::Keep);
        assert_eq!(get(&map, "x_real_ip"), Some("6.6.6.6"));
        assert_eq!(get(&map, "transfer_encoding"), Some("chunked"));
        assert_eq!(get(&map, "connection"), None);
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
        rewrite(&mut map, "192.0.2.7", &[], Some("site.test"));
        assert_eq!(get(&map, "x-real-ip"), Some("192.0.2.7"));
        assert_eq!(get(&map, "x-forwarded-for"), Some("192.0.2.7"));
        assert_eq!(get(&map, "x-forwarded-proto"), Some("http"));
        assert_eq!(get(&map, "x-forwarded-host"), Some("site.test"));
        assert_eq!(get(&map, "host"), Some("site.test"));
    }

    #[test]
    fn the_forwarding_headers_stay_out_of_the_map_and_are_read_from_beside_it() {
        let mut map = headers(&[
            ("x-real-ip", "6.6.6.6"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil"),
            ("x-user", "alice"),
        ]);
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        let value = ip_value(ip);
        let peer = Peer {
            ip,
            ip_value: &value,
            tls: true,
            trusted: &[],
        };
        let host = HeaderValue::from_static("site.test");
        let fwd = prepare_upstream_request(&mut map, peer, Some(&host), Underscores::Drop);
        assert_eq!(map.len(), 1, "{map:?}");
        let read = |name: &'static str| fwd.get(&map, &HeaderName::from_static(name)).cloned();
        assert_eq!(read("x-real-ip"), Some(value.clone()));
        assert_eq!(read("x-forwarded-for"), Some(value.clone()));
        assert_eq!(
            read("x-forwarded-proto"),
            Some(HeaderValue::from_static("https"))
        );
        assert_eq!(read("x-forwarded-host"), Some(host));
        assert_eq!(read("x-user"), Some(HeaderValue::from_static("alice")));
        let names: Vec<&str> = fwd.fields().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "x-real-ip",
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-forwarded-host"
            ]
        );
    }

    #[test]
    fn trusted_proxy_chain_is_appended_and_real_ip_found() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let mut map = headers(&[
            ("x-forwarded-for", "203.0.113.9, 10.1.1.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "front.test"),
        ]);
        rewrite(&mut map, "10.0.0.2", &trusted, Some("back.test"));
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
        rewrite(&mut map, "10.0.0.2", &trusted, None);
        assert_eq!(get(&map, "x-forwarded-for"), Some("10.0.0.2"));
        assert_eq!(get(&map, "x-real-ip"), Some("10.0.0.2"));
        assert_eq!(get(&map, "x-forwarded-host"), None);
    }

    #[test]
    fn the_resolved_client_is_the_one_x_real_ip_names() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let cases = [
            ("192.0.2.7", "6.6.6.6", &trusted[..]),
            ("10.0.0.2", "203.0.113.9, 10.1.1.1", &trusted[..]),
            ("10.0.0.2", "10.0.0.5, 10.0.0.6", &trusted[..]),
            ("10.0.0.2", "garbage", &trusted[..]),
            ("10.0.0.2", "203.0.113.9", &[][..]),
        ];
        for (peer_ip, xff, trusted) in cases {
            let ip: IpAddr = peer_ip.parse().expect("ip");
            let value = ip_value(ip);
            let peer = Peer {
                ip,
                ip_value: &value,
                tls: false,
                trusted,
            };
            let mut map = headers(&[("x-forwarded-for", xff)]);
            let resolved = client_ip(&map, &peer);
            prepare_upstream_request(&mut map, peer, None, Underscores::Drop).insert_into(&mut map);
            assert_eq!(
                get(&map, "x-real-ip"),
                Some(resolved.to_string().as_str()),
                "{peer_ip} {xff}"
            );
        }
    }

    proptest::proptest! {
        /// A number is what `u64` parses, signs aside.
        #[test]
        fn decimals_are_what_u64_parses(text in "[0-9]{1,22}|[0-9+ ,a]{0,5}") {
            let parses = !text.starts_with('+') && !text.is_empty() && text.parse::<u64>().is_ok();
            let expected = parses.then(|| text.parse::<u64>().ok()).flatten();
            proptest::prop_assert_eq!(decimal(text.as_bytes()), expected);
        }
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
