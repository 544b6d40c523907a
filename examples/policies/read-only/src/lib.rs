//! Example policy: **read-only keys**. The default BillStack table, except that every write
//! (anything but GET and HEAD) is refused, whatever scopes the key holds. Upload it for a team
//! whose keys must never change data, e.g. one that only feeds a reporting tool.
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p policy-example-read-only`

use std::sync::LazyLock;

use billstack_policy::{Decision, Guest, PluginInfo, Request, Table, deny};

/// The default table with only its read scopes: write scopes would grant nothing here.
static TABLE: LazyLock<Table> =
    LazyLock::new(|| Table::billstack_default().retain_scopes(|name| name.ends_with(":read")));

struct ReadOnly;

impl Guest for ReadOnly {
    fn info() -> PluginInfo {
        TABLE.info("read-only", "1.0.0")
    }

    fn authorize(request: Request) -> Decision {
        if request.method != "GET" && request.method != "HEAD" {
            // Its own code: no scope would make this write possible, so none is named.
            return deny(
                403,
                "read_only",
                format!(
                    "this team's keys are read-only; {} is not allowed",
                    request.method
                ),
                None,
            );
        }
        TABLE.decide(&request)
    }
}

billstack_policy::export!(ReadOnly);

#[cfg(test)]
mod tests {
    use billstack_policy::testing::{all_scopes, decide};

    use super::ReadOnly;

    #[test]
    fn writes_are_refused_with_its_own_code_and_reads_follow_the_default() {
        let all = all_scopes::<ReadOnly>();
        assert!(all.iter().all(|s| s.ends_with(":read")), "{all:?}");
        let full: Vec<&str> = all.iter().map(String::as_str).collect();
        assert_eq!(decide::<ReadOnly>("POST", "/customers", &full), "read_only");
        assert_eq!(decide::<ReadOnly>("GET", "/customers", &full), "allow");
        assert_eq!(
            decide::<ReadOnly>("GET", "/products", &["customers:read"]),
            "insufficient_scope products:read"
        );
    }
}
