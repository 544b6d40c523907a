//! A BillStack Keys scope policy: edit `SCOPES` and `ROUTES`, build, upload.
//!
//! The host has already checked the key, its team and its project before `authorize` runs;
//! this only says which scope a route needs. See docs/writing-policies.md in the BillStack Keys
//! repository for the world, the limits and how to test with `billstack policy test`.

wit_bindgen::generate!({
    world: "policy",
    path: "wit",
});

use billstack::policy::types::{Denial, ScopeInfo};

/// The scope catalogue: name and the description shown in the dashboard.
const SCOPES: &[(&str, &str)] = &[
    ("orders:read", "Read orders"),
    ("orders:write", "Create and cancel orders"),
];

/// The routes below `/api/billstack/teams/{teamId}/projects/{projectId}`:
/// (method, path segments, scope). `*` matches one id segment.
const ROUTES: &[(&str, &[&str], &str)] = &[
    ("GET", &["orders"], "orders:read"),
    ("GET", &["orders", "*"], "orders:read"),
    ("POST", &["orders"], "orders:write"),
    ("POST", &["orders", "*", "cancel"], "orders:write"),
];

fn required_scope(method: &str, path: &str) -> Option<&'static str> {
    let method = if method == "HEAD" { "GET" } else { method };
    let path = path.strip_prefix('/')?;
    let path = path.strip_suffix('/').unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    ROUTES
        .iter()
        .find(|(m, pattern, _)| {
            *m == method
                && pattern.len() == segments.len()
                && pattern
                    .iter()
                    .zip(&segments)
                    .all(|(p, s)| !s.is_empty() && (*p == "*" || p == s))
        })
        .map(|(_, _, scope)| *scope)
}

struct MyPolicy;

impl Guest for MyPolicy {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "my-policy".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            scopes: SCOPES
                .iter()
                .map(|(name, description)| ScopeInfo {
                    name: name.to_string(),
                    description: description.to_string(),
                })
                .collect(),
        }
    }

    fn authorize(request: Request) -> Decision {
        match required_scope(&request.method, &request.path) {
            Some(scope) if request.key.scopes.iter().any(|s| s == scope) => Decision::Allow,
            Some(scope) => Decision::Deny(Denial {
                status: 403,
                code: "insufficient_scope".to_string(),
                message: format!("this key lacks the {scope} scope"),
                required_scope: Some(scope.to_string()),
            }),
            None => Decision::Deny(Denial {
                status: 404,
                code: "unknown_route".to_string(),
                message: format!("{} {} is not a known route", request.method, request.path),
                required_scope: None,
            }),
        }
    }
}

export!(MyPolicy);
