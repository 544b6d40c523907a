//! Example policy: **a new resource with its own scopes**. The default BillStack table plus
//! invoices, guarded by two new scopes, `invoices:read` and `invoices:write`. After the upload
//! the new scopes appear in the dashboard's scope list and are accepted at key creation.
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p policy-example-invoices`

use billstack::policy::types::{Denial, ScopeInfo};
use billstack_scope_table::{Outcome, SCOPES, decide};

wit_bindgen::generate!({
    world: "policy",
    path: "../../../wit",
});

/// The new scopes, with the descriptions the dashboard shows.
const INVOICE_SCOPES: &[(&str, &str)] = &[
    ("invoices:read", "Read invoices and their line items"),
    ("invoices:write", "Create, finalize and void invoices"),
];

/// The new routes below the project: (method, path segments, scope); `*` is one id segment.
const INVOICE_ROUTES: &[(&str, &[&str], &str)] = &[
    ("GET", &["invoices"], "invoices:read"),
    ("GET", &["invoices", "*"], "invoices:read"),
    ("GET", &["invoices", "*", "lines"], "invoices:read"),
    ("POST", &["invoices"], "invoices:write"),
    ("POST", &["invoices", "*", "finalize"], "invoices:write"),
    ("POST", &["invoices", "*", "void"], "invoices:write"),
];

fn invoice_scope(method: &str, path: &str) -> Option<&'static str> {
    let method = if method == "HEAD" { "GET" } else { method };
    let path = path.split('?').next().unwrap_or_default();
    let path = path.strip_prefix('/')?;
    let path = path.strip_suffix('/').unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    INVOICE_ROUTES
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

fn deny_scope(scope: &str) -> Decision {
    Decision::Deny(Denial {
        status: 403,
        code: "insufficient_scope".to_string(),
        message: format!("this key lacks the {scope} scope"),
        required_scope: Some(scope.to_string()),
    })
}

struct Invoices;

impl Guest for Invoices {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "billstack-with-invoices".to_string(),
            version: "1.0.0".to_string(),
            scopes: SCOPES
                .iter()
                .chain(INVOICE_SCOPES)
                .map(|(name, description)| ScopeInfo {
                    name: name.to_string(),
                    description: description.to_string(),
                })
                .collect(),
        }
    }

    fn authorize(request: Request) -> Decision {
        if let Some(scope) = invoice_scope(&request.method, &request.path) {
            return if request.key.scopes.iter().any(|s| s == scope) {
                Decision::Allow
            } else {
                deny_scope(scope)
            };
        }
        match decide(&request.method, &request.path, &request.key.scopes) {
            Outcome::Allow => Decision::Allow,
            Outcome::InsufficientScope(scope) => deny_scope(scope),
            Outcome::UnknownRoute => Decision::Deny(Denial {
                status: 404,
                code: "unknown_route".to_string(),
                message: format!("{} {} is not a known route", request.method, request.path),
                required_scope: None,
            }),
        }
    }
}

export!(Invoices);
