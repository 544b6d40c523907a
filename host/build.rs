//! Builds the policy plugins for `wasm32-wasip2` so that `cargo build` alone yields a binary
//! with the default plugin inside.
//!
//! One nested `cargo build` compiles the default plugin and the test fixtures together (they
//! share their dependencies) in a target directory of their own, so it never contends for the
//! outer build's lock. The default plugin's bytes are embedded through a generated file; the
//! fixtures' paths reach the tests as `BILLSTACK_FIXTURE_*` compile-time environment variables
//! and never enter the binary.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "plugin";
const DEFAULT_PLUGIN: &str = "billstack-default-scopes";
/// Example policies under `examples/policies/`, built so the tests can upload them.
const EXAMPLES: &[&str] = &["invoices", "read-only"];
const FIXTURES: &[&str] = &[
    "bad-status",
    "deep-recursion",
    "env-snoop",
    "huge-info",
    "huge-output",
    "infinite-loop",
    "leaky",
    "memory-bomb",
    "panic",
    "wrong-world",
];

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .parent()
        .expect("host/ has a parent")
        .to_path_buf();
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));

    for path in [
        "wit",
        "plugins",
        "examples/policies",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(path).display());
    }

    // `billstack --version` names the WIT world it hosts: `package billstack:policy@X;`.
    let wit = std::fs::read_to_string(workspace.join("wit/policy.wit")).expect("wit/policy.wit");
    let package = wit
        .lines()
        .find_map(|l| l.trim().strip_prefix("package "))
        .and_then(|p| p.strip_suffix(';'))
        .expect("wit/policy.wit declares its package");
    let (name, version) = package
        .split_once('@')
        .expect("the WIT package has a version");
    println!("cargo:rustc-env=BILLSTACK_WIT_WORLD={name}/policy@{version}");

    let target_dir = guest_target_dir(&out_dir);
    let mut cmd = guest_cargo(&workspace);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .args(["--target", TARGET, "--profile", PROFILE, "--quiet"])
        .args(["-p", DEFAULT_PLUGIN]);
    for fixture in FIXTURES {
        cmd.args(["-p", &format!("fixture-{fixture}")]);
    }
    for example in EXAMPLES {
        cmd.args(["-p", &format!("policy-example-{example}")]);
    }
    // The outer build's flags are for the host target; they must not leak into the guests.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("CARGO_TARGET_DIR", &target_dir);
    let status = cmd
        .status()
        .expect("failed to run cargo for the policy plugins");
    if !status.success() {
        panic!(
            "building the policy plugins for {TARGET} failed (is the target installed? \
             `rustup target add {TARGET}`)"
        );
    }

    let wasm_dir = target_dir.join(TARGET).join(PROFILE);
    let default_wasm = wasm_dir.join(format!("{}.wasm", DEFAULT_PLUGIN.replace('-', "_")));
    let embedded = out_dir.join("default-scopes.wasm");
    std::fs::copy(&default_wasm, &embedded).expect("copy the default plugin");
    std::fs::write(
        out_dir.join("plugins.rs"),
        format!(
            "/// The default scope plugin, a `wasm32-wasip2` component built by `build.rs`.\n\
             pub const DEFAULT_PLUGIN: &[u8] = include_bytes!({:?});\n",
            embedded.display().to_string()
        ),
    )
    .expect("write plugins.rs");

    for fixture in FIXTURES {
        let path = wasm_dir.join(format!("fixture_{}.wasm", fixture.replace('-', "_")));
        assert!(
            path.exists(),
            "fixture {} was not built at {}",
            fixture,
            path.display()
        );
        let var = format!(
            "BILLSTACK_FIXTURE_{}",
            fixture.replace('-', "_").to_uppercase()
        );
        println!("cargo:rustc-env={var}={}", path.display());
    }
    for example in EXAMPLES {
        let path = wasm_dir.join(format!("policy_example_{}.wasm", example.replace('-', "_")));
        assert!(
            path.exists(),
            "example {} was not built at {}",
            example,
            path.display()
        );
        let var = format!(
            "BILLSTACK_EXAMPLE_{}",
            example.replace('-', "_").to_uppercase()
        );
        println!("cargo:rustc-env={var}={}", path.display());
    }
}

/// `<outer target dir>/wasm-plugins`, found as the ancestor of `OUT_DIR` holding cargo's
/// `CACHEDIR.TAG`; falls back to a directory under `OUT_DIR`.
fn guest_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(|dir| dir.join("wasm-plugins"))
        .unwrap_or_else(|| out_dir.join("wasm-plugins"))
}

/// The `cargo` that builds the guests: the one building the host, except in a `cargo fuzz`
/// build. That one runs on a nightly toolchain (for the sanitizer coverage flags), which has no
/// `wasm32-wasip2` standard library here; the guests then build with the workspace's pinned
/// toolchain (`rust-toolchain.toml`), through rustup's `cargo` proxy run from the workspace.
fn guest_cargo(workspace: &Path) -> Command {
    println!("cargo:rerun-if-env-changed=CARGO_CFG_FUZZING");
    if std::env::var_os("CARGO_CFG_FUZZING").is_none() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        return Command::new(cargo);
    }
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace);
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "CARGO",
    ] {
        cmd.env_remove(var);
    }
    cmd
}
