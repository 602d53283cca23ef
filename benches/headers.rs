//! Header rewriting cost per request: the upstream request's forwarding
//! headers and the hop-by-hop strip on both request and response.

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use weir::headers::{ip_value, prepare_upstream_request, strip_hop_by_hop, Peer, Underscores};

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    map
}

/// What wrk sends.
const MINIMAL: &[(&str, &str)] = &[("host", "site.test")];

/// What a browser sends, with a keep-alive `Connection` header.
const BROWSER: &[(&str, &str)] = &[
    ("host", "site.test"),
    (
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    ),
    (
        "accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ),
    ("accept-language", "en-GB,en;q=0.5"),
    ("accept-encoding", "gzip, deflate, br, zstd"),
    ("connection", "keep-alive"),
    ("cookie", "session=0123456789abcdef; theme=dark"),
    ("upgrade-insecure-requests", "1"),
    ("sec-fetch-dest", "document"),
    ("sec-fetch-mode", "navigate"),
    ("priority", "u=0, i"),
];

/// Behind a trusted load balancer that already set forwarding headers.
const FORWARDED: &[(&str, &str)] = &[
    ("host", "site.test"),
    ("x-forwarded-for", "203.0.113.9, 10.1.1.1"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "front.test"),
    ("accept", "*/*"),
];

/// A client whose headers are spelled with underscores, dropped on the way.
const UNDERSCORED: &[(&str, &str)] = &[
    ("host", "site.test"),
    ("x_real_ip", "6.6.6.6"),
    ("x_forwarded_for", "6.6.6.6"),
    ("accept", "*/*"),
];

/// What a small upstream answers with.
const RESPONSE: &[(&str, &str)] = &[
    ("content-type", "application/json"),
    ("content-length", "94"),
    ("date", "Thu, 26 Nov 2026 14:00:00 GMT"),
];

fn rewrite(c: &mut Criterion) {
    let mut group = c.benchmark_group("prepare_upstream_request");
    let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
    let host = HeaderValue::from_static("site.test");
    for (name, headers, ip, trusted) in [
        ("minimal", MINIMAL, "192.0.2.7", &[][..]),
        ("browser", BROWSER, "192.0.2.7", &[][..]),
        ("trusted_chain", FORWARDED, "10.0.0.2", &trusted[..]),
        ("underscored", UNDERSCORED, "192.0.2.7", &[][..]),
    ] {
        let ip: IpAddr = ip.parse().expect("ip");
        let value = ip_value(ip);
        let template = map(headers);
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_batched_ref(
                || template.clone(),
                |headers| {
                    let peer = Peer {
                        ip,
                        ip_value: &value,
                        tls: false,
                        trusted,
                    };
                    prepare_upstream_request(
                        headers,
                        peer,
                        black_box(Some(&host)),
                        Underscores::Drop,
                    )
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn strip(c: &mut Criterion) {
    let mut group = c.benchmark_group("strip_hop_by_hop");
    for (name, headers) in [("response", RESPONSE), ("browser", BROWSER)] {
        let template = map(headers);
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_batched_ref(
                || template.clone(),
                |headers| strip_hop_by_hop(black_box(headers)),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, rewrite, strip);
criterion_main!(benches);
