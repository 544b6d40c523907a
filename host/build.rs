//! Builds the default policy plugin for `wasm32-wasip2` so that `cargo build` alone yields a
//! binary with it inside, and records the WIT world the binary hosts.
//!
//! Only what the binary ships is built here. The misbehaving fixtures and the example policies
//! that the tests upload are built by the dev-only `billstack-test-artifacts` crate, so a
//! production build never compiles them.

use billstack_guest_build::GuestBuild;

const DEFAULT_PLUGIN: &str = "billstack-default-scopes";

fn main() {
    let guests = GuestBuild::from_env();
    guests.rerun_if_changed(&[
        "wit",
        "plugins/default-scopes",
        "plugins/scope-table",
        "Cargo.toml",
        "Cargo.lock",
    ]);

    // `billstack --version` names the WIT world it hosts: `package billstack:policy@X;`.
    let wit =
        std::fs::read_to_string(guests.workspace().join("wit/policy.wit")).expect("wit/policy.wit");
    let package = wit
        .lines()
        .find_map(|l| l.trim().strip_prefix("package "))
        .and_then(|p| p.strip_suffix(';'))
        .expect("wit/policy.wit declares its package");
    let (name, version) = package
        .split_once('@')
        .expect("the WIT package has a version");
    println!("cargo:rustc-env=BILLSTACK_WIT_WORLD={name}/policy@{version}");

    let wasm_dir = guests.build(&[DEFAULT_PLUGIN]);
    let built = GuestBuild::artifact(&wasm_dir, DEFAULT_PLUGIN);
    // A copy in OUT_DIR, so a later build of other guests in the shared directory never
    // changes the bytes this binary embeds.
    let embedded = guests.out_dir().join("default-scopes.wasm");
    std::fs::copy(&built, &embedded).expect("copy the default plugin");
    guests.write_generated(
        "plugins.rs",
        &format!(
            "/// The default scope plugin, a `wasm32-wasip2` component built by `build.rs`.\n\
             pub const DEFAULT_PLUGIN: &[u8] = include_bytes!({:?});\n",
            embedded.display().to_string()
        ),
    );
}
