//! The lookups themselves, with hickory's resolver: a host name's A/AAAA
//! records, an SRV name's records and their targets' addresses.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;

use super::srv::{self, SrvRecord};
use crate::config::{DnsKind, DnsSource, ResolverSettings, ServerConfig};

/// What one lookup of a [`DnsSource`] found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Found {
    /// The servers, in answer order, no address twice.
    pub(crate) servers: Vec<ServerConfig>,
    /// The smallest TTL among the records used, in seconds (not yet clamped).
    pub(crate) ttl: u32,
}

/// Why a lookup gave no servers; the last known ones stay in service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LookupError {
    /// The name exists nowhere, or has no records of the type asked.
    #[error("no records")]
    Empty,
    /// No answer: timeout, refused, unreachable name server.
    #[error("{0}")]
    Failed(String),
}

impl LookupError {
    /// The `result` label of `weir_dns_resolutions_total`.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            LookupError::Empty => "empty",
            LookupError::Failed(_) => "error",
        }
    }
}

/// A resolver set up from `[resolver]`.
pub(crate) struct Dns {
    resolver: TokioResolver,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns").finish_non_exhaustive()
    }
}

impl Dns {
    /// A resolver asking `settings.nameservers`, or the system's name servers
    /// (`/etc/resolv.conf`, its search domains included) when none are set.
    pub(crate) fn new(settings: &ResolverSettings) -> Result<Self, String> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if settings.nameservers.is_empty() {
            TokioResolver::builder(provider)
                .map_err(|e| format!("cannot read the system's resolver configuration: {e}"))?
        } else {
            let servers = settings
                .nameservers
                .iter()
                .map(|addr| {
                    let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                    for connection in &mut server.connections {
                        connection.port = addr.port();
                    }
                    server
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], servers),
                provider,
            )
        };
        let options = builder.options_mut();
        // weir schedules every lookup by the records' TTLs itself: a cache
        // in between would only answer a due lookup with what is stale.
        options.cache_size = 0;
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        // A dead name server must not hold a reload for long: the last known
        // addresses serve meanwhile, and the next try comes at min_ttl.
        options.timeout = Duration::from_secs(2);
        options.attempts = 1;
        let resolver = builder
            .build()
            .map_err(|e| format!("cannot set up the resolver: {e}"))?;
        Ok(Self { resolver })
    }

    /// Looks `source` up; every server found is labelled with `from`.
    pub(crate) async fn lookup(
        &self,
        source: &DnsSource,
        from: &Arc<str>,
    ) -> Result<Found, LookupError> {
        match &source.kind {
            DnsKind::Host { name, port } => {
                let (ips, ttl) = self.ips(name).await?;
                let servers = ips
                    .into_iter()
                    .map(|ip| ServerConfig {
                        addr: std::net::SocketAddr::new(ip, *port),
                        weight: source.weight,
                        backup: source.backup,
                        from: Some(from.clone()),
                    })
                    .collect();
                Ok(Found { servers, ttl })
            }
            DnsKind::Srv { name } => self.srv(name, from).await,
        }
    }

    /// Every A/AAAA address of `name`, no address twice, and the smallest TTL.
    async fn ips(&self, name: &str) -> Result<(Vec<IpAddr>, u32), LookupError> {
        let lookup = self.resolver.lookup_ip(name).await.map_err(error)?;
        let mut ips: Vec<IpAddr> = Vec::new();
        for ip in lookup.iter() {
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        let ttl = min_ttl(lookup.as_lookup().answers().iter().map(|r| r.ttl));
        if ips.is_empty() {
            return Err(LookupError::Empty);
        }
        Ok((ips, ttl))
    }

    /// Servers from the SRV records of `name`, targets resolved here; a
    /// target that does not resolve is left out (and logged), the others serve.
    async fn srv(&self, name: &str, from: &Arc<str>) -> Result<Found, LookupError> {
        let lookup = self.resolver.srv_lookup(name).await.map_err(error)?;
        let mut ttl = min_ttl(lookup.answers().iter().map(|r| r.ttl));
        let records: Vec<SrvRecord> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Some(SrvRecord {
                    priority: srv.priority,
                    weight: srv.weight,
                    port: srv.port,
                    target: srv.target.to_ascii(),
                }),
                _ => None,
            })
            .collect();
        let mut targets: Vec<(String, Vec<IpAddr>)> = Vec::new();
        for record in &records {
            if targets.iter().any(|(t, _)| *t == record.target) {
                continue;
            }
            let ips = match self.ips(&record.target).await {
                Ok((ips, target_ttl)) => {
                    ttl = ttl.min(target_ttl);
                    ips
                }
                Err(e) => {
                    tracing::warn!(srv = %name, target = %record.target, error = %e, "SRV target does not resolve");
                    Vec::new()
                }
            };
            targets.push((record.target.clone(), ips));
        }
        let addrs = |target: &str| {
            targets
                .iter()
                .find(|(t, _)| t == target)
                .map(|(_, ips)| ips.clone())
                .unwrap_or_default()
        };
        let servers = srv::servers(&records, addrs, from);
        if servers.is_empty() {
            return Err(LookupError::Empty);
        }
        Ok(Found { servers, ttl })
    }
}

fn min_ttl(ttls: impl Iterator<Item = u32>) -> u32 {
    ttls.min().unwrap_or(0)
}

fn error(e: hickory_resolver::net::NetError) -> LookupError {
    if e.is_no_records_found() {
        LookupError::Empty
    } else {
        LookupError::Failed(e.to_string())
    }
}
