//! What the proxy under test logs: its access log lines, and its diagnostic
//! log lines.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Waits (bounded) until `path` holds at least `n` lines, and returns them.
pub async fn log_lines(path: &Path, n: usize) -> Vec<String> {
    for _ in 0..1000 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{} did not reach {n} lines within 5 s", path.display());
}

/// Diagnostic log lines (text format, no colours) of everything run on this
/// thread while the returned guard lives; with the proxy on the test's
/// current-thread runtime, that is the proxy's own.
pub fn capture_logs() -> (Logs, tracing::subscriber::DefaultGuard) {
    static ANCHOR: std::sync::Once = std::sync::Once::new();
    // tracing caches each callsite's interest for the whole process, asked
    // of the thread that reaches it first: a sibling test with no subscriber
    // would fix a log line at "never" for this test too. With an anchor as the
    // global default, every callsite is at least "sometimes", so each event
    // asks its own thread's subscriber.
    ANCHOR.call_once(|| {
        let _ = tracing::subscriber::set_global_default(Anchor);
    });
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

/// The global subscriber of the test processes: records nothing, and keeps
/// every callsite's interest at "sometimes" (see [`capture_logs`]).
struct Anchor;

impl tracing::Subscriber for Anchor {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }

    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        false
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, _: &tracing::Event<'_>) {}

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// Log output captured by [`capture_logs`].
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// The lines logged so far that contain every one of `parts`.
    pub fn matching(&self, parts: &[&str]) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned();
        text.lines()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .map(str::to_owned)
            .collect()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
