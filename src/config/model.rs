//! Validated configuration: the domain types the rest of weir consumes.
//!
//! Everything here has already been checked: addresses parse, pools are
//! non-empty, names are unique and every route points at an upstream that exists.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    /// `[[upstream]]` pools, in file order; names are unique.
    pub upstreams: Vec<UpstreamConfig>,
    /// `[[route]]`s, in file order; each names an existing upstream.
    pub(crate) routes: Vec<RouteConfig>,
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
    /// Never empty; addresses unique within the pool.
    pub servers: Vec<ServerConfig>,
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
    /// `allow` / `deny`: the client networks it serves; `None` = every client.
    pub(crate) access: Option<crate::access_list::AccessList>,
}

/// A route's host, normalised to lower case without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `example.com` matches exactly that host.
    Exact(String),
    /// `*.example.com` is stored as `.example.com` and matches any subdomain of it.
    Wildcard(String),
}
