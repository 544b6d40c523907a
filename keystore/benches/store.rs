//! Key lookup at 10³ and 10⁶ stored keys: `cargo bench -p billstack-keystore --bench store`.
//!
//! Each store is bulk-loaded (writes flushed once at the end), closed and reopened, so the
//! measurements start from what a restarted server sees. `cached` is the lookup a server makes
//! for a key in use (the in-memory cache of active keys); `uncached` turns that cache off, so
//! every lookup reads sled's hash index and the record; each cycles through 4,096 keys picked
//! at random from the whole store. Figures are recorded in docs/performance.md.

use std::hint::black_box;
use std::path::Path;

use billstack_keystore::{NewApiKey, Store, StoreOptions};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand::seq::IndexedRandom;

fn load(dir: &Path, n: usize) -> Vec<String> {
    let store = Store::open_with(
        dir,
        &StoreOptions {
            durable_writes: false,
            ..StoreOptions::default()
        },
    )
    .expect("open");
    store
        .create_team(Some("team_a"), "A", "bench")
        .expect("team");
    let started = std::time::Instant::now();
    let raws: Vec<String> = (0..n)
        .map(|i| {
            store
                .create_key(&NewApiKey {
                    team_id: "team_a".into(),
                    project_id: None,
                    name: format!("key {i}"),
                    scopes: vec!["customers:read".into()],
                    expires_at: None,
                    actor: "bench".into(),
                })
                .expect("create")
                .1
        })
        .collect();
    store.flush().expect("flush");
    eprintln!("loaded {n} keys in {:?}", started.elapsed());
    raws
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup");
    for n in [1_000usize, 1_000_000] {
        let dir = tempfile::tempdir().expect("tempdir");
        let raws = load(dir.path(), n);
        let mut rng = rand::rng();
        let sample: Vec<&String> = (0..4096)
            .map(|_| raws.choose(&mut rng).expect("keys"))
            .collect();
        for (label, key_cache_capacity) in [
            ("cached", StoreOptions::default().key_cache_capacity),
            ("uncached", 0),
        ] {
            let store = Store::open_with(
                dir.path(),
                &StoreOptions {
                    key_cache_capacity,
                    ..StoreOptions::default()
                },
            )
            .expect("open");
            let mut i = 0;
            group.bench_function(BenchmarkId::new(label, n), |b| {
                b.iter(|| {
                    i = (i + 1) % sample.len();
                    let found = store.lookup_key(black_box(sample[i])).expect("lookup");
                    assert!(found.is_some());
                    found
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
