//! Benchmark-only: DESIGN.md's default scope table written as Cedar policies, evaluated with the
//! `cedar-policy` crate (the state of the art for embedded authorisation), wrapped as a
//! [`ScopePolicy`] so the host's own decision function drives it with the same inputs as the
//! native table and the Wasm plugins. Not part of the product or of `cargo test`.
//!
//! Cedar answers allow or deny, not *which* scope was missing, so a denial here is reported as
//! `insufficient_scope` without a required scope; timing is what this crate is for, and
//! `tests` check that it allows exactly what the table allows.

use billstack_host::policy::{PluginError, PolicyDecision, PolicyInfo, PolicyRequest, ScopePolicy};
use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    PolicySet, Request, RestrictedExpression,
};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;

/// The table, one `permit` per row. The host has already normalised the path (no query, no
/// trailing slash, no empty or dot segments) and `HEAD` is sent as `GET`. `like` wildcards
/// match `/` too, so an `{id}` segment is "`like "/x/*"` and not `like "/x/*/*"`".
pub const POLICIES: &str = include_str!("default-scopes.cedar");

#[path = "../../../host/benches/support/mod.rs"]
mod support;

use support::default_info;
pub use support::{NativeTable, bench_store, decide_allowed, team_with_key};

/// The default table as a Cedar policy set.
pub struct CedarTable {
    policies: PolicySet,
    authorizer: Authorizer,
    info: PolicyInfo,
    names: Vec<String>,
    key_type: EntityTypeName,
    action_type: EntityTypeName,
    route: EntityUid,
}

impl CedarTable {
    /// Parses the policies.
    pub fn new() -> CedarTable {
        let (info, names) = default_info("cedar-default-scopes");
        CedarTable {
            policies: PolicySet::from_str(POLICIES).expect("the Cedar policies parse"),
            authorizer: Authorizer::new(),
            info,
            names,
            key_type: EntityTypeName::from_str("Key").expect("type"),
            action_type: EntityTypeName::from_str("Action").expect("type"),
            route: EntityUid::from_type_name_and_id(
                EntityTypeName::from_str("Api").expect("type"),
                EntityId::new("billstack"),
            ),
        }
    }

    /// Whether Cedar allows `method` on `path` (below the project) for a key with `scopes`.
    pub fn allows(&self, key_id: &str, method: &str, path: &str, scopes: &[String]) -> bool {
        let method = if method == "HEAD" { "GET" } else { method };
        let path = path
            .strip_suffix('/')
            .filter(|p| !p.is_empty())
            .unwrap_or(path);
        let principal =
            EntityUid::from_type_name_and_id(self.key_type.clone(), EntityId::new(key_id));
        let key = Entity::new(
            principal.clone(),
            HashMap::from([(
                "scopes".to_string(),
                RestrictedExpression::new_set(
                    scopes
                        .iter()
                        .map(|s| RestrictedExpression::new_string(s.clone())),
                ),
            )]),
            HashSet::new(),
        )
        .expect("entity");
        let entities = Entities::from_entities([key], None).expect("entities");
        let action =
            EntityUid::from_type_name_and_id(self.action_type.clone(), EntityId::new(method));
        let context = Context::from_pairs([(
            "path".to_string(),
            RestrictedExpression::new_string(path.to_string()),
        )])
        .expect("context");
        let request =
            Request::new(principal, action, self.route.clone(), context, None).expect("request");
        self.authorizer
            .is_authorized(&request, &self.policies, &entities)
            .decision()
            == Decision::Allow
    }
}

impl Default for CedarTable {
    fn default() -> Self {
        CedarTable::new()
    }
}

impl ScopePolicy for CedarTable {
    fn info(&self) -> &PolicyInfo {
        &self.info
    }

    fn scope_names(&self) -> &[String] {
        &self.names
    }

    fn authorize(&self, r: &PolicyRequest<'_>) -> Result<PolicyDecision, PluginError> {
        Ok(if self.allows(r.key_id, r.method, r.resource, r.scopes) {
            PolicyDecision::Allow
        } else {
            PolicyDecision::Deny {
                status: 403,
                code: "insufficient_scope".into(),
                message: format!("{} {} is not allowed for this key", r.method, r.resource),
                required_scope: None,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cedar_allows_exactly_what_the_table_allows() {
        let cedar = CedarTable::new();
        let all: Vec<String> = billstack_scope_table::SCOPES
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        for (method, path, scope) in billstack_scope_table::EXAMPLES {
            assert!(
                cedar.allows("k", method, path, &[scope.to_string()]),
                "{method} {path} with {scope}"
            );
            let others: Vec<String> = all.iter().filter(|s| *s != scope).cloned().collect();
            assert!(
                !cedar.allows("k", method, path, &others),
                "{method} {path} without {scope}"
            );
        }
        for (method, path) in [
            ("GET", "/customers/cus_1/extra"),
            ("GET", "/subscriptions/a/b/cancel"),
            ("POST", "/subscriptions/a/b/cancel"),
            ("PATCH", "/referrals/codes"),
            ("GET", "/nope"),
            ("TRACE", "/customers"),
        ] {
            assert!(!cedar.allows("k", method, path, &all), "{method} {path}");
            assert_eq!(
                billstack_scope_table::required_scope(method, path),
                None,
                "the table agrees that {method} {path} is unknown"
            );
        }
        assert!(cedar.allows("k", "HEAD", "/analytics/revenue/", &all));
    }
}
