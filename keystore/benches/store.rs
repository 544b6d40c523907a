//! Key lookup at 10³ and 10⁶ stored keys: `cargo bench -p billstack-keystore --bench store`.
//!
//! Each store is bulk-loaded (writes flushed once at the end), closed and reopened, so the
//! measurements start from what a restarted server sees. `cached` is the lookup a server makes
//! for a key in use (the in-memory cache of active keys); `uncached` turns that cache off, so
//! every lookup reads sled's hash index and the record; each cycles through the same number of
//! keys (`KEYS_IN_USE`) picked at random from the whole store. Figures are recorded in docs/performance.md.
//!
//! Loading 10⁶ keys takes minutes. Set `BILLSTACK_BENCH_STORE=DIR` to keep each loaded store
//! (and its raw keys, which are test data) under `DIR` and reuse it on later runs.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use billstack_keystore::storage::*;
use billstack_keystore::{NewApiKey, Store, StoreOptions};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand::seq::IndexedRandom;

/// A store of `n` keys and their raw values: reused from `BILLSTACK_BENCH_STORE` when a previous
/// run left one there, else loaded (into that directory, or a temporary one).
fn store_of(n: usize) -> (PathBuf, Option<tempfile::TempDir>, Vec<String>) {
    let Some(root) = std::env::var_os("BILLSTACK_BENCH_STORE") else {
        let dir = tempfile::tempdir().expect("tempdir");
        let raws = load(dir.path(), n);
        return (dir.path().to_path_buf(), Some(dir), raws);
    };
    let dir = PathBuf::from(root).join(format!("keys-{n}"));
    let list = dir.join("raw-keys.txt");
    if let Ok(text) = std::fs::read_to_string(&list) {
        let raws: Vec<String> = text.lines().map(str::to_owned).collect();
        if raws.len() == n {
            eprintln!("reusing {n} keys in {}", dir.display());
            return (dir, None, raws);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let raws = load(&dir, n);
    std::fs::write(&list, raws.join("\n")).expect("write the raw key list");
    (dir, None, raws)
}

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
        .create_team(Some("team_a"), "A", "bench".into())
        .expect("team");
    let started = std::time::Instant::now();
    let raws: Vec<String> = (0..n)
        .map(|i| {
            store
                .create_key(
                    &NewApiKey {
                        scopes: vec!["customers:read".into()],
                        ..NewApiKey::new("team_a", format!("key {i}"))
                    },
                    "test".into(),
                )
                .expect("create")
                .1
        })
        .collect();
    store.flush().expect("flush");
    eprintln!("loaded {n} keys in {:?}", started.elapsed());
    raws
}

/// Keys in use during a measurement: the same number at every store size, so the figures
/// compare store sizes, not working sets (4,096 keys drawn from the 10³ store would repeat
/// each key four times, while at 10⁶ every one would be distinct and four times the memory).
const KEYS_IN_USE: usize = 1_000;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup");
    for n in [1_000usize, 1_000_000] {
        let (dir, _temporary, raws) = store_of(n);
        // Copied out of the big list, so where they sit in memory does not depend on `n`.
        let sample: Vec<String> = raws
            .choose_multiple(&mut rand::rng(), KEYS_IN_USE)
            .cloned()
            .collect();
        drop(raws);
        let mut variants = vec![
            ("cached", StoreOptions::default()),
            (
                "uncached",
                StoreOptions {
                    key_cache_capacity: 0,
                    ..StoreOptions::default()
                },
            ),
        ];
        if n > KEYS_IN_USE {
            // The same, with sled's page cache big enough for the whole store: shows what the
            // uncached row pays for pages that are not in memory.
            variants.push((
                "uncached_1GiB_page_cache",
                StoreOptions {
                    key_cache_capacity: 0,
                    cache_capacity: 1 << 30,
                    ..StoreOptions::default()
                },
            ));
        }
        for (label, options) in variants {
            let store = Store::open_with(&dir, &options).expect("open");
            let mut i = 0;
            group.bench_function(BenchmarkId::new(label, n), |b| {
                b.iter(|| {
                    i = (i + 1) % sample.len();
                    let found = store.lookup_key(black_box(&sample[i])).expect("lookup");
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
