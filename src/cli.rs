//! What the `weir` subcommands do, once the command line is parsed.

use std::path::PathBuf;

use tokio::sync::mpsc;

use crate::config::Config;
use crate::daemon::{Control, Daemon};
use crate::runtime::Workers;
use crate::{demo, logging, signals};

/// The runtime shape for `threads` (0 = one per CPU): one current-thread
/// runtime for everything when 1, else worker runtimes beside the caller's.
pub fn workers(threads: usize) -> std::io::Result<Workers> {
    let threads = if threads == 0 {
        crate::runtime::worker_slots()
    } else {
        threads
    };
    if threads == 1 {
        Ok(Workers::current())
    } else {
        Workers::spawn(threads)
    }
}

/// `weir check`'s DNS step: what each server name and SRV name resolves to,
/// one line each (nothing without names), or the names that do not resolve.
pub fn check_names(config: &Config) -> Result<String, String> {
    if config.upstreams.iter().all(|u| u.dns.is_empty()) {
        return Ok(String::new());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the resolver: {e}"))?;
    runtime.block_on(crate::discovery::check(config))
}

/// `weir run`: serves `config` (read from `path`) on `workers` until SIGTERM/SIGINT.
pub async fn run(path: PathBuf, config: Config, workers: Workers) -> Result<(), String> {
    logging::init(&config.log);
    let controls = signal_controls()?;
    let daemon = Daemon::start_on(path, config, workers)
        .await
        .map_err(|e| e.to_string())?;
    daemon.run(controls).await;
    Ok(())
}

/// Signals as [`Control`]s. Installed before the daemon starts: a SIGHUP
/// arriving while listeners are being bound is queued for the run loop
/// instead of killing the process.
fn signal_controls() -> Result<mpsc::Receiver<Control>, String> {
    let (tx, rx) = mpsc::channel(8);
    signals::forward(tx).map_err(|e| format!("cannot install signal handlers: {e}"))?;
    Ok(rx)
}

/// `weir demo`: the demo apps plus the proxy in front of them, served on `workers`.
pub async fn demo(config: Config, workers: Workers) -> Result<(), String> {
    logging::init(&config.log);
    let controls = signal_controls()?;
    let demo = demo::start(config, workers).await?;
    print!("{}", demo.banner);
    demo.daemon.run(controls).await;
    Ok(())
}
