//! SRV records to servers: pure, so the mapping is tested without DNS.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::config::ServerConfig;

/// The fields of one SRV record weir uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SrvRecord {
    /// Lower is preferred (RFC 2782).
    pub(crate) priority: u16,
    /// Relative share among records of the same priority.
    pub(crate) weight: u16,
    /// The port the target serves on.
    pub(crate) port: u16,
    /// The host name whose addresses serve.
    pub(crate) target: String,
}

/// The heaviest weight weir accepts (as in `servers`).
const MAX_WEIGHT: u32 = 256;

/// Servers from SRV `records`, with `addrs` giving each target's addresses.
///
/// weir has two tiers where SRV has any number of priorities: the records of
/// the lowest priority value present are the primaries, every other record a
/// backup (tried only when no primary can take a request). SRV weights
/// (0–65535) become weights (1–256): scaled down in proportion when the
/// largest is over 256, and 0 — "rarely, when others have weight" — counts as 1.
/// An address reached through two records keeps the first.
pub(crate) fn servers(
    records: &[SrvRecord],
    addrs: impl Fn(&str) -> Vec<IpAddr>,
    from: &Arc<str>,
) -> Vec<ServerConfig> {
    let Some(primary) = records.iter().map(|r| r.priority).min() else {
        return Vec::new();
    };
    let heaviest = records
        .iter()
        .map(|r| u32::from(r.weight))
        .max()
        .unwrap_or(1);
    let weight = |w: u16| {
        let w = u32::from(w);
        let scaled = if heaviest > MAX_WEIGHT {
            (w * MAX_WEIGHT + heaviest / 2) / heaviest
        } else {
            w
        };
        scaled.clamp(1, MAX_WEIGHT)
    };
    let mut ordered: Vec<&SrvRecord> = records.iter().collect();
    // Primaries first; the rest in record order, so equal inputs give equal sets.
    ordered.sort_by_key(|r| r.priority != primary);
    let mut out: Vec<ServerConfig> = Vec::new();
    for record in ordered {
        for ip in addrs(&record.target) {
            let addr = SocketAddr::new(ip, record.port);
            if record.port == 0 || out.iter().any(|s| s.addr == addr) {
                continue;
            }
            out.push(ServerConfig {
                addr,
                weight: weight(record.weight),
                backup: record.priority != primary,
                from: Some(from.clone()),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port,
            target: target.into(),
        }
    }

    fn addrs(target: &str) -> Vec<IpAddr> {
        match target {
            "a" => vec!["127.0.0.1".parse().expect("ip")],
            "b" => vec!["127.0.0.2".parse().expect("ip")],
            "ab" => vec!["127.0.0.1".parse().expect("ip"), "::1".parse().expect("ip")],
            _ => vec![],
        }
    }

    fn shape(servers: &[ServerConfig]) -> Vec<(String, u32, bool)> {
        servers
            .iter()
            .map(|s| (s.addr.to_string(), s.weight, s.backup))
            .collect()
    }

    #[test]
    fn the_lowest_priority_value_is_primary_and_the_rest_backup() {
        let from: Arc<str> = Arc::from("_http._tcp.app");
        let records = [
            srv(20, 5, 81, "b"),
            srv(10, 3, 80, "a"),
            srv(30, 1, 82, "a"),
        ];
        let got = servers(&records, addrs, &from);
        assert_eq!(
            shape(&got),
            [
                ("127.0.0.1:80".to_owned(), 3, false),
                ("127.0.0.2:81".to_owned(), 5, true),
                ("127.0.0.1:82".to_owned(), 1, true),
            ]
        );
        assert!(got
            .iter()
            .all(|s| s.from.as_deref() == Some("_http._tcp.app")));
    }

    #[test]
    fn weights_are_scaled_into_one_to_256() {
        let from: Arc<str> = Arc::from("s");
        let records = [
            srv(1, 1000, 80, "a"),
            srv(1, 500, 81, "a"),
            srv(1, 0, 82, "a"),
        ];
        let got = servers(&records, addrs, &from);
        assert_eq!(
            got.iter().map(|s| s.weight).collect::<Vec<_>>(),
            [256, 128, 1]
        );
        let small = servers(&[srv(1, 0, 80, "a"), srv(1, 7, 81, "a")], addrs, &from);
        assert_eq!(small.iter().map(|s| s.weight).collect::<Vec<_>>(), [1, 7]);
    }

    #[test]
    fn every_address_of_a_target_serves_and_duplicates_keep_the_first() {
        let from: Arc<str> = Arc::from("s");
        let records = [
            srv(1, 2, 80, "ab"),
            srv(2, 9, 80, "a"),
            srv(1, 1, 80, "gone"),
        ];
        let got = servers(&records, addrs, &from);
        assert_eq!(
            shape(&got),
            [
                ("127.0.0.1:80".to_owned(), 2, false),
                ("[::1]:80".to_owned(), 2, false),
            ]
        );
        assert!(servers(&[], addrs, &from).is_empty());
    }
}
