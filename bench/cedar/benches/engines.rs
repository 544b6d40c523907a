//! One group, four policy engines, the same whole decision for each (bearer parse → SHA-256 →
//! key lookup → host checks → the policy): the default table compiled natively (the floor), the
//! embedded Wasm plugin, the same table as Cedar policies, and the JavaScript example plugin.
//!
//! `cargo bench -p billstack-cedar-bench --bench engines`; set `BILLSTACK_EXAMPLE_JAVASCRIPT` to
//! the built JavaScript example to include it. Figures are in docs/performance.md.

use std::time::Duration;

use billstack_cedar_bench::{CedarTable, NativeTable, bench_store, decide_allowed};
use billstack_host::plugins::DEFAULT_PLUGIN;
use billstack_host::policy::{PolicyEngine, PolicyLimits, ScopePolicy};
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, header) = bench_store(dir.path());

    let engine = PolicyEngine::new(PolicyLimits::default(), None).expect("engine");
    let mut engines: Vec<(&str, Box<dyn ScopePolicy>)> = vec![
        ("native_table", Box::new(NativeTable::new())),
        (
            "wasm_plugin",
            Box::new(ArcPolicy(
                engine.load(DEFAULT_PLUGIN).expect("default plugin"),
            )),
        ),
        ("cedar", Box::new(CedarTable::new())),
    ];
    if let Some(path) = std::env::var_os("BILLSTACK_EXAMPLE_JAVASCRIPT") {
        let bytes = std::fs::read(path).expect("the JavaScript example");
        engines.push((
            "javascript_plugin",
            Box::new(ArcPolicy(
                engine.load(&bytes).expect("the JavaScript example loads"),
            )),
        ));
    } else {
        eprintln!(
            "javascript_plugin skipped: set BILLSTACK_EXAMPLE_JAVASCRIPT to the built example"
        );
    }

    let mut group = c.benchmark_group("engines");
    group.measurement_time(Duration::from_secs(5));
    for (name, policy) in &engines {
        group.bench_function(*name, |b| {
            b.iter(|| decide_allowed(&store, &header, &**policy))
        });
    }
    group.finish();
}

/// A loaded plugin as a boxed policy.
struct ArcPolicy(std::sync::Arc<billstack_host::policy::Plugin>);

impl ScopePolicy for ArcPolicy {
    fn info(&self) -> &billstack_host::policy::PolicyInfo {
        self.0.info()
    }

    fn scope_names(&self) -> &[String] {
        self.0.scope_names()
    }

    fn authorize(
        &self,
        r: &billstack_host::policy::PolicyRequest<'_>,
    ) -> Result<billstack_host::policy::PolicyDecision, billstack_host::policy::PluginError> {
        self.0.authorize(r)
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
