//! The default BillStack scope table (DESIGN.md § Default scope table) as data, with no
//! WebAssembly in it: `plugins/default-scopes` wraps it as the component embedded in the
//! binary, the example plugins extend it, and the host's benchmarks run it natively as the
//! floor. It decides scope-to-route only: authentication, tenant and project isolation are the
//! host's, before this is ever asked.

/// The plugin's name, as `info()` reports it.
pub const NAME: &str = "billstack-default-scopes";
/// The plugin's version, as `info()` reports it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Every scope of the default table, with the description the dashboard shows.
pub const SCOPES: &[(&str, &str)] = &[
    ("customers:read", "Read customers"),
    ("customers:write", "Create, update and delete customers"),
    ("products:read", "Read products and prices"),
    (
        "products:write",
        "Create, update and delete products and prices",
    ),
    (
        "subscriptions:read",
        "Read subscriptions and checkout sessions",
    ),
    (
        "subscriptions:write",
        "Cancel and delete subscriptions, start checkout sessions",
    ),
    ("analytics:read", "Read analytics"),
    (
        "referrals:read",
        "Read referral codes and the referral configuration",
    ),
    (
        "referrals:write",
        "Create and delete referral codes, apply referrals, change the configuration",
    ),
];

/// One segment of a route pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg {
    /// Exactly this text.
    Lit(&'static str),
    /// Any one non-empty segment (`{id}`).
    Id,
    /// Zero or more further segments ("and anything below it").
    Rest,
}

use Seg::{Id, Lit, Rest};

/// One row of the table: these methods on this path need this scope.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// The methods (upper case; `HEAD` is looked up as `GET`).
    pub methods: &'static [&'static str],
    /// The path below the project, segment by segment.
    pub path: &'static [Seg],
    /// The scope they need.
    pub scope: &'static str,
}

const READ: &[&str] = &["GET"];
const WRITE: &[&str] = &["POST", "PUT", "PATCH", "DELETE"];
const POST: &[&str] = &["POST"];
const DELETE: &[&str] = &["DELETE"];
const UPDATE: &[&str] = &["PUT", "PATCH"];

/// The table. Paths are relative to `/api/billstack/teams/{teamId}/projects/{projectId}`.
/// Every row of the default table, in lookup order (the first match wins).
pub const ROUTES: &[Route] = &[
    Route {
        methods: READ,
        path: &[Lit("customers")],
        scope: "customers:read",
    },
    Route {
        methods: READ,
        path: &[Lit("customers"), Id],
        scope: "customers:read",
    },
    Route {
        methods: WRITE,
        path: &[Lit("customers")],
        scope: "customers:write",
    },
    Route {
        methods: WRITE,
        path: &[Lit("customers"), Id],
        scope: "customers:write",
    },
    Route {
        methods: READ,
        path: &[Lit("products")],
        scope: "products:read",
    },
    Route {
        methods: READ,
        path: &[Lit("products"), Id],
        scope: "products:read",
    },
    Route {
        methods: READ,
        path: &[Lit("prices")],
        scope: "products:read",
    },
    Route {
        methods: READ,
        path: &[Lit("prices"), Id],
        scope: "products:read",
    },
    Route {
        methods: WRITE,
        path: &[Lit("products")],
        scope: "products:write",
    },
    Route {
        methods: WRITE,
        path: &[Lit("products"), Id],
        scope: "products:write",
    },
    Route {
        methods: WRITE,
        path: &[Lit("prices")],
        scope: "products:write",
    },
    Route {
        methods: WRITE,
        path: &[Lit("prices"), Id],
        scope: "products:write",
    },
    Route {
        methods: READ,
        path: &[Lit("subscriptions")],
        scope: "subscriptions:read",
    },
    Route {
        methods: READ,
        path: &[Lit("subscriptions"), Id],
        scope: "subscriptions:read",
    },
    Route {
        methods: READ,
        path: &[Lit("checkout-sessions"), Id],
        scope: "subscriptions:read",
    },
    Route {
        methods: POST,
        path: &[Lit("subscriptions"), Id, Lit("cancel")],
        scope: "subscriptions:write",
    },
    Route {
        methods: POST,
        path: &[Lit("checkout-sessions")],
        scope: "subscriptions:write",
    },
    Route {
        methods: DELETE,
        path: &[Lit("subscriptions"), Id],
        scope: "subscriptions:write",
    },
    Route {
        methods: READ,
        path: &[Lit("analytics"), Rest],
        scope: "analytics:read",
    },
    Route {
        methods: READ,
        path: &[Lit("referrals"), Lit("codes")],
        scope: "referrals:read",
    },
    Route {
        methods: READ,
        path: &[Lit("referrals"), Lit("codes"), Id],
        scope: "referrals:read",
    },
    Route {
        methods: READ,
        path: &[Lit("referrals"), Lit("config")],
        scope: "referrals:read",
    },
    Route {
        methods: POST,
        path: &[Lit("referrals"), Lit("codes")],
        scope: "referrals:write",
    },
    Route {
        methods: POST,
        path: &[Lit("referrals"), Lit("apply")],
        scope: "referrals:write",
    },
    Route {
        methods: UPDATE,
        path: &[Lit("referrals"), Lit("config")],
        scope: "referrals:write",
    },
    Route {
        methods: DELETE,
        path: &[Lit("referrals"), Lit("codes"), Id],
        scope: "referrals:write",
    },
];

/// The outcome of looking a request up in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The key holds the route's scope.
    Allow,
    /// The route needs this scope, which the key lacks.
    InsufficientScope(&'static str),
    /// The table has no such route (for this method).
    UnknownRoute,
}

/// The scope `method` on `resource` needs, or `None` for an unknown route. `resource` is the
/// path below the project (`/customers/cus_1`); a query string, a fragment and one trailing
/// slash are ignored. `HEAD` is treated as `GET`, as HTTP defines it.
pub fn required_scope(method: &str, resource: &str) -> Option<&'static str> {
    let method = if method == "HEAD" { "GET" } else { method };
    let path = resource.split(['?', '#']).next().unwrap_or_default();
    let path = path.strip_prefix('/')?;
    let path = path.strip_suffix('/').unwrap_or(path);
    if path.is_empty() {
        return None;
    }
    ROUTES
        .iter()
        .find(|route| route.methods.contains(&method) && matches(route.path, path))
        .map(|route| route.scope)
}

/// Whether `path` (below the project, without its leading and trailing slash) matches
/// `pattern`.
pub fn matches(pattern: &[Seg], path: &str) -> bool {
    let mut segments = path.split('/');
    for seg in pattern {
        match seg {
            Rest => return segments.all(|s| !s.is_empty()),
            Lit(text) => {
                if segments.next() != Some(*text) {
                    return false;
                }
            }
            Id => match segments.next() {
                Some(s) if !s.is_empty() => {}
                _ => return false,
            },
        }
    }
    segments.next().is_none()
}

/// Decides a request: the route's scope must be among the key's effective scopes.
pub fn decide<S: AsRef<str>>(method: &str, resource: &str, scopes: &[S]) -> Outcome {
    match required_scope(method, resource) {
        None => Outcome::UnknownRoute,
        Some(scope) if scopes.iter().any(|s| s.as_ref() == scope) => Outcome::Allow,
        Some(scope) => Outcome::InsufficientScope(scope),
    }
}

/// One example request for every row (and every method and path) of DESIGN.md's default scope
/// table: (method, path below the project, scope). Tests of the host use it to check the whole
/// decision path against the same table.
pub const EXAMPLES: &[(&str, &str, &str)] = &[
    ("GET", "/customers", "customers:read"),
    ("GET", "/customers/cus_1", "customers:read"),
    ("POST", "/customers", "customers:write"),
    ("PUT", "/customers/cus_1", "customers:write"),
    ("PATCH", "/customers/cus_1", "customers:write"),
    ("DELETE", "/customers/cus_1", "customers:write"),
    ("DELETE", "/customers", "customers:write"),
    ("GET", "/products", "products:read"),
    ("GET", "/products/prod_1", "products:read"),
    ("GET", "/prices", "products:read"),
    ("GET", "/prices/price_1", "products:read"),
    ("POST", "/products", "products:write"),
    ("PATCH", "/products/prod_1", "products:write"),
    ("PUT", "/prices/price_1", "products:write"),
    ("DELETE", "/prices/price_1", "products:write"),
    ("POST", "/prices", "products:write"),
    ("GET", "/subscriptions", "subscriptions:read"),
    ("GET", "/subscriptions/sub_1", "subscriptions:read"),
    ("GET", "/checkout-sessions/cs_1", "subscriptions:read"),
    ("POST", "/subscriptions/sub_1/cancel", "subscriptions:write"),
    ("POST", "/checkout-sessions", "subscriptions:write"),
    ("DELETE", "/subscriptions/sub_1", "subscriptions:write"),
    ("GET", "/analytics", "analytics:read"),
    ("GET", "/analytics/revenue", "analytics:read"),
    ("GET", "/analytics/revenue/monthly/2026", "analytics:read"),
    ("GET", "/referrals/codes", "referrals:read"),
    ("GET", "/referrals/codes/ref_1", "referrals:read"),
    ("GET", "/referrals/config", "referrals:read"),
    ("POST", "/referrals/codes", "referrals:write"),
    ("POST", "/referrals/apply", "referrals:write"),
    ("PUT", "/referrals/config", "referrals:write"),
    ("PATCH", "/referrals/config", "referrals:write"),
    ("DELETE", "/referrals/codes/ref_1", "referrals:write"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_allows_with_its_scope_and_denies_without() {
        let all: Vec<&str> = SCOPES.iter().map(|(n, _)| *n).collect();
        for &(method, path, scope) in EXAMPLES {
            assert_eq!(required_scope(method, path), Some(scope), "{method} {path}");
            assert_eq!(
                decide(method, path, &[scope]),
                Outcome::Allow,
                "{method} {path}"
            );
            let others: Vec<&str> = all.iter().copied().filter(|s| *s != scope).collect();
            assert_eq!(
                decide(method, path, &others),
                Outcome::InsufficientScope(scope),
                "{method} {path}"
            );
            assert_eq!(
                decide::<&str>(method, path, &[]),
                Outcome::InsufficientScope(scope)
            );
        }
    }

    #[test]
    fn trailing_slash_query_and_head_do_not_change_the_route() {
        assert_eq!(required_scope("GET", "/customers/"), Some("customers:read"));
        assert_eq!(
            required_scope("GET", "/customers/cus_1/?expand=x"),
            Some("customers:read")
        );
        assert_eq!(
            required_scope("GET", "/customers?limit=3"),
            Some("customers:read")
        );
        assert_eq!(
            required_scope("POST", "/subscriptions/s/cancel/"),
            Some("subscriptions:write")
        );
        assert_eq!(
            required_scope("GET", "/analytics/?x=1"),
            Some("analytics:read")
        );
        assert_eq!(required_scope("HEAD", "/products"), Some("products:read"));
    }

    #[test]
    fn unknown_routes() {
        for (method, path) in [
            ("GET", "/"),
            ("GET", ""),
            ("GET", "/invoices"),
            ("GET", "/customers/cus_1/notes"),
            ("GET", "/customers//"),
            ("GET", "/customers//x"),
            ("GET", "//customers"),
            ("PATCH", "/subscriptions"),
            ("POST", "/subscriptions"),
            ("PUT", "/subscriptions/sub_1"),
            ("GET", "/subscriptions/sub_1/cancel"),
            ("GET", "/checkout-sessions"),
            ("POST", "/analytics"),
            ("GET", "/analytics//x"),
            ("DELETE", "/referrals/codes"),
            ("DELETE", "/referrals/config"),
            ("POST", "/referrals/config"),
            ("GET", "/referrals/apply"),
            ("GET", "/referrals"),
            ("OPTIONS", "/customers"),
            ("get", "/customers"),
            ("GET", "customers"),
            ("GET", "/Customers"),
        ] {
            assert_eq!(required_scope(method, path), None, "{method} {path:?}");
            assert_eq!(
                decide(method, path, &["customers:read"]),
                Outcome::UnknownRoute
            );
        }
    }

    #[test]
    fn catalogue_is_well_formed_and_every_route_scope_is_in_it() {
        for route in ROUTES {
            assert!(
                SCOPES.iter().any(|(n, _)| *n == route.scope),
                "{}",
                route.scope
            );
        }
        let mut names: Vec<&str> = SCOPES.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SCOPES.len(), "unique");
    }

    /// The family of scopes a top-level resource belongs to, written out from DESIGN.md's
    /// table independently of `ROUTES`.
    fn family(first_segment: &str) -> Option<&'static str> {
        Some(match first_segment {
            "customers" => "customers",
            "products" | "prices" => "products",
            "subscriptions" | "checkout-sessions" => "subscriptions",
            "analytics" => "analytics",
            "referrals" => "referrals",
            _ => return None,
        })
    }

    const VOCABULARY: &[&str] = &[
        "customers",
        "products",
        "prices",
        "subscriptions",
        "checkout-sessions",
        "analytics",
        "referrals",
        "codes",
        "config",
        "apply",
        "cancel",
        "revenue",
        "cus_1",
        "Customers",
        "",
        ".",
        "..",
        "%2F",
        "\u{f1}",
        "a b",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]

        /// Route matching over paths built from the table's own words and some tricky ones:
        /// no panic; a route is found only for an upper-case method, a path without empty
        /// segments, a scope of the catalogue in the family of the first segment, and a read
        /// scope exactly for reads; the query, a fragment, one trailing slash and HEAD-for-GET
        /// never change the answer.
        #[test]
        fn route_matching_holds_to_the_table_shape(
            method in proptest::sample::select(vec!["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "get", "Get", ""]),
            segments in proptest::collection::vec(proptest::sample::select(VOCABULARY.to_vec()), 0..5),
            trailing_slash in proptest::bool::ANY,
            suffix in proptest::sample::select(vec!["", "?limit=3", "#top", "?a=/customers#x"]),
        ) {
            let path = format!("/{}{}", segments.join("/"), if trailing_slash { "/" } else { "" });
            let resource = format!("{path}{suffix}");
            let found = required_scope(method, &resource);
            proptest::prop_assert_eq!(found, required_scope(method, &path));
            if method == "HEAD" {
                proptest::prop_assert_eq!(found, required_scope("GET", &resource));
            }
            if let Some(scope) = found {
                proptest::prop_assert!(SCOPES.iter().any(|(name, _)| *name == scope));
                proptest::prop_assert!(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"].contains(&method));
                proptest::prop_assert_eq!(scope.ends_with(":read"), matches!(method, "GET" | "HEAD"));
                // The segments as routed: one trailing slash is not a segment.
                let routed: Vec<&str> = path[1..].strip_suffix('/').unwrap_or(&path[1..]).split('/').collect();
                proptest::prop_assert!(routed.iter().all(|s| !s.is_empty()), "{:?}", routed);
                let (scope_family, _) = scope.split_once(':').expect("family:access");
                proptest::prop_assert_eq!(family(routed[0]), Some(scope_family));
            }
        }
    }
}
