//! Formatting access log lines: combined (Apache/nginx) or JSON.
//!
//! A line is built in a per-thread buffer reused across requests, so a
//! request costs one lock and one copy into the logger's buffer, not a
//! handful of allocations.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, StatusCode, Version};
use tokio::time::Instant;

use super::AccessLogger;
use crate::config::AccessFormat;

/// What the access log says about one request, gathered as it goes.
#[derive(Debug)]
pub struct AccessRecord {
    logger: AccessLogger,
    started: Instant,
    client: IpAddr,
    /// `None`: the request line could not be read (logged as `"-"`).
    method: Option<Method>,
    /// The request target's path and query (`None`: `*` or authority form).
    path: Option<PathAndQuery>,
    version: Version,
    /// Only the JSON format writes the host.
    host: Option<HeaderValue>,
    referer: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    /// The response status.
    pub(crate) status: StatusCode,
    /// The server that answered, when one did, and its upstream's name
    /// (kept only for the JSON format, the one that writes it).
    upstream: Option<(Option<String>, SocketAddr)>,
    /// How long after `started` the upstream's response head arrived.
    upstream_time: Option<Duration>,
    /// The request's id, with `[server] request_id`: the last field of a
    /// combined line, `request_id` in JSON; neither without the key.
    pub(crate) request_id: Option<HeaderValue>,
}

thread_local! {
    /// The line being built; reused so formatting does not allocate per request.
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
}

impl AccessRecord {
    /// Starts a record for a request as it arrived.
    pub fn new(
        logger: AccessLogger,
        started: Instant,
        client: IpAddr,
        req: &http::request::Parts,
    ) -> Self {
        let json = logger.format() == AccessFormat::Json;
        Self {
            started,
            client,
            method: Some(req.method.clone()),
            path: req.uri.path_and_query().cloned(),
            version: req.version,
            host: json
                .then(|| req.headers.get(header::HOST).cloned())
                .flatten(),
            referer: req.headers.get(header::REFERER).cloned(),
            user_agent: req.headers.get(header::USER_AGENT).cloned(),
            status: StatusCode::OK,
            upstream: None,
            upstream_time: None,
            request_id: None,
            logger,
        }
    }

    /// Starts a record for a request whose request line could not be read.
    pub fn without_request_line(logger: AccessLogger, started: Instant, client: IpAddr) -> Self {
        Self {
            started,
            client,
            method: None,
            path: None,
            version: Version::HTTP_11,
            host: None,
            referer: None,
            user_agent: None,
            status: StatusCode::OK,
            upstream: None,
            upstream_time: None,
            request_id: None,
            logger,
        }
    }

    /// Notes the server that answered, `upstream_time` after the request arrived.
    pub fn answered_by(&mut self, upstream: &str, server: SocketAddr, upstream_time: Duration) {
        let name = (self.logger.format() == AccessFormat::Json).then(|| upstream.to_owned());
        self.upstream = Some((name, server));
        self.upstream_time = Some(upstream_time);
    }

    /// Formats the line and queues it; the request `ended` then, and
    /// `complete` is false when the body was cut short.
    pub fn write(self, bytes: u64, complete: bool, ended: Instant) {
        LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            self.format_into(&mut line, bytes, complete, ended);
            self.logger.append(line.as_bytes());
        });
    }

    fn format_into(&self, out: &mut String, bytes: u64, complete: bool, ended: Instant) {
        let elapsed = ended.saturating_duration_since(self.started);
        let wall = wall_clock(self.started);
        let path = self.path.as_ref().map_or("", PathAndQuery::as_str);
        match self.logger.format() {
            AccessFormat::Json => self.json(out, path, bytes, complete, elapsed, wall),
            AccessFormat::Combined => {
                push_cached(out, &self.client);
                out.push_str(" - - [");
                cached_time(out, wall, TimeFormat::Clf);
                out.push_str("] \"");
                match &self.method {
                    Some(method) => {
                        out.push_str(method.as_str());
                        out.push(' ');
                        escape(out, path);
                        out.push(' ');
                        out.push_str(version(self.version));
                    }
                    None => out.push('-'),
                }
                out.push_str("\" ");
                push_int(out, u64::from(self.status.as_u16()));
                out.push(' ');
                push_int(out, bytes);
                out.push_str(" \"");
                escape(out, text_or(&self.referer, "-"));
                out.push_str("\" \"");
                escape(out, text_or(&self.user_agent, "-"));
                out.push_str("\" upstream=");
                match &self.upstream {
                    Some((_, addr)) => push_cached(out, addr),
                    None => out.push('-'),
                }
                out.push_str(" upstream_time=");
                match self.upstream_time {
                    Some(t) => push_secs(out, t),
                    None => out.push('-'),
                }
                out.push_str(" request_time=");
                push_secs(out, elapsed);
                if !complete {
                    out.push_str(" incomplete");
                }
                if let Some(id) = &self.request_id {
                    out.push_str(" request_id=");
                    escape(out, id.to_str().unwrap_or("-"));
                }
                out.push('\n');
            }
        }
    }

    fn json(
        &self,
        out: &mut String,
        path: &str,
        bytes: u64,
        complete: bool,
        elapsed: Duration,
        wall: SystemTime,
    ) {
        out.push_str("{\"time\":\"");
        cached_time(out, wall, TimeFormat::Rfc3339);
        out.push_str("\",\"client\":\"");
        push_cached(out, &self.client);
        out.push_str("\",\"method\":");
        match &self.method {
            Some(method) => {
                json_str(out, method.as_str());
                out.push_str(",\"path\":");
                json_str(out, path);
                out.push_str(",\"protocol\":\"");
                out.push_str(version(self.version));
                out.push('"');
            }
            None => out.push_str("null,\"path\":null,\"protocol\":null"),
        }
        out.push_str(",\"host\":");
        json_opt(out, &self.host);
        out.push_str(",\"status\":");
        push_int(out, u64::from(self.status.as_u16()));
        out.push_str(",\"bytes\":");
        push_int(out, bytes);
        out.push_str(if complete {
            ",\"complete\":true,\"upstream\":"
        } else {
            ",\"complete\":false,\"upstream\":"
        });
        match &self.upstream {
            Some((name, addr)) => {
                json_str(out, name.as_deref().unwrap_or_default());
                out.push_str(",\"server\":\"");
                push_cached(out, addr);
                out.push('"');
            }
            None => out.push_str("null,\"server\":null"),
        }
        out.push_str(",\"upstream_time\":");
        match self.upstream_time {
            Some(t) => push_secs(out, t),
            None => out.push_str("null"),
        }
        out.push_str(",\"duration\":");
        push_secs(out, elapsed);
        out.push_str(",\"referer\":");
        json_opt(out, &self.referer);
        out.push_str(",\"user_agent\":");
        json_opt(out, &self.user_agent);
        if self.request_id.is_some() {
            out.push_str(",\"request_id\":");
            json_opt(out, &self.request_id);
        }
        out.push_str("}\n");
    }
}

/// The request line's protocol, as the combined format writes it.
fn version(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

fn push_int(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// `.mmm`: a point and three zero-padded digits of milliseconds (0..=999).
fn push_millis(out: &mut String, ms: u64) {
    let digit = |d: u64| char::from(b'0' + (d % 10) as u8);
    for c in ['.', digit(ms / 100), digit(ms / 10), digit(ms)] {
        out.push(c);
    }
}

/// Seconds with millisecond precision, `0.003`, without float formatting.
fn push_secs(out: &mut String, time: Duration) {
    // 64-bit arithmetic: `as_micros` is a u128, and dividing one is a libcall.
    let ms = time
        .as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from((time.subsec_micros() + 500) / 1000));
    push_int(out, ms / 1000);
    push_millis(out, ms % 1000);
}

/// Addresses kept rendered per thread: a handful of clients and servers make
/// most lines, and `Display` for addresses is slow. A short list searched in
/// order beats hashing at this size; when full, entries are replaced in turn.
const ADDR_CACHE: usize = 32;

/// Rendered addresses, and the slot the next new one replaces once full.
type AddrCache = (Vec<(Addr, Box<str>)>, usize);

thread_local! {
    static ADDRS: RefCell<AddrCache> = const { RefCell::new((Vec::new(), 0)) };
    /// An instant and the wall-clock time then; see [`wall_clock`].
    static WALL_ANCHOR: Cell<Option<(Instant, SystemTime)>> = const { Cell::new(None) };
    /// The last second formatted, per [`TimeFormat`].
    static TIMES: RefCell<[(u64, String); 2]> =
        const { RefCell::new([(u64::MAX, String::new()), (u64::MAX, String::new())]) };
}

/// A client or server address, as a cache key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Addr {
    Ip(IpAddr),
    Socket(SocketAddr),
}

impl From<&IpAddr> for Addr {
    fn from(ip: &IpAddr) -> Self {
        Addr::Ip(*ip)
    }
}

impl From<&SocketAddr> for Addr {
    fn from(addr: &SocketAddr) -> Self {
        Addr::Socket(*addr)
    }
}

fn push_cached(out: &mut String, addr: impl Into<Addr>) {
    let addr = addr.into();
    ADDRS.with(|cache| {
        let (entries, next) = &mut *cache.borrow_mut();
        if let Some((_, text)) = entries.iter().find(|(a, _)| *a == addr) {
            out.push_str(text);
            return;
        }
        let text: Box<str> = match addr {
            Addr::Ip(ip) => ip.to_string().into(),
            Addr::Socket(sa) => sa.to_string().into(),
        };
        out.push_str(&text);
        if entries.len() < ADDR_CACHE {
            entries.push((addr, text));
        } else {
            entries[*next] = (addr, text);
            *next = (*next + 1) % ADDR_CACHE;
        }
    });
}

/// Which timestamp a line carries.
#[derive(Debug, Clone, Copy)]
enum TimeFormat {
    /// `10/Oct/2000:13:55:36 +0000`
    Clf = 0,
    /// `2000-10-10T13:55:36.123Z`: the second is cached, the milliseconds added.
    Rfc3339 = 1,
}

/// The wall-clock time at `at`, counted from an anchor that is re-read at most
/// once a second: one clock read fewer per request, and a clock that was set
/// shows in the log within a second.
fn wall_clock(at: Instant) -> SystemTime {
    WALL_ANCHOR.with(|anchor| {
        let (base, wall) = match anchor.get() {
            Some((base, wall)) if at.saturating_duration_since(base) < Duration::from_secs(1) => {
                (base, wall)
            }
            _ => {
                let fresh = (Instant::now(), SystemTime::now());
                anchor.set(Some(fresh));
                fresh
            }
        };
        let time = match at.checked_duration_since(base) {
            Some(after) => wall.checked_add(after),
            None => wall.checked_sub(base.duration_since(at)),
        };
        time.unwrap_or(wall)
    })
}

/// The timestamp, its seconds formatted once per second per thread.
fn cached_time(out: &mut String, t: SystemTime, format: TimeFormat) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    TIMES.with(|times| {
        let mut times = times.borrow_mut();
        let (cached_secs, text) = &mut times[format as usize];
        if *cached_secs != secs {
            text.clear();
            match format {
                TimeFormat::Clf => clf_time(text, t),
                TimeFormat::Rfc3339 => {
                    let whole = UNIX_EPOCH + std::time::Duration::from_secs(secs);
                    let _ = write!(text, "{}", humantime::format_rfc3339_seconds(whole));
                    text.pop(); // the `Z`, written after the milliseconds
                }
            }
            *cached_secs = secs;
        }
        out.push_str(text);
    });
    if let TimeFormat::Rfc3339 = format {
        push_millis(out, u64::from(since.subsec_millis()));
        out.push('Z');
    }
}

/// A header's text, or `default` when absent; bytes that are not UTF-8 become `default` too.
fn text_or<'a>(value: &'a Option<HeaderValue>, default: &'a str) -> &'a str {
    value
        .as_ref()
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .unwrap_or(default)
}

fn json_opt(out: &mut String, value: &Option<HeaderValue>) {
    match value {
        Some(v) => json_str(out, &String::from_utf8_lossy(v.as_bytes())),
        None => out.push_str("null"),
    }
}

/// A JSON string literal (RFC 8259 escaping).
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Escapes quotes, backslashes and control characters so a line stays one parseable line.
fn escape(out: &mut String, s: &str) {
    // Nearly every path and user agent is plain printable ASCII.
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// Common Log Format time in UTC: `10/Oct/2000:13:55:36 +0000`.
fn clf_time(out: &mut String, t: SystemTime) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    let _ = write!(
        out,
        "{:02}/{}/{}:{:02}:{:02}:{:02} +0000",
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn clf(t: SystemTime) -> String {
        let mut out = String::new();
        clf_time(&mut out, t);
        out
    }

    #[test]
    fn clf_time_formats_known_instants() {
        assert_eq!(clf(UNIX_EPOCH), "01/Jan/1970:00:00:00 +0000");
        let t = UNIX_EPOCH + Duration::from_secs(971_186_136);
        assert_eq!(clf(t), "10/Oct/2000:13:55:36 +0000");
        let leap = UNIX_EPOCH + Duration::from_secs(1_709_208_000);
        assert_eq!(clf(leap), "29/Feb/2024:12:00:00 +0000");
    }

    #[test]
    fn escape_keeps_lines_parseable() {
        let mut out = String::new();
        escape(&mut out, "a\"b\\c\nd");
        assert_eq!(out, "a\\\"b\\\\c\\x0Ad");
    }

    #[test]
    fn seconds_have_three_decimals() {
        let cases = [
            (0, "0.000"),
            (3_400, "0.003"),
            (1_500_000, "1.500"),
            (12_345_600, "12.346"),
            (999_499, "0.999"),
            (999_500, "1.000"),
        ];
        for (micros, text) in cases {
            let mut out = String::new();
            push_secs(&mut out, Duration::from_micros(micros));
            assert_eq!(out, text);
        }
    }

    #[test]
    fn wall_clock_times_follow_their_instants() {
        let now = Instant::now();
        let wall = wall_clock(now);
        let real = SystemTime::now();
        let off = real.duration_since(wall).unwrap_or_else(|e| e.duration());
        assert!(
            off < Duration::from_millis(100),
            "{off:?} off the real clock"
        );
        let later = now + Duration::from_millis(300);
        assert_eq!(wall_clock(later), wall + Duration::from_millis(300));
        // Earlier than the anchor, as for a request that began before it was set.
        assert_eq!(wall_clock(now), wall);
        // Past the anchor's second it is read again from the clock, which
        // has not been set: the same time, to within the two clock reads.
        let far = now + Duration::from_secs(5);
        let diff = wall_clock(far).duration_since(wall).expect("later");
        let err = diff.abs_diff(Duration::from_secs(5));
        assert!(err < Duration::from_millis(50), "{diff:?}");
    }

    #[test]
    fn cached_times_match_fresh_ones() {
        let t = UNIX_EPOCH + Duration::from_millis(971_186_136_042);
        let mut out = String::new();
        cached_time(&mut out, t, TimeFormat::Rfc3339);
        assert_eq!(out, "2000-10-10T13:55:36.042Z");
        out.clear();
        cached_time(&mut out, t + Duration::from_millis(5), TimeFormat::Rfc3339);
        assert_eq!(out, "2000-10-10T13:55:36.047Z");
        out.clear();
        cached_time(&mut out, t, TimeFormat::Clf);
        assert_eq!(out, "10/Oct/2000:13:55:36 +0000");
        out.clear();
        cached_time(&mut out, t + Duration::from_secs(1), TimeFormat::Clf);
        assert_eq!(out, "10/Oct/2000:13:55:37 +0000");
    }

    #[test]
    fn the_address_cache_keeps_working_when_full() {
        let mut out = String::new();
        for port in 0..(ADDR_CACHE as u16 * 3) {
            let sa = SocketAddr::from(([10, 0, 0, 1], port));
            out.clear();
            push_cached(&mut out, &sa);
            assert_eq!(out, sa.to_string());
        }
    }

    #[test]
    fn cached_addresses_render_like_display() {
        let ip: IpAddr = "2001:db8::1".parse().expect("ip");
        let sa: SocketAddr = "127.0.0.1:3000".parse().expect("addr");
        let mut out = String::new();
        for _ in 0..2 {
            push_cached(&mut out, &ip);
            out.push(' ');
            push_cached(&mut out, &sa);
            out.push(' ');
        }
        assert_eq!(
            out,
            "2001:db8::1 127.0.0.1:3000 2001:db8::1 127.0.0.1:3000 "
        );
    }

    #[test]
    fn json_strings_are_valid_json() {
        let mut out = String::new();
        json_str(&mut out, "a\"b\\c\nd\u{1}é");
        let back: String = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(back, "a\"b\\c\nd\u{1}é");
    }
}
