//! Compression throughput per core: MiB of upstream body per second that
//! `compress = true` turns into gzip, br and zstd at weir's levels, through
//! the same streaming body the proxy uses (16 KiB upstream chunks).

use std::convert::Infallible;
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http_body::{Body, Frame};
use http_body_util::StreamBody;
use weir::compress::{Coding, Compressed};

/// An API's JSON answer: an array of user records.
fn json(size: usize) -> Bytes {
    let mut out = String::from("[");
    let mut i = 0u64;
    while out.len() < size {
        out.push_str(&format!(
            "{{\"id\":{i},\"name\":\"user {i}\",\"email\":\"user{i}@example.com\",\
             \"active\":{},\"created\":\"2026-11-{:02}T10:{:02}:00Z\",\"score\":{},\
             \"tags\":[\"t{}\",\"t{}\"]}},",
            i.is_multiple_of(3),
            1 + i % 28,
            i % 60,
            (i * 7919) % 1000,
            i % 17,
            i % 5
        ));
        i += 1;
    }
    out.push_str("{}]");
    Bytes::from(out)
}

/// A server-rendered HTML page: a table of rows with links and classes.
fn html(size: usize) -> Bytes {
    let mut out = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Orders</title>\
         <link rel=\"stylesheet\" href=\"/static/app.css\"></head><body><main><table class=\"orders\">",
    );
    let mut i = 0u64;
    while out.len() < size {
        out.push_str(&format!(
            "<tr class=\"row {}\"><td><a href=\"/orders/{i}\">Order #{i}</a></td>\
             <td>{} item(s)</td><td class=\"price\">${}.{:02}</td><td><span class=\"status\">{}</span></td></tr>\n",
            if i.is_multiple_of(2) { "even" } else { "odd" },
            1 + i % 9,
            (i * 37) % 500,
            i % 100,
            ["shipped", "pending", "delivered", "cancelled"][(i % 4) as usize],
        ));
        i += 1;
    }
    out.push_str("</table></main></body></html>");
    Bytes::from(out)
}

type Chunks =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

fn upstream(payload: &Bytes) -> Chunks {
    let frames: Vec<_> = (0..payload.len())
        .step_by(16 * 1024)
        .map(|at| {
            Ok(Frame::data(
                payload.slice(at..(at + 16 * 1024).min(payload.len())),
            ))
        })
        .collect();
    StreamBody::new(futures_util::stream::iter(frames))
}

/// Compresses `payload` whole; returns the compressed size.
fn compress(payload: &Bytes, coding: Coding) -> usize {
    let mut body = Compressed::new(upstream(payload), None, coding);
    let mut cx = Context::from_waker(Waker::noop());
    let mut total = 0;
    loop {
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => {
                total += frame.data_ref().map_or(0, Bytes::len);
            }
            Poll::Ready(None) => return total,
            Poll::Ready(Some(Err(e))) => panic!("compression failed: {e}"),
            Poll::Pending => panic!("an in-memory body never waits"),
        }
    }
}

fn bench(c: &mut Criterion) {
    let payloads = [
        ("json_1MiB", json(1 << 20)),
        ("html_256KiB", html(256 << 10)),
    ];
    let mut group = c.benchmark_group("compress");
    group.sample_size(10);
    for (name, payload) in &payloads {
        group.throughput(Throughput::Bytes(payload.len() as u64));
        for coding in [Coding::Gzip, Coding::Br, Coding::Zstd] {
            let size = compress(payload, coding);
            eprintln!(
                "{name} {}: {} -> {} bytes (ratio {:.2})",
                coding.name(),
                payload.len(),
                size,
                payload.len() as f64 / size as f64
            );
            group.bench_with_input(BenchmarkId::new(coding.name(), name), payload, |b, p| {
                b.iter(|| compress(black_box(p), coding))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
