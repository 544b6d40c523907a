//! The default scope table as a `billstack:policy` component: `info` and `authorize` over the
//! `billstack-scope-table` crate. Built for `wasm32-wasip2` by `host/build.rs` and embedded in
//! the `billstack` binary.

use billstack::policy::types::{Denial, ScopeInfo};
use billstack_scope_table::{NAME, Outcome, SCOPES, VERSION, decide};

wit_bindgen::generate!({
    world: "policy",
    path: "../../wit",
});

struct DefaultScopes;

impl Guest for DefaultScopes {
    fn info() -> PluginInfo {
        PluginInfo {
            name: NAME.to_string(),
            version: VERSION.to_string(),
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
        match decide(&request.method, &request.path, &request.key.scopes) {
            Outcome::Allow => Decision::Allow,
            Outcome::InsufficientScope(scope) => Decision::Deny(Denial {
                status: 403,
                code: "insufficient_scope".to_string(),
                message: format!(
                    "this key lacks the {scope} scope needed for {} {}",
                    request.method, request.path
                ),
                required_scope: Some(scope.to_string()),
            }),
            Outcome::UnknownRoute => Decision::Deny(Denial {
                status: 404,
                code: "unknown_route".to_string(),
                message: format!(
                    "{} {} is not a BillStack API route",
                    request.method, request.path
                ),
                required_scope: None,
            }),
        }
    }
}

export!(DefaultScopes);
