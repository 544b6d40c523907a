//! A BillStack Keys scope policy: the default BillStack table plus your own scopes and routes.
//! Edit `TABLE`, build, check with `billstack policy test`, upload.
//!
//! The host has already checked the key, its team and its project before `authorize` runs;
//! this only says which scope a route needs. See docs/writing-policies.md in the BillStack Keys
//! repository for the world, the limits and the `billstack-policy` kit.

use std::sync::LazyLock;

use billstack_policy::{Decision, Guest, PluginInfo, Request, Table};

/// The default table, plus orders. Patterns are below `/api/billstack/teams/{teamId}/projects/
/// {projectId}`; `*` matches one id segment, `**` anything below. Your routes come first.
static TABLE: LazyLock<Table> = LazyLock::new(|| {
    Table::billstack_default()
        .scope("orders:read", "Read orders")
        .scope("orders:write", "Create and cancel orders")
        .route(&["GET"], "/orders", "orders:read")
        .route(&["GET"], "/orders/*", "orders:read")
        .route(&["POST"], "/orders", "orders:write")
        .route(&["POST"], "/orders/*/cancel", "orders:write")
});

struct MyPolicy;

impl Guest for MyPolicy {
    fn info() -> PluginInfo {
        TABLE.info("my-policy", env!("CARGO_PKG_VERSION"))
    }

    fn authorize(request: Request) -> Decision {
        TABLE.decide(&request)
    }
}

billstack_policy::export!(MyPolicy);

#[cfg(test)]
mod tests {
    use billstack_policy::testing::decide;

    use super::MyPolicy;

    #[test]
    fn orders_need_their_scopes() {
        assert_eq!(
            decide::<MyPolicy>("GET", "/orders/ord_1", &["orders:read"]),
            "allow"
        );
        assert_eq!(
            decide::<MyPolicy>("POST", "/orders", &["orders:read"]),
            "insufficient_scope orders:write"
        );
    }

    #[test]
    fn everything_else_is_the_default_table() {
        assert_eq!(
            decide::<MyPolicy>("GET", "/customers", &["customers:read"]),
            "allow"
        );
        assert_eq!(decide::<MyPolicy>("GET", "/unknown", &[]), "unknown_route");
    }
}
