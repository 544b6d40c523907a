//! Instruction counts for the in-process decision, which unlike timings do not depend on the
//! machine's noise: the same decision as `benches/decision.rs` (`decision/native_table` and
//! `decision/wasm_plugin`), run `N` times inside functions that callgrind counts alone.
//!
//! ```sh
//! cargo build --release -p billstack-host --example decision_count
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/decision.cg \
//!     --collect-atstart=no --toggle-collect='decision_count::measure_*' \
//!     target/release/examples/decision_count 10000
//! callgrind_annotate /tmp/decision.cg | grep measure_
//! ```
//! Each `measure_*` line's inclusive count divided by `N` is the instructions per decision.
//! Without valgrind the program prints wall-clock time per decision as a sanity check.

use std::time::Instant;

use billstack_host::plugins::DEFAULT_PLUGIN;
use billstack_host::policy::{PolicyEngine, PolicyLimits, ScopePolicy};
use billstack_keystore::Store;

#[path = "../benches/support/mod.rs"]
mod support;

use support::{NativeTable, bench_store, decide_allowed};

fn decide_n(store: &Store, header: &str, policy: &dyn ScopePolicy, n: u64) {
    for _ in 0..n {
        decide_allowed(store, header, policy);
    }
}

#[inline(never)]
fn measure_native(store: &Store, header: &str, policy: &dyn ScopePolicy, n: u64) {
    decide_n(store, header, policy, n);
}

#[inline(never)]
fn measure_wasm(store: &Store, header: &str, policy: &dyn ScopePolicy, n: u64) {
    decide_n(store, header, policy, n);
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(10_000, |a| a.parse().expect("N: a number of decisions"));
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, header) = bench_store(dir.path());
    let engine =
        PolicyEngine::new(PolicyLimits::default(), Some(dir.path().join("cache"))).expect("engine");
    let wasm = engine.load(DEFAULT_PLUGIN).expect("default plugin");
    let native = NativeTable::new();
    // Warm up outside the counted functions: the key cache, the instance pool.
    decide_n(&store, &header, &native, 10);
    decide_n(&store, &header, &*wasm, 10);

    let started = Instant::now();
    measure_native(&store, &header, &native, n);
    let native_time = started.elapsed();
    let started = Instant::now();
    measure_wasm(&store, &header, &*wasm, n);
    let wasm_time = started.elapsed();
    println!(
        "{n} decisions each: native {:?} per decision, wasm {:?} per decision",
        native_time / n as u32,
        wasm_time / n as u32
    );
}
