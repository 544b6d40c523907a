//! The in-process decision: bearer parse → SHA-256 → store lookup → host checks → policy.
//!
//! Run with `cargo bench -p billstack-host --bench decision`. The same request goes through
//! the embedded Wasm plugin and through a native Rust build of the same table (the
//! `billstack-scope-table` crate compiled for the host), so the sandbox's cost shows as a
//! ratio. Figures are recorded in docs/performance.md.

use std::hint::black_box;
use std::time::Duration;

use billstack_host::decision::{Credential, Decider, Decision, authenticate, decide_for_key};
use billstack_host::plugins::DEFAULT_PLUGIN;
use billstack_host::policy::{
    PluginError, PolicyDecision, PolicyEngine, PolicyInfo, PolicyLimits, PolicyRequest, PolicySet,
    ScopeDescription, ScopePolicy,
};
use billstack_keystore::{NewApiKey, Store, clock};
use criterion::{Criterion, criterion_group, criterion_main};

/// The default table compiled natively: the floor the Wasm plugin is compared with.
struct NativeDefault {
    info: PolicyInfo,
    names: Vec<String>,
}

impl NativeDefault {
    fn new() -> NativeDefault {
        let scopes: Vec<ScopeDescription> = billstack_scope_table::SCOPES
            .iter()
            .map(|(n, d)| ScopeDescription {
                name: n.to_string(),
                description: d.to_string(),
            })
            .collect();
        let names = scopes.iter().map(|s| s.name.clone()).collect();
        NativeDefault {
            info: PolicyInfo {
                name: "native".into(),
                version: "0".into(),
                scopes,
            },
            names,
        }
    }
}

impl ScopePolicy for NativeDefault {
    fn info(&self) -> &PolicyInfo {
        &self.info
    }

    fn scope_names(&self) -> &[String] {
        &self.names
    }

    fn authorize(&self, r: &PolicyRequest<'_>) -> Result<PolicyDecision, PluginError> {
        use billstack_scope_table::Outcome;
        Ok(
            match billstack_scope_table::decide(r.method, r.resource, r.scopes) {
                Outcome::Allow => PolicyDecision::Allow,
                Outcome::InsufficientScope(s) => PolicyDecision::Deny {
                    status: 403,
                    code: "insufficient_scope".into(),
                    message: format!(
                        "this key lacks the {s} scope needed for {} {}",
                        r.method, r.resource
                    ),
                    required_scope: Some(s.into()),
                },
                Outcome::UnknownRoute => PolicyDecision::Deny {
                    status: 404,
                    code: "unknown_route".into(),
                    message: format!("{} {} is not a BillStack API route", r.method, r.resource),
                    required_scope: None,
                },
            },
        )
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("store")).expect("store");
    store
        .create_team(Some("team_a"), "A", "bench")
        .expect("team");
    store
        .create_project("team_a", Some("proj_a"), "A", "bench")
        .expect("project");
    let (_, raw) = store
        .create_key(&NewApiKey {
            team_id: "team_a".into(),
            project_id: Some("proj_a".into()),
            name: "bench".into(),
            scopes: vec!["customers:read".into(), "products:read".into()],
            expires_at: None,
            actor: "bench".into(),
        })
        .expect("key");
    let engine =
        PolicyEngine::new(PolicyLimits::default(), Some(dir.path().join("cache"))).expect("engine");
    let wasm = engine.load(DEFAULT_PLUGIN).expect("default plugin");
    let native = NativeDefault::new();
    let policies = PolicySet::new(wasm.clone());
    let header = format!("Bearer {raw}");
    let target =
        "/api/billstack/teams/team_a/projects/proj_a/customers/cus_123?expand=subscriptions";

    let mut group = c.benchmark_group("decision");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("native_table", |b| {
        b.iter(|| {
            let key = authenticate(
                &store,
                Credential::AuthorizationHeader(Some(black_box(&header))),
                clock::now_ms(),
            )
            .expect("authenticated");
            let d = decide_for_key(&key, &native, "GET", black_box(target));
            assert!(matches!(d, Decision::Allow(_)));
            d
        })
    });
    group.bench_function("wasm_plugin", |b| {
        b.iter(|| {
            let key = authenticate(
                &store,
                Credential::AuthorizationHeader(Some(black_box(&header))),
                clock::now_ms(),
            )
            .expect("authenticated");
            let d = decide_for_key(&key, &*wasm, "GET", black_box(target));
            assert!(matches!(d, Decision::Allow(_)));
            d
        })
    });
    group.bench_function("wasm_plugin_via_policy_set", |b| {
        let decider = Decider {
            store: &store,
            policies: &policies,
        };
        b.iter(|| {
            let d = decider.decide(
                Credential::AuthorizationHeader(Some(black_box(&header))),
                "GET",
                black_box(target),
            );
            assert!(matches!(d, Decision::Allow(_)));
            d
        })
    });
    group.bench_function("invalid_checksum", |b| {
        let mut bad = header.clone().into_bytes();
        let last = bad.len() - 1;
        bad[last] = if bad[last] == b'0' { b'1' } else { b'0' };
        let bad = String::from_utf8(bad).expect("ascii");
        let decider = Decider {
            store: &store,
            policies: &policies,
        };
        b.iter(|| {
            decider.decide(
                Credential::AuthorizationHeader(Some(black_box(&bad))),
                "GET",
                black_box(target),
            )
        })
    });
    group.finish();

    // The policy call alone, without storage, to separate the sandbox from the rest.
    let scopes = vec!["customers:read".to_string(), "products:read".to_string()];
    let request = PolicyRequest {
        method: "GET",
        path: "/api/billstack/teams/team_a/projects/proj_a/customers/cus_123",
        resource: "/customers/cus_123",
        query: Some("expand=subscriptions"),
        team_id: "team_a",
        project_id: "proj_a",
        key_id: "key_bench",
        key_project_id: Some("proj_a"),
        scopes: &scopes,
    };
    let mut group = c.benchmark_group("policy_call");
    group.bench_function("native_table", |b| {
        b.iter(|| native.authorize(black_box(&request)).expect("ok"))
    });
    group.bench_function("wasm_plugin", |b| {
        b.iter(|| wasm.authorize(black_box(&request)).expect("ok"))
    });
    group.finish();

    let mut group = c.benchmark_group("store");
    group.bench_function("lookup_key", |b| {
        b.iter(|| store.lookup_key(black_box(&raw)).expect("ok"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
