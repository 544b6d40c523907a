//! The decision path in-process: real store, real Wasm runtime, the embedded default plugin and
//! the fixture plugins. Covers DESIGN.md's decision order row by row.

use std::sync::Arc;
use std::time::{Duration, Instant};

use billstack_host::decision::{Credential, Decider, Decision, DenyKind, authenticate};
use billstack_host::plugins::DEFAULT_PLUGIN;
use billstack_host::policy::{
    LoadError, PluginError, PolicyEngine, PolicyLimits, PolicySet, ScopePolicy,
};
use billstack_host::server::respond::deny_status;
use billstack_keystore::clock::{Clock, ManualClock};
use billstack_keystore::storage::*;
use billstack_keystore::{NewApiKey, Store, StoreOptions};
use billstack_test_artifacts::{
    BAD_STATUS, DEEP_RECURSION, ENV_SNOOP, HUGE_OUTPUT, INFINITE_LOOP, MEMORY_BOMB, PANIC,
    WRONG_WORLD, read,
};

mod oracle;

struct World {
    _dir: tempfile::TempDir,
    store: Store,
    /// The store's and the decisions' clock: moved by hand, never waited for.
    clock: Arc<ManualClock>,
    engine: Arc<PolicyEngine>,
    policies: PolicySet,
}

impl World {
    /// Default limits except a generous deadline: the deadline is wall-clock, and parallel
    /// tests on a 2-core machine can stall a thread for longer than 10 ms. The deadline itself
    /// is tested in `deadline_within_limit_and_over_limit`.
    fn new() -> World {
        World::with_limits(PolicyLimits {
            deadline: Duration::from_secs(5),
            ..PolicyLimits::default()
        })
    }

    fn with_limits(limits: PolicyLimits) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::starting_now();
        let store = Store::open_with(
            dir.path().join("store"),
            &StoreOptions {
                clock: clock.clone(),
                ..StoreOptions::default()
            },
        )
        .expect("store");
        for team in ["team_a", "team_b"] {
            store
                .create_team(Some(team), team, "test".into())
                .expect("team");
        }
        store
            .create_project("team_a", Some("proj_a"), "A", "test".into())
            .expect("project");
        store
            .create_project("team_a", Some("proj_a2"), "A2", "test".into())
            .expect("project");
        store
            .create_project("team_b", Some("proj_b"), "B", "test".into())
            .expect("project");
        let engine = PolicyEngine::new(limits, Some(dir.path().join("cache"))).expect("engine");
        let policies = PolicySet::new(engine.load(DEFAULT_PLUGIN).expect("default plugin"));
        World {
            _dir: dir,
            store,
            clock,
            engine,
            policies,
        }
    }

    fn key(&self, team: &str, project: Option<&str>, scopes: &[&str]) -> String {
        self.store
            .create_key(
                &NewApiKey {
                    project_id: project.map(str::to_owned),
                    scopes: scopes.iter().map(|s| s.to_string()).collect(),
                    ..NewApiKey::new(team, "test")
                },
                "test".into(),
            )
            .expect("key")
            .1
    }

    fn decider(&self) -> Decider<'_> {
        Decider {
            store: &self.store,
            policies: &self.policies,
            now_ms: self.clock.now_ms(),
        }
    }

    fn decide(&self, key: &str, method: &str, target: &str) -> Decision {
        let header = format!("Bearer {key}");
        self.decider().decide(
            Credential::AuthorizationHeader(Some(&header)),
            method,
            target,
        )
    }
}

fn path(team: &str, project: &str, rest: &str) -> String {
    format!("/api/billstack/teams/{team}/projects/{project}{rest}")
}

fn kind(d: &Decision) -> Option<DenyKind> {
    match d {
        Decision::Allow(_) => None,
        Decision::Deny(d) => Some(d.kind),
    }
}

/// DESIGN.md § Default scope table, one example per (method, path).
use billstack_scope_table::EXAMPLES as TABLE;

#[test]
fn every_table_row_is_allowed_with_its_scope_and_denied_without() {
    let w = World::new();
    let scopes: Vec<String> = w.policies.default_policy().scope_names().to_vec();
    for &(method, rest, scope) in TABLE {
        let with = w.key("team_a", None, &[scope]);
        let others: Vec<&str> = scopes
            .iter()
            .map(String::as_str)
            .filter(|s| *s != scope)
            .collect();
        let without = w.key("team_a", None, &others);
        let target = path("team_a", "proj_a", rest);
        match w.decide(&with, method, &target) {
            Decision::Allow(id) => assert_eq!(id.scopes, vec![scope.to_string()]),
            other => panic!("{method} {rest} with {scope}: {other:?}"),
        }
        match w.decide(&without, method, &target) {
            Decision::Deny(d) => {
                assert_eq!(d.kind, DenyKind::InsufficientScope, "{method} {rest}");
                assert_eq!(d.required_scope.as_deref(), Some(scope));
                assert_eq!(d.identity.map(|i| i.team_id), Some("team_a".into()));
            }
            other => panic!("{method} {rest} without {scope}: {other:?}"),
        }
    }
}

#[test]
fn full_access_keys_hold_every_scope_of_the_active_policy() {
    let w = World::new();
    let key = w.key("team_a", None, &[]);
    for &(method, rest, _) in TABLE {
        match w.decide(
            &key,
            method,
            &path("team_a", "proj_a", &format!("{rest}/?x=1")),
        ) {
            Decision::Allow(id) => {
                assert_eq!(id.scopes, w.policies.default_policy().scope_names());
                assert_eq!(id.project_id, None);
            }
            other => panic!("{method} {rest}: {other:?}"),
        }
    }
    let d = w.decide(&key, "GET", &path("team_a", "proj_a", "/invoices"));
    assert_eq!(kind(&d), Some(DenyKind::UnknownRoute));
    assert_eq!(deny_status(DenyKind::UnknownRoute), 404);
}

#[test]
fn scopes_the_policy_does_not_define_are_not_effective() {
    let w = World::new();
    // Created before a policy change, say: the scope is kept but grants nothing now.
    let key = w.key("team_a", None, &["customers:read", "invoices:read"]);
    match w.decide(&key, "GET", &path("team_a", "proj_a", "/customers")) {
        Decision::Allow(id) => assert_eq!(id.scopes, vec!["customers:read".to_string()]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn tenant_and_project_isolation() {
    let w = World::new();
    let team_key = w.key("team_a", None, &[]);
    let project_key = w.key("team_a", Some("proj_a"), &["customers:read"]);
    assert_eq!(
        kind(&w.decide(&team_key, "GET", &path("team_b", "proj_b", "/customers"))),
        Some(DenyKind::TeamMismatch)
    );
    assert_eq!(
        kind(&w.decide(&team_key, "GET", &path("team_a", "proj_a2", "/customers"))),
        None
    );
    assert_eq!(
        kind(&w.decide(&project_key, "GET", &path("team_a", "proj_a", "/customers"))),
        None
    );
    assert_eq!(
        kind(&w.decide(
            &project_key,
            "GET",
            &path("team_a", "proj_a2", "/customers")
        )),
        Some(DenyKind::ProjectMismatch)
    );
    // Team checks come before project checks, and both before the plugin.
    assert_eq!(
        kind(&w.decide(&project_key, "GET", &path("team_b", "proj_a", "/nope"))),
        Some(DenyKind::TeamMismatch)
    );
    assert_eq!(
        kind(&w.decide(&project_key, "GET", &path("team_a", "proj_a2", "/nope"))),
        Some(DenyKind::ProjectMismatch)
    );
    match w.decide(&project_key, "GET", &path("team_a", "proj_a", "/customers")) {
        Decision::Allow(id) => assert_eq!(id.project_id.as_deref(), Some("proj_a")),
        other => panic!("{other:?}"),
    }
    // Paths outside the team API are unknown routes, not allowed.
    assert_eq!(
        kind(&w.decide(&team_key, "GET", "/api/billstack/teams/team_a/api-keys")),
        Some(DenyKind::UnknownRoute)
    );
}

#[test]
fn malformed_and_unknown_credentials_are_401() {
    let w = World::new();
    let good = w.key("team_a", None, &[]);
    let target = path("team_a", "proj_a", "/customers");
    let mut bad_checksum = good.clone().into_bytes();
    let last = bad_checksum.len() - 1;
    bad_checksum[last] = if bad_checksum[last] == b'0' {
        b'1'
    } else {
        b'0'
    };
    let bad_checksum = String::from_utf8(bad_checksum).expect("ascii");
    let unknown = billstack_keystore::apikey::generate().raw;
    let cases: Vec<(&str, String)> = vec![
        ("wrong prefix", good.replacen("bs_", "sk_", 1)),
        ("too short", good[..50].to_string()),
        ("too long", format!("{good}a")),
        ("non-hex", format!("bs_{}", "g".repeat(48))),
        ("upper-case hex", format!("bs_{}", good[3..].to_uppercase())),
        ("bad checksum", bad_checksum),
        ("empty", String::new()),
        ("10 KB", "a".repeat(10 * 1024)),
        ("well formed but unknown", unknown),
    ];
    for (name, key) in cases {
        let d = w.decide(&key, "GET", &target);
        match d {
            Decision::Deny(d) => {
                assert_eq!(d.kind, DenyKind::InvalidKey, "{name}");
                assert_eq!(deny_status(d.kind), 401);
                assert!(d.credential_sent);
                assert!(d.identity.is_none(), "{name}");
                assert!(
                    key.len() < 8 || !d.message.contains(&key[3..]),
                    "the message must not echo the key"
                );
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    let decider = w.decider();
    match decider.decide(Credential::AuthorizationHeader(None), "GET", &target) {
        Decision::Deny(d) => {
            assert_eq!(d.kind, DenyKind::MissingCredential);
            assert!(!d.credential_sent);
        }
        other => panic!("{other:?}"),
    }
    let basic = format!("Basic {good}");
    assert_eq!(
        kind(&decider.decide(
            Credential::AuthorizationHeader(Some(&basic)),
            "GET",
            &target
        )),
        Some(DenyKind::InvalidKey)
    );
    assert_eq!(
        kind(&decider.decide(Credential::RawKey(&good), "GET", &target)),
        None
    );
}

#[test]
fn revoked_keys_stop_at_once() {
    let w = World::new();
    let raw = w.key("team_a", None, &[]);
    let target = path("team_a", "proj_a", "/customers");
    assert_eq!(kind(&w.decide(&raw, "GET", &target)), None);
    let id = w
        .store
        .lookup_key(&raw)
        .expect("lookup")
        .expect("active")
        .id
        .clone();
    w.store
        .revoke_key("team_a", &id, "test".into())
        .expect("revoke");
    assert_eq!(
        kind(&w.decide(&raw, "GET", &target)),
        Some(DenyKind::InvalidKey)
    );
}

#[test]
fn expired_keys_are_refused() {
    let w = World::new();
    let expires_at = w.clock.now_ms() + 300;
    let (record, raw) = w
        .store
        .create_key(
            &NewApiKey {
                expires_at: Some(expires_at),
                ..NewApiKey::new("team_a", "short-lived")
            },
            "test".into(),
        )
        .expect("key");
    // At the exact expiry instant the key is already expired; a millisecond before it is not.
    assert!(authenticate(&w.store, Credential::RawKey(&raw), expires_at - 1).is_ok());
    match authenticate(&w.store, Credential::RawKey(&raw), expires_at) {
        Err(Decision::Deny(d)) => assert_eq!(d.kind, DenyKind::ExpiredKey),
        other => panic!("{other:?}"),
    }
    // And through the decider, as the clock moves past it.
    let target = path("team_a", "proj_a", "/customers");
    w.clock.set(expires_at - 1);
    assert_eq!(kind(&w.decide(&raw, "GET", &target)), None, "{}", record.id);
    w.clock.set(expires_at);
    assert_eq!(
        kind(&w.decide(&raw, "GET", &target)),
        Some(DenyKind::ExpiredKey)
    );
}

#[test]
fn malformed_requests_are_400_never_allowed() {
    let w = World::new();
    let key = w.key("team_a", None, &[]);
    for target in [
        path(
            "team_a",
            "proj_a",
            "/customers/../../../../team_b/projects/proj_b/customers",
        ),
        path("team_a", "proj_a", "//customers"),
        path("team_a", "proj_a", "/customers%2Fcus_1"),
        path("team_a", "proj_a", "/%2e%2e/customers"),
        "relative/path".to_string(),
    ] {
        assert_eq!(
            kind(&w.decide(&key, "GET", &target)),
            Some(DenyKind::InvalidRequest),
            "{target}"
        );
    }
    assert_eq!(
        kind(&w.decide(&key, "get", &path("team_a", "proj_a", "/customers"))),
        Some(DenyKind::InvalidRequest)
    );
    assert_eq!(deny_status(DenyKind::InvalidRequest), 400);
}

/// Installs `fixture` as team_b's policy, checks that team_b's request fails closed with
/// `cause`, and that a normal decision right after (same plugin's team and another team) works.
fn assert_fails_closed(w: &World, fixture: &str, cause: &str) {
    let plugin = w
        .engine
        .load(&read(fixture))
        .unwrap_or_else(|e| panic!("{fixture} loads: {e}"));
    w.policies.set_team("team_b", plugin);
    let b_key = w.key("team_b", None, &[]);
    let a_key = w.key("team_a", None, &["customers:read"]);
    for _ in 0..2 {
        match w.decide(&b_key, "GET", &path("team_b", "proj_b", "/customers")) {
            Decision::Deny(d) => {
                assert_eq!(d.kind, DenyKind::PolicyError, "{fixture}: {d:?}");
                assert_eq!(deny_status(d.kind), 503);
                let why = d.cause.expect("cause").to_string();
                assert!(
                    why.contains(cause),
                    "{fixture}: cause {why:?} should mention {cause:?}"
                );
                assert!(
                    !d.message.contains(cause),
                    "the client message carries no internals"
                );
            }
            other => panic!("{fixture} must fail closed, got {other:?}"),
        }
        assert_eq!(
            kind(&w.decide(&a_key, "GET", &path("team_a", "proj_a", "/customers"))),
            None,
            "{fixture}"
        );
    }
    w.policies.clear_team("team_b");
    assert_eq!(
        kind(&w.decide(&b_key, "GET", &path("team_b", "proj_b", "/customers"))),
        None
    );
}

#[test]
fn deadline_within_limit_and_over_limit() {
    // One deadline, both ways: 200 ms is far more than the default plugin needs (about a
    // microsecond, even on a loaded machine) yet an infinite loop must be cut off by it.
    let w = World::with_limits(PolicyLimits {
        deadline: Duration::from_millis(200),
        ..PolicyLimits::default()
    });
    // Within: the default plugin answers well inside the deadline.
    let key = w.key("team_a", None, &[]);
    assert_eq!(
        kind(&w.decide(&key, "GET", &path("team_a", "proj_a", "/customers"))),
        None
    );
    // Over: an infinite loop is interrupted.
    assert_fails_closed(&w, INFINITE_LOOP, "deadline");
}

#[test]
fn memory_within_limit_and_over_limit() {
    // Within: the default plugin runs under a 2 MiB cap.
    let small = World::with_limits(PolicyLimits {
        memory_bytes: 2 << 20,
        deadline: Duration::from_secs(5),
        ..PolicyLimits::default()
    });
    let key = small.key("team_a", None, &[]);
    assert_eq!(
        kind(&small.decide(&key, "GET", &path("team_a", "proj_a", "/customers"))),
        None
    );
    // Over: unbounded allocation hits the 16 MiB default cap.
    assert_fails_closed(&World::new(), MEMORY_BOMB, "memory limit");
}

#[test]
fn panics_fail_closed() {
    assert_fails_closed(&World::new(), PANIC, "trapped");
}

#[test]
fn deep_recursion_fails_closed() {
    assert_fails_closed(&World::new(), DEEP_RECURSION, "stack");
}

#[test]
fn huge_output_fails_closed() {
    assert_fails_closed(&World::new(), HUGE_OUTPUT, "deny message of");
}

#[test]
fn statuses_other_than_403_and_404_fail_closed() {
    assert_fails_closed(&World::new(), BAD_STATUS, "deny status 200");
}

#[test]
fn the_sandbox_has_no_environment_files_network_or_stdio() {
    let w = World::new();
    let plugin = w.engine.load(&read(ENV_SNOOP)).expect("loads");
    let key = billstack_keystore::KeyRecord {
        id: "key_x".into(),
        team_id: "team_b".into(),
        project_id: None,
        name: "x".into(),
        prefix: "bs_0000".into(),
        scopes: vec![],
        expires_at: None,
        created_at: 0,
        revoked_at: None,
        last_used_at: None,
        hash: String::new(),
        rotated_to: None,
        rate_limit: None,
        disabled: false,
        created_by: None,
    };
    // The fixture allows only if every escape attempt failed, and names what leaked otherwise.
    let d = billstack_host::decision::decide_for_key(
        &key,
        &*plugin,
        "GET",
        &path("team_b", "proj_b", "/x"),
    );
    assert!(matches!(d, Decision::Allow(_)), "the sandbox leaked: {d:?}");
}

#[test]
fn components_of_another_world_and_non_components_are_refused_at_load() {
    let w = World::new();
    match w.engine.load(&read(WRONG_WORLD)) {
        Err(LoadError::WrongWorld(why)) => assert!(!why.is_empty()),
        other => panic!("expected WrongWorld, got {other:?}"),
    }
    // A minimal core module (header only) and garbage.
    assert!(matches!(
        w.engine.load(b"\0asm\x01\0\0\0"),
        Err(LoadError::CoreModule)
    ));
    assert!(matches!(
        w.engine.load(b"definitely not wasm"),
        Err(LoadError::NotWasm)
    ));
    assert!(matches!(w.engine.load(b""), Err(LoadError::NotWasm)));
    let mut truncated = DEFAULT_PLUGIN[..DEFAULT_PLUGIN.len() / 2].to_vec();
    truncated.extend_from_slice(&[0xff; 16]);
    assert!(matches!(
        w.engine.load(&truncated),
        Err(LoadError::Compile(_))
    ));
}

#[test]
fn plugin_size_cap_within_and_over() {
    let exact = World::with_limits(PolicyLimits {
        max_plugin_bytes: DEFAULT_PLUGIN.len(),
        ..PolicyLimits::default()
    });
    assert!(exact.engine.load(DEFAULT_PLUGIN).is_ok());
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = PolicyEngine::new(
        PolicyLimits {
            max_plugin_bytes: DEFAULT_PLUGIN.len() - 1,
            ..PolicyLimits::default()
        },
        Some(dir.path().into()),
    )
    .expect("engine");
    assert!(matches!(
        engine.load(DEFAULT_PLUGIN),
        Err(LoadError::TooLarge { .. })
    ));
}

#[test]
fn compiled_plugins_are_cached_on_disk_and_a_bad_cache_entry_is_recompiled() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A generous deadline, as in World::new: loading calls info(), and on a loaded machine the
    // default 10 ms wall-clock budget was missed (deadlines have their own test).
    let limits = PolicyLimits {
        deadline: Duration::from_secs(5),
        ..PolicyLimits::default()
    };
    let first = PolicyEngine::new(limits.clone(), Some(dir.path().into())).expect("engine");
    assert!(!first.is_cached_on_disk(DEFAULT_PLUGIN));
    let a = first.load(DEFAULT_PLUGIN).expect("load");
    assert!(first.is_cached_on_disk(DEFAULT_PLUGIN));
    // A second engine (a restart) loads from the cache and decides the same way.
    let second = PolicyEngine::new(limits.clone(), Some(dir.path().into())).expect("engine");
    let b = second.load(DEFAULT_PLUGIN).expect("load from cache");
    assert_eq!(a.info(), b.info());
    // A corrupt cache entry is discarded and the plugin recompiled.
    for entry in std::fs::read_dir(dir.path()).expect("read_dir") {
        std::fs::write(entry.expect("entry").path(), b"garbage").expect("corrupt");
    }
    let third = PolicyEngine::new(limits, Some(dir.path().into())).expect("engine");
    let c = third.load(DEFAULT_PLUGIN).expect("recompiles");
    assert_eq!(c.info(), a.info());
}

#[test]
fn plugin_errors_name_their_cause() {
    assert_eq!(
        PluginError::Timeout(Duration::from_millis(10)).cause(),
        "timeout"
    );
    assert_eq!(PluginError::MemoryLimit(1).cause(), "memory_limit");
    assert_eq!(PluginError::StackOverflow.cause(), "stack_overflow");
}

#[test]
fn decisions_are_safe_from_many_threads() {
    let w = Arc::new(World::new());
    let keys: Vec<String> = (0..4)
        .map(|_| w.key("team_a", None, &["customers:read"]))
        .collect();
    std::thread::scope(|s| {
        for key in &keys {
            let w = Arc::clone(&w);
            s.spawn(move || {
                for i in 0..200 {
                    let (rest, want) = if i % 2 == 0 {
                        ("/customers", None)
                    } else {
                        ("/products", Some(DenyKind::InsufficientScope))
                    };
                    assert_eq!(
                        kind(&w.decide(key, "GET", &path("team_a", "proj_a", rest))),
                        want
                    );
                }
            });
        }
    });
}

/// Median time of team A's decisions, sampled for at least `span` (and 300 samples).
fn median_decision_time(w: &World, key: &str, span: Duration) -> Duration {
    let target = path("team_a", "proj_a", "/customers");
    let begun = Instant::now();
    let mut times = Vec::new();
    while times.len() < 300 || begun.elapsed() < span {
        let started = Instant::now();
        assert_eq!(kind(&w.decide(key, "GET", &target)), None);
        times.push(started.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

#[test]
fn a_looping_team_plugin_does_not_starve_other_teams() {
    // Team A runs the default plugin with a generous deadline, so a loaded machine cannot fail
    // its decisions; team B's looping plugin comes from a second engine with the production
    // deadline and one call at a time for a team's own plugin.
    let w = Arc::new(World::new());
    let strict = PolicyEngine::new(
        PolicyLimits {
            deadline: Duration::from_millis(10),
            team_concurrency: 1,
            ..PolicyLimits::default()
        },
        None,
    )
    .expect("engine");
    let hostile = strict.load_for_team(&read(INFINITE_LOOP)).expect("loads");
    w.policies.set_team("team_b", hostile);
    let a_key = w.key("team_a", None, &["customers:read"]);
    let b_key = w.key("team_b", None, &[]);
    let baseline = median_decision_time(&w, &a_key, Duration::from_millis(300));

    let stop = std::sync::atomic::AtomicBool::new(false);
    let attempts = std::sync::atomic::AtomicU32::new(0);
    /// Stops the attackers however the measuring code exits, so a failed assertion cannot
    /// leave them running to their 2,000-attempt bound.
    struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let (during, b_failures) = std::thread::scope(|s| {
        let attackers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut failures = 0u32;
                    // Bounded: stops when told, or after 2,000 attempts.
                    for _ in 0..2_000 {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        match w.decide(&b_key, "GET", &path("team_b", "proj_b", "/customers")) {
                            Decision::Deny(d) if d.kind == DenyKind::PolicyError => failures += 1,
                            other => panic!("a looping plugin must fail closed: {other:?}"),
                        }
                    }
                    failures
                })
            })
            .collect();
        let _stop_guard = StopOnDrop(&stop);
        // Measure only once the attack is under way (polled, bounded).
        let deadline = Instant::now() + Duration::from_secs(10);
        while attempts.load(std::sync::atomic::Ordering::Relaxed) < 4 {
            assert!(Instant::now() < deadline, "the attackers never started");
            std::thread::yield_now();
        }
        let during = median_decision_time(&w, &a_key, Duration::from_millis(500));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (
            during,
            attackers
                .into_iter()
                .map(|t| t.join().expect("attacker"))
                .sum::<u32>(),
        )
    });
    eprintln!(
        "team A median decision: {baseline:?} alone, {during:?} while team B's plugin loops ({b_failures} B calls failed closed)"
    );
    assert!(
        b_failures >= 20,
        "the attack barely ran: {b_failures} calls"
    );
    // Issue 5's target is 2x; the bound here is generous because tests share two noisy cores.
    // docs/performance.md carries the measured figures.
    assert!(
        during <= baseline * 10 + Duration::from_micros(500),
        "team A slowed from {baseline:?} to {during:?} while team B looped"
    );
}

#[test]
fn the_non_blocking_path_agrees_with_the_full_decision_or_declines() {
    let w = World::new();
    let fast = |key: &str, target: &str| {
        let header = format!("Bearer {key}");
        w.decider().decide_without_blocking(
            Credential::AuthorizationHeader(Some(&header)),
            "GET",
            target,
        )
    };
    let a_target = path("team_a", "proj_a", "/customers");

    // A malformed credential is refused without storage, exactly as the full decision does.
    let bad = format!("bs_{}", "g".repeat(48));
    assert_eq!(
        fast(&bad, &a_target),
        Some(w.decide(&bad, "GET", &a_target))
    );

    // A key not in the memory cache needs storage: declined.
    let key = w.key("team_a", None, &["customers:read"]);
    assert!(
        w.store.cached_key(&key).is_none(),
        "creation does not cache"
    );
    assert_eq!(fast(&key, &a_target), None);
    // Once the full decision has cached it, the fast path gives the same answers.
    let full = w.decide(&key, "GET", &a_target);
    assert_eq!(kind(&full), None);
    assert_eq!(fast(&key, &a_target), Some(full));
    let denied = path("team_a", "proj_a", "/products");
    assert_eq!(fast(&key, &denied), Some(w.decide(&key, "GET", &denied)));
    let other_team = path("team_b", "proj_b", "/customers");
    assert_eq!(
        kind(&fast(&key, &other_team).expect("decided")),
        Some(DenyKind::TeamMismatch)
    );

    // A team with its own plugin goes to the blocking pool (its calls may queue).
    let b_key = w.key("team_b", None, &[]);
    assert_eq!(kind(&w.decide(&b_key, "GET", &other_team)), None);
    w.policies.set_team(
        "team_b",
        w.engine
            .load_for_team(DEFAULT_PLUGIN)
            .expect("a team copy of the default"),
    );
    assert_eq!(fast(&b_key, &other_team), None);

    // Revocation empties the cache entry, so the fast path can never allow a revoked key.
    let id = w
        .store
        .lookup_key(&key)
        .expect("lookup")
        .expect("active")
        .id
        .clone();
    w.store
        .revoke_key("team_a", &id, "test".into())
        .expect("revoke");
    assert_eq!(fast(&key, &a_target), None);
    assert_eq!(
        kind(&w.decide(&key, "GET", &a_target)),
        Some(DenyKind::InvalidKey)
    );
}

/// One world for the property test below (building one compiles the default plugin).
fn shared_world() -> &'static (World, String) {
    static WORLD: std::sync::OnceLock<(World, String)> = std::sync::OnceLock::new();
    WORLD.get_or_init(|| {
        let w = World::new();
        let key = w.key("team_a", Some("proj_a"), &[]);
        (w, key)
    })
}

/// The one kind of target a full-access key of team A's project A may ever be allowed.
fn is_plain_target_of_project_a(target: &str) -> bool {
    oracle::is_plain_target(target, "team_a", Some("proj_a"))
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(5_000))]

    /// Fuzzed targets never produce a wrong allow. Each case starts from a route the key may
    /// call and pastes 0 to 3 tricky pieces into it (`%2F`, `..`, `//`, mixed case, Unicode,
    /// NUL, another team or project, or a 64 KB segment): whatever comes out, an allowed
    /// decision is always for a plain route of the key's own team and project.
    #[test]
    fn no_fuzzed_target_is_wrongly_allowed(
        route in proptest::sample::select(vec!["/customers", "/invoices/inv_1", "/prices/p1", "/customers/cus_1"]),
        insertions in proptest::collection::vec(
            (0.0f64..1.0, proptest::sample::select(vec![
                "/", "//", "/.", "/..", "/%2e%2e", "/%2E", "%2F", "%2f", "%5C", "\\", "%00", "\u{0}",
                "?x=1", "#frag", "/API", "C", "ñ", "\u{202e}", "%", "%zz", "/../../team_b/projects/proj_b",
                "2", "/api/billstack/teams/team_b/projects/proj_b", "LONG",
            ])),
            0..4,
        ),
        method in proptest::sample::select(vec!["GET", "GET", "POST", "DELETE", "get", "G\u{0}T"]),
    ) {
        let (w, key) = shared_world();
        let mut target = format!("/api/billstack/teams/team_a/projects/proj_a{route}");
        for (at, piece) in insertions {
            let piece = if piece == "LONG" { format!("/{}", "a".repeat(64 * 1024)) } else { piece.to_string() };
            let mut i = ((target.len() as f64) * at) as usize;
            while !target.is_char_boundary(i) {
                i -= 1;
            }
            target.insert_str(i, &piece);
        }
        if let Decision::Allow(id) = w.decide(key, method, &target) {
            proptest::prop_assert!(
                is_plain_target_of_project_a(&target),
                "allowed {method} {target:?}"
            );
            proptest::prop_assert_eq!(id.team_id.as_str(), "team_a");
            proptest::prop_assert!(oracle::is_plain_method(method));
        }
    }
}

#[test]
fn the_fuzz_oracle_itself_tells_plain_from_tricky() {
    assert!(is_plain_target_of_project_a(
        "/api/billstack/teams/team_a/projects/proj_a/customers?a=b"
    ));
    // The fuzzing world can allow: a plain route is allowed, so the property is not vacuous.
    let (w, key) = shared_world();
    assert!(matches!(
        w.decide(
            key,
            "GET",
            "/api/billstack/teams/team_a/projects/proj_a/customers"
        ),
        Decision::Allow(_)
    ));
    for tricky in [
        "/api/billstack/teams/team_a/projects/proj_a/../proj_b/customers",
        "/api/billstack/teams/team_a/projects/proj_a/%2e%2E/x",
        "/api/billstack/teams/team_a/projects/proj_a//customers",
        "/api/billstack/teams/team_a/projects/proj_a%2Fcustomers",
        "/api/billstack/teams/team_a/projects/proj_a/a\u{0}b",
        "/x/api/billstack/teams/team_a/projects/proj_a/customers",
        "/api/billstack/teams/team_a/projects/proj_ab/customers",
        "/api/billstack/teams/team_ab/projects/proj_a/customers",
        "/api/billstack/teams/team_a/projects/proj_a/a\u{7f}b",
    ] {
        assert!(!is_plain_target_of_project_a(tricky), "{tricky}");
    }
}
