//! The key list of a team with 100,000 keys, through the router in process (session check,
//! query parsing, the store's by-age index, `createdBy` lookups, JSON):
//! `cargo bench -p billstack-host --bench key_list`. Figures are in docs/performance.md.
//!
//! Cases: the first page of 100 (what the dashboard opens with), a page from the middle (by
//! cursor), a status filter, and a search that matches one key of the 100,000 (the worst
//! case: each page reads at most `MAX_KEYS_EXAMINED` keys, so it is a bounded scan).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use billstack_host::app::{App, AppOptions};
use billstack_host::config::{DEFAULT_THROTTLE_WINDOW_SECONDS, DEFAULT_UNKNOWN_KEYS_PER_ADDRESS};
use billstack_host::plugins::DEFAULT_PLUGIN;
use billstack_host::policy::{PolicyEngine, PolicyLimits, PolicySet};
use billstack_host::server::{self, AppState};
use billstack_keystore::storage::*;
use billstack_keystore::{NewApiKey, NewUser, Role, Store, StoreOptions};
use criterion::{Criterion, criterion_group, criterion_main};
use tower::ServiceExt;

const KEYS: usize = 100_000;
const EMAIL: &str = "owner@bench.test";
const PASSWORD: &str = "bench-password-1";

/// The request as a browser at 192.0.2.1 sends it to `keys.test`.
fn from_client(mut request: Request<Body>) -> Request<Body> {
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 1], 40000))));
    request
        .headers_mut()
        .insert(header::HOST, "keys.test".parse().expect("host"));
    request
}

fn send(runtime: &tokio::runtime::Runtime, router: &Router, request: Request<Body>) -> Vec<u8> {
    let request = from_client(request);
    runtime.block_on(async {
        let response = router.clone().oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .expect("body")
            .to_vec()
    })
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_with(
        dir.path().join("data"),
        &StoreOptions {
            durable_writes: false,
            ..StoreOptions::default()
        },
    )
    .expect("store");
    store
        .create_team(Some("team_a"), "A", "bench".into())
        .expect("team");
    store
        .create_project("team_a", Some("proj_a"), "Web", "bench".into())
        .expect("project");
    let owner = store
        .create_user(
            &NewUser {
                email: EMAIL.into(),
                password: PASSWORD.into(),
                team_id: "team_a".into(),
                role: Role::Owner,
            },
            "bench".into(),
        )
        .expect("user");
    let started = std::time::Instant::now();
    for i in 0..KEYS {
        let name = if i == 10 {
            "needle".to_string()
        } else {
            format!("key {i}")
        };
        store
            .create_key(
                &NewApiKey {
                    project_id: (i % 10 == 0).then(|| "proj_a".to_string()),
                    ..NewApiKey::new("team_a", name)
                },
                owner.id.as_str().into(),
            )
            .expect("key");
    }
    store.flush().expect("flush");
    eprintln!("loaded {KEYS} keys in {:?}", started.elapsed());

    let engine =
        PolicyEngine::new(PolicyLimits::default(), Some(dir.path().join("cache"))).expect("engine");
    let policies = PolicySet::new(engine.load(DEFAULT_PLUGIN).expect("default policy"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let router = {
        let _entered = runtime.enter();
        let app = Arc::new(App::new(
            Arc::new(store),
            Arc::new(policies),
            engine,
            &AppOptions {
                unknown_keys_per_address: DEFAULT_UNKNOWN_KEYS_PER_ADDRESS,
                throttle_window: Duration::from_secs(DEFAULT_THROTTLE_WINDOW_SECONDS),
            },
        ));
        server::router(Arc::new(AppState::plain(app, None)))
    };
    let cookie = {
        let request = from_client(
            Request::post("/api/auth/login")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    serde_json::json!({"email": EMAIL, "password": PASSWORD}).to_string(),
                ))
                .expect("request"),
        );
        let response = runtime
            .block_on(router.clone().oneshot(request))
            .expect("login");
        assert_eq!(response.status(), StatusCode::OK);
        response.headers()[header::SET_COOKIE]
            .to_str()
            .expect("ascii")
            .split(';')
            .next()
            .expect("pair")
            .to_string()
    };
    let get = |query: &str| {
        let body = send(
            &runtime,
            &router,
            Request::get(format!("/api/billstack/teams/team_a/api-keys{query}"))
                .header(header::COOKIE, &cookie)
                .body(Body::empty())
                .expect("request"),
        );
        serde_json::from_slice::<serde_json::Value>(&body).expect("json")
    };
    // A cursor halfway down: follow 500 pages of 100.
    let mut cursor = String::new();
    for _ in 0..(KEYS / 2 / 500) {
        let page = get(&format!("?limit=500{cursor}"));
        cursor = format!("&cursor={}", page["nextCursor"].as_str().expect("more"));
    }
    let first = get("");
    assert_eq!(first["keys"].as_array().expect("keys").len(), 100);

    let mut group = c.benchmark_group("key_list_100k");
    group.measurement_time(Duration::from_secs(5));
    group.sample_size(30);
    group.bench_function("first_page_of_100", |b| b.iter(|| get("")));
    group.bench_function("middle_page_of_100", |b| {
        b.iter(|| get(&format!("?limit=100{cursor}")))
    });
    group.bench_function("project_filter_page_of_100", |b| {
        b.iter(|| get("?projectId=proj_a"))
    });
    group.bench_function("search_one_match_per_page", |b| b.iter(|| get("?q=needle")));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
