//! Write a BillStack Keys scope policy in Rust.
//!
//! A policy is a WebAssembly component of the `billstack:policy` world (re-exported here as
//! [`Guest`], [`Request`], [`Decision`], [`PluginInfo`]…). Most policies are "the default
//! BillStack table, plus or minus a few rules": build a [`Table`] from
//! [`Table::billstack_default`], add scopes and routes, and let it answer `info` and
//! `authorize`:
//!
//! ```
//! use billstack_policy::{Decision, Guest, PluginInfo, Request, Table};
//!
//! struct Invoices;
//!
//! fn table() -> Table {
//!     Table::billstack_default()
//!         .scope("invoices:read", "Read invoices")
//!         .route(&["GET"], "/invoices/*", "invoices:read")
//! }
//!
//! impl Guest for Invoices {
//!     fn info() -> PluginInfo { table().info("invoices", "1.0.0") }
//!     fn authorize(request: Request) -> Decision { table().decide(&request) }
//! }
//! // In the policy crate (a `cdylib`): billstack_policy::export!(Invoices);
//! # let _ = billstack_policy::testing::decide::<Invoices>("GET", "/invoices/in_1", &["invoices:read"]);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`, then check and test the component
//! with `billstack policy check` and `billstack policy test`; [`testing`] runs the same
//! decisions natively in `cargo test`.

/// The generated `billstack:policy` bindings (the types are re-exported at the crate root).
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "policy",
        path: "wit",
        pub_export_macro: true,
        default_bindings_module: "billstack_policy::bindings",
    });
}

pub use bindings::billstack::policy::types::{Denial, KeyInfo, PluginInfo, Request, ScopeInfo};
pub use bindings::{Decision, Guest, export};

use billstack_scope_table::Seg;

/// One segment of a route pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Exactly this text.
    Literal(String),
    /// Any one non-empty segment (`*` in a pattern: an id such as `cus_1`).
    Any,
    /// Any number of further segments, none included (`**`, last in a pattern).
    Rest,
}

/// One rule: these methods on paths matching this pattern need this scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Upper-case methods (`HEAD` is looked up as `GET`).
    pub methods: Vec<String>,
    /// The path below the project, segment by segment.
    pub pattern: Vec<Segment>,
    /// The scope they need; `None` refuses the route for every key (404 `unknown_route`).
    pub scope: Option<String>,
}

/// A scope table: a catalogue of scopes and routes, looked up in order (the first match wins).
/// Routes added with [`Table::route`] and [`Table::remove`] come before the ones it started
/// with, so they override them.
#[derive(Debug, Clone, Default)]
pub struct Table {
    scopes: Vec<(String, String)>,
    added: Vec<Route>,
    base: Vec<Route>,
}

/// Parses `/customers/*/cancel` or `/analytics/**` into segments.
///
/// # Panics
/// On a pattern that does not start with `/`, has an empty segment, or has `**` before its
/// end: patterns are written in the policy's source, and a wrong one should fail its tests.
pub fn pattern(text: &str) -> Vec<Segment> {
    let body = text
        .strip_prefix('/')
        .unwrap_or_else(|| panic!("route pattern {text:?} must start with /"));
    let parts: Vec<&str> = body.split('/').collect();
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| match *part {
            "" => panic!("route pattern {text:?} has an empty segment"),
            "*" => Segment::Any,
            "**" if i + 1 == parts.len() => Segment::Rest,
            "**" => panic!("route pattern {text:?}: ** must be the last segment"),
            literal => Segment::Literal(literal.to_string()),
        })
        .collect()
}

fn matches(pattern: &[Segment], path: &str) -> bool {
    let mut segments = path.split('/');
    for segment in pattern {
        match segment {
            Segment::Rest => return segments.all(|s| !s.is_empty()),
            Segment::Literal(text) => {
                if segments.next() != Some(text.as_str()) {
                    return false;
                }
            }
            Segment::Any => match segments.next() {
                Some(s) if !s.is_empty() => {}
                _ => return false,
            },
        }
    }
    segments.next().is_none()
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The route needs this scope.
    Scope(String),
    /// The table knows no such route, or refuses it for every key.
    Unknown,
}

impl Table {
    /// An empty table: no scopes, no routes.
    pub fn new() -> Table {
        Table::default()
    }

    /// The default BillStack table (DESIGN.md § Default scope table): its scopes and routes,
    /// exactly as the policy embedded in `billstack` decides them.
    pub fn billstack_default() -> Table {
        let base = billstack_scope_table::ROUTES
            .iter()
            .map(|route| Route {
                methods: route.methods.iter().map(|m| m.to_string()).collect(),
                pattern: route
                    .path
                    .iter()
                    .map(|seg| match seg {
                        Seg::Lit(text) => Segment::Literal(text.to_string()),
                        Seg::Id => Segment::Any,
                        Seg::Rest => Segment::Rest,
                    })
                    .collect(),
                scope: Some(route.scope.to_string()),
            })
            .collect();
        Table {
            scopes: billstack_scope_table::SCOPES
                .iter()
                .map(|(name, description)| (name.to_string(), description.to_string()))
                .collect(),
            added: Vec::new(),
            base,
        }
    }

    /// Adds a scope to the catalogue (or replaces the description of one already there).
    pub fn scope(mut self, name: &str, description: &str) -> Table {
        match self.scopes.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = description.to_string(),
            None => self
                .scopes
                .push((name.to_string(), description.to_string())),
        }
        self
    }

    /// Keeps only the catalogue's scopes `keep` accepts (a read-only policy keeps the `:read`
    /// ones). Routes needing a dropped scope stay: no key can hold it, so they are refused.
    pub fn retain_scopes(mut self, keep: impl Fn(&str) -> bool) -> Table {
        self.scopes.retain(|(name, _)| keep(name));
        self
    }

    /// Adds a rule, looked up before the table's earlier ones: `methods` on `path` (a
    /// [`pattern`]) need `scope`, which must be in the catalogue.
    ///
    /// # Panics
    /// When `scope` is not in the catalogue, or the pattern is malformed.
    pub fn route(mut self, methods: &[&str], path: &str, scope: &str) -> Table {
        assert!(
            self.scopes.iter().any(|(n, _)| n == scope),
            "route {path}: scope {scope} is not in the catalogue; add it with .scope() first"
        );
        self.added.push(Route {
            methods: methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
            pattern: pattern(path),
            scope: Some(scope.to_string()),
        });
        self
    }

    /// Refuses `methods` on `path` for every key (404 `unknown_route`), whatever the table's
    /// other rules say.
    pub fn remove(mut self, methods: &[&str], path: &str) -> Table {
        self.added.push(Route {
            methods: methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
            pattern: pattern(path),
            scope: None,
        });
        self
    }

    /// The scope `method` on `path` (below the project) needs. A trailing slash is ignored;
    /// `HEAD` is looked up as `GET`.
    pub fn lookup(&self, method: &str, path: &str) -> Lookup {
        let method = if method == "HEAD" { "GET" } else { method };
        let Some(path) = path.strip_prefix('/') else {
            return Lookup::Unknown;
        };
        let path = path.strip_suffix('/').unwrap_or(path);
        if path.is_empty() {
            return Lookup::Unknown;
        }
        self.added
            .iter()
            .rev()
            .chain(&self.base)
            .find(|r| r.methods.iter().any(|m| m == method) && matches(&r.pattern, path))
            .and_then(|r| r.scope.clone())
            .map_or(Lookup::Unknown, Lookup::Scope)
    }

    /// `info()` for this table: `name`, `version` and the catalogue.
    pub fn info(&self, name: &str, version: &str) -> PluginInfo {
        PluginInfo {
            name: name.to_string(),
            version: version.to_string(),
            scopes: self
                .scopes
                .iter()
                .map(|(name, description)| ScopeInfo {
                    name: name.clone(),
                    description: description.clone(),
                })
                .collect(),
        }
    }

    /// `authorize()` for this table: allow when the key holds the route's scope, else 403
    /// `insufficient_scope` naming it, or 404 `unknown_route`.
    pub fn decide(&self, request: &Request) -> Decision {
        match self.lookup(&request.method, &request.path) {
            Lookup::Scope(scope) if request.key.scopes.contains(&scope) => Decision::Allow,
            Lookup::Scope(scope) => deny(
                403,
                "insufficient_scope",
                format!(
                    "this key lacks the {scope} scope needed for {} {}",
                    request.method, request.path
                ),
                Some(scope),
            ),
            Lookup::Unknown => deny(
                404,
                "unknown_route",
                format!("{} {} is not a known route", request.method, request.path),
                None,
            ),
        }
    }
}

/// A refusal: `status` 403 or 404, a snake_case `code` (the caller sees it: use your own,
/// such as `read_only`, for a refusal no scope would fix), a message, and the scope that
/// would allow it, if any.
pub fn deny(status: u16, code: &str, message: String, required_scope: Option<String>) -> Decision {
    Decision::Deny(Denial {
        status,
        code: code.to_string(),
        message,
        required_scope,
    })
}

/// Deciding requests natively, in `cargo test`, as the host would ask the component.
pub mod testing {
    use super::{Decision, Guest, KeyInfo, Request};

    /// A request for `method path` (below the project) by a key holding `scopes` (its
    /// effective scopes: pass the whole catalogue for a full-access key).
    pub fn request(method: &str, path: &str, scopes: &[&str]) -> Request {
        Request {
            method: method.to_string(),
            path: path.to_string(),
            query: None,
            team_id: "team_test".to_string(),
            project_id: "proj_test".to_string(),
            key: KeyInfo {
                id: "key_test".to_string(),
                project_id: None,
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
            },
        }
    }

    /// `P`'s decision in brief: `allow`, or the deny code with the scope it names
    /// (`insufficient_scope customers:read`).
    pub fn decide<P: Guest>(method: &str, path: &str, scopes: &[&str]) -> String {
        match P::authorize(request(method, path, scopes)) {
            Decision::Allow => "allow".to_string(),
            Decision::Deny(d) => match d.required_scope {
                Some(scope) => format!("{} {scope}", d.code),
                None => d.code,
            },
        }
    }

    /// Every scope `P` defines (a full-access key's effective scopes).
    pub fn all_scopes<P: Guest>() -> Vec<String> {
        P::info().scopes.into_iter().map(|s| s.name).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::decide;
    use super::*;

    struct Default;
    impl Guest for Default {
        fn info() -> PluginInfo {
            Table::billstack_default().info("default", "1")
        }
        fn authorize(request: Request) -> Decision {
            Table::billstack_default().decide(&request)
        }
    }

    struct Extended;
    fn extended() -> Table {
        Table::billstack_default()
            .scope("invoices:read", "Read invoices")
            .route(&["GET"], "/invoices/**", "invoices:read")
            .route(&["POST"], "/customers", "customers:read")
            .remove(&["DELETE"], "/customers/*")
    }
    impl Guest for Extended {
        fn info() -> PluginInfo {
            extended().info("extended", "1")
        }
        fn authorize(request: Request) -> Decision {
            extended().decide(&request)
        }
    }

    #[test]
    fn the_default_table_decides_every_example_as_the_embedded_policy() {
        for (method, path, scope) in billstack_scope_table::EXAMPLES {
            assert_eq!(decide::<Default>(method, path, &[scope]), "allow");
            assert_eq!(
                decide::<Default>(method, path, &["nothing:read"]),
                format!("insufficient_scope {scope}"),
                "{method} {path}"
            );
        }
        assert_eq!(decide::<Default>("GET", "/unknown", &[]), "unknown_route");
        assert_eq!(
            decide::<Default>("HEAD", "/customers/", &["customers:read"]),
            "allow"
        );
        assert_eq!(
            testing::all_scopes::<Default>().len(),
            billstack_scope_table::SCOPES.len()
        );
    }

    #[test]
    fn added_rules_come_first_and_removed_routes_are_unknown() {
        assert_eq!(
            decide::<Extended>("GET", "/invoices/in_1/lines", &["invoices:read"]),
            "allow"
        );
        assert_eq!(
            decide::<Extended>("GET", "/invoices", &[]),
            "insufficient_scope invoices:read"
        );
        // Overridden: creating customers needs only the read scope here.
        assert_eq!(
            decide::<Extended>("POST", "/customers", &["customers:read"]),
            "allow"
        );
        assert_eq!(
            decide::<Extended>("DELETE", "/customers/cus_1", &["customers:write"]),
            "unknown_route"
        );
        // Everything else is the default's.
        assert_eq!(
            decide::<Extended>("GET", "/products", &["customers:read"]),
            "insufficient_scope products:read"
        );
        assert!(testing::all_scopes::<Extended>().contains(&"invoices:read".to_string()));
    }

    #[test]
    #[should_panic(expected = "not in the catalogue")]
    fn a_route_needs_a_scope_of_the_catalogue() {
        let _ = Table::new().route(&["GET"], "/x", "x:read");
    }

    #[test]
    fn patterns_parse_and_malformed_ones_panic() {
        assert_eq!(
            pattern("/a/*/**"),
            vec![Segment::Literal("a".into()), Segment::Any, Segment::Rest]
        );
        for bad in ["a", "/a//b", "/**/a"] {
            assert!(std::panic::catch_unwind(|| pattern(bad)).is_err(), "{bad}");
        }
    }
}
