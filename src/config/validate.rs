//! The validating conversion from raw structs to the domain types: defaults,
//! required lists, uniqueness and references between sections. Single values
//! are checked in `values`.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::error::ConfigError;
use super::header_rules::{header_rules, Side};
use super::model::*;
use super::raw::*;
use super::values::{cidr, host_pattern, invalid_addr, path, Cx};

/// hyper cannot read a request head with a buffer smaller than this.
const MIN_HEADER_BUFFER: u64 = 8192;
/// The most `max_headers` may be: hyper allocates room for this many
/// headers for every request head it reads.
const MAX_MAX_HEADERS: i64 = 1000;

/// Validates `raw`, parsed from `source`; `file` only names the file in errors.
///
/// Every check runs even after one fails, so the error lists every mistake
/// in the file, section by section ([server], [admin], [log], upstreams,
/// routes): the first is the one weir reported when it stopped at one. A check
/// that depends on another (duplicate listeners on valid addresses, a
/// backup-only pool of valid servers) runs only on values that passed.
///
/// `credentials` is systemd's credentials folder (`$CREDENTIALS_DIRECTORY`), if any.
pub(crate) fn validate(
    raw: RawConfig,
    source: &str,
    file: &Path,
    credentials: Option<&Path>,
) -> Result<Config, ConfigError> {
    let mut cx = Cx::new(source, file, credentials);
    let server = raw.server.map(|raw| server(&mut cx, raw));
    let listen = server.as_ref().map_or(&[][..], |s| s.listen.as_slice());
    let admin = raw.admin.and_then(|raw| admin(&mut cx, raw, listen));
    let log = log(&mut cx, raw.log);
    let resolver = super::dns::resolver(&mut cx, raw.resolver.as_ref());
    let upstreams = upstreams(&mut cx, raw.upstream);
    let cache = raw.cache.map(|raw| cache(&mut cx, raw));
    let redis = raw.redis.as_ref().and_then(|r| redis(&mut cx, r));
    let request_id = server.as_ref().and_then(|s| s.request_id.as_ref());
    let routes = routes(
        &mut cx,
        raw.route,
        &upstreams,
        &cache,
        raw.redis.is_some(),
        request_id,
    );
    let Some(server) = server else {
        // Reported first, as before validation went on past a mistake.
        let missing = cx.err(
            0..0,
            "server.listen",
            "at least one listener is required, e.g. [server] listen = [\"0.0.0.0:80\"]",
        );
        return Err(cx.fail(missing));
    };
    cx.finish(Config {
        server,
        admin,
        log,
        resolver,
        upstreams,
        routes,
        cache,
        redis,
    })
}

fn cache(cx: &mut Cx<'_>, raw: RawCache) -> CacheSettings {
    let memory = cx.keep(cx.size(raw.memory.as_ref(), "cache.memory"));
    let max_entry_size = cx.keep(cx.size(raw.max_entry_size.as_ref(), "cache.max_entry_size"));
    let lock_timeout = cx.keep(cx.duration(
        raw.lock_timeout.as_ref(),
        DEFAULT_CACHE_LOCK_TIMEOUT,
        "cache.lock_timeout",
    ));
    CacheSettings {
        memory: memory.unwrap_or(DEFAULT_CACHE_MEMORY),
        max_entry_size: max_entry_size.unwrap_or(DEFAULT_CACHE_MAX_ENTRY),
        lock_timeout,
    }
}

/// A route's `cache = { ... }`, which needs `[cache]` (and `[redis]` when shared).
fn route_cache(
    cx: &mut Cx<'_>,
    raw: &Spanned<RawRouteCache>,
    i: usize,
    cache: &Option<CacheSettings>,
    has_redis: bool,
) -> Option<RouteCacheConfig> {
    let r = raw.get_ref();
    if cache.is_none() {
        cx.record(cx.err(
            raw.span(),
            &format_args!("route[{i}].cache"),
            "needs a [cache] section, e.g. [cache] memory = \"256MiB\"",
        ));
    }
    if r.shared && !has_redis {
        cx.record(cx.err(
            raw.span(),
            &format_args!("route[{i}].cache.shared"),
            "needs a [redis] section with url",
        ));
    }
    let ttl = cx.keep(cx.optional_duration(r.ttl.as_ref(), &format_args!("route[{i}].cache.ttl")));
    let stale_if_error = cx.keep(cx.optional_duration(
        r.stale_if_error.as_ref(),
        &format_args!("route[{i}].cache.stale_if_error"),
    ));
    let stale_while_revalidate = cx.keep(cx.optional_duration(
        r.stale_while_revalidate.as_ref(),
        &format_args!("route[{i}].cache.stale_while_revalidate"),
    ));
    Some(RouteCacheConfig {
        ttl,
        stale_if_error: stale_if_error.unwrap_or_default(),
        stale_while_revalidate: stale_while_revalidate.unwrap_or_default(),
        shared: r.shared,
    })
}

/// `[redis]`: the URL is parsed here (no connection is made), so a typo is a config error.
fn redis(cx: &mut Cx<'_>, raw: &RawRedis) -> Option<RedisSettings> {
    let url = raw.url.get_ref().trim();
    let parsed = redis::Client::open(url).map(|_| ()).map_err(|e| {
        cx.err(
            raw.url.span(),
            "redis.url",
            format!("invalid Redis URL \"{url}\": {e}; expected e.g. \"redis://127.0.0.1:6379\""),
        )
    });
    let url = cx.check(parsed).map(|()| url.to_owned());
    let timeout = cx.keep(cx.duration(
        raw.timeout.as_ref(),
        Duration::from_millis(100),
        "redis.timeout",
    ));
    Some(RedisSettings {
        url: url?,
        fail: match raw.fail {
            RawRedisFail::Open => RedisFail::Open,
            RawRedisFail::Closed => RedisFail::Closed,
        },
        timeout,
    })
}

/// A route's `rate_limit`; `global` needs `[redis]`.
fn rate_limit(
    cx: &mut Cx<'_>,
    raw: &Spanned<Table<RawRateLimit>>,
    key: &str,
    has_redis: bool,
) -> Option<RateLimitConfig> {
    let table = &raw.get_ref().0;
    let k = |field: &str| format!("{key}.{field}");
    let requests: Option<u32> = cx.check(cx.int(
        Some(&table.requests),
        0,
        (1, Some(i64::from(u32::MAX))),
        &k("requests"),
    ));
    let per = cx.check(cx.duration(Some(&table.per), Duration::ZERO, &k("per")));
    let burst: Option<Option<u32>> = cx.check(
        table
            .burst
            .as_ref()
            .map(|b| cx.int(Some(b), 0, (1, Some(i64::from(u32::MAX))), &k("burst")))
            .transpose(),
    );
    let limit_key = match &table.key {
        None => Some(LimitKey::Ip),
        Some(value) => {
            let text = value.get_ref().as_str();
            let parsed = match text.split_once(':') {
                None if text == "ip" => Some(LimitKey::Ip),
                Some(("header", name)) => http::HeaderName::from_bytes(name.as_bytes())
                    .ok()
                    .map(LimitKey::Header),
                _ => None,
            };
            if parsed.is_none() {
                cx.record(cx.err(
                    value.span(),
                    &k("key"),
                    format!("invalid key \"{text}\": expected ip or header:NAME"),
                ));
            }
            parsed
        }
    };
    let scope = match &table.scope {
        Some(s) if *s.get_ref() == RawScope::Global => {
            if !has_redis {
                cx.record(cx.err(
                    s.span(),
                    &k("scope"),
                    "scope = \"global\" needs a [redis] section with its url",
                ));
                return None;
            }
            LimitScope::Global
        }
        _ => LimitScope::Local,
    };
    let requests = requests?;
    Some(RateLimitConfig {
        requests,
        per: per?,
        burst: burst?.unwrap_or(requests),
        key: limit_key?,
        scope,
    })
}

fn server(cx: &mut Cx<'_>, raw: RawServer) -> ServerSettings {
    // Field by field in the order of the file's sections, so errors come out so.
    let proxy = ProxyDefault {
        on: raw.proxy_protocol.as_ref().is_some_and(|p| *p.get_ref()),
        trusted: !raw.trusted_proxies.is_empty(),
    };
    if let Some(on) = raw
        .proxy_protocol
        .as_ref()
        .filter(|_| proxy.on && !proxy.trusted)
    {
        cx.record(cx.err(on.span(), "server.proxy_protocol", PROXY_NEEDS_TRUST));
    }
    ServerSettings {
        listen: listeners(cx, &raw.listen, proxy),
        threads: cx.keep(cx.int(raw.threads.as_ref(), 0, (0, None), "server.threads")),
        max_connections: cx.keep(cx.int(
            raw.max_connections.as_ref(),
            20_000,
            (1, None),
            "server.max_connections",
        )),
        shutdown_timeout: cx.keep(cx.duration(
            raw.shutdown_timeout.as_ref(),
            Duration::from_secs(30),
            "server.shutdown_timeout",
        )),
        trusted_proxies: trusted_proxies(cx, &raw.trusted_proxies),
        header_read_timeout: cx.keep(cx.duration(
            raw.header_read_timeout.as_ref(),
            Duration::from_secs(10),
            "server.header_read_timeout",
        )),
        idle_timeout: cx.keep(cx.duration(
            raw.idle_timeout.as_ref(),
            Duration::from_secs(60),
            "server.idle_timeout",
        )),
        max_header_size: cx.keep(max_header_size(cx, raw.max_header_size.as_ref())),
        max_headers: cx.keep(cx.int(
            raw.max_headers.as_ref(),
            DEFAULT_MAX_HEADERS,
            (1, Some(MAX_MAX_HEADERS)),
            "server.max_headers",
        )),
        max_body_size: cx.keep(cx.size(raw.max_body_size.as_ref(), "server.max_body_size")),
        body_read_timeout: cx.keep(cx.duration(
            raw.body_read_timeout.as_ref(),
            Duration::from_secs(60),
            "server.body_read_timeout",
        )),
        tunnel_idle_timeout: cx.keep(cx.duration(
            raw.tunnel_idle_timeout.as_ref(),
            Duration::from_secs(3600),
            "server.tunnel_idle_timeout",
        )),
        underscores_in_headers: raw.underscores_in_headers.unwrap_or(false),
        request_id: raw
            .request_id
            .as_ref()
            .and_then(|name| cx.check(request_id(cx, name))),
    }
}

/// `[server] proxy_protocol`, which listeners without their own key take,
/// and whether `trusted_proxies` names any peer to read the header from.
#[derive(Debug, Clone, Copy)]
struct ProxyDefault {
    on: bool,
    trusted: bool,
}

/// Why `proxy_protocol = true` needs `trusted_proxies`.
const PROXY_NEEDS_TRUST: &str = "needs trusted_proxies: PROXY headers are read only from trusted peers, so every connection would be refused";

/// Headers weir writes itself, or that frame the message: a request id
/// under one of these names would clash with them.
const RESERVED_HEADERS: [&str; 12] = [
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "keep-alive",
    "x-real-ip",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// `[server] request_id`: a header name weir does not already own.
fn request_id(cx: &Cx<'_>, raw: &Spanned<String>) -> Result<http::HeaderName, ConfigError> {
    let key = "server.request_id";
    let text = raw.get_ref().trim();
    let name = http::HeaderName::from_bytes(text.as_bytes()).map_err(|_| {
        cx.err(
            raw.span(),
            key,
            format!("invalid header name \"{text}\": expected a name such as X-Request-Id"),
        )
    })?;
    if name.as_str().contains('_') {
        return Err(cx.err(
            raw.span(),
            key,
            format!("\"{text}\" holds an underscore, and such request headers are not forwarded (underscores_in_headers); use dashes"),
        ));
    }
    if RESERVED_HEADERS.contains(&name.as_str()) {
        return Err(cx.err(
            raw.span(),
            key,
            format!("\"{text}\" is a header weir sets or frames messages with; use another name such as X-Request-Id"),
        ));
    }
    Ok(name)
}

fn trusted_proxies(cx: &mut Cx<'_>, raw: &[Spanned<String>]) -> Vec<ipnet::IpNet> {
    let mut nets = Vec::with_capacity(raw.len());
    for (i, value) in raw.iter().enumerate() {
        let net = cidr(cx, value, &format_args!("server.trusted_proxies[{i}]"));
        nets.extend(cx.check(net));
    }
    nets
}

/// `[server] listen`, one listener or a list; a single one is keyed
/// `server.listen`, one of a list `server.listen[i]`.
fn listeners(
    cx: &mut Cx<'_>,
    raw: &Spanned<RawListen>,
    proxy: ProxyDefault,
) -> Vec<ListenerConfig> {
    let entries: Vec<(&AddrOr<RawListener>, Range<usize>, String)> = match raw.get_ref() {
        RawListen::One(one) => vec![(one, raw.span(), "server.listen".to_owned())],
        RawListen::List(list) => {
            if list.is_empty() {
                cx.record(cx.err(
                    raw.span(),
                    "server.listen",
                    "at least one listener is required",
                ));
            }
            list.iter()
                .enumerate()
                .map(|(i, entry)| (entry.get_ref(), entry.span(), format!("server.listen[{i}]")))
                .collect()
        }
    };
    let mut listen: Vec<ListenerConfig> = Vec::with_capacity(entries.len());
    for (entry, span, key) in entries {
        let (listener, key) = match entry {
            AddrOr::Addr(text) => {
                let addr = text
                    .trim()
                    .parse()
                    .map_err(|_| cx.err(span.clone(), &key, invalid_addr(text)));
                let plain = cx.check(addr).map(|addr| ListenerConfig {
                    addr,
                    tls: None,
                    redirect_https: false,
                    proxy_protocol: proxy.on,
                });
                (plain, key)
            }
            AddrOr::Table(table) => {
                let listener = listener_table(cx, table, &key, proxy);
                (listener, format!("{key}.addr"))
            }
        };
        let Some(listener) = listener else {
            continue;
        };
        let addr = listener.addr;
        // Port 0 asks the OS for a fresh port each time, so it never collides.
        if addr.port() != 0 && listen.iter().any(|l| l.addr == addr) {
            cx.record(cx.err(span, &key, format!("duplicate listener {addr}")));
            continue;
        }
        listen.push(listener);
    }
    listen
}

/// The table form of a listener: TLS certificates or an HTTPS redirect.
fn listener_table(
    cx: &mut Cx<'_>,
    table: &RawListener,
    key: &str,
    proxy: ProxyDefault,
) -> Option<ListenerConfig> {
    let addr = cx.check(cx.addr(&table.addr, &format_args!("{key}.addr")));
    let proxy_protocol = match &table.proxy_protocol {
        Some(own) if *own.get_ref() && !proxy.trusted => {
            let key = format!("{key}.proxy_protocol");
            cx.record(cx.err(own.span(), &key, PROXY_NEEDS_TRUST));
            false
        }
        Some(own) => *own.get_ref(),
        None => proxy.on,
    };
    let redirect_https = table.redirect_https.as_ref().is_some_and(|r| *r.get_ref());
    let tls = table
        .tls
        .as_ref()
        .and_then(|tls| tls_settings(cx, tls, redirect_https, key));
    Some(ListenerConfig {
        addr: addr?,
        tls,
        redirect_https,
        proxy_protocol,
    })
}

/// A listener's `tls`: one `{ cert, key }` table or a list of them.
fn tls_settings(
    cx: &mut Cx<'_>,
    tls: &Spanned<OneOrMany<RawCert>>,
    redirect_https: bool,
    key: &str,
) -> Option<TlsSettings> {
    let tls_key = format!("{key}.tls");
    if redirect_https {
        cx.record(cx.err(
            tls.span(),
            &tls_key,
            "a TLS listener cannot also have redirect_https = true",
        ));
        return None;
    }
    let raw = &tls.get_ref().0;
    if raw.is_empty() {
        cx.record(cx.err(
            tls.span(),
            &tls_key,
            "must name at least one certificate: { cert = \"site.pem\", key = \"site.key\" }",
        ));
        return None;
    }
    let mut certs = Vec::with_capacity(raw.len());
    for (j, files) in raw.iter().enumerate() {
        let cert_key = if raw.len() > 1 {
            format!("{tls_key}[{j}]")
        } else {
            tls_key.clone()
        };
        certs.extend(cert_files(cx, files, &cert_key));
    }
    Some(TlsSettings { certs })
}

/// One `{ cert, key }` pair; paths are resolved against the config file's
/// folder, or systemd's credentials folder when they start with it.
fn cert_files(cx: &mut Cx<'_>, raw: &RawCert, key: &str) -> Option<CertFiles> {
    let file = |cx: &Cx<'_>, value: &Spanned<String>, field: &str| {
        let key = format!("{key}.{field}");
        if value.get_ref().trim().is_empty() {
            return Err(cx.err(value.span(), &key, "must be a file path"));
        }
        let path = cx.credential_path(value, &key)?;
        let (line, column) = super::error::line_column(cx.source, value.span().start);
        let location = Location {
            file: cx.file.to_path_buf(),
            line,
            column,
            key,
        };
        Ok((path, location))
    };
    let cert = cx.check(file(cx, &raw.cert, "cert"));
    let key = cx.check(file(cx, &raw.key, "key"));
    let ((cert, cert_at), (key, key_at)) = (cert?, key?);
    Some(CertFiles {
        cert,
        key,
        cert_at,
        key_at,
    })
}

fn max_header_size(cx: &Cx<'_>, raw: Option<&Spanned<RawSize>>) -> Result<usize, ConfigError> {
    let key = "server.max_header_size";
    let size = cx.size(raw, key)?.unwrap_or(64 * 1024);
    match (raw, size < MIN_HEADER_BUFFER) {
        (Some(value), true) => Err(cx.err(
            value.span(),
            key,
            format!("must be at least {MIN_HEADER_BUFFER} bytes"),
        )),
        _ => Ok(usize::try_from(size).unwrap_or(usize::MAX)),
    }
}

fn admin(cx: &mut Cx<'_>, raw: RawAdmin, listeners: &[ListenerConfig]) -> Option<AdminSettings> {
    let listen = cx.check(cx.addr(&raw.listen, "admin.listen"));
    if let Some(addr) = listen {
        if addr.port() != 0 && listeners.iter().any(|l| l.addr == addr) {
            cx.record(cx.err(
                raw.listen.span(),
                "admin.listen",
                format!("{addr} is already a server listener"),
            ));
        }
    }
    let token = match raw.token {
        Some(t) if t.get_ref().is_empty() => {
            cx.record(cx.err(t.span(), "admin.token", "must not be empty"));
            None
        }
        t => t.map(Spanned::into_inner),
    };
    Some(AdminSettings {
        listen: listen?,
        token,
    })
}

fn log(cx: &mut Cx<'_>, raw: RawLog) -> LogSettings {
    let access = match raw.access {
        None => AccessLog::Stdout,
        Some(a) => match a.get_ref().as_str() {
            "stdout" => AccessLog::Stdout,
            "off" => AccessLog::Off,
            "" => {
                cx.record(cx.err(
                    a.span(),
                    "log.access",
                    "must be \"stdout\", \"off\" or a file path",
                ));
                AccessLog::Off
            }
            // Like certificate paths: relative to the config file, so the
            // daemon writes to the same file whatever directory it starts in.
            path => AccessLog::File(cx.config_relative(path)),
        },
    };
    LogSettings {
        level: match raw.level {
            RawLogLevel::Error => LogLevel::Error,
            RawLogLevel::Warn => LogLevel::Warn,
            RawLogLevel::Info => LogLevel::Info,
            RawLogLevel::Debug => LogLevel::Debug,
            RawLogLevel::Trace => LogLevel::Trace,
        },
        format: match raw.format {
            RawLogFormat::Text => LogFormat::Text,
            RawLogFormat::Json => LogFormat::Json,
        },
        access,
        access_format: match raw.access_format {
            RawAccessFormat::Combined => AccessFormat::Combined,
            RawAccessFormat::Json => AccessFormat::Json,
        },
    }
}

fn upstreams(cx: &mut Cx<'_>, raw: Vec<Spanned<RawUpstream>>) -> Vec<UpstreamConfig> {
    // Offsets, not lines: counting lines scans the file up to the name, and
    // doing that for every upstream would be quadratic in the file's size.
    let mut first_offset: HashMap<&str, usize> = HashMap::with_capacity(raw.len());
    let mut out = Vec::with_capacity(raw.len());
    for (i, spanned) in raw.iter().enumerate() {
        let up = spanned.get_ref();
        let key = format!("upstream[{i}]");
        let name = up.name.get_ref();
        if name.trim().is_empty() {
            cx.record(cx.err(
                up.name.span(),
                &format_args!("{key}.name"),
                "must not be empty",
            ));
        } else if let Some(&offset) = first_offset.get(name.as_str()) {
            let (line, _) = super::error::line_column(cx.source, offset);
            cx.record(cx.err(
                up.name.span(),
                &format_args!("{key}.name"),
                format!("duplicate upstream name \"{name}\" (first defined on line {line})"),
            ));
        } else {
            first_offset.insert(name, up.name.span().start);
        }
        // Kept even when its name is wrong, so routes to it are not reported too.
        out.push(upstream(cx, up, &key, spanned.span()));
    }
    out
}

fn upstream(cx: &mut Cx<'_>, raw: &RawUpstream, key: &str, span: Range<usize>) -> UpstreamConfig {
    let servers_key = format!("{key}.servers");
    // An upstream has `servers`, `discover` or both.
    let discover = (raw.discover.as_ref())
        .and_then(|d| super::dns::discover(cx, d, &format!("{key}.discover")));
    let (entries, list_span) = match &raw.servers {
        Some(list) => (list.get_ref().as_slice(), list.span()),
        None => (&[][..], span.clone()),
    };
    if raw.servers.is_none() && raw.discover.is_none() {
        cx.record(cx.err(
            span,
            key,
            "missing field `servers`: an upstream needs `servers`, `discover` or both",
        ));
    } else if entries.is_empty() && raw.discover.is_none() {
        cx.record(cx.err(
            list_span.clone(),
            &servers_key,
            "must list at least one server",
        ));
    }
    let mut servers: Vec<ServerConfig> = Vec::with_capacity(entries.len());
    let mut dns: Vec<DnsSource> = Vec::new();
    let mut seen: HashSet<std::net::SocketAddr> = HashSet::with_capacity(entries.len());
    for (j, entry) in entries.iter().enumerate() {
        let Some(found) = server_entry(cx, entry, &format_args!("{servers_key}[{j}]")) else {
            continue;
        };
        let duplicate = match &found {
            Ok(server) => (!seen.insert(server.addr)).then(|| server.addr.to_string()),
            Err(source) => dns.contains(source).then(|| source.kind.to_string()),
        };
        if let Some(what) = duplicate {
            cx.record(cx.err(
                entry.span(),
                &format_args!("{servers_key}[{j}]"),
                format!("duplicate server {what} in this upstream"),
            ));
            continue;
        }
        match found {
            Ok(server) => servers.push(server),
            Err(source) => dns.push(source),
        }
    }
    let mut backups = servers
        .iter()
        .map(|s| s.backup)
        .chain(dns.iter().map(|d| d.backup));
    let valid = servers.len() + dns.len();
    // Only when every entry is valid: an invalid one may have been the primary.
    // SRV records may hold primaries: with `discover`, backups alone are fine.
    if valid == entries.len() && valid > 0 && discover.is_none() && backups.all(|b| b) {
        cx.record(cx.err(
            list_span,
            &servers_key,
            "at least one server must not be a backup",
        ));
    }
    let k = |field: &str| format!("{key}.{field}");
    let balance = match raw.balance {
        RawBalance::RoundRobin => Balance::RoundRobin,
        RawBalance::LeastConn => Balance::LeastConn,
        RawBalance::Hash => Balance::Hash,
        RawBalance::RandomTwo => Balance::RandomTwo,
    };
    UpstreamConfig {
        name: raw.name.get_ref().clone(),
        balance,
        hash_key: hash_key(cx, raw, balance, &k("hash_key")),
        sticky: raw
            .sticky
            .as_ref()
            .and_then(|s| sticky(cx, s, &k("sticky"))),
        protocol: match raw.protocol {
            RawProtocol::Http1 => UpstreamProtocol::Http1,
            RawProtocol::H2c => UpstreamProtocol::H2c,
        },
        servers,
        dns: dns
            .into_iter()
            .chain(discover.map(|kind| DnsSource {
                kind,
                weight: 1,
                backup: false,
            }))
            .collect(),
        connect_timeout: cx.keep(cx.duration(
            raw.connect_timeout.as_ref(),
            Duration::from_secs(2),
            &k("connect_timeout"),
        )),
        response_timeout: cx.keep(cx.duration(
            raw.response_timeout.as_ref(),
            Duration::from_secs(60),
            &k("response_timeout"),
        )),
        keepalive: cx.keep(cx.int(raw.keepalive.as_ref(), 64, (0, None), &k("keepalive"))),
        max_fails: cx.keep(cx.int(raw.max_fails.as_ref(), 1, (0, None), &k("max_fails"))),
        fail_timeout: cx.keep(cx.duration(
            raw.fail_timeout.as_ref(),
            Duration::from_secs(10),
            &k("fail_timeout"),
        )),
        retries: cx.keep(cx.int(raw.retries.as_ref(), 2, (0, None), &k("retries"))),
        retry_timeout: cx
            .keep(cx.optional_duration(raw.retry_timeout.as_ref(), &k("retry_timeout"))),
        request_timeout: cx
            .keep(cx.optional_duration(raw.request_timeout.as_ref(), &k("request_timeout"))),
        fail_on_status: statuses(cx, &raw.fail_on_status, &k("fail_on_status")),
        slow_start: cx.keep(cx.optional_duration(raw.slow_start.as_ref(), &k("slow_start"))),
        health_check: raw
            .health_check
            .as_ref()
            .map(|hc| health_check(cx, &hc.get_ref().0, &k("health_check"))),
    }
}

/// `hash_key`: only with `balance = "hash"`, where it defaults to the client address.
fn hash_key(cx: &mut Cx<'_>, raw: &RawUpstream, balance: Balance, key: &str) -> Option<HashKey> {
    let Some(value) = &raw.hash_key else {
        return (balance == Balance::Hash).then_some(HashKey::Ip);
    };
    if balance != Balance::Hash {
        cx.record(cx.err(value.span(), key, "needs balance = \"hash\""));
        return None;
    }
    let text = value.get_ref().as_str();
    let parsed = match text.split_once(':') {
        None => match text {
            "ip" => Some(HashKey::Ip),
            "uri" => Some(HashKey::Uri),
            "path" => Some(HashKey::Path),
            _ => None,
        },
        Some(("header", name)) => http::HeaderName::from_bytes(name.as_bytes())
            .ok()
            .map(HashKey::Header),
        Some(("cookie", name)) => {
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
            token.then(|| HashKey::Cookie(name.to_string()))
        }
        Some(_) => None,
    };
    if parsed.is_none() {
        cx.record(cx.err(
            value.span(),
            key,
            format!(
                "invalid hash_key \"{text}\": expected ip, uri, path, header:NAME or cookie:NAME"
            ),
        ));
    }
    parsed
}

fn sticky(cx: &mut Cx<'_>, raw: &Spanned<RawSticky>, key: &str) -> Option<StickyConfig> {
    let table = raw.get_ref();
    let cookie = table
        .cookie
        .as_ref()
        .map_or("weir_server", |c| c.get_ref().as_str());
    // A cookie name is an RFC 9110 token.
    let token = !cookie.is_empty()
        && cookie
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
    if !token {
        let span = table.cookie.as_ref().map_or(raw.span(), |c| c.span());
        cx.record(cx.err(
            span,
            &format_args!("{key}.cookie"),
            format!("invalid cookie name \"{cookie}\""),
        ));
        return None;
    }
    let same_site = match table.same_site {
        RawSameSite::Lax => "Lax",
        RawSameSite::Strict => "Strict",
        RawSameSite::None => "None",
    };
    if same_site == "None" && !table.secure {
        // Browsers refuse `SameSite=None` without `Secure`.
        cx.record(cx.err(
            raw.span(),
            &format_args!("{key}.same_site"),
            "same_site = \"none\" needs secure = true",
        ));
        return None;
    }
    let max_age =
        cx.check(cx.optional_duration(table.max_age.as_ref(), &format_args!("{key}.max_age")))?;
    Some(StickyConfig {
        cookie: cookie.to_string(),
        max_age,
        secure: table.secure,
        http_only: table.http_only.unwrap_or(true),
        same_site,
    })
}

/// One `servers` entry: a server (`Ok`), or a name that stands for the
/// servers DNS gives it (`Err`).
fn server_entry(
    cx: &mut Cx<'_>,
    entry: &Spanned<AddrOr<RawServerEntry>>,
    key: &(impl Display + ?Sized),
) -> Option<Result<ServerConfig, DnsSource>> {
    let target = |cx: &mut Cx<'_>, text: &str, span: Range<usize>, key: &dyn Display| {
        let target = super::dns::server_target(text)
            .ok_or_else(|| cx.err(span, key, super::dns::invalid_server(text)));
        cx.check(target)
    };
    let (addr, weight, backup) = match entry.get_ref() {
        AddrOr::Addr(text) => (target(cx, text, entry.span(), &key), 1, false),
        AddrOr::Table(t) => {
            let addr_key = format!("{key}.addr");
            let addr = target(cx, t.addr.get_ref(), t.addr.span(), &addr_key);
            let weight = cx.keep(cx.int(
                t.weight.as_ref(),
                1,
                (1, Some(256)),
                &format_args!("{key}.weight"),
            ));
            (addr, weight, t.backup)
        }
    };
    let (addr, port) = match addr? {
        super::dns::Target::Ip(addr) => (Ok(addr), addr.port()),
        super::dns::Target::Name(name, port) => (Err(DnsKind::Host { name, port }), port),
    };
    if port == 0 {
        let shown = addr
            .as_ref()
            .map_or_else(ToString::to_string, ToString::to_string);
        cx.record(cx.err(
            entry.span(),
            key,
            format!("invalid address \"{shown}\": port 0 cannot be connected to"),
        ));
        return None;
    }
    Some(match addr {
        Ok(addr) => Ok(ServerConfig {
            addr,
            weight,
            backup,
            from: None,
        }),
        Err(kind) => Err(DnsSource {
            kind,
            weight,
            backup,
        }),
    })
}

fn health_check(cx: &mut Cx<'_>, raw: &RawHealthCheck, key: &str) -> HealthCheckConfig {
    let k = |field: &str| format!("{key}.{field}");
    let host = match &raw.host {
        Some(h) if h.get_ref().trim().is_empty() => {
            cx.record(cx.err(h.span(), &k("host"), "must not be empty"));
            None
        }
        h => h.as_ref().map(|h| h.get_ref().trim().to_owned()),
    };
    HealthCheckConfig {
        path: cx.keep(path(cx, &raw.path, &k("path"))),
        interval: cx.keep(cx.duration(
            raw.interval.as_ref(),
            Duration::from_secs(2),
            &k("interval"),
        )),
        timeout: cx.keep(cx.duration(raw.timeout.as_ref(), Duration::from_secs(1), &k("timeout"))),
        rise: cx.keep(cx.int(raw.rise.as_ref(), 2, (1, None), &k("rise"))),
        fall: cx.keep(cx.int(raw.fall.as_ref(), 3, (1, None), &k("fall"))),
        status: statuses(cx, &raw.status, &k("status")),
        host,
    }
}

/// A list of HTTP status codes, each 100..=599.
fn statuses(cx: &mut Cx<'_>, raw: &[Spanned<i64>], key: &str) -> Vec<u16> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, code) in raw.iter().enumerate() {
        let code = cx.int(
            Some(code),
            0u16,
            (100, Some(599)),
            &format_args!("{key}[{i}]"),
        );
        out.extend(cx.check(code));
    }
    out
}

fn routes(
    cx: &mut Cx<'_>,
    raw: Vec<Spanned<RawRoute>>,
    upstreams: &[UpstreamConfig],
    cache: &Option<CacheSettings>,
    has_redis: bool,
    request_id: Option<&http::HeaderName>,
) -> Vec<RouteConfig> {
    if raw.is_empty() {
        cx.record(cx.err(0..0, "route", "at least one [[route]] is required"));
    }
    let names: HashSet<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
    let mut out = Vec::with_capacity(raw.len());
    // Whether a route's host and path are valid, so duplicates can be looked for.
    let mut comparable = Vec::with_capacity(raw.len());
    for (i, spanned) in raw.iter().enumerate() {
        let r = spanned.get_ref();
        let host = match &r.host {
            None => Some(None),
            Some(h) => {
                let host = host_pattern(h.get_ref())
                    .map_err(|m| cx.err(h.span(), &format_args!("route[{i}].host"), m));
                cx.check(host).map(Some)
            }
        };
        let path = match &r.path {
            Some(p) => cx.check(path(cx, p, &format_args!("route[{i}].path"))),
            None => Some("/".to_owned()),
        };
        let upstream = r.upstream.get_ref();
        if !names.contains(upstream.as_str()) {
            cx.record(cx.err(
                r.upstream.span(),
                &format_args!("route[{i}].upstream"),
                format!("no upstream named \"{upstream}\""),
            ));
        }
        let request_timeout = cx.keep(cx.optional_duration(
            r.request_timeout.as_ref(),
            &format_args!("route[{i}].request_timeout"),
        ));
        let route_cache = r
            .cache
            .as_ref()
            .and_then(|c| route_cache(cx, c, i, cache, has_redis));
        if let (Some(c), Some(true)) = (&r.cache, r.compress) {
            cx.record(cx.err(
                c.span(),
                &format_args!("route[{i}].compress"),
                "compress and cache on one route are not supported yet (cached answers \
                 would go out uncompressed); compress in the app or drop one of them",
            ));
        }
        let rate_limit = r
            .rate_limit
            .as_ref()
            .and_then(|rl| rate_limit(cx, rl, &format!("route[{i}].rate_limit"), has_redis));
        comparable.push(host.is_some() && path.is_some());
        let allow = r
            .allow
            .as_ref()
            .map(|list| networks(cx, list, &format_args!("route[{i}].allow")));
        let deny = r.deny.as_ref().map_or_else(Vec::new, |list| {
            networks(cx, list, &format_args!("route[{i}].deny"))
        });
        out.push(RouteConfig {
            host: host.flatten(),
            path: path.unwrap_or_default(),
            upstream: upstream.clone(),
            request_timeout,
            cache: route_cache,
            rate_limit,
            strip_prefix: r.strip_prefix.unwrap_or(false),
            compress: r.compress.unwrap_or(false),
            request_headers: header_rules(
                cx,
                r.request_headers.as_ref(),
                Side::Request,
                request_id,
                &format_args!("route[{i}].request_headers"),
            ),
            response_headers: header_rules(
                cx,
                r.response_headers.as_ref(),
                Side::Response,
                request_id,
                &format_args!("route[{i}].response_headers"),
            ),
            access: crate::access_list::AccessList::new(allow, deny),
        });
    }
    // Duplicates among the valid routes: keyed by reference, not by copies.
    let mut seen: HashMap<(Option<&HostPattern>, &str), usize> = HashMap::with_capacity(out.len());
    for (i, ((route, spanned), ok)) in out.iter().zip(&raw).zip(&comparable).enumerate() {
        if !ok {
            continue;
        }
        match seen.entry((route.host.as_ref(), route.path.as_str())) {
            Entry::Vacant(first) => {
                first.insert(i);
            }
            Entry::Occupied(first) => {
                // Point at the value that makes the route a duplicate: its path, else its host.
                let r = spanned.get_ref();
                let span = r
                    .path
                    .as_ref()
                    .or(r.host.as_ref())
                    .map_or_else(|| spanned.span(), Spanned::span);
                cx.record(cx.err(
                    span,
                    &format_args!("route[{i}]"),
                    format!(
                        "duplicate route: same host and path as route[{}]",
                        first.get()
                    ),
                ));
            }
        }
    }
    out
}

/// A route's `allow` or `deny`: networks (CIDR) or single addresses, at
/// least one, since an empty `allow` would refuse every client.
fn networks(
    cx: &mut Cx<'_>,
    raw: &Spanned<Vec<Spanned<String>>>,
    key: &(impl Display + ?Sized),
) -> Vec<ipnet::IpNet> {
    if raw.get_ref().is_empty() {
        cx.record(cx.err(
            raw.span(),
            key,
            "must list at least one network, e.g. [\"10.0.0.0/8\"]; remove the key to serve every client",
        ));
    }
    let mut nets = Vec::with_capacity(raw.get_ref().len());
    for (i, value) in raw.get_ref().iter().enumerate() {
        let net = cidr(cx, value, &format_args!("{key}[{i}]"));
        nets.extend(cx.check(net));
    }
    nets
}
