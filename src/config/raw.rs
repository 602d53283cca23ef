//! The config file as written: serde structs that mirror the TOML, with
//! spans kept on every value a validation error may need to point at.
//!
//! Nothing here is checked beyond TOML types, known keys and closed word
//! sets; `validate` turns these into the domain types.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// The whole document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default, deserialize_with = "some_table")]
    pub server: Option<RawServer>,
    #[serde(default, deserialize_with = "some_table")]
    pub admin: Option<RawAdmin>,
    #[serde(default, deserialize_with = "table")]
    pub log: RawLog,
    #[serde(default, deserialize_with = "some_table")]
    pub resolver: Option<RawResolver>,
    #[serde(default)]
    pub upstream: Vec<Spanned<RawUpstream>>,
    #[serde(default)]
    pub route: Vec<Spanned<RawRoute>>,
    #[serde(default, deserialize_with = "some_table")]
    pub cache: Option<RawCache>,
    #[serde(default, deserialize_with = "some_table")]
    pub redis: Option<RawRedis>,
}

/// `[cache]`: the response cache's shared settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCache {
    pub memory: Option<Spanned<RawSize>>,
    pub max_entry_size: Option<Spanned<RawSize>>,
    pub lock_timeout: Option<Spanned<String>>,
}

/// `[redis]`: the store several weir instances share.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRedis {
    pub url: Spanned<String>,
    #[serde(default)]
    pub fail: RawRedisFail,
    pub timeout: Option<Spanned<String>>,
}

/// `redis.fail`: what a request meets while Redis cannot be reached.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawRedisFail {
    #[default]
    Open,
    Closed,
}

/// `route.rate_limit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimit {
    pub requests: Spanned<i64>,
    pub per: Spanned<String>,
    pub burst: Option<Spanned<i64>>,
    pub key: Option<Spanned<String>>,
    pub scope: Option<Spanned<RawScope>>,
}

/// `rate_limit.scope`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawScope {
    #[default]
    Local,
    Global,
}

/// `[server]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub listen: Spanned<RawListen>,
    pub threads: Option<Spanned<i64>>,
    pub max_connections: Option<Spanned<i64>>,
    pub shutdown_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    pub header_read_timeout: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub max_header_size: Option<Spanned<RawSize>>,
    pub max_headers: Option<Spanned<i64>>,
    pub max_body_size: Option<Spanned<RawSize>>,
    pub body_read_timeout: Option<Spanned<String>>,
    pub tunnel_idle_timeout: Option<Spanned<String>>,
    pub underscores_in_headers: Option<bool>,
    pub proxy_protocol: Option<Spanned<bool>>,
    pub request_id: Option<Spanned<String>>,
}

/// `[server] listen`: one listener, or a list of them. `[admin] listen` is a
/// plain string, so a single server listener may be written the same way.
#[derive(Debug)]
pub(crate) enum RawListen {
    /// `listen = "0.0.0.0:80"` or `listen = { addr = "0.0.0.0:443", tls = … }`
    One(AddrOr<RawListener>),
    /// `listen = ["0.0.0.0:80", { addr = "0.0.0.0:443", tls = … }]`
    List(Vec<Spanned<AddrOr<RawListener>>>),
}

impl<'de> Deserialize<'de> for RawListen {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RawListenVisitor;

        impl<'de> Visitor<'de> for RawListenVisitor {
            type Value = RawListen;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an \"ip:port\" string, a table with `addr`, or a list of them")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawListen::One(AddrOr::Addr(v.to_owned())))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                RawListener::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|table| RawListen::One(AddrOr::Table(table)))
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut list = Vec::new();
                while let Some(item) = seq.next_element()? {
                    list.push(item);
                }
                Ok(RawListen::List(list))
            }
        }

        deserializer.deserialize_any(RawListenVisitor)
    }
}

/// A byte size: an integer, or a string with a unit such as `"10MB"` or `"64KiB"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawSize {
    Bytes(i64),
    Text(String),
}

/// The table form of a listener: `{ addr = "...", tls = ... }` or
/// `{ addr = "...", redirect_https = true }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListener {
    pub addr: Spanned<String>,
    pub tls: Option<Spanned<OneOrMany<RawCert>>>,
    pub redirect_https: Option<Spanned<bool>>,
    pub proxy_protocol: Option<Spanned<bool>>,
}

/// One certificate of a TLS listener: `{ cert = "site.pem", key = "site.key" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCert {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

/// `[admin]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub listen: Spanned<String>,
    pub token: Option<Spanned<String>>,
}

/// `[resolver]`: how names in `servers` and `discover` are looked up.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawResolver {
    #[serde(default)]
    pub nameservers: Vec<Spanned<String>>,
    pub min_ttl: Option<Spanned<String>>,
    pub max_ttl: Option<Spanned<String>>,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    #[serde(default)]
    pub level: RawLogLevel,
    #[serde(default)]
    pub format: RawLogFormat,
    pub access: Option<Spanned<String>>,
    #[serde(default)]
    pub access_format: RawAccessFormat,
}

/// `log.level`.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawLogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

/// `log.format`.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawLogFormat {
    #[default]
    Text,
    Json,
}

/// `log.access_format`.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawAccessFormat {
    #[default]
    Combined,
    Json,
}

/// `upstream.balance`.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawBalance {
    #[default]
    RoundRobin,
    LeastConn,
    Hash,
    RandomTwo,
}

/// `upstream.protocol`: how weir talks to the servers.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawProtocol {
    #[default]
    Http1,
    H2c,
}

/// One `[[upstream]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    pub name: Spanned<String>,
    #[serde(default)]
    pub balance: RawBalance,
    pub hash_key: Option<Spanned<String>>,
    #[serde(default)]
    pub protocol: RawProtocol,
    pub servers: Option<Spanned<Vec<Spanned<AddrOr<RawServerEntry>>>>>,
    pub discover: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub response_timeout: Option<Spanned<String>>,
    pub keepalive: Option<Spanned<i64>>,
    pub max_fails: Option<Spanned<i64>>,
    pub fail_timeout: Option<Spanned<String>>,
    pub retries: Option<Spanned<i64>>,
    pub retry_timeout: Option<Spanned<String>>,
    pub request_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub fail_on_status: Vec<Spanned<i64>>,
    pub slow_start: Option<Spanned<String>>,
    pub health_check: Option<Spanned<Table<RawHealthCheck>>>,
    pub sticky: Option<Spanned<RawSticky>>,
}

/// `upstream.sticky`: session affinity by cookie.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSticky {
    pub cookie: Option<Spanned<String>>,
    pub max_age: Option<Spanned<String>>,
    #[serde(default)]
    pub secure: bool,
    pub http_only: Option<bool>,
    #[serde(default)]
    pub same_site: RawSameSite,
}

/// `sticky.same_site`.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawSameSite {
    #[default]
    Lax,
    Strict,
    None,
}

/// The table form of a server: `{ addr = "...", weight = 1, backup = false }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServerEntry {
    pub addr: Spanned<String>,
    pub weight: Option<Spanned<i64>>,
    #[serde(default)]
    pub backup: bool,
}

/// `[upstream.health_check]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealthCheck {
    pub path: Spanned<String>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub rise: Option<Spanned<i64>>,
    pub fall: Option<Spanned<i64>>,
    #[serde(default)]
    pub status: Vec<Spanned<i64>>,
    pub host: Option<Spanned<String>>,
}

/// One `[[route]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub host: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub upstream: Spanned<String>,
    pub request_timeout: Option<Spanned<String>>,
    pub cache: Option<Spanned<RawRouteCache>>,
    pub rate_limit: Option<Spanned<Table<RawRateLimit>>>,
    pub strip_prefix: Option<bool>,
    pub compress: Option<bool>,
    pub request_headers: Option<Spanned<RawHeaderRules>>,
    pub response_headers: Option<Spanned<RawHeaderRules>>,
    pub allow: Option<Spanned<Vec<Spanned<String>>>>,
    pub deny: Option<Spanned<Vec<Spanned<String>>>>,
}

/// A route's `request_headers` / `response_headers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderRules {
    #[serde(default)]
    pub set: std::collections::BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    pub remove: Vec<Spanned<String>>,
}

/// `route.cache`: caching the route's responses.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouteCache {
    pub ttl: Option<Spanned<String>>,
    pub stale_if_error: Option<Spanned<String>>,
    pub stale_while_revalidate: Option<Spanned<String>>,
    #[serde(default)]
    pub shared: bool,
}

/// A value written either as a bare address string or as a table with more keys.
///
/// Hand-written rather than `#[serde(untagged)]`: untagged buffers the value,
/// which loses toml's spans and turns every inner error into "did not match
/// any variant".
#[derive(Debug)]
pub(crate) enum AddrOr<T> {
    /// `"127.0.0.1:3000"`
    Addr(String),
    /// `{ addr = "127.0.0.1:3000", ... }`
    Table(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for AddrOr<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AddrOrVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for AddrOrVisitor<T> {
            type Value = AddrOr<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an \"ip:port\" string or a table with `addr`")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(AddrOr::Addr(v.to_owned()))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(AddrOr::Table)
            }
        }

        deserializer.deserialize_any(AddrOrVisitor(PhantomData))
    }
}

/// A value written either as one table or as an array of tables.
///
/// Hand-written for the same reason as [`AddrOr`]: to keep spans and errors.
#[derive(Debug)]
pub(crate) struct OneOrMany<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrManyVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for OneOrManyVisitor<T> {
            type Value = OneOrMany<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table or an array of tables")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|one| OneOrMany(vec![one]))
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut many = Vec::new();
                while let Some(item) = seq.next_element()? {
                    many.push(item);
                }
                Ok(OneOrMany(many))
            }
        }

        deserializer.deserialize_any(OneOrManyVisitor(PhantomData))
    }
}

/// A value that must be a table.
///
/// serde's derive also reads a struct from an array, filling its fields in
/// order, so `[[server]]` would be taken for `[server]` and its first table
/// for `listen`, and `health_check = ["/healthz"]` accepted as a path.
#[derive(Debug)]
pub(crate) struct Table<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Table<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TableVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for TableVisitor<T> {
            type Value = Table<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Table)
            }
        }

        deserializer.deserialize_any(TableVisitor(PhantomData))
    }
}

fn table<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<T, D::Error> {
    Table::deserialize(deserializer).map(|table| table.0)
}

fn some_table<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    table(deserializer).map(Some)
}

/// Deserializes a document into raw structs; syntax and type errors come back as toml's error.
pub(crate) fn from_str(source: &str) -> Result<RawConfig, toml::de::Error> {
    toml::from_str(source)
}
