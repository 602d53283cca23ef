//! The CPU cost of a reload of a large config (10,000 routes, 1,000 servers):
//! parsing and validating the text, and building the snapshot from scratch and
//! from a previous one (the reload case: state carried over server by server).
//! `benches/reload.sh` measures the real thing, under load.

#[path = "support/big_config.rs"]
mod big_config;

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use weir::config;
use weir::snapshot::Snapshot;

fn reload(c: &mut Criterion) {
    let mut group = c.benchmark_group("reload_10k_routes_1k_servers");
    group.sample_size(10);
    let shape = big_config::Shape::default();
    let text = big_config::generate(&shape);
    let file = Path::new("big.toml");
    let parsed = match config::parse(&text, file) {
        Ok(config) => config,
        Err(error) => panic!("the generated config does not parse: {error}"),
    };
    let previous = Snapshot::build(parsed.clone(), None).expect("build");

    group.bench_function("parse", |b| {
        b.iter(|| config::parse(black_box(&text), file))
    });
    group.bench_function("build_fresh", |b| {
        b.iter(|| Snapshot::build(black_box(parsed.clone()), None))
    });
    group.bench_function("build_from_previous", |b| {
        b.iter(|| Snapshot::build(black_box(parsed.clone()), Some(&previous)))
    });
    group.bench_function("parse_and_build_from_previous", |b| {
        b.iter(|| {
            let config = config::parse(black_box(&text), file).expect("parse");
            Snapshot::build(config, Some(&previous))
        })
    });
    group.finish();
}

criterion_group!(benches, reload);
criterion_main!(benches);
