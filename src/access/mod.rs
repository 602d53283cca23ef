//! The access log: one line per request, written off the request path.
//!
//! A request formats its line and appends it to a shared buffer under a short
//! lock; a writer thread takes the whole buffer every 100 ms (or sooner once
//! 64 KiB are waiting) and writes it with one syscall. Requests never wait for
//! the disk and never wake the writer per line; when the writer falls 8 MiB
//! behind, lines are dropped and counted rather than slowing requests down.

mod format;

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

pub use format::AccessRecord;

use crate::config::{AccessFormat, AccessLog};

/// How long a line may wait in the buffer.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Pending bytes that wake the writer before `FLUSH_EVERY`.
const HIGH_WATER: usize = 64 * 1024;
/// Pending bytes beyond which new lines are dropped.
const MAX_PENDING: usize = 8 * 1024 * 1024;

/// Where access log lines go; cheap to clone.
#[derive(Debug, Clone)]
pub struct AccessLogger {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Line format.
    format: AccessFormat,
    /// The buffer the writer drains.
    shared: Arc<Shared>,
    /// The destination as configured, so a reload can tell whether it changed.
    target: AccessLog,
    /// The writer thread, joined when the last handle goes so no line is lost.
    writer: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// Signals the writer: lines after a quiet spell, a full batch, reopen, close.
    wake: Condvar,
    /// Lines dropped because the writer could not keep up.
    dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct Pending {
    buf: Vec<u8>,
    reopen: bool,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl AccessLogger {
    /// Opens the destination and starts its writer; `None` when access logging is off.
    pub fn open(target: &AccessLog, format: AccessFormat) -> io::Result<Option<Self>> {
        let (out, path): (Box<dyn Write + Send>, _) = match target {
            AccessLog::Off => return Ok(None),
            AccessLog::Stdout => (Box::new(io::stdout()), None),
            AccessLog::File(path) => (Box::new(open_append(path)?), Some(path.clone())),
        };
        let shared = Arc::new(Shared::default());
        let for_writer = shared.clone();
        let writer = std::thread::Builder::new()
            .name("weir-access-log".into())
            .spawn(move || write_lines(&for_writer, out, path))?;
        Ok(Some(Self {
            inner: Arc::new(Inner {
                format,
                shared,
                target: target.clone(),
                writer: Mutex::new(Some(writer)),
            }),
        }))
    }

    /// Whether this logger writes to `target` in `format`.
    pub(crate) fn matches(&self, target: &AccessLog, format: AccessFormat) -> bool {
        self.inner.target == *target && self.inner.format == format
    }

    /// Lines dropped because the writer could not keep up.
    pub(crate) fn dropped(&self) -> u64 {
        self.inner.shared.dropped.load(Ordering::Relaxed)
    }

    /// Asks the writer to reopen its file, so lines go to a fresh file after
    /// logrotate renamed the old one.
    pub(crate) fn reopen(&self) {
        let shared = &self.inner.shared;
        shared.lock().reopen = true;
        shared.wake.notify_one();
    }

    fn format(&self) -> AccessFormat {
        self.inner.format
    }

    fn append(&self, line: &[u8]) {
        let shared = &self.inner.shared;
        let mut pending = shared.lock();
        let before = pending.buf.len();
        if before + line.len() > MAX_PENDING {
            drop(pending);
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        pending.buf.extend_from_slice(line);
        let after = pending.buf.len();
        drop(pending);
        // Wake the writer only at the start of a batch and when it fills up.
        if before == 0 || (before < HIGH_WATER && after >= HIGH_WATER) {
            shared.wake.notify_one();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

fn open_append(path: &Path) -> io::Result<std::fs::File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn write_lines(shared: &Shared, mut out: Box<dyn Write + Send>, path: Option<PathBuf>) {
    let mut batch = Vec::new();
    loop {
        let (reopen, closed) = {
            let pending = shared.lock();
            let pending = shared
                .wake
                .wait_while(pending, |p| p.buf.is_empty() && !p.reopen && !p.closed)
                .unwrap_or_else(|e| e.into_inner());
            // Let a batch gather, unless there is a reason to write now.
            let (mut pending, _) = shared
                .wake
                .wait_timeout_while(pending, FLUSH_EVERY, |p| {
                    p.buf.len() < HIGH_WATER && !p.reopen && !p.closed
                })
                .unwrap_or_else(|e| e.into_inner());
            std::mem::swap(&mut batch, &mut pending.buf);
            (std::mem::take(&mut pending.reopen), pending.closed)
        };
        if !batch.is_empty() && (out.write_all(&batch).is_err() || out.flush().is_err()) {
            tracing::error!("cannot write the access log; stopping it");
            return;
        }
        batch.clear();
        if closed {
            return;
        }
        if let (true, Some(path)) = (reopen, &path) {
            match open_append(path) {
                Ok(file) => {
                    out = Box::new(file);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reach_the_file_and_nothing_is_lost_when_the_logger_goes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("access.log");
        let logger = AccessLogger::open(&AccessLog::File(path.clone()), AccessFormat::Combined)
            .expect("open")
            .expect("on");
        for i in 0..10_000 {
            logger.append(format!("line {i}\n").as_bytes());
        }
        drop(logger);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 10_000);
        assert_eq!(text.lines().last(), Some("line 9999"));
    }

    #[test]
    fn a_writer_that_falls_far_behind_drops_and_counts() {
        // No writer thread: the buffer only fills.
        let logger = AccessLogger {
            inner: Arc::new(Inner {
                format: AccessFormat::Combined,
                shared: Arc::new(Shared::default()),
                target: AccessLog::Off,
                writer: Mutex::new(None),
            }),
        };
        let line = vec![b'x'; 1024 * 1024];
        for _ in 0..8 {
            logger.append(&line);
        }
        assert_eq!(logger.dropped(), 0);
        logger.append(b"one more\n");
        assert_eq!(logger.dropped(), 1);
        assert_eq!(logger.inner.shared.lock().buf.len(), MAX_PENDING);
    }
}
