//! Servers found in DNS: `name:port` entries in `servers` (every A/AAAA
//! address of the name) and an upstream's `discover` (SRV records).
//!
//! Parsing stays a pure function of the file: a [`DnsSource`] is only a name.
//! Here the names are looked up — at start, on every reload, and again
//! whenever the records' TTL (clamped to `[resolver] min_ttl`/`max_ttl`) runs
//! out — and [`expand`] adds each one's last known servers to its upstream.
//!
//! # How a DNS change reaches requests
//!
//! The same way a reload does. When a lookup's answer differs from the last
//! one, the refresh task tells the daemon, whose run loop expands the file's
//! config with every last known answer, builds a whole new snapshot with
//! `Snapshot::build` (which hands per-server state over by upstream and
//! address) and swaps it in. A per-upstream server-set swap was the other
//! choice; it was not taken because routes hold their `Arc<Upstream>`, so a
//! second `ArcSwap` per upstream would be a second source of truth that a
//! reload could race (pingora's admitted flaw), while one swap point — the
//! daemon's run loop, where reloads happen too — orders DNS changes and
//! reloads for free. A rebuild happens only when an answer changed, on a
//! blocking thread, and costs what a reload's build costs.
//!
//! An address that appears gets fresh state, ramping up under `slow_start`
//! ([`ramp_new`]). An address that disappears leaves the new snapshot: no new
//! request picks it, while requests already on it hold its state and pooled
//! connection and finish — the same drain a reload gives a removed server.
//! A failed or empty lookup changes nothing: the last known servers stay.

mod resolve;
mod srv;

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::{Config, DnsSource, ResolverSettings, ServerConfig};
use crate::snapshot::Snapshot;
pub(crate) use resolve::{Dns, Found, LookupError};

/// One lookup: an upstream's name and one of its DNS sources.
type Key = (String, DnsSource);

/// The last known answer of one source.
#[derive(Debug, Clone)]
struct Entry {
    /// Servers from the last answer that had any; empty while none ever came.
    servers: Vec<ServerConfig>,
    /// When the source is looked up next.
    due: Instant,
}

/// The last known servers of every DNS source, and when each is next due.
#[derive(Debug, Default, Clone)]
pub(crate) struct Known {
    entries: HashMap<Key, Entry>,
}

/// One lookup's result, for logs, metrics and `weir check`.
#[derive(Debug)]
pub(crate) struct Outcome {
    key: Key,
    result: Result<Found, LookupError>,
}

/// A record's TTL as weir uses it: clamped to `[min_ttl, max_ttl]`, so a
/// TTL of 0 does not make weir ask in a loop, nor a day-long one stop it asking.
pub(crate) fn clamp_ttl(ttl_secs: u32, settings: &ResolverSettings) -> Duration {
    Duration::from_secs(u64::from(ttl_secs)).clamp(settings.min_ttl, settings.max_ttl)
}

/// The addresses in `new` but not in `old`, and those in `old` but not in `new`.
pub(crate) fn diff(
    old: &[ServerConfig],
    new: &[ServerConfig],
) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    let before: HashSet<SocketAddr> = old.iter().map(|s| s.addr).collect();
    let after: HashSet<SocketAddr> = new.iter().map(|s| s.addr).collect();
    let added = new.iter().map(|s| s.addr).filter(|a| !before.contains(a));
    let removed = old.iter().map(|s| s.addr).filter(|a| !after.contains(a));
    (added.collect(), removed.collect())
}

/// How a failed lookup is retried: at `min_ttl`, but not more often than
/// once a second whatever `min_ttl` says.
fn retry_after(settings: &ResolverSettings) -> Duration {
    settings.min_ttl.max(Duration::from_secs(1))
}

impl Known {
    /// Takes in one lookup's outcome at `now`; returns whether the source's
    /// servers changed. A failed or empty lookup keeps the last known servers.
    fn record(&mut self, outcome: &Outcome, settings: &ResolverSettings, now: Instant) -> bool {
        let (upstream, source) = &outcome.key;
        let name = source.kind.to_string();
        match &outcome.result {
            Ok(found) => {
                let due = now + clamp_ttl(found.ttl, settings);
                let entry = self.entries.entry(outcome.key.clone()).or_insert(Entry {
                    servers: Vec::new(),
                    due,
                });
                entry.due = due;
                if entry.servers == found.servers {
                    return false;
                }
                let (added, removed) = diff(&entry.servers, &found.servers);
                info!(upstream = %upstream, name = %name, ?added, ?removed,
                    servers = found.servers.len(), "DNS answer changed");
                entry.servers = found.servers.clone();
                true
            }
            Err(error) => {
                let due = now + retry_after(settings);
                let entry = self.entries.entry(outcome.key.clone()).or_insert(Entry {
                    servers: Vec::new(),
                    due,
                });
                entry.due = due;
                warn!(upstream = %upstream, name = %name, %error,
                    kept = entry.servers.len(), "DNS lookup gave no servers; keeping the last known");
                false
            }
        }
    }

    /// When the first source is due, if any.
    fn next_due(&self) -> Option<Instant> {
        self.entries.values().map(|e| e.due).min()
    }

    /// Whether `key` is due at `now` (or was never looked up).
    fn is_due(&self, key: &Key, now: Instant) -> bool {
        self.entries.get(key).is_none_or(|e| e.due <= now)
    }

    /// The last known servers of `key`; empty when it never resolved.
    fn servers(&self, key: &Key) -> &[ServerConfig] {
        self.entries.get(key).map_or(&[], |e| e.servers.as_slice())
    }
}

/// Every DNS source of `config`, as lookup keys.
fn sources(config: &Config) -> Vec<Key> {
    config
        .upstreams
        .iter()
        .flat_map(|u| u.dns.iter().map(|s| (u.name.clone(), s.clone())))
        .collect()
}

/// `config` with each DNS source's last known servers added to its upstream's
/// `servers`, after the addresses written in the file; an address the file or
/// an earlier name already gave is not added twice.
pub(crate) fn expand(config: &Config, known: &Known) -> Config {
    let mut out = config.clone();
    for up in &mut out.upstreams {
        let mut seen: HashSet<SocketAddr> = up.servers.iter().map(|s| s.addr).collect();
        for source in &up.dns {
            for server in known.servers(&(up.name.clone(), source.clone())) {
                if seen.insert(server.addr) {
                    up.servers.push(server.clone());
                }
            }
        }
    }
    out
}

/// Looks every key up at once.
async fn resolve_all(dns: &Arc<Dns>, keys: Vec<Key>) -> Vec<Outcome> {
    let mut lookups = JoinSet::new();
    for key in keys {
        let dns = dns.clone();
        lookups.spawn(async move {
            let from: Arc<str> = Arc::from(key.1.kind.to_string());
            let result = dns.lookup(&key.1, &from).await;
            Outcome { key, result }
        });
    }
    let mut outcomes = Vec::new();
    while let Some(done) = lookups.join_next().await {
        // A lookup task cannot panic short of a bug in the resolver; its
        // source is simply looked up again when due.
        if let Ok(outcome) = done {
            outcomes.push(outcome);
        }
    }
    outcomes
}

/// Counts each outcome in its upstream's `weir_dns_resolutions_total`.
fn count(snapshot: &Snapshot, outcomes: &[Outcome]) {
    for outcome in outcomes {
        if let Some(upstream) = snapshot.upstream(&outcome.key.0) {
            let label = match &outcome.result {
                Ok(_) => "ok",
                Err(e) => e.label(),
            };
            upstream.stats.dns.record(label);
        }
    }
}

/// A config whose names were looked up, ready to be built and served.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The file's config, names unexpanded: what every later refresh expands.
    config: Arc<Config>,
    /// The resolver, when the config has names at all.
    dns: Option<Arc<Dns>>,
    /// Answers so far, with fallbacks from before for names that failed now.
    known: Known,
    /// This round's lookups, counted once the snapshot exists.
    outcomes: Vec<Outcome>,
    /// `config` with the answers in: what the snapshot is built from.
    pub(crate) expanded: Config,
}

/// Looks up every name of `config`. A name that gives no servers now keeps
/// those `previous` (the running discovery) last knew for it. Fails only
/// when the resolver cannot be set up.
pub(crate) async fn prepare(
    config: Config,
    previous: Option<&Discovery>,
) -> Result<Prepared, String> {
    let keys = sources(&config);
    if keys.is_empty() {
        return Ok(Prepared {
            expanded: config.clone(),
            config: Arc::new(config),
            dns: None,
            known: Known::default(),
            outcomes: Vec::new(),
        });
    }
    let dns = Arc::new(Dns::new(&config.resolver)?);
    let outcomes = resolve_all(&dns, keys.clone()).await;
    let mut known = Known::default();
    if let Some(previous) = previous {
        let old = lock(&previous.known);
        known.entries = keys
            .iter()
            .filter_map(|k| old.entries.get(k).map(|e| (k.clone(), e.clone())))
            .collect();
    }
    let now = Instant::now();
    for outcome in &outcomes {
        known.record(outcome, &config.resolver, now);
    }
    Ok(Prepared {
        expanded: expand(&config, &known),
        config: Arc::new(config),
        dns: Some(dns),
        known,
        outcomes,
    })
}

impl Prepared {
    /// Names that have no servers, now or from before, as `upstream app: name: why`.
    pub(crate) fn unresolved(&self) -> Vec<String> {
        self.outcomes
            .iter()
            .filter(|o| self.known.servers(&o.key).is_empty())
            .map(|o| {
                let why = match &o.result {
                    Ok(_) => "no servers".to_owned(),
                    Err(e) => e.to_string(),
                };
                format!("upstream {}: {}: {why}", o.key.0, o.key.1.kind)
            })
            .collect()
    }

    /// What each name gave, one line each, for `weir check`.
    pub(crate) fn report(&self) -> String {
        let mut out = String::new();
        for (upstream, source) in sources(&self.config) {
            let key = (upstream, source);
            let servers = self.known.servers(&key);
            let found: Vec<String> = servers
                .iter()
                .map(|s| {
                    let backup = if s.backup { " backup" } else { "" };
                    format!("{} weight {}{backup}", s.addr, s.weight)
                })
                .collect();
            let found = if found.is_empty() {
                "nothing".to_owned()
            } else {
                found.join(", ")
            };
            // Writing to a String cannot fail.
            let _ = writeln!(out, "upstream {}: {} -> {found}", key.0, key.1.kind);
        }
        out
    }
}

/// `weir check`'s lookups: what every name of `config` resolves to, or
/// the names that do not resolve, one line each.
pub async fn check(config: &Config) -> Result<String, String> {
    let prepared = prepare(config.clone(), None).await?;
    match prepared.unresolved().as_slice() {
        [] => Ok(prepared.report()),
        names => Err(names.join("\n")),
    }
}

/// The running lookups of one config: a task that re-resolves each name when
/// its TTL runs out and signals a change; stopped when dropped.
#[derive(Debug)]
pub(crate) struct Discovery {
    /// The file's config, names unexpanded.
    config: Arc<Config>,
    /// Last known answers, shared with the refresh task so that a reload
    /// falls back on the latest ones.
    known: Arc<Mutex<Known>>,
    /// Changes when an answer changed; `None` without names.
    changes: Option<watch::Receiver<()>>,
    /// The refresh task.
    task: Option<JoinHandle<()>>,
}

impl Discovery {
    /// Starts refreshing what `prepared` found, once its snapshot is in
    /// `snapshot` (where this round's lookups are counted).
    pub(crate) fn start(prepared: Prepared, snapshot: Arc<ArcSwap<Snapshot>>) -> Self {
        count(&snapshot.load(), &prepared.outcomes);
        let known = Arc::new(Mutex::new(prepared.known));
        let Some(dns) = prepared.dns else {
            return Self {
                config: prepared.config,
                known,
                changes: None,
                task: None,
            };
        };
        let (tx, rx) = watch::channel(());
        let task = tokio::spawn(refresh(
            prepared.config.clone(),
            dns,
            known.clone(),
            snapshot,
            tx,
        ));
        Self {
            config: prepared.config,
            known,
            changes: Some(rx),
            task: Some(task),
        }
    }

    /// Waits for an answer that changed, then gives the config expanded with
    /// every last known answer; never returns without names.
    pub(crate) async fn changed(&mut self) -> Config {
        let Some(changes) = &mut self.changes else {
            return std::future::pending().await;
        };
        if changes.changed().await.is_err() {
            // The task ended (no source left to refresh): nothing more will change.
            self.changes = None;
            return std::future::pending().await;
        }
        expand(&self.config, &lock(&self.known))
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

fn lock(known: &Mutex<Known>) -> MutexGuard<'_, Known> {
    known.lock().unwrap_or_else(|e| e.into_inner())
}

/// The refresh task: sleeps until the first name is due, looks up every due
/// name, and signals when an answer changed.
async fn refresh(
    config: Arc<Config>,
    dns: Arc<Dns>,
    known: Arc<Mutex<Known>>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    changes: watch::Sender<()>,
) {
    let keys = sources(&config);
    loop {
        let Some(due) = lock(&known).next_due() else {
            return;
        };
        tokio::time::sleep_until(due).await;
        let now = Instant::now();
        let due: Vec<Key> = {
            let mut known = lock(&known);
            let due: Vec<Key> = keys
                .iter()
                .filter(|k| known.is_due(k, now))
                .cloned()
                .collect();
            // Until its outcome is in, a key counts as failed: one whose lookup
            // task died is retried later, not in a tight loop.
            for key in &due {
                if let Some(entry) = known.entries.get_mut(key) {
                    entry.due = now + retry_after(&config.resolver);
                }
            }
            due
        };
        let outcomes = resolve_all(&dns, due).await;
        count(&snapshot.load(), &outcomes);
        let now = Instant::now();
        let mut changed = false;
        {
            let mut known = lock(&known);
            for outcome in &outcomes {
                changed |= known.record(outcome, &config.resolver, now);
            }
        }
        if changed && changes.send(()).is_err() {
            return;
        }
    }
}

/// Starts a `slow_start` ramp for every server of `next` that DNS added since
/// `previous`: an address that appears takes its share gradually, as a server
/// coming back from a failure does.
pub(crate) fn ramp_new(previous: &Snapshot, next: &Snapshot) {
    for upstream in &next.upstreams {
        let old = previous.upstream(upstream.name());
        for server in upstream.servers.iter().filter(|s| s.config.from.is_some()) {
            if old.and_then(|o| o.server(server.config.addr)).is_none() {
                server.state.start_ramp();
            }
        }
    }
}

#[cfg(test)]
mod tests;
