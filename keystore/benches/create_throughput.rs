//! Durable key creation with 1, 8 and 32 concurrent creators:
//! `cargo bench -p billstack-keystore --bench create_throughput`.
//!
//! Every create is acknowledged only once it is on disk (the store's normal mode: concurrent
//! writers share flushes, none is skipped). Each configuration runs three rounds of 3 s on a
//! fresh store; the median round is reported in keys/s. Not criterion: the figure is a
//! throughput under concurrency, not the time of one call.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use billstack_keystore::storage::*;
use billstack_keystore::{NewApiKey, Store};

const ROUND: Duration = Duration::from_secs(3);

fn round(creators: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    store
        .create_team(Some("team_a"), "A", "bench".into())
        .expect("team");
    let created = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..creators {
            let (store, created, stop) = (&store, &created, &stop);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    store
                        .create_key(
                            &NewApiKey {
                                scopes: vec!["customers:read".into()],
                                ..NewApiKey::new("team_a", format!("creator {t}"))
                            },
                            "test".into(),
                        )
                        .expect("create");
                    created.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(ROUND);
        stop.store(true, Ordering::Relaxed);
    });
    created.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects creator counts by prefix.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    println!("durable key creation, median of 3 rounds of {ROUND:?}");
    for creators in [1usize, 8, 32] {
        let label = format!("create/{creators}_creators");
        if filter.as_deref().is_some_and(|f| !label.contains(f)) {
            continue;
        }
        let mut rates: Vec<f64> = (0..3).map(|_| round(creators)).collect();
        rates.sort_by(f64::total_cmp);
        println!(
            "{label}: {:.0} keys/s (rounds: {})",
            rates[1],
            rates
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}
