//! Formatting access log lines: combined (Apache/nginx) or JSON.
//!
//! A line is built in a per-thread buffer reused across requests, so a
//! request costs one lock and one copy into the logger's buffer, not a
//! handful of allocations.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderValue};
use http::{Method, StatusCode, Uri, Version};
use tokio::time::Instant;

use super::AccessLogger;
use crate::config::AccessFormat;

/// What the access log says about one request, gathered as it goes.
#[derive(Debug)]
pub struct AccessRecord {
    logger: AccessLogger,
    started: Instant,
    wall: SystemTime,
    client: IpAddr,
    method: Method,
    uri: Uri,
    version: Version,
    host: Option<HeaderValue>,
    referer: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    /// The response status.
    pub status: StatusCode,
    /// The upstream and server that answered, when one did.
    pub upstream: Option<(String, SocketAddr)>,
    /// When the upstream's response head arrived.
    pub upstream_time: Option<f64>,
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
        Self {
            logger,
            started,
            wall: SystemTime::now(),
            client,
            method: req.method.clone(),
            uri: req.uri.clone(),
            version: req.version,
            host: req.headers.get(header::HOST).cloned(),
            referer: req.headers.get(header::REFERER).cloned(),
            user_agent: req.headers.get(header::USER_AGENT).cloned(),
            status: StatusCode::OK,
            upstream: None,
            upstream_time: None,
        }
    }

    /// Formats the line and queues it; `complete` is false when the body was cut short.
    pub fn write(self, bytes: u64, complete: bool) {
        LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            self.format_into(&mut line, bytes, complete);
            self.logger.append(line.as_bytes());
        });
    }

    fn format_into(&self, out: &mut String, bytes: u64, complete: bool) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let path = self
            .uri
            .path_and_query()
            .map_or_else(|| self.uri.path(), |pq| pq.as_str());
        match self.logger.format() {
            AccessFormat::Json => self.json(out, path, bytes, complete, elapsed),
            AccessFormat::Combined => {
                let _ = write!(out, "{} - - [", self.client);
                clf_time(out, self.wall);
                let _ = write!(out, "] \"{} ", self.method);
                escape(out, path);
                let _ = write!(
                    out,
                    " {:?}\" {} {} \"",
                    self.version,
                    self.status.as_u16(),
                    bytes
                );
                escape(out, text_or(&self.referer, "-"));
                out.push_str("\" \"");
                escape(out, text_or(&self.user_agent, "-"));
                out.push_str("\" upstream=");
                match &self.upstream {
                    Some((_, addr)) => {
                        let _ = write!(out, "{addr}");
                    }
                    None => out.push('-'),
                }
                out.push_str(" upstream_time=");
                match self.upstream_time {
                    Some(t) => {
                        let _ = write!(out, "{t:.3}");
                    }
                    None => out.push('-'),
                }
                let _ = write!(out, " request_time={elapsed:.3}");
                if !complete {
                    out.push_str(" incomplete");
                }
                out.push('\n');
            }
        }
    }

    fn json(&self, out: &mut String, path: &str, bytes: u64, complete: bool, elapsed: f64) {
        let _ = write!(
            out,
            "{{\"time\":\"{}\",\"client\":\"{}\",\"method\":",
            humantime::format_rfc3339_millis(self.wall),
            self.client
        );
        json_str(out, self.method.as_str());
        out.push_str(",\"path\":");
        json_str(out, path);
        let _ = write!(out, ",\"protocol\":\"{:?}\",\"host\":", self.version);
        json_opt(out, &self.host);
        let _ = write!(
            out,
            ",\"status\":{},\"bytes\":{bytes},\"complete\":{complete},\"upstream\":",
            self.status.as_u16()
        );
        match &self.upstream {
            Some((name, addr)) => {
                json_str(out, name);
                let _ = write!(out, ",\"server\":\"{addr}\"");
            }
            None => out.push_str("null,\"server\":null"),
        }
        out.push_str(",\"upstream_time\":");
        match self.upstream_time {
            Some(t) => {
                let _ = write!(out, "{t}");
            }
            None => out.push_str("null"),
        }
        let _ = write!(out, ",\"duration\":{elapsed},\"referer\":");
        json_opt(out, &self.referer);
        out.push_str(",\"user_agent\":");
        json_opt(out, &self.user_agent);
        out.push_str("}\n");
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
    fn json_strings_are_valid_json() {
        let mut out = String::new();
        json_str(&mut out, "a\"b\\c\nd\u{1}é");
        let back: String = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(back, "a\"b\\c\nd\u{1}é");
    }
}
