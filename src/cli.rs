//! What the `weir` subcommands do, once the command line is parsed.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use crate::config::Config;
use crate::daemon::{self, Daemon};
use crate::{demo, logging, signals};

/// `weir run`: serves `config` (read from `path`) until SIGTERM/SIGINT.
pub async fn run(path: PathBuf, config: Config) -> Result<(), String> {
    logging::init(&config.log);
    daemon::run_with_signals(&path, config)
        .await
        .map_err(|e| e.to_string())
}

/// `weir demo`: the demo apps plus the proxy in front of them.
pub async fn demo(config: Config) -> Result<(), String> {
    logging::init(&config.log);
    for port in demo::DEMO_PORTS {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        demo::spawn_app(addr)
            .await
            .map_err(|e| format!("cannot start the demo app on {addr}: {e}"))?;
    }
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    signals::forward(tx).map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let daemon = Daemon::start(PathBuf::from("config/weir.toml"), config)
        .await
        .map_err(|e| e.to_string())?;
    for addr in daemon.local_addrs() {
        print!("{}", demo::banner(addr));
    }
    daemon.run(rx).await;
    Ok(())
}
