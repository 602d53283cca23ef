//! The pure parts of discovery: TTL clamping, address diffs, expansion and
//! what a failed lookup keeps.

use std::time::Duration;

use super::*;
use crate::config::DnsKind;

fn settings() -> ResolverSettings {
    ResolverSettings {
        nameservers: vec![],
        min_ttl: Duration::from_secs(1),
        max_ttl: Duration::from_secs(60),
    }
}

fn server(addr: &str, from: &str) -> ServerConfig {
    ServerConfig {
        addr: addr.parse().expect("addr"),
        weight: 1,
        backup: false,
        from: Some(Arc::from(from)),
    }
}

fn host(name: &str, port: u16) -> DnsSource {
    DnsSource {
        kind: DnsKind::Host {
            name: name.into(),
            port,
        },
        weight: 1,
        backup: false,
    }
}

fn found(addrs: &[&str], ttl: u32) -> Result<Found, LookupError> {
    Ok(Found {
        servers: addrs.iter().map(|a| server(a, "app:80")).collect(),
        ttl,
    })
}

fn outcome(result: Result<Found, LookupError>) -> Outcome {
    Outcome {
        key: ("up".into(), host("app", 80)),
        result,
    }
}

#[test]
fn ttls_are_clamped_to_min_and_max() {
    let s = settings();
    assert_eq!(clamp_ttl(0, &s), Duration::from_secs(1));
    assert_eq!(clamp_ttl(5, &s), Duration::from_secs(5));
    assert_eq!(clamp_ttl(86_400, &s), Duration::from_secs(60));
    let tight = ResolverSettings {
        min_ttl: Duration::from_millis(200),
        ..s
    };
    assert_eq!(clamp_ttl(0, &tight), Duration::from_millis(200));
    assert_eq!(retry_after(&tight), Duration::from_secs(1));
}

#[test]
fn a_diff_names_the_addresses_that_came_and_went() {
    let old = [server("127.0.0.1:80", "a"), server("127.0.0.2:80", "a")];
    let new = [server("127.0.0.2:80", "a"), server("127.0.0.3:80", "a")];
    let (added, removed) = diff(&old, &new);
    assert_eq!(added, ["127.0.0.3:80".parse::<SocketAddr>().expect("addr")]);
    assert_eq!(
        removed,
        ["127.0.0.1:80".parse::<SocketAddr>().expect("addr")]
    );
    assert_eq!(diff(&old, &old), (vec![], vec![]));
}

#[tokio::test(start_paused = true)]
async fn a_failed_or_empty_lookup_keeps_the_last_known_servers() {
    let s = settings();
    let mut known = Known::default();
    let key = ("up".to_owned(), host("app", 80));
    let now = Instant::now();
    assert!(known.record(
        &outcome(found(&["127.0.0.1:80", "127.0.0.2:80"], 5)),
        &s,
        now
    ));
    assert_eq!(known.next_due(), Some(now + Duration::from_secs(5)));
    assert!(!known.record(
        &outcome(found(&["127.0.0.1:80", "127.0.0.2:80"], 5)),
        &s,
        now
    ));
    assert!(!known.record(&outcome(Err(LookupError::Empty)), &s, now));
    assert!(!known.record(
        &outcome(Err(LookupError::Failed("timeout".into()))),
        &s,
        now
    ));
    assert_eq!(known.servers(&key).len(), 2);
    // A failure is retried at min_ttl, not at the record's TTL.
    assert_eq!(known.next_due(), Some(now + Duration::from_secs(1)));
    assert!(known.record(&outcome(found(&["127.0.0.2:80"], 5)), &s, now));
    assert_eq!(known.servers(&key).len(), 1);
}

#[test]
fn expansion_adds_each_names_servers_once_after_the_files_addresses() {
    let toml = "[server]\nlisten = \"127.0.0.1:0\"\n[[upstream]]\nname = \"up\"\n\
                servers = [\"127.0.0.1:80\", \"app:80\", { addr = \"other:81\", weight = 3, backup = true }]\n\
                [[route]]\nupstream = \"up\"\n";
    let config = crate::config::parse(toml, std::path::Path::new("weir.toml")).expect("valid");
    assert_eq!(config.upstreams[0].servers.len(), 1);
    assert_eq!(config.upstreams[0].dns.len(), 2);
    let mut known = Known::default();
    let now = Instant::now();
    known.entries.insert(
        ("up".into(), host("app", 80)),
        Entry {
            servers: vec![
                server("127.0.0.1:80", "app:80"),
                server("127.0.0.2:80", "app:80"),
            ],
            due: now,
        },
    );
    let expanded = expand(&config, &known);
    let got: Vec<(String, Option<&str>)> = expanded.upstreams[0]
        .servers
        .iter()
        .map(|s| (s.addr.to_string(), s.from.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            ("127.0.0.1:80".to_owned(), None),
            ("127.0.0.2:80".to_owned(), Some("app:80")),
        ]
    );
    let other = &config.upstreams[0].dns[1];
    assert_eq!((other.weight, other.backup), (3, true));
}
