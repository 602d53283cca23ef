//! Route lookup cost with 10 and 10,000 routes.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use weir::config::HostPattern;
use weir::routing::Router;

/// `n` routes spread over exact hosts, wildcards and host-less prefixes of
/// several lengths, like a large multi-tenant config.
fn routes(n: usize) -> Vec<(Option<HostPattern>, String, usize)> {
    (0..n)
        .map(|i| {
            let host = match i % 4 {
                0 => None,
                1 => Some(HostPattern::Wildcard(format!(
                    ".tenant{}.example.com",
                    i / 4
                ))),
                _ => Some(HostPattern::Exact(format!("site{}.example.com", i / 4))),
            };
            let path = match i % 3 {
                0 => "/".to_owned(),
                1 => format!("/api/v{}", i % 5),
                _ => format!("/static/assets{}/", i % 11),
            };
            (host, path, i)
        })
        .collect()
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    for n in [10, 10_000] {
        let router = Router::new(routes(n));
        let requests = [
            ("exact", Some("site1.example.com"), "/api/v2/users/42"),
            (
                "exact_mixed_case_port",
                Some("Site1.Example.com:8080"),
                "/api/v2/users",
            ),
            (
                "wildcard",
                Some("a.b.tenant1.example.com"),
                "/static/assets5/app.js",
            ),
            (
                "fallthrough",
                Some("unknown.org"),
                "/some/long/path/that/matches/only/root",
            ),
            ("no_host", None, "/api/v1"),
        ];
        for (label, host, path) in requests {
            group.bench_function(BenchmarkId::new(label, n), |b| {
                b.iter(|| router.route(black_box(host), black_box(path)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
