//! Shared by the host's `decision` benchmark and the Cedar comparison in `bench/cedar` (which
//! includes this file by path): the default table compiled natively, and a store with a key.

use std::hint::black_box;
use std::path::Path;

use billstack_host::decision::{Credential, Decision, authenticate, decide_for_key};
use billstack_host::policy::{
    PluginError, PolicyDecision, PolicyInfo, PolicyRequest, ScopeDescription, ScopePolicy,
};
use billstack_keystore::storage::*;
use billstack_keystore::{NewApiKey, Store, clock};

/// The request every decision benchmark decides: allowed for the key of [`bench_store`].
pub const TARGET: &str =
    "/api/billstack/teams/team_a/projects/proj_a/customers/cus_123?expand=subscriptions";

/// A store under `dir` with team `team_a`, project `proj_a` and one key limited to that
/// project with `customers:read` and `products:read`; and that key's `Authorization` header.
pub fn bench_store(dir: &Path) -> (Store, String) {
    let store = Store::open(dir.join("store")).expect("store");
    let raw = team_with_key(
        &store,
        "team_a",
        "proj_a",
        true,
        &["customers:read", "products:read"],
    );
    (store, format!("Bearer {raw}"))
}

/// The whole decision for `GET` [`TARGET`] (bearer parse, SHA-256, lookup, host checks, the
/// policy), which must allow it.
pub fn decide_allowed(store: &dyn Storage, header: &str, policy: &dyn ScopePolicy) -> Decision {
    let key = authenticate(
        store,
        Credential::AuthorizationHeader(Some(black_box(header))),
        clock::now_ms(),
    )
    .expect("authenticated");
    let d = decide_for_key(&key, policy, "GET", black_box(TARGET));
    assert!(matches!(d, Decision::Allow(_)), "{d:?}");
    d
}

/// The default table's catalogue as `info()` would report it under `name`, and its scope names.
pub fn default_info(name: &str) -> (PolicyInfo, Vec<String>) {
    let scopes: Vec<ScopeDescription> = billstack_scope_table::SCOPES
        .iter()
        .map(|(n, d)| ScopeDescription {
            name: n.to_string(),
            description: d.to_string(),
        })
        .collect();
    let names = scopes.iter().map(|s| s.name.clone()).collect();
    let info = PolicyInfo {
        name: name.into(),
        version: "0".into(),
        scopes,
    };
    (info, names)
}

/// The default table compiled natively (the `billstack-scope-table` crate): the floor the Wasm
/// plugin is compared with.
pub struct NativeTable {
    info: PolicyInfo,
    names: Vec<String>,
}

impl NativeTable {
    /// The table, ready to decide.
    pub fn new() -> NativeTable {
        let (info, names) = default_info("native");
        NativeTable { info, names }
    }
}

impl Default for NativeTable {
    fn default() -> Self {
        NativeTable::new()
    }
}

impl ScopePolicy for NativeTable {
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

/// Creates `team` with `project` in `store` and one key with `scopes` (limited to `project`
/// when `project_scoped`); returns the raw key.
pub fn team_with_key(
    store: &dyn Storage,
    team: &str,
    project: &str,
    project_scoped: bool,
    scopes: &[&str],
) -> String {
    store
        .create_team(Some(team), team, "bench".into())
        .expect("team");
    store
        .create_project(team, Some(project), project, "bench".into())
        .expect("project");
    store
        .create_key(
            &NewApiKey {
                project_id: project_scoped.then(|| project.into()),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                ..NewApiKey::new(team, "bench")
            },
            "test".into(),
        )
        .expect("key")
        .1
}
