//! The DNS parts of the file: `[resolver]`, `name:port` entries in `servers`
//! and `discover`. Only their spelling is checked here; looking the names up
//! is I/O and happens apart from parsing, in `discovery`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use toml::Spanned;

use super::model::{DnsKind, ResolverSettings};
use super::raw::RawResolver;
use super::values::Cx;

/// What a `servers` entry's address names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// `"127.0.0.1:3000"`, `"[::1]:3000"`.
    Ip(SocketAddr),
    /// `"app:3000"`: every address of the name, on that port.
    Name(String, u16),
}

/// Reads a `servers` entry: an `ip:port`, else a `name:port`.
pub(super) fn server_target(text: &str) -> Option<Target> {
    let text = text.trim();
    if let Ok(addr) = text.parse() {
        return Some(Target::Ip(addr));
    }
    let (name, port) = text.rsplit_once(':')?;
    let port = port.parse().ok()?;
    is_dns_name(name).then(|| Target::Name(name.to_ascii_lowercase(), port))
}

/// The message for a `servers` entry that is neither `ip:port` nor `name:port`.
pub(super) fn invalid_server(text: &str) -> String {
    format!(
        "invalid address \"{text}\": expected IP:port or name:port, such as 127.0.0.1:3000 or app:3000"
    )
}

/// Whether `name` is a DNS name weir can look up: dot-separated labels of
/// letters, digits, `-` and `_` (SRV names start with `_http._tcp.`), at most
/// 63 bytes each and 253 in all, an optional final dot. An all-numeric last
/// label is refused, so that a mistyped IP address (`127.0.0.1:99999`,
/// `10.0.0:80`) is reported as such instead of being looked up.
pub(super) fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let last_numeric = name
        .rsplit('.')
        .next()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()));
    name.split('.').all(label_ok) && !last_numeric
}

/// An upstream's `discover`: an SRV name.
pub(super) fn discover(cx: &mut Cx<'_>, value: &Spanned<String>, key: &str) -> Option<DnsKind> {
    let name = value.get_ref().trim();
    if !is_dns_name(name) {
        cx.record(cx.err(
            value.span(),
            key,
            format!("invalid SRV name \"{name}\": expected a DNS name such as _http._tcp.app.service.consul"),
        ));
        return None;
    }
    Some(DnsKind::Srv {
        name: name.to_ascii_lowercase(),
    })
}

/// `[resolver]`; its defaults when the table is absent.
pub(super) fn resolver(cx: &mut Cx<'_>, raw: Option<&RawResolver>) -> ResolverSettings {
    let defaults = ResolverSettings::default();
    let Some(raw) = raw else {
        return defaults;
    };
    let mut nameservers = Vec::with_capacity(raw.nameservers.len());
    for (i, value) in raw.nameservers.iter().enumerate() {
        let text = value.get_ref().trim();
        // A bare IP means the standard DNS port, as in resolv.conf.
        let addr = text
            .parse::<SocketAddr>()
            .ok()
            .or_else(|| {
                text.parse::<IpAddr>()
                    .ok()
                    .map(|ip| SocketAddr::new(ip, 53))
            })
            .filter(|addr| addr.port() != 0);
        match addr {
            Some(addr) => nameservers.push(addr),
            None => cx.record(cx.err(
                value.span(),
                &format_args!("resolver.nameservers[{i}]"),
                format!(
                    "invalid address \"{text}\": expected IP or IP:port, such as 127.0.0.1:8600"
                ),
            )),
        }
    }
    let min = cx.check(cx.duration(raw.min_ttl.as_ref(), defaults.min_ttl, "resolver.min_ttl"));
    let max = cx.check(cx.duration(raw.max_ttl.as_ref(), defaults.max_ttl, "resolver.max_ttl"));
    let (min_ttl, max_ttl) = match (min, max) {
        (Some(min), Some(max)) if min > max => {
            let (span, key) = match (&raw.max_ttl, &raw.min_ttl) {
                (Some(v), _) => (v.span(), "resolver.max_ttl"),
                (None, Some(v)) => (v.span(), "resolver.min_ttl"),
                (None, None) => (0..0, "resolver"),
            };
            cx.record(cx.err(span, key, "max_ttl must not be less than min_ttl"));
            (min, max)
        }
        (min, max) => (
            min.unwrap_or(Duration::from_secs(1)),
            max.unwrap_or(Duration::from_secs(60)),
        ),
    };
    ResolverSettings {
        nameservers,
        min_ttl,
        max_ttl,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_addresses_or_names_with_ports() {
        assert_eq!(
            server_target(" 127.0.0.1:3000 "),
            Some(Target::Ip("127.0.0.1:3000".parse().expect("addr")))
        );
        assert_eq!(
            server_target("App.Internal:3000"),
            Some(Target::Name("app.internal".into(), 3000))
        );
        assert_eq!(
            server_target("app:3000"),
            Some(Target::Name("app".into(), 3000))
        );
        assert_eq!(server_target("app."), None);
        for bad in [
            "app",
            "app:",
            "app:99999",
            "127.0.0.1:99999",
            "10.0.0:80",
            "-app:80",
            "a..b:80",
            "a b:80",
            ":80",
            "[::1]:99999",
        ] {
            assert_eq!(server_target(bad), None, "{bad}");
        }
    }

    #[test]
    fn srv_names_may_hold_underscores() {
        assert!(is_dns_name("_http._tcp.app.service.consul"));
        assert!(is_dns_name("app.service.consul."));
        assert!(!is_dns_name(&"a".repeat(64)));
        assert!(!is_dns_name("x.1"));
    }
}
