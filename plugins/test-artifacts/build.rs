//! Builds every fixture plugin and example policy for `wasm32-wasip2` and writes their paths
//! as constants (`artifacts.rs`, included by `lib.rs`).

use billstack_guest_build::GuestBuild;

/// (package, constant) for each component the tests use.
const COMPONENTS: &[(&str, &str)] = &[
    ("fixture-bad-status", "BAD_STATUS"),
    ("fixture-deep-recursion", "DEEP_RECURSION"),
    ("fixture-env-snoop", "ENV_SNOOP"),
    ("fixture-heavy-info", "HEAVY_INFO"),
    ("fixture-huge-info", "HUGE_INFO"),
    ("fixture-huge-output", "HUGE_OUTPUT"),
    ("fixture-infinite-loop", "INFINITE_LOOP"),
    ("fixture-leaky", "LEAKY"),
    ("fixture-memory-bomb", "MEMORY_BOMB"),
    ("fixture-panic", "PANIC"),
    ("fixture-wrong-world", "WRONG_WORLD"),
    ("policy-example-invoices", "EXAMPLE_INVOICES"),
    ("policy-example-read-only", "EXAMPLE_READ_ONLY"),
];

fn main() {
    let guests = GuestBuild::from_env();
    guests.rerun_if_changed(&[
        "wit",
        "plugins/fixtures",
        "plugins/scope-table",
        "sdk/billstack-policy",
        "examples/policies/invoices",
        "examples/policies/read-only",
        "Cargo.toml",
        "Cargo.lock",
    ]);
    let packages: Vec<&str> = COMPONENTS.iter().map(|(p, _)| *p).collect();
    let wasm_dir = guests.build(&packages);
    let mut generated = String::new();
    for (package, constant) in COMPONENTS {
        let path = GuestBuild::artifact(&wasm_dir, package);
        generated.push_str(&format!(
            "/// The built `{package}` component.\npub const {constant}: &str = {:?};\n",
            path.display().to_string()
        ));
    }
    guests.write_generated("artifacts.rs", &generated);
}
