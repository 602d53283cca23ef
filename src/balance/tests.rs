use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use proptest::prelude::*;

use super::least_conn::{less_loaded, SCAN_UP_TO};
use super::round_robin::{nginx_sequence, smooth_schedule, smooth_schedule_wide};
use super::{Candidate, Selector};
use crate::config::Balance;

#[derive(Debug, Clone)]
struct Server {
    weight: u32,
    usable: bool,
    in_flight: u64,
    id: u64,
}

impl Candidate for Server {
    fn weight(&self) -> u32 {
        self.weight
    }
    fn usable(&self) -> bool {
        self.usable
    }
    fn in_flight(&self) -> u64 {
        self.in_flight
    }
    fn id(&self) -> u64 {
        self.id
    }
}

fn up(weight: u32) -> Server {
    Server {
        weight,
        usable: true,
        in_flight: 0,
        id: 0,
    }
}

/// Servers from generated (weight, usable, in_flight) triples.
fn loaded(servers: Vec<(u32, bool, u64)>) -> Vec<Server> {
    servers
        .into_iter()
        .map(|(weight, usable, in_flight)| Server {
            weight,
            usable,
            in_flight,
            id: 0,
        })
        .collect()
}

fn config(servers: &[Server]) -> Vec<(u32, bool)> {
    servers.iter().map(|s| (s.weight, false)).collect()
}

fn counts(selector: &Selector, servers: &[Server], picks: usize) -> Vec<usize> {
    let mut counts = vec![0; servers.len()];
    for _ in 0..picks {
        let i = selector.select(servers).expect("a usable server");
        counts[i] += 1;
    }
    counts
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[test]
fn selector_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Selector>();
}

#[test]
fn round_robin_equal_weights_share_exactly() {
    let servers = vec![up(1), up(1), up(1)];
    let selector = Selector::new(Balance::RoundRobin, &config(&servers));
    assert_eq!(counts(&selector, &servers, 3 * 50), vec![50, 50, 50]);
}

#[test]
fn round_robin_is_smooth() {
    let servers = vec![up(5), up(1), up(1)];
    let selector = Selector::new(Balance::RoundRobin, &config(&servers));
    let picks: Vec<usize> = (0..7).filter_map(|_| selector.select(&servers)).collect();
    assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
    let longest_run = picks
        .chunk_by(|a, b| a == b)
        .map(<[usize]>::len)
        .max()
        .unwrap_or(0);
    assert!(longest_run < 5, "burst of {longest_run} in {picks:?}");
    assert_eq!(counts(&selector, &servers, 7 * 10), vec![50, 10, 10]);
}

#[test]
fn round_robin_skips_unusable_keeping_weights() {
    let mut servers = vec![up(3), up(1), up(2), up(1)];
    servers[1].usable = false;
    let selector = Selector::new(Balance::RoundRobin, &config(&servers));
    assert_eq!(counts(&selector, &servers, 6 * 20), vec![60, 0, 40, 20]);
}

#[test]
fn least_conn_picks_the_idle_server() {
    let mut servers = vec![up(1), up(1), up(1)];
    servers[0].in_flight = 4;
    servers[2].in_flight = 1;
    let selector = Selector::new(Balance::LeastConn, &config(&servers));
    for _ in 0..10 {
        assert_eq!(selector.select(&servers), Some(1));
    }
}

#[test]
fn least_conn_ties_rotate() {
    let servers = vec![up(1), up(1), up(1), up(1)];
    let selector = Selector::new(Balance::LeastConn, &config(&servers));
    let picks: Vec<usize> = (0..8).filter_map(|_| selector.select(&servers)).collect();
    assert_eq!(picks, vec![0, 1, 2, 3, 0, 1, 2, 3]);
}

#[test]
fn least_conn_over_many_servers_keeps_load_even() {
    // Requests that never finish, spread over 1,000 servers by two random
    // choices: none ends more than a few above the mean of 20, where picking
    // one server at random would put the busiest near 35.
    let mut servers: Vec<Server> = (0..1000).map(|_| up(1)).collect();
    let selector = Selector::new(Balance::LeastConn, &config(&servers));
    for _ in 0..20_000 {
        let i = selector.select(&servers).expect("a usable server");
        servers[i].in_flight += 1;
    }
    let max = servers.iter().map(|s| s.in_flight).max().unwrap_or(0);
    let min = servers.iter().map(|s| s.in_flight).min().unwrap_or(0);
    assert!(
        max <= 24 && min >= 10,
        "loads {min}..={max} around a mean of 20"
    );
}

#[test]
fn least_conn_over_many_servers_finds_the_few_usable_ones() {
    let mut servers: Vec<Server> = (0..500).map(|_| up(1)).collect();
    for s in &mut servers {
        s.usable = false;
    }
    servers[321].usable = true;
    let selector = Selector::new(Balance::LeastConn, &config(&servers));
    assert_eq!(selector.select(&servers), Some(321));
    servers[321].usable = false;
    assert_eq!(selector.select(&servers), None);
}

#[test]
fn least_conn_honours_weights() {
    // 6 in flight on weight 3 is 2 per unit: less loaded than 3 on weight 1.
    let mut servers = vec![up(3), up(1)];
    servers[0].in_flight = 6;
    servers[1].in_flight = 3;
    let selector = Selector::new(Balance::LeastConn, &config(&servers));
    assert_eq!(selector.select(&servers), Some(0));
    // Simulate requests that never finish: load settles at 3:1.
    let mut servers = vec![up(3), up(1)];
    for _ in 0..400 {
        let i = selector.select(&servers).expect("a usable server");
        servers[i].in_flight += 1;
    }
    assert_eq!((servers[0].in_flight, servers[1].in_flight), (300, 100));
}

#[test]
fn backups_only_when_no_primary_is_usable() {
    for balance in [Balance::RoundRobin, Balance::LeastConn] {
        let mut servers = vec![up(1), up(1), up(1)];
        let selector = Selector::new(balance, &[(1, false), (1, true), (1, false)]);
        let picks = counts(&selector, &servers, 20);
        assert_eq!(picks[1], 0, "{balance:?} used the backup: {picks:?}");
        servers[0].usable = false;
        assert_eq!(counts(&selector, &servers, 10), vec![0, 0, 10]);
        servers[2].usable = false;
        assert_eq!(counts(&selector, &servers, 10), vec![0, 10, 0]);
        servers[1].usable = false;
        assert_eq!(selector.select(&servers), None);
    }
}

#[test]
fn all_backups_or_nothing_usable() {
    let servers = vec![up(1), up(2)];
    let selector = Selector::new(Balance::RoundRobin, &[(1, true), (2, true)]);
    assert_eq!(counts(&selector, &servers, 3), vec![1, 2]);
    let empty = Selector::new(Balance::LeastConn, &[]);
    assert_eq!(empty.select::<Server>(&[]), None);
    // A list shorter than the configured one counts the missing servers as down.
    let selector = Selector::new(Balance::RoundRobin, &[(1, false), (1, false)]);
    assert_eq!(counts(&selector, &servers[..1], 4), vec![4]);
}

#[test]
fn concurrent_round_robin_is_even() {
    for threads in 2..=4 {
        let servers: Arc<Vec<Server>> = Arc::new(vec![up(1), up(1), up(1)]);
        let selector = Arc::new(Selector::new(Balance::RoundRobin, &config(&servers)));
        let tally: Arc<Vec<AtomicUsize>> = Arc::new((0..3).map(|_| AtomicUsize::new(0)).collect());
        let per_thread = 10_000 / threads;
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (servers, selector, tally) = (servers.clone(), selector.clone(), tally.clone());
                std::thread::spawn(move || {
                    for _ in 0..per_thread {
                        if let Some(i) = selector.select(&servers) {
                            tally[i].fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().expect("picker thread");
        }
        let total = per_thread * threads;
        for count in tally.iter().map(|c| c.load(Ordering::Relaxed)) {
            let share = count as f64 / total as f64;
            assert!(
                (share - 1.0 / 3.0).abs() < 0.02,
                "{threads} threads: share {share}"
            );
        }
    }
}

fn weights() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(1u32..=256, 1..=20)
}

proptest! {
    #[test]
    fn schedule_matches_nginx(weights in weights()) {
        let divisor = weights.iter().copied().fold(0, gcd);
        let reduced: Vec<u32> = weights.iter().map(|w| w / divisor).collect();
        let period: u32 = reduced.iter().sum();
        let nginx = nginx_sequence(&weights, period as usize);
        prop_assert_eq!(&smooth_schedule(&weights), &nginx);
        prop_assert_eq!(&smooth_schedule_wide(&weights), &nginx);
    }

    #[test]
    fn round_robin_gives_exact_shares_per_period(weights in weights(), periods in 1usize..=3) {
        let servers: Vec<Server> = weights.iter().map(|&w| up(w)).collect();
        let selector = Selector::new(Balance::RoundRobin, &config(&servers));
        let divisor = weights.iter().copied().fold(0, gcd);
        let period: usize = weights.iter().map(|&w| (w / divisor) as usize).sum();
        let expected: Vec<usize> = weights.iter().map(|&w| (w / divisor) as usize * periods).collect();
        prop_assert_eq!(counts(&selector, &servers, period * periods), expected);
    }

    #[test]
    fn round_robin_keeps_relative_weights_of_usable_servers(
        servers in prop::collection::vec((1u32..=256, any::<bool>()), 1..=20),
    ) {
        let servers: Vec<Server> = servers
            .into_iter()
            .map(|(weight, usable)| Server { weight, usable, in_flight: 0, id: 0 })
            .collect();
        prop_assume!(servers.iter().any(|s| s.usable));
        let selector = Selector::new(Balance::RoundRobin, &config(&servers));
        let divisor = servers.iter().map(|s| s.weight).fold(0, gcd);
        let share = |s: &Server| if s.usable { (s.weight / divisor) as usize } else { 0 };
        let picks: usize = servers.iter().map(share).sum();
        let expected: Vec<usize> = servers.iter().map(share).collect();
        prop_assert_eq!(counts(&selector, &servers, picks), expected);
    }

    #[test]
    fn least_conn_never_picks_above_the_minimum(
        servers in prop::collection::vec((1u32..=256, any::<bool>(), 0u64..1000), 1..=SCAN_UP_TO),
        picks in 1usize..5,
    ) {
        let servers = loaded(servers);
        let selector = Selector::new(Balance::LeastConn, &config(&servers));
        for _ in 0..picks {
            let picked = selector.select(&servers);
            prop_assert_eq!(picked.is_some(), servers.iter().any(|s| s.usable));
            if let Some(i) = picked {
                let p = &servers[i];
                prop_assert!(p.usable);
                for s in servers.iter().filter(|s| s.usable) {
                    prop_assert!(!less_loaded(s.in_flight, s.weight, p.in_flight, p.weight));
                }
            }
        }
    }

    #[test]
    fn least_conn_over_many_servers_never_picks_the_most_loaded(
        servers in prop::collection::vec((1u32..=4, any::<bool>(), 0u64..50), SCAN_UP_TO + 1..=60),
        picks in 1usize..10,
    ) {
        let servers = loaded(servers);
        let selector = Selector::new(Balance::LeastConn, &config(&servers));
        let usable: Vec<&Server> = servers.iter().filter(|s| s.usable).collect();
        for _ in 0..picks {
            let picked = selector.select(&servers);
            prop_assert_eq!(picked.is_some(), !usable.is_empty());
            if let Some(i) = picked {
                let p = &servers[i];
                prop_assert!(p.usable);
                // The less loaded of two: some other usable server is at least as loaded.
                if usable.len() >= 2 {
                    let mut others = usable.iter().filter(|s| !std::ptr::eq(**s, p));
                    prop_assert!(
                        others.any(|s| !less_loaded(s.in_flight, s.weight, p.in_flight, p.weight)),
                        "picked the single most loaded server"
                    );
                }
            }
        }
    }

    #[test]
    fn select_is_some_iff_something_is_usable(
        servers in prop::collection::vec((1u32..=256, any::<bool>(), any::<bool>()), 0..=20),
        least_conn in any::<bool>(),
    ) {
        let balance = if least_conn { Balance::LeastConn } else { Balance::RoundRobin };
        let config: Vec<(u32, bool)> = servers.iter().map(|&(w, backup, _)| (w, backup)).collect();
        let servers: Vec<Server> = servers
            .into_iter()
            .map(|(weight, _, usable)| Server { weight, usable, in_flight: 0, id: 0 })
            .collect();
        let selector = Selector::new(balance, &config);
        let any_primary = servers.iter().zip(&config).any(|(s, c)| s.usable && !c.1);
        for _ in 0..3 {
            let picked = selector.select(&servers);
            prop_assert_eq!(picked.is_some(), servers.iter().any(|s| s.usable));
            if let Some(i) = picked {
                prop_assert!(servers[i].usable);
                prop_assert!(!config[i].1 || !any_primary, "backup picked while a primary is up");
            }
        }
    }
}

/// Servers named by address, as the daemon identifies them for hashing.
fn named(weights: &[u32]) -> Vec<Server> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| Server {
            id: super::stable_hash(format!("10.1.{}.{}:3000", i / 250, i % 250).as_bytes()),
            ..up(weight)
        })
        .collect()
}

fn owner(selector: &Selector, servers: &[Server], key: u64) -> u64 {
    let i = selector
        .select_keyed(servers, Some(key))
        .expect("a usable server");
    servers[i].id
}

fn keys(n: u64) -> impl Iterator<Item = u64> {
    (0..n).map(|k| super::stable_hash(&k.to_le_bytes()))
}

proptest! {
    #[test]
    fn hash_moves_only_the_removed_servers_keys(
        weights in prop::collection::vec(1u32..=8, 2..12),
        removed in any::<prop::sample::Index>(),
    ) {
        let servers = named(&weights);
        let selector = Selector::new(Balance::Hash, &config(&servers));
        let gone = removed.index(servers.len());
        let mut rest = servers.clone();
        rest.remove(gone);
        let smaller = Selector::new(Balance::Hash, &config(&rest));
        let mut moved = 0;
        for key in keys(2000) {
            let before = owner(&selector, &servers, key);
            let after = owner(&smaller, &rest, key);
            if before != servers[gone].id {
                prop_assert_eq!(before, after, "a key of a remaining server moved");
            } else {
                moved += 1;
            }
        }
        // The removed server's share is its weight's share, give or take sampling.
        let total: u32 = weights.iter().sum();
        let share = f64::from(weights[gone]) / f64::from(total);
        prop_assert!((moved as f64 / 2000.0) <= share + 0.05, "moved {moved} of 2000, share {share}");
    }

    #[test]
    fn hash_ignores_list_order_and_an_unusable_server_acts_as_removed(
        weights in prop::collection::vec(1u32..=8, 2..10),
        down in any::<prop::sample::Index>(),
    ) {
        let servers = named(&weights);
        let selector = Selector::new(Balance::Hash, &config(&servers));
        let mut reversed = servers.clone();
        reversed.reverse();
        let other = Selector::new(Balance::Hash, &config(&reversed));
        let mut with_down = servers.clone();
        with_down[down.index(servers.len())].usable = false;
        let mut without = servers.clone();
        without.remove(down.index(servers.len()));
        let smaller = Selector::new(Balance::Hash, &config(&without));
        for key in keys(500) {
            prop_assert_eq!(owner(&selector, &servers, key), owner(&other, &reversed, key));
            prop_assert_eq!(owner(&selector, &with_down, key), owner(&smaller, &without, key));
        }
    }

    #[test]
    fn random_two_never_picks_the_busier_of_its_two_candidates(
        loads in prop::collection::vec((1u32..=4, 0u64..50), 2..40),
        seed in any::<u64>(),
    ) {
        let servers: Vec<Server> = loads
            .iter()
            .map(|&(weight, in_flight)| Server { in_flight, ..up(weight) })
            .collect();
        let selector = Selector::new(Balance::RandomTwo, &config(&servers));
        // The same seed replays the two draws the pick makes.
        fastrand::seed(seed);
        let picked = selector.select(&servers).expect("a usable server");
        let mut rng = fastrand::Rng::with_seed(seed);
        let first = rng.usize(..servers.len());
        let second = loop {
            let i = rng.usize(..servers.len());
            if i != first {
                break i;
            }
        };
        prop_assert!(picked == first || picked == second);
        let other = if picked == first { second } else { first };
        let (p, o) = (&servers[picked], &servers[other]);
        prop_assert!(
            !less_loaded(o.in_flight, o.weight, p.in_flight, p.weight),
            "picked {picked} ({}/{}) over the less loaded {other} ({}/{})",
            p.in_flight, p.weight, o.in_flight, o.weight
        );
    }
}

#[test]
fn hash_spreads_keys_by_weight() {
    let weights = [1, 2, 3, 1, 1];
    let servers = named(&weights);
    let selector = Selector::new(Balance::Hash, &config(&servers));
    let mut counts = vec![0usize; servers.len()];
    let n = 40_000;
    for key in keys(n) {
        counts[selector.select_keyed(&servers, Some(key)).expect("usable")] += 1;
    }
    let total: u32 = weights.iter().sum();
    for (i, &w) in weights.iter().enumerate() {
        let expected = n as f64 * f64::from(w) / f64::from(total);
        let ratio = counts[i] as f64 / expected;
        assert!(
            (0.8..=1.2).contains(&ratio),
            "server {i}: {} for {expected}",
            counts[i]
        );
    }
}

#[test]
fn hash_without_a_key_goes_round_robin() {
    let servers = named(&[1, 1, 1]);
    let selector = Selector::new(Balance::Hash, &config(&servers));
    assert_eq!(counts(&selector, &servers, 3 * 20), vec![20, 20, 20]);
}

#[test]
fn hash_sends_a_key_to_the_same_server_every_time() {
    let servers = named(&[1, 1, 1, 1]);
    let selector = Selector::new(Balance::Hash, &config(&servers));
    for key in keys(50) {
        let first = owner(&selector, &servers, key);
        assert!((0..10).all(|_| owner(&selector, &servers, key) == first));
    }
}
