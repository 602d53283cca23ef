//! Runtime shape: where client connections are served.
//!
//! With `threads = 1` everything runs on one current-thread runtime. With more,
//! each worker is an OS thread with its own current-thread runtime and its own
//! `SO_REUSEPORT` listening socket per listener, so the kernel spreads
//! connections over workers and a connection, its requests and the upstream
//! connections they use stay on one thread: no work stealing, no cross-thread
//! wake-ups on the request path (nginx's worker model). The daemon's control
//! loop, health checks and the admin listener stay on the caller's runtime.

use std::cell::Cell;
use std::io;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle};

thread_local! {
    /// This thread's worker number; 0 outside worker threads.
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The runtimes that serve client connections.
#[derive(Debug, Clone, Default)]
pub struct Workers {
    /// One handle per worker thread; empty = serve on the caller's runtime.
    handles: Vec<Handle>,
}

impl Workers {
    /// Serve connections on whatever runtime binds the listener (tests, `threads = 1`).
    pub fn current() -> Self {
        Self::default()
    }

    /// Starts `n` worker threads, each running a current-thread runtime until the process ends.
    pub fn spawn(n: usize) -> io::Result<Self> {
        let mut handles = Vec::with_capacity(n);
        for index in 0..n {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            handles.push(runtime.handle().clone());
            std::thread::Builder::new()
                .name(format!("weir-worker-{index}"))
                .spawn(move || {
                    WORKER.with(|w| w.set(index));
                    // The runtime runs as long as the process does.
                    runtime.block_on(std::future::pending::<()>());
                })?;
        }
        Ok(Self { handles })
    }

    /// The worker runtimes; empty when connections are served on the caller's runtime.
    pub(crate) fn handles(&self) -> &[Handle] {
        &self.handles
    }
}

/// The calling thread's worker number (0 outside worker threads), to pick per-worker state.
pub(crate) fn worker_index() -> usize {
    WORKER.with(Cell::get)
}

/// How many per-worker slots per-worker state should have: one per CPU.
pub(crate) fn worker_slots() -> usize {
    static SLOTS: OnceLock<usize> = OnceLock::new();
    *SLOTS.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}
