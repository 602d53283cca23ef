//! Server selection cost per pick, for each algorithm, with 3 and 1,000 servers,
//! and with 1 and 2 threads picking from the same upstream at once.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use weir::balance::{Candidate, Selector};
use weir::config::Balance;

/// Runtime state shaped like the daemon's: atomics read at pick time.
struct Server {
    weight: u32,
    usable: AtomicBool,
    in_flight: AtomicU64,
    id: u64,
}

impl Candidate for Server {
    fn weight(&self) -> u32 {
        self.weight
    }
    fn usable(&self) -> bool {
        self.usable.load(Ordering::Relaxed)
    }
    fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
    fn id(&self) -> u64 {
        self.id
    }
}

fn servers(n: usize, weighted: bool) -> Vec<Server> {
    (0..n)
        .map(|i| Server {
            weight: if weighted { (i % 256) as u32 + 1 } else { 1 },
            usable: AtomicBool::new(true),
            in_flight: AtomicU64::new((i % 7) as u64),
            id: weir::balance::stable_hash(format!("10.0.{}.{}:3000", i / 256, i % 256).as_bytes()),
        })
        .collect()
}

fn config(servers: &[Server]) -> Vec<(u32, bool)> {
    servers.iter().map(|s| (s.weight, false)).collect()
}

fn select(c: &mut Criterion) {
    let mut group = c.benchmark_group("select");
    for (name, balance) in [
        ("round_robin", Balance::RoundRobin),
        ("least_conn", Balance::LeastConn),
        ("hash", Balance::Hash),
        ("random_two", Balance::RandomTwo),
    ] {
        for n in [3, 1000] {
            for weighted in [false, true] {
                let servers = servers(n, weighted);
                let selector = Selector::new(balance, &config(&servers));
                let label = if weighted { "weighted" } else { "equal" };
                // A different key each pick, as different clients would send.
                let mut key = 0u64;
                group.bench_function(BenchmarkId::new(format!("{name}/{label}"), n), |b| {
                    b.iter(|| {
                        key = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
                        selector.select_keyed(black_box(&servers), Some(key))
                    })
                });
            }
        }
        // Half the servers down: round robin must skip their slots.
        let servers = servers(1000, true);
        for s in servers.iter().step_by(2) {
            s.usable.store(false, Ordering::Relaxed);
        }
        let selector = Selector::new(balance, &config(&servers));
        group.bench_function(BenchmarkId::new(format!("{name}/half_down"), 1000), |b| {
            b.iter(|| selector.select(black_box(&servers)))
        });
    }
    group.finish();
}

/// Building a round-robin schedule: paid once per upstream on each reload.
fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("new_round_robin");
    group.sample_size(10);
    for (label, weighted) in [("equal", false), ("weighted", true)] {
        let config = config(&servers(1000, weighted));
        group.bench_function(BenchmarkId::new(label, 1000), |b| {
            b.iter(|| Selector::new(Balance::RoundRobin, black_box(&config)))
        });
    }
    group.finish();
}

/// Picks from one upstream by 1 and 2 threads at once, each pick counted in
/// flight while it lasts as the daemon does: the cost of sharing the
/// round-robin cursor and the in-flight counters between workers. The time
/// reported is per pick of one thread (wall time of `iters` picks on each).
fn contended(c: &mut Criterion) {
    let mut group = c.benchmark_group("select_contended");
    for (name, balance) in [
        ("round_robin", Balance::RoundRobin),
        ("least_conn", Balance::LeastConn),
    ] {
        let servers = servers(3, false);
        let selector = Selector::new(balance, &config(&servers));
        for threads in [1, 2] {
            group.bench_function(BenchmarkId::new(name, format!("{threads}t")), |b| {
                b.iter_custom(|iters| pick_on_threads(&selector, &servers, threads, iters))
            });
        }
    }
    group.finish();
}

fn pick_on_threads(
    selector: &Selector,
    servers: &[Server],
    threads: usize,
    iters: u64,
) -> Duration {
    let start = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    start.wait();
                    let began = Instant::now();
                    for _ in 0..iters {
                        if let Some(i) = selector.select(black_box(servers)) {
                            let s = &servers[i];
                            s.in_flight.fetch_add(1, Ordering::Relaxed);
                            s.in_flight.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                    began.elapsed()
                })
            })
            .collect();
        start.wait();
        workers
            .into_iter()
            .map(|w| w.join().expect("picking thread"))
            .max()
            .unwrap_or_default()
    })
}

criterion_group!(benches, select, build, contended);
criterion_main!(benches);
