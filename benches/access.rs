//! The access log's cost per request: a record made as the request arrives,
//! filled in as it goes, formatted and queued when the response ends.

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use http::Request;
use tokio::time::Instant;
use weir::access::{AccessLogger, AccessRecord};
use weir::config::{AccessFormat, AccessLog};

fn record_life(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (parts, ()) = Request::get("/api/items?page=2")
        .header("host", "site.test")
        .header("user-agent", "wrk/4.1")
        .body(())
        .expect("request")
        .into_parts();
    let client: IpAddr = "192.0.2.7".parse().expect("ip");
    let server: SocketAddr = "127.0.0.1:3001".parse().expect("addr");
    let mut group = c.benchmark_group("access_record");
    for (name, format) in [
        ("combined", AccessFormat::Combined),
        ("json", AccessFormat::Json),
    ] {
        let target = AccessLog::File(dir.path().join(format!("{name}.log")));
        let logger = AccessLogger::open(&target, format)
            .expect("open")
            .expect("on");
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut record =
                    AccessRecord::new(logger.clone(), Instant::now(), client, black_box(&parts));
                record.answered_by("app", server, Duration::from_micros(870));
                record.write(black_box(94), true, Instant::now());
            })
        });
    }
    group.finish();
}

criterion_group!(benches, record_life);
criterion_main!(benches);
