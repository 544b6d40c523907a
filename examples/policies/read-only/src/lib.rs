//! Example policy: **read-only keys**. The default BillStack table, except that every write
//! (anything but GET and HEAD) is refused, whatever scopes the key holds. Upload it for a team
//! whose keys must never change data, e.g. one that only feeds a reporting tool.
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p policy-example-read-only`

use billstack::policy::types::{Denial, ScopeInfo};
use billstack_scope_table::{Outcome, SCOPES, decide};

wit_bindgen::generate!({
    world: "policy",
    path: "../../../wit",
});

struct ReadOnly;

impl Guest for ReadOnly {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "read-only".to_string(),
            version: "1.0.0".to_string(),
            // Only the read scopes: write scopes would grant nothing here.
            scopes: SCOPES
                .iter()
                .filter(|(name, _)| name.ends_with(":read"))
                .map(|(name, description)| ScopeInfo {
                    name: name.to_string(),
                    description: description.to_string(),
                })
                .collect(),
        }
    }

    fn authorize(request: Request) -> Decision {
        if request.method != "GET" && request.method != "HEAD" {
            return Decision::Deny(Denial {
                status: 403,
                code: "read_only".to_string(),
                message: format!(
                    "this team's keys are read-only; {} is not allowed",
                    request.method
                ),
                required_scope: None,
            });
        }
        match decide(&request.method, &request.path, &request.key.scopes) {
            Outcome::Allow => Decision::Allow,
            Outcome::InsufficientScope(scope) => Decision::Deny(Denial {
                status: 403,
                code: "insufficient_scope".to_string(),
                message: format!("this key lacks the {scope} scope"),
                required_scope: Some(scope.to_string()),
            }),
            Outcome::UnknownRoute => Decision::Deny(Denial {
                status: 404,
                code: "unknown_route".to_string(),
                message: format!("{} {} is not a known route", request.method, request.path),
                required_scope: None,
            }),
        }
    }
}

export!(ReadOnly);
