//! Example policy: **a new resource with its own scopes**. The default BillStack table plus
//! invoices, guarded by two new scopes, `invoices:read` and `invoices:write`. After the upload
//! the new scopes appear in the dashboard's scope list and are accepted at key creation.
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p policy-example-invoices`

use std::sync::LazyLock;

use billstack_policy::{Decision, Guest, PluginInfo, Request, Table};

/// The default table, plus the invoice scopes and routes (`*` is one id segment).
static TABLE: LazyLock<Table> = LazyLock::new(|| {
    Table::billstack_default()
        .scope("invoices:read", "Read invoices and their line items")
        .scope("invoices:write", "Create, finalize and void invoices")
        .route(&["GET"], "/invoices", "invoices:read")
        .route(&["GET"], "/invoices/*", "invoices:read")
        .route(&["GET"], "/invoices/*/lines", "invoices:read")
        .route(&["POST"], "/invoices", "invoices:write")
        .route(&["POST"], "/invoices/*/finalize", "invoices:write")
        .route(&["POST"], "/invoices/*/void", "invoices:write")
});

struct Invoices;

impl Guest for Invoices {
    fn info() -> PluginInfo {
        TABLE.info("billstack-with-invoices", "1.0.0")
    }

    fn authorize(request: Request) -> Decision {
        TABLE.decide(&request)
    }
}

billstack_policy::export!(Invoices);

#[cfg(test)]
mod tests {
    use billstack_policy::testing::decide;

    use super::Invoices;

    #[test]
    fn invoices_need_their_scopes_and_the_rest_is_the_default() {
        assert_eq!(
            decide::<Invoices>("GET", "/invoices/in_1/lines", &["invoices:read"]),
            "allow"
        );
        assert_eq!(
            decide::<Invoices>("POST", "/invoices/in_1/void", &["invoices:read"]),
            "insufficient_scope invoices:write"
        );
        assert_eq!(
            decide::<Invoices>("GET", "/customers", &["customers:read"]),
            "allow"
        );
        assert_eq!(decide::<Invoices>("GET", "/unknown", &[]), "unknown_route");
    }
}
