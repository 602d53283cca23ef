//! The validating conversion from raw structs to the domain types: defaults,
//! required lists, uniqueness and references between sections. Single values
//! are checked in `values`.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::error::ConfigError;
use super::model::*;
use super::raw::*;
use super::values::{cidr, host_pattern, invalid_addr, path, Cx};

/// hyper cannot read a request head with a buffer smaller than this.
const MIN_HEADER_BUFFER: u64 = 8192;

/// Validates `raw`, parsed from `source`; `file` only names the file in errors.
pub(crate) fn validate(raw: RawConfig, source: &str, file: &Path) -> Result<Config, ConfigError> {
    let cx = Cx { source, file };
    let server = server(&cx, raw.server)?;
    let admin = raw.admin.map(|a| admin(&cx, a, &server)).transpose()?;
    let log = log(&cx, raw.log)?;
    let upstreams = upstreams(&cx, raw.upstream)?;
    let routes = routes(&cx, raw.route, &upstreams)?;
    Ok(Config {
        server,
        admin,
        log,
        upstreams,
        routes,
    })
}

fn server(cx: &Cx<'_>, raw: Option<RawServer>) -> Result<ServerSettings, ConfigError> {
    let Some(raw) = raw else {
        return Err(cx.err(
            0..0,
            "server.listen",
            "at least one listener is required, e.g. [server] listen = [\"0.0.0.0:80\"]",
        ));
    };
    if raw.listen.get_ref().is_empty() {
        return Err(cx.err(
            raw.listen.span(),
            "server.listen",
            "at least one listener is required",
        ));
    }
    let mut listen: Vec<ListenerConfig> = Vec::new();
    for (i, entry) in raw.listen.get_ref().iter().enumerate() {
        let key = format!("server.listen[{i}]");
        let (listener, key) = match entry.get_ref() {
            AddrOr::Addr(text) => {
                let addr = text
                    .trim()
                    .parse()
                    .map_err(|_| cx.err(entry.span(), &key, invalid_addr(text)))?;
                let plain = ListenerConfig {
                    addr,
                    tls: None,
                    redirect_https: false,
                };
                (plain, key)
            }
            AddrOr::Table(table) => (listener_table(cx, table, &key)?, format!("{key}.addr")),
        };
        let addr = listener.addr;
        // Port 0 asks the OS for a fresh port each time, so it never collides.
        if addr.port() != 0 && listen.iter().any(|l| l.addr == addr) {
            return Err(cx.err(entry.span(), &key, format!("duplicate listener {addr}")));
        }
        listen.push(listener);
    }

    let mut trusted_proxies = Vec::new();
    for (i, value) in raw.trusted_proxies.iter().enumerate() {
        trusted_proxies.push(cidr(cx, value, &format!("server.trusted_proxies[{i}]"))?);
    }

    Ok(ServerSettings {
        listen,
        threads: cx.int(raw.threads.as_ref(), 0, (0, None), "server.threads")?,
        max_connections: cx.int(
            raw.max_connections.as_ref(),
            20_000,
            (1, None),
            "server.max_connections",
        )?,
        shutdown_timeout: cx.duration(
            raw.shutdown_timeout.as_ref(),
            Duration::from_secs(30),
            "server.shutdown_timeout",
        )?,
        trusted_proxies,
        header_read_timeout: cx.duration(
            raw.header_read_timeout.as_ref(),
            Duration::from_secs(10),
            "server.header_read_timeout",
        )?,
        idle_timeout: cx.duration(
            raw.idle_timeout.as_ref(),
            Duration::from_secs(60),
            "server.idle_timeout",
        )?,
        max_header_size: max_header_size(cx, raw.max_header_size.as_ref())?,
        max_body_size: cx.size(raw.max_body_size.as_ref(), "server.max_body_size")?,
        tunnel_idle_timeout: cx.duration(
            raw.tunnel_idle_timeout.as_ref(),
            Duration::from_secs(3600),
            "server.tunnel_idle_timeout",
        )?,
    })
}

/// The table form of a listener: TLS certificates or an HTTPS redirect.
fn listener_table(
    cx: &Cx<'_>,
    table: &RawListener,
    key: &(impl Display + ?Sized),
) -> Result<ListenerConfig, ConfigError> {
    let addr = cx.addr(&table.addr, &format!("{key}.addr"))?;
    let redirect_https = table.redirect_https.as_ref().is_some_and(|r| *r.get_ref());
    let tls = match &table.tls {
        None => None,
        Some(tls) => {
            let tls_key = format!("{key}.tls");
            if redirect_https {
                return Err(cx.err(
                    tls.span(),
                    &tls_key,
                    "a TLS listener cannot also have redirect_https = true",
                ));
            }
            let many = tls.get_ref().0.len() > 1;
            let mut certs = Vec::new();
            for (j, raw) in tls.get_ref().0.iter().enumerate() {
                let cert_key = if many {
                    format!("{tls_key}[{j}]")
                } else {
                    tls_key.clone()
                };
                certs.push(cert_files(cx, raw, &cert_key)?);
            }
            if certs.is_empty() {
                return Err(cx.err(
                    tls.span(),
                    &tls_key,
                    "must name at least one certificate: { cert = \"site.pem\", key = \"site.key\" }",
                ));
            }
            Some(TlsSettings { certs })
        }
    };
    Ok(ListenerConfig {
        addr,
        tls,
        redirect_https,
    })
}

/// One `{ cert, key }` pair; paths are resolved against the config file's folder.
fn cert_files(
    cx: &Cx<'_>,
    raw: &RawCert,
    key: &(impl Display + ?Sized),
) -> Result<CertFiles, ConfigError> {
    let base = cx.file.parent().unwrap_or_else(|| Path::new(""));
    let file = |value: &Spanned<String>, field: &str| {
        let key = format!("{key}.{field}");
        if value.get_ref().trim().is_empty() {
            return Err(cx.err(value.span(), &key, "must be a file path"));
        }
        let (line, column) = super::error::line_column(cx.source, value.span().start);
        let location = Location {
            file: cx.file.to_path_buf(),
            line,
            column,
            key,
        };
        Ok((base.join(value.get_ref()), location))
    };
    let (cert, cert_at) = file(&raw.cert, "cert")?;
    let (key, key_at) = file(&raw.key, "key")?;
    Ok(CertFiles {
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

fn admin(
    cx: &Cx<'_>,
    raw: RawAdmin,
    server: &ServerSettings,
) -> Result<AdminSettings, ConfigError> {
    let listen = cx.addr(&raw.listen, "admin.listen")?;
    if listen.port() != 0 && server.listen.iter().any(|l| l.addr == listen) {
        return Err(cx.err(
            raw.listen.span(),
            "admin.listen",
            format!("{listen} is already a server listener"),
        ));
    }
    let token = match raw.token {
        Some(t) if t.get_ref().is_empty() => {
            return Err(cx.err(t.span(), "admin.token", "must not be empty"));
        }
        t => t.map(Spanned::into_inner),
    };
    Ok(AdminSettings { listen, token })
}

fn log(cx: &Cx<'_>, raw: RawLog) -> Result<LogSettings, ConfigError> {
    let access = match raw.access {
        None => AccessLog::Stdout,
        Some(a) => match a.get_ref().as_str() {
            "stdout" => AccessLog::Stdout,
            "off" => AccessLog::Off,
            "" => {
                return Err(cx.err(
                    a.span(),
                    "log.access",
                    "must be \"stdout\", \"off\" or a file path",
                ))
            }
            path => AccessLog::File(PathBuf::from(path)),
        },
    };
    Ok(LogSettings {
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
    })
}

fn upstreams(
    cx: &Cx<'_>,
    raw: Vec<Spanned<RawUpstream>>,
) -> Result<Vec<UpstreamConfig>, ConfigError> {
    // Offsets, not lines: counting lines scans the file up to the name, and
    // doing that for every upstream would be quadratic in the file's size.
    let mut first_offset: HashMap<&str, usize> = HashMap::with_capacity(raw.len());
    let mut out = Vec::with_capacity(raw.len());
    for (i, up) in raw.iter().enumerate() {
        let up = up.get_ref();
        let key = format!("upstream[{i}]");
        let name = up.name.get_ref();
        if name.trim().is_empty() {
            return Err(cx.err(up.name.span(), &format!("{key}.name"), "must not be empty"));
        }
        if let Some(&offset) = first_offset.get(name.as_str()) {
            let (line, _) = super::error::line_column(cx.source, offset);
            return Err(cx.err(
                up.name.span(),
                &format!("{key}.name"),
                format!("duplicate upstream name \"{name}\" (first defined on line {line})"),
            ));
        }
        first_offset.insert(name, up.name.span().start);
        out.push(upstream(cx, up, &key)?);
    }
    Ok(out)
}

fn upstream(
    cx: &Cx<'_>,
    raw: &RawUpstream,
    key: &(impl Display + ?Sized),
) -> Result<UpstreamConfig, ConfigError> {
    let servers_key = format!("{key}.servers");
    if raw.servers.get_ref().is_empty() {
        return Err(cx.err(
            raw.servers.span(),
            &servers_key,
            "must list at least one server",
        ));
    }
    let entries = raw.servers.get_ref();
    let mut servers: Vec<ServerConfig> = Vec::with_capacity(entries.len());
    let mut seen: HashSet<std::net::SocketAddr> = HashSet::with_capacity(entries.len());
    for (j, entry) in entries.iter().enumerate() {
        let server = server_entry(cx, entry, &format_args!("{servers_key}[{j}]"))?;
        if !seen.insert(server.addr) {
            return Err(cx.err(
                entry.span(),
                &format_args!("{servers_key}[{j}]"),
                format!("duplicate server {} in this upstream", server.addr),
            ));
        }
        servers.push(server);
    }
    if servers.iter().all(|s| s.backup) {
        return Err(cx.err(
            raw.servers.span(),
            &servers_key,
            "at least one server must not be a backup",
        ));
    }
    let k = |field: &str| format!("{key}.{field}");
    Ok(UpstreamConfig {
        name: raw.name.get_ref().clone(),
        balance: match raw.balance {
            RawBalance::RoundRobin => Balance::RoundRobin,
            RawBalance::LeastConn => Balance::LeastConn,
        },
        protocol: match raw.protocol {
            RawProtocol::Http1 => UpstreamProtocol::Http1,
            RawProtocol::H2c => UpstreamProtocol::H2c,
        },
        servers,
        connect_timeout: cx.duration(
            raw.connect_timeout.as_ref(),
            Duration::from_secs(2),
            &k("connect_timeout"),
        )?,
        response_timeout: cx.duration(
            raw.response_timeout.as_ref(),
            Duration::from_secs(60),
            &k("response_timeout"),
        )?,
        keepalive: cx.int(raw.keepalive.as_ref(), 64, (0, None), &k("keepalive"))?,
        max_fails: cx.int(raw.max_fails.as_ref(), 1, (0, None), &k("max_fails"))?,
        fail_timeout: cx.duration(
            raw.fail_timeout.as_ref(),
            Duration::from_secs(10),
            &k("fail_timeout"),
        )?,
        retries: cx.int(raw.retries.as_ref(), 2, (0, None), &k("retries"))?,
        retry_timeout: cx.optional_duration(raw.retry_timeout.as_ref(), &k("retry_timeout"))?,
        request_timeout: cx
            .optional_duration(raw.request_timeout.as_ref(), &k("request_timeout"))?,
        fail_on_status: statuses(cx, &raw.fail_on_status, &k("fail_on_status"))?,
        slow_start: cx.optional_duration(raw.slow_start.as_ref(), &k("slow_start"))?,
        health_check: raw
            .health_check
            .as_ref()
            .map(|hc| health_check(cx, hc.get_ref(), &k("health_check")))
            .transpose()?,
    })
}

fn server_entry(
    cx: &Cx<'_>,
    entry: &Spanned<AddrOr<RawServerEntry>>,
    key: &(impl Display + ?Sized),
) -> Result<ServerConfig, ConfigError> {
    let (addr, weight, backup) = match entry.get_ref() {
        AddrOr::Addr(text) => {
            let addr = text
                .trim()
                .parse()
                .map_err(|_| cx.err(entry.span(), key, invalid_addr(text)))?;
            (addr, 1, false)
        }
        AddrOr::Table(t) => {
            let addr = cx.addr(&t.addr, &format_args!("{key}.addr"))?;
            let weight = cx.int(
                t.weight.as_ref(),
                1,
                (1, Some(256)),
                &format_args!("{key}.weight"),
            )?;
            (addr, weight, t.backup)
        }
    };
    if addr.port() == 0 {
        return Err(cx.err(
            entry.span(),
            key,
            format!("invalid address \"{addr}\": port 0 cannot be connected to"),
        ));
    }
    Ok(ServerConfig {
        addr,
        weight,
        backup,
    })
}

fn health_check(
    cx: &Cx<'_>,
    raw: &RawHealthCheck,
    key: &(impl Display + ?Sized),
) -> Result<HealthCheckConfig, ConfigError> {
    let k = |field: &str| format!("{key}.{field}");
    Ok(HealthCheckConfig {
        path: path(cx, &raw.path, &k("path"))?,
        interval: cx.duration(
            raw.interval.as_ref(),
            Duration::from_secs(2),
            &k("interval"),
        )?,
        timeout: cx.duration(raw.timeout.as_ref(), Duration::from_secs(1), &k("timeout"))?,
        rise: cx.int(raw.rise.as_ref(), 2, (1, None), &k("rise"))?,
        fall: cx.int(raw.fall.as_ref(), 3, (1, None), &k("fall"))?,
        status: statuses(cx, &raw.status, &k("status"))?,
        host: match &raw.host {
            Some(h) if h.get_ref().trim().is_empty() => {
                return Err(cx.err(h.span(), &k("host"), "must not be empty"));
            }
            h => h.as_ref().map(|h| h.get_ref().trim().to_owned()),
        },
    })
}

/// A list of HTTP status codes, each 100..=599.
fn statuses(
    cx: &Cx<'_>,
    raw: &[Spanned<i64>],
    key: &(impl Display + ?Sized),
) -> Result<Vec<u16>, ConfigError> {
    raw.iter()
        .enumerate()
        .map(|(i, code)| cx.int(Some(code), 0u16, (100, Some(599)), &format!("{key}[{i}]")))
        .collect()
}

fn routes(
    cx: &Cx<'_>,
    raw: Vec<Spanned<RawRoute>>,
    upstreams: &[UpstreamConfig],
) -> Result<Vec<RouteConfig>, ConfigError> {
    if raw.is_empty() {
        return Err(cx.err(0..0, "route", "at least one [[route]] is required"));
    }
    let names: HashSet<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
    let mut out = Vec::with_capacity(raw.len());
    for (i, spanned) in raw.iter().enumerate() {
        let r = spanned.get_ref();
        let host = r
            .host
            .as_ref()
            .map(|h| {
                host_pattern(h.get_ref())
                    .map_err(|m| cx.err(h.span(), &format_args!("route[{i}].host"), m))
            })
            .transpose()?;
        let path = match &r.path {
            Some(p) => path(cx, p, &format_args!("route[{i}].path"))?,
            None => "/".to_owned(),
        };
        let upstream = r.upstream.get_ref();
        if !names.contains(upstream.as_str()) {
            return Err(cx.err(
                r.upstream.span(),
                &format_args!("route[{i}].upstream"),
                format!("no upstream named \"{upstream}\""),
            ));
        }
        out.push(RouteConfig {
            host,
            path,
            upstream: upstream.clone(),
            request_timeout: cx.optional_duration(
                r.request_timeout.as_ref(),
                &format_args!("route[{i}].request_timeout"),
            )?,
        });
    }
    // Duplicates, once every route is valid: keyed by reference, not by copies.
    let mut seen: HashMap<(Option<&HostPattern>, &str), usize> = HashMap::with_capacity(out.len());
    for (i, (route, spanned)) in out.iter().zip(&raw).enumerate() {
        if let Some(first) = seen.insert((route.host.as_ref(), route.path.as_str()), i) {
            // Point at the value that makes the route a duplicate: its path, else its host.
            let r = spanned.get_ref();
            let span = r
                .path
                .as_ref()
                .or(r.host.as_ref())
                .map_or_else(|| spanned.span(), Spanned::span);
            return Err(cx.err(
                span,
                &format_args!("route[{i}]"),
                format!("duplicate route: same host and path as route[{first}]"),
            ));
        }
    }
    Ok(out)
}
