//! The access log: one line per request, written off the request path.
//!
//! Lines are formatted where the request ends and handed to a writer thread
//! through a bounded channel; when the writer falls behind, lines are dropped
//! and counted rather than slowing requests down.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use http::{HeaderMap, Method, StatusCode, Uri, Version};

use crate::config::{AccessFormat, AccessLog};

/// Lines that may wait for the writer before new ones are dropped.
const QUEUE: usize = 16 * 1024;

/// What the writer thread is asked to do.
#[derive(Debug)]
enum Message {
    /// Append a formatted line.
    Line(String),
    /// Close and reopen the file (after logrotate moved it away).
    Reopen,
}

/// Where access log lines go; cheap to clone.
#[derive(Debug, Clone)]
pub struct AccessLogger {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Line format.
    format: AccessFormat,
    /// The writer thread's queue.
    tx: SyncSender<Message>,
    /// Lines dropped because the queue was full.
    dropped: AtomicU64,
    /// The destination as configured, so a reload can tell whether it changed.
    target: AccessLog,
}

impl AccessLogger {
    /// Opens the destination and starts its writer; `None` when access logging is off.
    pub fn open(target: &AccessLog, format: AccessFormat) -> io::Result<Option<Self>> {
        let (out, path): (Box<dyn Write + Send>, _) = match target {
            AccessLog::Off => return Ok(None),
            AccessLog::Stdout => (Box::new(io::stdout()), None),
            AccessLog::File(path) => (Box::new(open_append(path)?), Some(path.clone())),
        };
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("weir-access-log".into())
            .spawn(move || write_lines(rx, out, path))?;
        Ok(Some(Self {
            inner: Arc::new(Inner {
                format,
                tx,
                dropped: AtomicU64::new(0),
                target: target.clone(),
            }),
        }))
    }

    /// Whether this logger writes to `target` in `format`.
    pub fn matches(&self, target: &AccessLog, format: AccessFormat) -> bool {
        self.inner.target == *target && self.inner.format == format
    }

    /// Lines dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Asks the writer to reopen its file, so lines go to a fresh file after
    /// logrotate renamed the old one. Blocks only while the queue is full.
    pub fn reopen(&self) {
        let _ = self.inner.tx.send(Message::Reopen);
    }

    fn send(&self, line: String) {
        match self.inner.tx.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn open_append(path: &Path) -> io::Result<std::fs::File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn write_lines(rx: Receiver<Message>, out: Box<dyn Write + Send>, path: Option<PathBuf>) {
    let mut out = BufWriter::new(out);
    while let Ok(message) = rx.recv() {
        let mut batch = Some(message);
        // Write what is queued, then flush once: few syscalls under load,
        // no line left sitting in the buffer when traffic stops.
        while let Some(message) = batch {
            match message {
                Message::Line(line) => {
                    if out.write_all(line.as_bytes()).is_err() {
                        return;
                    }
                }
                Message::Reopen => {
                    if out.flush().is_err() {
                        return;
                    }
                    if let Some(path) = &path {
                        match open_append(path) {
                            Ok(file) => {
                                out = BufWriter::new(Box::new(file));
                                tracing::info!(path = %path.display(), "access log reopened");
                            }
                            Err(error) => {
                                tracing::error!(path = %path.display(), %error,
                                    "cannot reopen the access log; writing to the old file");
                            }
                        }
                    }
                }
            }
            batch = rx.try_recv().ok();
        }
        if out.flush().is_err() {
            return;
        }
    }
}

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
    host: Option<String>,
    referer: Option<String>,
    user_agent: Option<String>,
    /// The response status.
    pub status: StatusCode,
    /// The upstream and server that answered, when one did.
    pub upstream: Option<(String, SocketAddr)>,
    /// When the upstream's response head arrived.
    pub upstream_time: Option<f64>,
}

fn header(headers: &HeaderMap, name: http::header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
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
            host: header(&req.headers, http::header::HOST),
            referer: header(&req.headers, http::header::REFERER),
            user_agent: header(&req.headers, http::header::USER_AGENT),
            status: StatusCode::OK,
            upstream: None,
            upstream_time: None,
        }
    }

    /// Formats the line and queues it; `complete` is false when the body was cut short.
    pub fn write(self, bytes: u64, complete: bool) {
        let line = self.format(bytes, complete);
        self.logger.send(line);
    }

    fn format(&self, bytes: u64, complete: bool) -> String {
        let elapsed = self.started.elapsed().as_secs_f64();
        let path = self
            .uri
            .path_and_query()
            .map_or_else(|| self.uri.path(), |pq| pq.as_str());
        let upstream_addr = self.upstream.as_ref().map(|(_, addr)| addr.to_string());
        match self.logger.inner.format {
            AccessFormat::Json => {
                let value = serde_json::json!({
                    "time": humantime::format_rfc3339_millis(self.wall).to_string(),
                    "client": self.client.to_string(),
                    "method": self.method.as_str(),
                    "path": path,
                    "protocol": format!("{:?}", self.version),
                    "host": self.host,
                    "status": self.status.as_u16(),
                    "bytes": bytes,
                    "complete": complete,
                    "upstream": self.upstream.as_ref().map(|(name, _)| name),
                    "server": upstream_addr,
                    "upstream_time": self.upstream_time,
                    "duration": elapsed,
                    "referer": self.referer,
                    "user_agent": self.user_agent,
                });
                let mut line = value.to_string();
                line.push('\n');
                line
            }
            AccessFormat::Combined => {
                let mut line = String::with_capacity(256);
                let _ = write!(
                    line,
                    "{} - - [{}] \"{} {} {:?}\" {} {} \"{}\" \"{}\" upstream={} upstream_time={} request_time={:.3}{}",
                    self.client,
                    clf_time(self.wall),
                    self.method,
                    escape(path),
                    self.version,
                    self.status.as_u16(),
                    bytes,
                    escape(self.referer.as_deref().unwrap_or("-")),
                    escape(self.user_agent.as_deref().unwrap_or("-")),
                    upstream_addr.as_deref().unwrap_or("-"),
                    self.upstream_time
                        .map_or_else(|| "-".to_string(), |t| format!("{t:.3}")),
                    elapsed,
                    if complete { "" } else { " incomplete" },
                );
                line.push('\n');
                line
            }
        }
    }
}

/// Escapes quotes, backslashes and control characters so a line stays one parseable line.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
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
    out
}

/// Common Log Format time in UTC: `10/Oct/2000:13:55:36 +0000`.
fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{:02}/{}/{}:{:02}:{:02}:{:02} +0000",
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
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

    #[test]
    fn clf_time_formats_known_instants() {
        assert_eq!(clf_time(UNIX_EPOCH), "01/Jan/1970:00:00:00 +0000");
        let t = UNIX_EPOCH + Duration::from_secs(971_186_136);
        assert_eq!(clf_time(t), "10/Oct/2000:13:55:36 +0000");
        let leap = UNIX_EPOCH + Duration::from_secs(1_709_208_000);
        assert_eq!(clf_time(leap), "29/Feb/2024:12:00:00 +0000");
    }

    #[test]
    fn escape_keeps_lines_parseable() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\x0Ad");
    }
}
