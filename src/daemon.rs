//! The daemon: listeners, the current snapshot, reloads and graceful shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use sd_notify::NotifyState;
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;
use tokio_util::task::AbortOnDropHandle;
use tracing::{error, info, warn};

use crate::config::{self, AccessLog, Config, ConfigError, ListenerConfig};
use crate::discovery::{self, Discovery};
use crate::health::HealthChecks;
use crate::runtime::Workers;
use crate::server::mode::{self, Mode};
use crate::server::{self, RunningListener, ServeContext};
use crate::shutdown::Shutdown;
use crate::snapshot::Snapshot;
use crate::stats::ReloadCount;

/// What the outside world asks of a running daemon; signals become these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Re-read the config file and swap in a new snapshot (SIGHUP).
    Reload,
    /// Stop gracefully; a second one stops at once (SIGTERM, SIGINT).
    Shutdown,
    /// Reopen the access log file after logrotate moved it (SIGUSR1).
    ReopenLogs,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A listener could not be bound, or the access log opened.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A server name or SRV name did not resolve (one per line), or the resolver could not be set up.
    #[error("{0}")]
    Dns(String),
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReloadError {
    /// The new file is invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The new snapshot could not be built (the access log could not be opened).
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the file.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The thread building the new snapshot panicked or was cancelled.
    #[error("building the new configuration failed: {0}")]
    Aborted(String),
    /// The resolver for the new `[resolver]` settings could not be set up.
    #[error("{0}")]
    Dns(String),
}

/// A running weir: its listeners and the snapshot they serve.
#[derive(Debug)]
pub struct Daemon {
    /// The config file reloads read.
    path: PathBuf,
    /// The routing table every request loads.
    snapshot: Arc<ArcSwap<Snapshot>>,
    /// Shared by all connections of all listeners.
    ctx: Arc<ServeContext>,
    /// Listeners by configured address, so reloads can add and remove them.
    listeners: HashMap<SocketAddr, RunningListener>,
    /// Starts graceful shutdown of every connection.
    shutdown: Shutdown,
    /// Reload outcomes, for metrics and for tests that wait for a reload.
    reloads: watch::Sender<ReloadCount>,
    /// Active health probes, matched to the snapshot after every reload.
    health: HealthChecks,
    /// The admin listener, when `[admin]` is configured; stops when the daemon is dropped.
    admin: Option<crate::admin::Admin>,
    /// Re-resolves the config's server names as their TTLs run out.
    discovery: Discovery,
    /// Closes idle upstream connections soon after their servers close them.
    _idle_sweep: AbortOnDropHandle<()>,
}

impl Daemon {
    /// Builds the first snapshot and binds every listener of `config`; connections
    /// are served on the caller's runtime.
    pub async fn start(path: PathBuf, config: Config) -> Result<Self, StartError> {
        Self::start_on(path, config, Workers::current()).await
    }

    /// Like [`Daemon::start`], serving connections on `workers`.
    pub async fn start_on(
        path: PathBuf,
        config: Config,
        workers: Workers,
    ) -> Result<Self, StartError> {
        let settings = config.server.clone();
        let admin = config.admin.clone();
        // A name that does not resolve at start is an error, as in `weir check`.
        let prepared = discovery::prepare(config, None)
            .await
            .map_err(StartError::Dns)?;
        if let names @ [_, ..] = prepared.unresolved().as_slice() {
            return Err(StartError::Dns(names.join("\n")));
        }
        let snapshot =
            Snapshot::build(prepared.expanded.clone(), None).map_err(|source| StartError::Io {
                what: "cannot open the access log".into(),
                source,
            })?;
        let snapshot = Arc::new(ArcSwap::from_pointee(snapshot));
        let discovery = Discovery::start(prepared, snapshot.clone());
        let idle_sweep = sweep_idle(snapshot.clone());
        let shutdown = Shutdown::new();
        let ctx = Arc::new(ServeContext::new(
            &settings,
            snapshot.clone(),
            shutdown.clone(),
            workers,
        ));
        let mut daemon = Self {
            path,
            snapshot,
            ctx,
            listeners: HashMap::new(),
            shutdown,
            reloads: watch::Sender::new(ReloadCount {
                last_success_unix: unix_now(),
                ..ReloadCount::default()
            }),
            health: HealthChecks::default(),
            admin: None,
            discovery,
            _idle_sweep: idle_sweep,
        };
        daemon.health.sync(&daemon.snapshot.load());
        for listener in &settings.listen {
            // Certificates are loaded before anything binds: a bad PEM file
            // is a config error naming the file, line and key.
            let mode = Mode::load(listener)?;
            daemon
                .bind(listener.addr, mode)
                .await
                .map_err(|source| StartError::Io {
                    what: format!("cannot listen on {}", listener.addr),
                    source,
                })?;
        }
        if let Some(admin) = admin {
            let started = crate::admin::start(&admin, daemon.snapshot(), daemon.reloads()).await;
            daemon.admin = Some(started.map_err(|source| StartError::Io {
                what: format!("cannot listen on {} (admin)", admin.listen),
                source,
            })?);
        }
        Ok(daemon)
    }

    async fn bind(&mut self, addr: SocketAddr, mode: Mode) -> std::io::Result<()> {
        if self.listeners.contains_key(&addr) {
            return Ok(());
        }
        let running = server::listen(addr, mode, self.ctx.clone()).await?;
        self.listeners.insert(addr, running);
        Ok(())
    }

    /// The addresses actually bound, in no particular order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.values().map(|l| l.local).collect()
    }

    /// The bound address of the listener configured as `addr`.
    pub fn local_addr_of(&self, configured: SocketAddr) -> Option<SocketAddr> {
        self.listeners.get(&configured).map(|l| l.local)
    }

    /// The bound address of the admin listener, when one is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.local)
    }

    /// Reload outcomes so far; changes after every reload attempt.
    pub fn reloads(&self) -> watch::Receiver<ReloadCount> {
        self.reloads.subscribe()
    }

    /// The live snapshot holder (for the admin endpoints and tests).
    pub fn snapshot(&self) -> Arc<ArcSwap<Snapshot>> {
        self.snapshot.clone()
    }

    /// Serves until a shutdown arrives on `controls` (or every sender is gone),
    /// reloading on each `Control::Reload`.
    pub async fn run(mut self, mut controls: mpsc::Receiver<Control>) {
        notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
        loop {
            let control = tokio::select! {
                control = controls.recv() => control,
                expanded = self.discovery.changed() => {
                    self.follow_dns(expanded).await;
                    continue;
                }
            };
            let Some(control) = control else {
                break;
            };
            match control {
                Control::Reload => {
                    let now = sd_notify::NotifyState::monotonic_usec_now().ok();
                    notify(
                        &[NotifyState::Reloading]
                            .into_iter()
                            .chain(now)
                            .collect::<Vec<_>>(),
                    );
                    let started = std::time::Instant::now();
                    let status = match self.reload().await {
                        Ok(problems) => {
                            // Microseconds as fractional milliseconds: benches/reload.sh reads this.
                            let duration_ms = started.elapsed().as_micros() as f64 / 1000.0;
                            info!(config = %self.path.display(), duration_ms, "configuration reloaded");
                            self.reloads.send_modify(|r| {
                                r.ok += 1;
                                r.last_success_unix = unix_now();
                            });
                            match problems.as_slice() {
                                [] => "serving; configuration reloaded".to_owned(),
                                some => format!(
                                    "serving; configuration reloaded, but {}",
                                    some.join("; ")
                                ),
                            }
                        }
                        Err(error) => {
                            error!(config = %self.path.display(), %error,
                                "reload failed; the previous configuration stays in force");
                            self.reloads.send_modify(|r| r.failed += 1);
                            format!(
                                "reload failed, the previous configuration stays in force: {error}"
                            )
                        }
                    };
                    // systemd has no word for a failed reload: READY=1 ends the
                    // reload either way (weir serves on), and STATUS= says how
                    // it went, in `systemctl status`.
                    notify(&[
                        NotifyState::Ready,
                        NotifyState::Status(&status_line(&status)),
                    ]);
                }
                Control::Shutdown => break,
                Control::ReopenLogs => {
                    // The send waits only while the writer's queue is full; keep it off the runtime.
                    if let Some(log) = self.snapshot.load().access.clone() {
                        let _ = tokio::task::spawn_blocking(move || log.reopen()).await;
                    }
                }
            }
        }
        self.shutdown(controls).await;
    }

    /// Reads and validates the file, then swaps in a new snapshot and follows
    /// its listeners. An invalid file changes nothing. Once the new snapshot is
    /// in, a new listener that cannot be started is logged and returned, and
    /// the rest of the reload stands.
    pub(crate) async fn reload(&mut self) -> Result<Vec<String>, ReloadError> {
        // Reading, validating and building take tens of milliseconds for a config
        // of thousands of routes and servers (benches/reload.rs): on a blocking
        // thread, so the runtime's workers keep serving requests meanwhile.
        let path = self.path.clone();
        let config = match tokio::task::spawn_blocking(move || config::load(&path)).await {
            Ok(loaded) => loaded?,
            Err(error) => return Err(ReloadError::Aborted(error.to_string())),
        };
        // Names are looked up afresh; one without an answer keeps the servers
        // it last had, or has none, and the reload goes on (with a warning).
        let prepared = discovery::prepare(config, Some(&self.discovery))
            .await
            .map_err(ReloadError::Dns)?;
        let mut problems = Vec::new();
        for name in prepared.unresolved() {
            warn!(name = %name, "server name does not resolve; it has no servers for now");
            problems.push(format!("{name} does not resolve"));
        }
        let config = prepared.expanded.clone();
        let current = self.snapshot.load_full();
        let build = move || -> Result<(Vec<ListenerConfig>, Snapshot), ReloadError> {
            warn_restart_needed(&current.config, &config);
            let wanted = config.server.listen.clone();
            let what = match &config.log.access {
                AccessLog::File(path) => format!("cannot open the access log {}", path.display()),
                _ => "cannot open the access log".to_owned(),
            };
            let next = Snapshot::build(config, Some(&current))
                .map_err(|source| ReloadError::Io { what, source })?;
            Ok((wanted, next))
        };
        let (wanted, next) = match tokio::task::spawn_blocking(build).await {
            Ok(built) => built?,
            Err(error) => return Err(ReloadError::Aborted(error.to_string())),
        };
        let next = Arc::new(next);
        let previous = self.snapshot.swap(next.clone());
        self.health.sync(&next);
        self.discovery = Discovery::start(prepared, self.snapshot.clone());
        // Freeing a large table costs a few milliseconds too; requests still
        // holding it drop their references wherever they finish.
        tokio::task::spawn_blocking(move || drop(previous));

        let removed: Vec<SocketAddr> = self
            .listeners
            .keys()
            .filter(|addr| !wanted.iter().any(|l| l.addr == **addr))
            .copied()
            .collect();
        for addr in removed {
            if let Some(listener) = self.listeners.remove(&addr) {
                info!(listen = %listener.local, "listener removed");
                listener.stop().await;
            }
        }
        for config in wanted {
            let addr = config.addr;
            if let Some(running) = self.listeners.get(&addr) {
                // Certificates are re-read on every reload (the files may
                // have changed under the same names); a bad one keeps the old.
                mode::reload(&running.mode, &config);
                continue;
            }
            let mode = match Mode::load(&config) {
                Ok(mode) => mode,
                Err(error) => {
                    error!(listen = %addr, %error, "cannot load TLS certificates for new listener");
                    problems.push(format!("not listening on {addr}: {error}"));
                    continue;
                }
            };
            if let Err(error) = self.bind(addr, mode).await {
                error!(listen = %addr, %error, "cannot listen on new address");
                problems.push(format!("cannot listen on {addr}: {error}"));
            }
        }
        Ok(problems)
    }

    /// Swaps in a snapshot built from `expanded` (the file's config with the
    /// latest DNS answers), as a reload would; see `discovery` for why.
    async fn follow_dns(&mut self, expanded: Config) {
        let current = self.snapshot.load_full();
        let previous = current.clone();
        let build = move || Snapshot::build(expanded, Some(&current));
        let next = match tokio::task::spawn_blocking(build).await {
            Ok(Ok(next)) => Arc::new(next),
            Ok(Err(error)) => {
                error!(%error, "cannot apply a DNS change: the access log cannot be opened");
                return;
            }
            Err(error) => {
                error!(%error, "cannot apply a DNS change");
                return;
            }
        };
        discovery::ramp_new(&previous, &next);
        let old = self.snapshot.swap(next.clone());
        self.health.sync(&next);
        drop(previous);
        tokio::task::spawn_blocking(move || drop(old));
    }

    async fn shutdown(mut self, mut controls: mpsc::Receiver<Control>) {
        let settings = self.snapshot.load().config.server.clone();
        let status = format!(
            "shutting down: waiting up to {} for open connections",
            humantime::format_duration(settings.shutdown_timeout)
        );
        notify(&[NotifyState::Stopping, NotifyState::Status(&status)]);
        self.health.stop();
        info!(timeout = ?settings.shutdown_timeout, "shutting down: waiting for open connections");
        self.shutdown.raise();
        for (_, listener) in self.listeners {
            listener.stop().await;
        }
        let permits = u32::try_from(settings.max_connections).unwrap_or(u32::MAX);
        let drained = self.ctx.connections.acquire_many(permits);
        let second_signal = async {
            while let Some(control) = controls.recv().await {
                if control == Control::Shutdown {
                    return;
                }
            }
            std::future::pending::<()>().await;
        };
        tokio::select! {
            _ = drained => info!("all connections closed"),
            _ = tokio::time::sleep(settings.shutdown_timeout) => warn!("shutdown_timeout reached; closing the remaining connections"),
            _ = second_signal => warn!("second shutdown signal; closing the remaining connections"),
        }
    }
}

/// Settings read only at start: say so when a reload changes them.
fn warn_restart_needed(old: &Config, new: &Config) {
    for key in start_only_changes(old, new) {
        warn!(
            key,
            "changed in the file, but takes effect only after a restart"
        );
    }
}

/// The start-only keys whose values differ between `old` and `new`.
fn start_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (&old.server, &new.server);
    let fixed = [
        ("server.threads", o.threads != n.threads),
        (
            "server.max_connections",
            o.max_connections != n.max_connections,
        ),
        (
            "server.header_read_timeout",
            o.header_read_timeout != n.header_read_timeout,
        ),
        ("server.idle_timeout", o.idle_timeout != n.idle_timeout),
        (
            "server.max_header_size",
            o.max_header_size != n.max_header_size,
        ),
        ("server.max_headers", o.max_headers != n.max_headers),
        ("log.level", old.log.level != new.log.level),
        ("log.format", old.log.format != new.log.format),
        ("admin", old.admin != new.admin),
    ];
    fixed
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How often idle upstream connections are checked for a close by their
/// server. nginx closes them at once; a second apart keeps the check to one
/// pass over the idle lists, with no task or timer per connection.
const IDLE_SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Sweeps the pools of the live snapshot every [`IDLE_SWEEP_EVERY`] until dropped.
fn sweep_idle(snapshot: Arc<ArcSwap<Snapshot>>) -> AbortOnDropHandle<()> {
    AbortOnDropHandle::new(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(IDLE_SWEEP_EVERY);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            snapshot.load().sweep_idle();
        }
    }))
}

/// The longest `STATUS=` text sent: systemd reads one datagram of a few KiB.
const STATUS_MAX: usize = 1024;

/// `text` as the single line `STATUS=` must be: each error of a config
/// error is a line of its own, so lines are joined with "; ", and a long
/// list is cut short.
fn status_line(text: &str) -> String {
    let mut line = text.lines().collect::<Vec<_>>().join("; ");
    if line.len() > STATUS_MAX {
        let mut end = STATUS_MAX;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push('…');
    }
    line
}

/// Tells systemd about a state change; does nothing when not under systemd.
fn notify(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        warn!(%error, "cannot notify systemd");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(server_keys: &str) -> Config {
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{server_keys}\n\
             [[upstream]]\nname = \"a\"\nservers = [\"127.0.0.1:3000\"]\n\
             [[route]]\nupstream = \"a\"\n"
        );
        crate::config::parse(&toml, std::path::Path::new("weir.toml")).expect("valid")
    }

    #[test]
    fn header_limits_are_start_only() {
        let old = config("");
        assert!(start_only_changes(&old, &old).is_empty());
        let new = config("max_header_size = \"16KiB\"\nmax_headers = 50");
        assert_eq!(
            start_only_changes(&old, &new),
            ["server.max_header_size", "server.max_headers"]
        );
    }

    #[test]
    fn a_status_is_one_line_of_bounded_length() {
        assert_eq!(
            status_line("a.toml:1:1: x: bad\na.toml:2:1: y: bad"),
            "a.toml:1:1: x: bad; a.toml:2:1: y: bad"
        );
        let long = status_line(&"é".repeat(STATUS_MAX));
        assert!(long.len() <= STATUS_MAX + '…'.len_utf8(), "{}", long.len());
        assert!(long.ends_with('…'));
    }
}
