//! sled and PostgreSQL side by side, in one run: `cargo bench -p billstack-keystore --bench
//! backends` (PostgreSQL: a throwaway cluster on loopback, `fsync=off`, synchronous_commit on;
//! Debian's postgresql must be installed). Figures are recorded in docs/performance.md.
//!
//! - cached lookups: the lookup a decision makes for a key in use (memory only, both backends);
//! - cold lookups: the first lookup of each of 2,000 keys after the store is opened again
//!   (sled reads its files; PostgreSQL makes one query), p50 and p99;
//! - durable creates with 32 concurrent creators, keys/s, three interleaved 3 s rounds;
//! - migration of a sled store of 100,000 keys into an empty database, with every table
//!   checked.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use billstack_keystore::pg::{PgOptions, PgStore};
use billstack_keystore::storage::*;
use billstack_keystore::{NewApiKey, Store, StoreOptions};
use billstack_pg_cluster::PgCluster;

const CREATORS: usize = 32;
const ROUND: Duration = Duration::from_secs(3);
const COLD_KEYS: usize = 2_000;
const MIGRATED_KEYS: usize = 100_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn creates_per_second(store: &dyn Storage) -> f64 {
    let created = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..CREATORS {
            let (created, stop) = (&created, &stop);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    store
                        .create_key(&NewApiKey::new("team_a", "bench"), "bench".into())
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

/// Lookups of every key once, on a store just opened: (p50, p99).
fn cold(store: &dyn Storage, raws: &[String]) -> (Duration, Duration) {
    let mut times: Vec<Duration> = raws
        .iter()
        .map(|raw| {
            let t = Instant::now();
            assert!(store.lookup_key(raw).expect("lookup").is_some());
            t.elapsed()
        })
        .collect();
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

/// Nanoseconds per lookup of keys already in memory.
fn cached_ns(store: &dyn Storage, raws: &[String]) -> f64 {
    for raw in raws {
        store.lookup_key(raw).expect("warm");
    }
    let rounds = 50;
    let t = Instant::now();
    for _ in 0..rounds {
        for raw in raws {
            black_box(store.lookup_key(black_box(raw)).expect("lookup"));
        }
    }
    t.elapsed().as_nanos() as f64 / (rounds * raws.len()) as f64
}

fn keys(store: &dyn Storage, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            store
                .create_key(&NewApiKey::new("team_a", format!("k{i}")), "bench".into())
                .expect("create")
                .1
        })
        .collect()
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    let Some(cluster) = PgCluster::start() else {
        eprintln!("PostgreSQL is not installed (apt-get install postgresql): nothing to compare");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let sled_dir = dir.path().join("sled");
    let url = cluster.new_database();
    let sled = Store::open(&sled_dir).expect("sled");
    let pg = PgStore::connect(&url, &PgOptions::default()).expect("postgres");
    for store in [&sled as &dyn Storage, &pg] {
        store
            .create_team(Some("team_a"), "A", "bench".into())
            .expect("team");
    }

    // Cold and cached lookups.
    let sled_raws = keys(&sled, COLD_KEYS);
    let pg_raws = keys(&pg, COLD_KEYS);
    drop(sled);
    drop(pg);
    let sled = Store::open(&sled_dir).expect("reopen sled");
    let pg = PgStore::connect(&url, &PgOptions::default()).expect("reconnect");
    let (sled_p50, sled_p99) = cold(&sled, &sled_raws);
    let (pg_p50, pg_p99) = cold(&pg, &pg_raws);
    let (sled_cached, pg_cached) = (cached_ns(&sled, &sled_raws), cached_ns(&pg, &pg_raws));
    println!(
        "cold lookup, {COLD_KEYS} keys: sled p50 {sled_p50:?} p99 {sled_p99:?}; \
         postgres p50 {pg_p50:?} p99 {pg_p99:?}"
    );
    println!(
        "cached lookup: sled {sled_cached:.0} ns, postgres {pg_cached:.0} ns (postgres/sled {:.3})",
        pg_cached / sled_cached
    );

    // Durable creates, 32 creators, rounds interleaved.
    let (mut s, mut p) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        s.push(creates_per_second(&sled));
        p.push(creates_per_second(&pg));
    }
    println!(
        "durable creates, {CREATORS} creators: sled {:.0} keys/s (rounds {s:.0?}), postgres {:.0} keys/s (rounds {p:.0?})",
        median(s.clone()),
        median(p.clone())
    );

    // Migration of 100,000 keys.
    let big_dir = dir.path().join("big");
    let big = Store::open_with(
        &big_dir,
        &StoreOptions {
            durable_writes: false,
            ..StoreOptions::default()
        },
    )
    .expect("big");
    big.create_team(Some("team_a"), "A", "bench".into())
        .expect("team");
    keys(&big, MIGRATED_KEYS);
    big.flush().expect("flush");
    let mut backup = Vec::new();
    let t = Instant::now();
    big.backup_to(&mut backup).expect("backup");
    let target = PgStore::connect(&cluster.new_database(), &PgOptions::default()).expect("target");
    let (summary, tables) = target
        .restore_from(|| Ok(std::io::Cursor::new(backup.as_slice())))
        .expect("migrate");
    let took = t.elapsed();
    assert!(tables.iter().all(|t| t.matches()), "{tables:?}");
    println!(
        "migration of {} keys ({} records): {:.1} s, every table's checksum equal",
        summary.keys,
        summary.entries,
        took.as_secs_f64()
    );
}
