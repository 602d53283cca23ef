//! Validated configuration: the domain types the rest of weir consumes.
//!
//! Everything here has already been checked: addresses parse, pools are
//! non-empty, names are unique and every route points at an upstream that exists.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

/// A whole, validated weir configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[server]`: listeners and client-side limits.
    pub server: ServerSettings,
    /// `[admin]`: the admin listener, when configured.
    pub admin: Option<AdminSettings>,
    /// `[log]`: diagnostics and access logging.
    pub log: LogSettings,
    /// `[resolver]`: how names in `servers` and `discover` are looked up.
    pub resolver: ResolverSettings,
    /// `[[upstream]]` pools, in file order; names are unique.
    pub upstreams: Vec<UpstreamConfig>,
    /// `[[route]]`s, in file order; each names an existing upstream.
    pub(crate) routes: Vec<RouteConfig>,
    /// `[cache]`: the response cache, when some route caches.
    pub cache: Option<CacheSettings>,
    /// `[redis]`: the Redis that several weir instances share.
    pub redis: Option<RedisSettings>,
}

/// `[cache] memory` by default: the in-process tier's bound in bytes.
pub(crate) const DEFAULT_CACHE_MEMORY: u64 = 256 << 20;
/// `[cache] max_entry_size` by default: larger bodies are streamed, not stored.
pub(crate) const DEFAULT_CACHE_MAX_ENTRY: u64 = 1 << 20;
/// `[cache] lock_timeout` by default.
pub(crate) const DEFAULT_CACHE_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// `[cache]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// The in-process tier's bound: body and header bytes of all entries.
    pub memory: u64,
    /// Responses with larger bodies are passed through and not stored.
    pub max_entry_size: u64,
    /// How long concurrent misses for one key wait for the first one's answer.
    pub lock_timeout: Duration,
}

/// `route.cache`: how a route caches its responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteCacheConfig {
    /// Freshness for responses that declare none of their own.
    pub ttl: Option<Duration>,
    /// How long after going stale an entry may stand in for a failed upstream.
    pub stale_if_error: Duration,
    /// How long after going stale an entry is served while it is refreshed.
    pub stale_while_revalidate: Duration,
    /// Whether entries are also read from and written to `[redis]`.
    pub shared: bool,
}

impl RouteCacheConfig {
    /// How long after going stale an entry may still be served, for either reason.
    pub fn stale_window(&self) -> Duration {
        self.stale_if_error.max(self.stale_while_revalidate)
    }
}

/// `[redis]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://host:port[/db]`, as the `redis` crate reads it.
    pub url: String,
    /// What a request that needs Redis meets while Redis cannot be reached.
    pub fail: RedisFail,
    /// Bound on one Redis call, so a hung Redis never stalls requests.
    pub timeout: Duration,
}

/// `[redis] fail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisFail {
    /// Serve on as if the limit allowed the request (logged, counted).
    Open,
    /// Answer 503.
    Closed,
}

/// A route's `rate_limit`: a bucket of `burst` requests per key, refilled at
/// `requests` per `per`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Requests added back to a bucket per `per`; at least 1.
    pub requests: u32,
    /// The refill period.
    pub per: Duration,
    /// The bucket's size: requests allowed at once; at least 1.
    pub burst: u32,
    /// What tells clients apart.
    pub key: LimitKey,
    /// Where the buckets live.
    pub scope: LimitScope,
}

/// `rate_limit.key`: what a bucket belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// The client address as weir resolved it (the one in `X-Real-IP`).
    Ip,
    /// A request header's value; requests without it share one bucket.
    Header(http::HeaderName),
}

/// `rate_limit.scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitScope {
    /// Buckets in this process, shared by its worker threads.
    Local,
    /// Buckets in Redis, shared by every weir with the same `[redis] url`.
    Global,
}

/// `max_headers` by default: hyper's own limit, for which it keeps room on the stack.
pub(crate) const DEFAULT_MAX_HEADERS: usize = 100;

/// `[server]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    /// Addresses to accept client connections on; never empty, no duplicates.
    pub listen: Vec<ListenerConfig>,
    /// Worker threads; 0 means one per CPU core.
    pub threads: usize,
    /// Open client connections beyond which accepting waits.
    pub(crate) max_connections: usize,
    /// How long a graceful shutdown waits for in-flight requests.
    pub(crate) shutdown_timeout: Duration,
    /// Peers whose `X-Forwarded-*` headers are trusted and appended to.
    pub(crate) trusted_proxies: Vec<IpNet>,
    /// Time a client has to send a complete request head.
    pub(crate) header_read_timeout: Duration,
    /// How long an idle keep-alive client connection is kept open.
    pub(crate) idle_timeout: Duration,
    /// Largest request head accepted, in bytes; beyond it 431.
    pub(crate) max_header_size: usize,
    /// Most header lines in an HTTP/1.1 request head; beyond them 431.
    pub(crate) max_headers: usize,
    /// Largest request body accepted, in bytes; beyond it 413. `None` = no limit.
    pub(crate) max_body_size: Option<u64>,
    /// A request body that sends nothing for this long is cut off (408 when
    /// no response has begun): time without progress, not a total deadline.
    pub(crate) body_read_timeout: Duration,
    /// An upgraded connection (WebSocket) with no bytes either way for this long is closed.
    pub(crate) tunnel_idle_timeout: Duration,
    /// Request headers whose names hold an underscore are forwarded (else dropped).
    pub(crate) underscores_in_headers: bool,
    /// `request_id`: the header that carries each request's id (kept when
    /// the client sent a valid one, else generated); `None` = no ids.
    pub(crate) request_id: Option<http::HeaderName>,
}

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListenerConfig {
    /// The address to bind.
    pub addr: SocketAddr,
    /// Terminate TLS with these certificates; `None` for cleartext.
    pub(crate) tls: Option<TlsSettings>,
    /// Answer every request with a 301 to `https://` instead of proxying it (cleartext only).
    pub(crate) redirect_https: bool,
    /// Connections must open with a PROXY protocol header (v1 or v2) from a
    /// trusted proxy (the listener's own key, else `[server] proxy_protocol`).
    pub(crate) proxy_protocol: bool,
}

/// The certificates of a TLS listener; the first is the default for unknown or absent SNI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TlsSettings {
    /// Never empty.
    pub(crate) certs: Vec<CertFiles>,
}

/// One certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CertFiles {
    /// The certificate chain, leaf first (relative paths resolved against the
    /// config file's folder, `${CREDENTIALS_DIRECTORY}/…` against systemd's).
    pub(crate) cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub(crate) key: PathBuf,
    /// Where `cert` is written in the config file, for errors found when loading it.
    pub(crate) cert_at: Location,
    /// Where `key` is written in the config file.
    pub(crate) key_at: Location,
}

/// A place in the config file, kept for errors found after validation (unreadable PEM files).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct Location {
    /// The config file.
    pub(crate) file: PathBuf,
    /// 1-based line.
    pub(crate) line: usize,
    /// 1-based column.
    pub(crate) column: usize,
    /// Dotted key path, such as `server.listen[1].tls[0].cert`.
    pub(crate) key: String,
}

/// `[admin]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminSettings {
    /// Where the admin endpoints are served.
    pub listen: SocketAddr,
    /// Bearer token required on admin requests other than `/healthz`, when set.
    pub(crate) token: Option<String>,
}

/// `[log]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    /// Default level when `RUST_LOG` is not set.
    pub(crate) level: LogLevel,
    /// Diagnostic log line format.
    pub(crate) format: LogFormat,
    /// Where access log lines go.
    pub access: AccessLog,
    /// Access log line format.
    pub(crate) access_format: AccessFormat,
}

/// A tracing level name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogLevel {
    /// `error`
    Error,
    /// `warn`
    Warn,
    /// `info`
    Info,
    /// `debug`
    Debug,
    /// `trace`
    Trace,
}

/// Diagnostic log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// Access log destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    /// Standard output.
    Stdout,
    /// No access log.
    Off,
    /// Appended to this file; a relative path in the config is resolved
    /// against the config file's directory, like certificate paths.
    File(PathBuf),
}

/// Access log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessFormat {
    /// The Apache/nginx combined log format, with weir's fields appended.
    Combined,
    /// One JSON object per line.
    Json,
}

/// Load-balancing algorithm of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Smooth weighted round robin.
    RoundRobin,
    /// Fewest in-flight requests relative to weight.
    LeastConn,
    /// Consistent hashing of a request key ([`HashKey`]).
    Hash,
    /// The less loaded of two servers drawn at random.
    RandomTwo,
}

/// `sticky`: the cookie that ties a client to the server that first answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickyConfig {
    /// The cookie's name.
    pub cookie: String,
    /// `Max-Age`; `None` makes it a session cookie.
    pub max_age: Option<Duration>,
    /// `Secure`: sent over HTTPS only.
    pub secure: bool,
    /// `HttpOnly`: hidden from the page's scripts.
    pub http_only: bool,
    /// `SameSite`: `Lax`, `Strict` or `None`.
    pub same_site: &'static str,
}

/// What `balance = "hash"` hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client address as weir resolved it (the one in `X-Real-IP`).
    Ip,
    /// Path and query.
    Uri,
    /// The path alone.
    Path,
    /// A request header's value.
    Header(http::HeaderName),
    /// A cookie's value.
    Cookie(String),
}

/// How weir speaks to an upstream's servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 over pooled keep-alive connections.
    Http1,
    /// Cleartext HTTP/2 with prior knowledge, multiplexed over one connection per server.
    H2c,
}

/// One `[[upstream]]` pool.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// Unique name routes refer to.
    pub(crate) name: String,
    /// How a server is chosen.
    pub balance: Balance,
    /// With `balance = "hash"`, what is hashed (default the client address).
    pub hash_key: Option<HashKey>,
    /// Session affinity by cookie, on any `balance`.
    pub sticky: Option<StickyConfig>,
    /// `http1` (default) or `h2c`.
    pub protocol: UpstreamProtocol,
    /// Servers given by address; addresses unique within the pool. Empty only
    /// when `dns` is not: names are resolved apart from parsing (`discovery`).
    pub servers: Vec<ServerConfig>,
    /// Servers found in DNS: names in `servers` and `discover`, in file order.
    pub dns: Vec<DnsSource>,
    /// Time allowed to establish a TCP connection to a server.
    pub(crate) connect_timeout: Duration,
    /// Time allowed until the response head arrives; then 504.
    pub(crate) response_timeout: Duration,
    /// Idle pooled connections kept per server, per worker thread.
    pub(crate) keepalive: usize,
    /// Failures within `fail_timeout` that take a server out (0 disables).
    pub(crate) max_fails: u32,
    /// Window for counting failures and how long a failed server stays out.
    pub(crate) fail_timeout: Duration,
    /// Extra attempts on other servers, in the safe cases.
    pub(crate) retries: u32,
    /// Bound on the time spent retrying, from the first attempt.
    pub(crate) retry_timeout: Option<Duration>,
    /// Bound on a whole exchange, from request to the end of the response body.
    pub(crate) request_timeout: Option<Duration>,
    /// Upstream statuses that count as failures for passive health (and retries).
    pub(crate) fail_on_status: Vec<u16>,
    /// Window over which a server returning to service ramps up to its full weight.
    pub(crate) slow_start: Option<Duration>,
    /// Active health checks, when configured.
    pub(crate) health_check: Option<HealthCheckConfig>,
}

/// One server of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Where the server listens.
    pub addr: SocketAddr,
    /// Relative share of traffic, 1..=256.
    pub(crate) weight: u32,
    /// Gets traffic only when no primary server can take it.
    pub(crate) backup: bool,
    /// The DNS name (`name:port`, or a `discover` name) it was resolved
    /// from; `None` for an address written in the file.
    pub(crate) from: Option<std::sync::Arc<str>>,
}

/// `[resolver]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverSettings {
    /// Name servers asked instead of the system's (`/etc/resolv.conf`); empty = the system's.
    pub nameservers: Vec<SocketAddr>,
    /// Record TTLs shorter than this are stretched to it.
    pub min_ttl: Duration,
    /// Record TTLs longer than this are cut to it.
    pub max_ttl: Duration,
}

impl Default for ResolverSettings {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(60),
        }
    }
}

/// Servers of an upstream that DNS supplies, and how they are weighted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DnsSource {
    /// What is looked up.
    pub kind: DnsKind,
    /// Weight of every address of a `Host` name; SRV records carry their own.
    pub weight: u32,
    /// Every address of a `Host` name is a backup; SRV priorities decide instead.
    pub backup: bool,
}

/// What a [`DnsSource`] looks up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DnsKind {
    /// `servers = ["name:port"]`: every A/AAAA address of `name`, on `port`.
    Host {
        /// The host name, as written.
        name: String,
        /// The port every address gets.
        port: u16,
    },
    /// `discover = "_http._tcp.name"`: SRV records give targets, ports and weights.
    Srv {
        /// The SRV name, as written.
        name: String,
    },
}

impl std::fmt::Display for DnsKind {
    /// As the file spells it: `app:3000` or `_http._tcp.app`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DnsKind::Host { name, port } => write!(f, "{name}:{port}"),
            DnsKind::Srv { name } => f.write_str(name),
        }
    }
}

/// `[upstream.health_check]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthCheckConfig {
    /// Path probed with GET; starts with `/`.
    pub(crate) path: String,
    /// Time between probes.
    pub(crate) interval: Duration,
    /// Time a probe may take.
    pub(crate) timeout: Duration,
    /// Consecutive successes that bring a server up.
    pub(crate) rise: u32,
    /// Consecutive failures that take a server down.
    pub(crate) fall: u32,
    /// Statuses that count as healthy; empty means any 2xx or 3xx.
    pub(crate) status: Vec<u16>,
    /// `Host` header sent with probes; the server's address when absent.
    pub(crate) host: Option<String>,
}

/// One `[[route]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteConfig {
    /// The host it matches; `None` matches any host.
    pub(crate) host: Option<HostPattern>,
    /// Path prefix; starts with `/`.
    pub(crate) path: String,
    /// Name of the upstream it sends to (known to exist).
    pub(crate) upstream: String,
    /// Overrides the upstream's `request_timeout` for this route.
    pub(crate) request_timeout: Option<Duration>,
    /// Response caching, when on.
    pub(crate) cache: Option<RouteCacheConfig>,
    /// Requests over this limit get 429.
    pub(crate) rate_limit: Option<RateLimitConfig>,
    /// Whether `path` is cut from the request path before forwarding.
    pub(crate) strip_prefix: bool,
    /// Whether responses are compressed for clients that accept it.
    pub(crate) compress: bool,
    /// Changes to the request sent upstream, after weir's forwarding headers.
    pub(crate) request_headers: HeaderRules,
    /// Changes to the upstream's response.
    pub(crate) response_headers: HeaderRules,
    /// `allow` / `deny`: the client networks it serves; `None` = every client.
    pub(crate) access: Option<crate::access_list::AccessList>,
}

impl RouteConfig {
    /// The route's name in metrics and on the status page: its host (or
    /// `*`) and path, e.g. `yoursite.com/api`.
    pub(crate) fn label(&self) -> String {
        let host = match &self.host {
            None => "*".to_owned(),
            Some(HostPattern::Exact(host)) => host.clone(),
            Some(HostPattern::Wildcard(suffix)) => format!("*{suffix}"),
        };
        format!("{host}{}", self.path)
    }
}

/// A route's host, normalised to lower case without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `example.com` matches exactly that host.
    Exact(String),
    /// `*.example.com` is stored as `.example.com` and matches any subdomain of it.
    Wildcard(String),
}

/// Header changes a route makes to a request or a response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderRules {
    /// Headers deleted.
    pub(crate) remove: Vec<HeaderName>,
    /// Headers replaced (every earlier value goes) or added.
    pub(crate) set: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderRules {
    /// Whether the rules change nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty()
    }

    /// Applies the rules to `headers`: removals, then replacements. Cloning a
    /// parsed name or value copies no header bytes.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
    }
}
