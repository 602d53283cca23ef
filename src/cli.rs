//! What the `weir` subcommands do, once the command line is parsed.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use crate::config::Config;
use crate::daemon::{self, Daemon};
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

/// `weir run`: serves `config` (read from `path`) on `workers` until SIGTERM/SIGINT.
pub async fn run(path: PathBuf, config: Config, workers: Workers) -> Result<(), String> {
    logging::init(&config.log);
    daemon::run_with_signals(&path, config, workers)
        .await
        .map_err(|e| e.to_string())
}

/// `weir demo`: the demo apps plus the proxy in front of them, served on `workers`.
pub async fn demo(config: Config, workers: Workers) -> Result<(), String> {
    logging::init(&config.log);
    for port in demo::DEMO_PORTS {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        demo::spawn_app(addr)
            .await
            .map_err(|e| format!("cannot start the demo app on {addr}: {e}"))?;
    }
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    signals::forward(tx).map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let daemon = Daemon::start_on(PathBuf::from("config/weir.toml"), config, workers)
        .await
        .map_err(|e| e.to_string())?;
    for addr in daemon.local_addrs() {
        print!("{}", demo::banner(addr));
    }
    daemon.run(rx).await;
    Ok(())
}
