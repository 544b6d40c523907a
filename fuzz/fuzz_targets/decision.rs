//! Whole decisions, as every front door makes them: a real store and the embedded default
//! policy plugin (run by wasmtime). Whatever the method, key and target, an allowed decision
//! is for one of the live keys, a plain route of that key's own team (and project, for a
//! project key), an upper-case method, and a scope the key holds.

#![no_main]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use billstack_host::decision::{Credential, Decider, Decision};
use billstack_host::plugins::DEFAULT_PLUGIN;
use billstack_host::policy::{PolicyEngine, PolicyLimits, PolicySet};
use billstack_keystore::storage::*;
use billstack_keystore::{NewApiKey, Store};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/oracle/mod.rs"]
mod oracle;

/// A key of the world: its raw form, team, project and scopes.
struct Key {
    raw: String,
    id: String,
    team: &'static str,
    project: Option<&'static str>,
    scopes: &'static [&'static str],
}

struct World {
    _dir: tempfile::TempDir,
    store: Store,
    policies: PolicySet,
    /// Live keys; the last one of `keys` is revoked.
    keys: Vec<Key>,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("store")).expect("store");
        for team in ["team_a", "team_b"] {
            store
                .create_team(Some(team), team, "fuzz".into())
                .expect("team");
        }
        for (team, project) in [
            ("team_a", "proj_a"),
            ("team_a", "proj_a2"),
            ("team_b", "proj_b"),
        ] {
            store
                .create_project(team, Some(project), project, "fuzz".into())
                .expect("project");
        }
        let mut keys = Vec::new();
        let specs: [(&'static str, Option<&'static str>, &'static [&'static str]); 4] = [
            ("team_a", Some("proj_a"), &[]),
            ("team_a", None, &["customers:read"]),
            ("team_b", Some("proj_b"), &["products:read"]),
            ("team_a", None, &[]),
        ];
        for (team, project, scopes) in specs {
            let (record, raw) = store
                .create_key(
                    &NewApiKey {
                        project_id: project.map(str::to_owned),
                        scopes: scopes.iter().map(|s| s.to_string()).collect(),
                        ..NewApiKey::new(team, "fuzz")
                    },
                    "test".into(),
                )
                .expect("key");
            keys.push(Key {
                raw,
                id: record.id,
                team,
                project,
                scopes,
            });
        }
        let revoked = keys.last().expect("four keys");
        store
            .revoke_key(revoked.team, &revoked.id, "fuzz".into())
            .expect("revoke");
        // The plugin deadline is wall-clock; instrumented code is slow. A call over it would
        // fail closed, which is not what this target looks for.
        let limits = PolicyLimits {
            deadline: Duration::from_secs(5),
            ..PolicyLimits::default()
        };
        let engine = PolicyEngine::new(limits, None).expect("engine");
        let policies = PolicySet::new(engine.load(DEFAULT_PLUGIN).expect("default plugin"));
        World {
            _dir: dir,
            store,
            policies,
            keys,
        }
    })
}

mod shared;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    /// Which key: one of the world's (the last is revoked), else `credential` as sent.
    key: u8,
    credential: &'a str,
    /// 0: the table row's own method; then one of `METHODS`; else `method` as sent.
    method_choice: u8,
    method: &'a str,
    /// The target: a table route under a team and project, edited, or any text.
    target: Target<'a>,
}

#[derive(Debug, Arbitrary)]
enum Target<'a> {
    Built(shared::BuiltTarget<'a>),
    Raw(&'a str),
}

/// Prints how many inputs were allowed at every power of two, so a run shows that the property
/// was exercised (`fuzz/run.sh` reports the last count).
fn report_allowed() {
    static ALLOWED: AtomicU64 = AtomicU64::new(0);
    let n = ALLOWED.fetch_add(1, Ordering::Relaxed) + 1;
    if n.is_power_of_two() {
        eprintln!("fuzz-count: {n} allowed");
    }
}

const METHODS: [&str; 5] = ["GET", "POST", "DELETE", "PUT", "PATCH"];

fuzz_target!(|input: Input<'_>| {
    let w = world();
    let header = match w.keys.get(usize::from(input.key)) {
        Some(key) => format!("Bearer {}", key.raw),
        None => input.credential.to_owned(),
    };
    let (target, row_method) = match &input.target {
        Target::Built(b) => b.build(),
        Target::Raw(text) => (text.to_string(), None),
    };
    let method = match usize::from(input.method_choice) {
        0 => row_method.unwrap_or(input.method),
        n => METHODS.get(n - 1).copied().unwrap_or(input.method),
    };
    let decider = Decider {
        store: &w.store,
        policies: &w.policies,
        now_ms: billstack_keystore::clock::now_ms(),
    };
    let Decision::Allow(identity) = decider.decide(
        Credential::AuthorizationHeader(Some(&header)),
        method,
        &target,
    ) else {
        return;
    };
    report_allowed();
    let live = &w.keys[..w.keys.len() - 1];
    let key = live
        .iter()
        .find(|k| k.id == identity.key_id)
        .unwrap_or_else(|| panic!("allowed for a key that is not live: {identity:?}"));
    assert_eq!(
        header,
        format!("Bearer {}", key.raw),
        "allowed with another credential"
    );
    assert_eq!(identity.team_id, key.team);
    assert!(
        oracle::is_plain_target(&target, key.team, key.project),
        "allowed {method} {target:?}"
    );
    assert!(oracle::is_plain_method(method), "allowed method {method:?}");
    if !key.scopes.is_empty() {
        assert!(
            identity
                .scopes
                .iter()
                .all(|s| key.scopes.contains(&s.as_str()))
        );
        assert!(
            !identity.scopes.is_empty(),
            "allowed with no effective scope"
        );
    }
});
