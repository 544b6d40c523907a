//! Compiles policy plugins of this workspace for `wasm32-wasip2` from a build script.
//!
//! Two build scripts use it: the host's (only the default plugin, which is embedded in the
//! binary) and the test-artifacts crate's (the misbehaving fixtures and the example policies,
//! built only when tests are). It runs one nested `cargo build` with a target directory of its
//! own (so it never waits on the outer build's lock), keeps the outer build's host-only flags
//! away from the guests, and makes sure the target's standard library is installed first:
//! rustup does not add `rust-toolchain.toml`'s targets to a toolchain that is already
//! installed, so a fresh machine would otherwise fail minutes into the first build.
//!
//! It deliberately knows nothing about what the plugins are for; callers name the packages.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The plugins' target.
pub const TARGET: &str = "wasm32-wasip2";
/// The cargo profile plugins are built with (small, fast components; see the root Cargo.toml).
pub const PROFILE: &str = "plugin";

/// One nested build of guest packages.
pub struct GuestBuild {
    workspace: PathBuf,
    out_dir: PathBuf,
}

impl GuestBuild {
    /// A build for the workspace holding the calling crate, reading cargo's build-script
    /// environment (`CARGO_MANIFEST_DIR`, `OUT_DIR`).
    pub fn from_env() -> GuestBuild {
        let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
        let workspace = manifest_dir
            .ancestors()
            .find(|dir| is_workspace_root(dir))
            .unwrap_or_else(|| panic!("no workspace root above {}", manifest_dir.display()))
            .to_path_buf();
        GuestBuild {
            workspace,
            out_dir: PathBuf::from(env("OUT_DIR")),
        }
    }

    /// The workspace root.
    pub fn workspace(&self) -> &Path {
        &self.workspace
    }

    /// The calling crate's `OUT_DIR`.
    pub fn out_dir(&self) -> &Path {
        &self.out_dir
    }

    /// Asks cargo to run the build script again when any of these workspace paths change.
    pub fn rerun_if_changed(&self, paths: &[&str]) {
        for path in paths {
            println!(
                "cargo:rerun-if-changed={}",
                self.workspace.join(path).display()
            );
        }
    }

    /// Builds `packages` and returns the directory holding their `.wasm` files.
    ///
    /// Panics (the way a build script reports failure) with the reason when the target cannot
    /// be installed or the build fails.
    pub fn build(&self, packages: &[&str]) -> PathBuf {
        let target_dir = guest_target_dir(&self.out_dir);
        ensure_target(&self.workspace);
        let mut cmd = guest_command(&self.workspace, "cargo");
        cmd.arg("build")
            .arg("--manifest-path")
            .arg(self.workspace.join("Cargo.toml"))
            .args(["--target", TARGET, "--profile", PROFILE, "--quiet"]);
        for package in packages {
            cmd.args(["-p", package]);
        }
        cmd.env("CARGO_TARGET_DIR", &target_dir);
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("cannot run cargo to build the policy plugins: {e}"));
        if !status.success() {
            panic!(
                "building the policy plugins ({}) for {TARGET} failed",
                packages.join(", ")
            );
        }
        target_dir.join(TARGET).join(PROFILE)
    }

    /// The built component of `package` in `wasm_dir` (from [`GuestBuild::build`]).
    pub fn artifact(wasm_dir: &Path, package: &str) -> PathBuf {
        let path = wasm_dir.join(format!("{}.wasm", package.replace('-', "_")));
        assert!(
            path.is_file(),
            "{package} was not built at {}",
            path.display()
        );
        path
    }

    /// Writes a generated Rust file into `OUT_DIR` and returns its path.
    pub fn write_generated(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.out_dir.join(name);
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }
}

fn env(name: &str) -> std::ffi::OsString {
    std::env::var_os(name).unwrap_or_else(|| panic!("{name} is not set: run from a build script"))
}

fn is_workspace_root(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml"))
        .is_ok_and(|text| text.lines().any(|l| l.trim() == "[workspace]"))
}

/// `<outer target dir>/wasm-plugins`, found as the ancestor of `OUT_DIR` holding cargo's
/// `CACHEDIR.TAG`; falls back to a directory under `OUT_DIR`. Every build script that uses
/// this crate shares it, so the guests' dependencies compile once.
fn guest_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(|dir| dir.join("wasm-plugins"))
        .unwrap_or_else(|| out_dir.join("wasm-plugins"))
}

/// Whether this is a `cargo fuzz` build (a nightly toolchain with sanitizer coverage flags).
fn fuzzing() -> bool {
    println!("cargo:rerun-if-env-changed=CARGO_CFG_FUZZING");
    std::env::var_os("CARGO_CFG_FUZZING").is_some()
}

/// A command for the toolchain that builds the guests: the one building the caller, except in
/// a `cargo fuzz` build. That one runs on nightly, which has no `wasm32-wasip2` standard
/// library here; the guests then build with the workspace's pinned toolchain
/// (`rust-toolchain.toml`), through rustup's proxy run from the workspace.
///
/// `program` is `cargo`, `rustc` or `rustup`. The outer build's flags are for the host target
/// and never reach the guests.
fn guest_command(workspace: &Path, program: &str) -> Command {
    let mut cmd = if fuzzing() {
        let mut cmd = Command::new(program);
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
    } else {
        let own = match program {
            "cargo" => std::env::var_os("CARGO"),
            "rustc" => std::env::var_os("RUSTC"),
            _ => None,
        };
        Command::new(own.unwrap_or_else(|| program.into()))
    };
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Makes sure the guests' toolchain has the `wasm32-wasip2` standard library, adding it with
/// rustup when it is missing (and saying so); a clear error where that cannot be done.
fn ensure_target(workspace: &Path) {
    // The toolchain rustup's proxy chose for this build (unset outside rustup, and removed on
    // purpose in a fuzz build, where rust-toolchain.toml picks it from the workspace).
    let toolchain = if fuzzing() {
        None
    } else {
        std::env::var("RUSTUP_TOOLCHAIN").ok()
    };
    let outcome = ensure_target_with(
        guest_command(workspace, "rustc"),
        guest_command(workspace, "rustup"),
        toolchain.as_deref(),
    );
    match outcome {
        Ok(Installed::Already) => {}
        Ok(Installed::Added) => println!(
            "cargo:warning=the {TARGET} target (for the policy plugins) was not installed for {}; \
             added it with `rustup target add {TARGET}`",
            toolchain.as_deref().unwrap_or("the workspace toolchain")
        ),
        Err(why) => panic!("{why}"),
    }
}

/// What [`ensure_target_with`] found.
#[derive(Debug, PartialEq, Eq)]
enum Installed {
    /// The target's standard library was there.
    Already,
    /// rustup added it.
    Added,
}

/// [`ensure_target`] with the commands given: `rustc` (asked for its sysroot) and `rustup`
/// (run with `target add` when the target's library is not in that sysroot).
fn ensure_target_with(
    mut rustc: Command,
    mut rustup: Command,
    toolchain: Option<&str>,
) -> Result<Installed, String> {
    let sysroot = match rustc.args(["--print", "sysroot"]).output() {
        Ok(out) if out.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
        Ok(out) => {
            return Err(format!(
                "`rustc --print sysroot` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Err(e) => return Err(format!("cannot run rustc to find its sysroot: {e}")),
    };
    let std_dir = sysroot.join("lib/rustlib").join(TARGET);
    if std_dir.is_dir() {
        return Ok(Installed::Already);
    }
    rustup.args(["target", "add", TARGET]);
    if let Some(t) = toolchain {
        rustup.args(["--toolchain", t]);
    }
    match rustup.status() {
        Ok(status) if status.success() && std_dir.is_dir() => Ok(Installed::Added),
        Ok(status) => Err(format!(
            "`rustup target add {TARGET}` failed ({status}); the policy plugins cannot be built \
             without the {TARGET} standard library (expected at {})",
            std_dir.display()
        )),
        Err(e) => Err(format!(
            "the {TARGET} standard library is not installed (expected at {}) and rustup could \
             not be run to add it ({e}). Install the target for the toolchain that builds this \
             workspace (with rustup: `rustup target add {TARGET}`) and build again.",
            std_dir.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shell script at `dir/name` running `body`.
    fn script(dir: &Path, name: &str, body: &str) -> Command {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Command::new(path)
    }

    fn fake_rustc(dir: &Path, sysroot: &Path) -> Command {
        script(dir, "rustc", &format!("echo '{}'", sysroot.display()))
    }

    #[test]
    fn an_installed_target_needs_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sysroot = dir.path().join("sysroot");
        std::fs::create_dir_all(sysroot.join("lib/rustlib").join(TARGET)).expect("mkdir");
        let never = script(dir.path(), "rustup", "exit 99");
        assert_eq!(
            ensure_target_with(fake_rustc(dir.path(), &sysroot), never, Some("1.95.0")),
            Ok(Installed::Already)
        );
    }

    #[test]
    fn a_missing_target_is_added_with_rustup_for_the_building_toolchain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sysroot = dir.path().join("sysroot");
        let std_dir = sysroot.join("lib/rustlib").join(TARGET);
        let calls = dir.path().join("calls");
        let rustup = script(
            dir.path(),
            "rustup",
            &format!(
                "echo \"$@\" > '{}'; mkdir -p '{}'",
                calls.display(),
                std_dir.display()
            ),
        );
        assert_eq!(
            ensure_target_with(fake_rustc(dir.path(), &sysroot), rustup, Some("1.95.0-x")),
            Ok(Installed::Added)
        );
        assert_eq!(
            std::fs::read_to_string(&calls).expect("rustup ran").trim(),
            format!("target add {TARGET} --toolchain 1.95.0-x")
        );
    }

    #[test]
    fn without_rustup_the_error_says_what_to_install() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sysroot = dir.path().join("sysroot");
        let absent = Command::new(dir.path().join("no-such-rustup"));
        let err = ensure_target_with(fake_rustc(dir.path(), &sysroot), absent, None)
            .expect_err("no rustup");
        assert!(err.contains("rustup could not be run"), "{err}");
        assert!(
            err.contains(&format!("rustup target add {TARGET}")),
            "{err}"
        );
        assert!(err.contains(&sysroot.display().to_string()), "{err}");
        // A rustup that fails is reported as such.
        let failing = script(dir.path(), "rustup", "exit 1");
        let err = ensure_target_with(fake_rustc(dir.path(), &sysroot), failing, None)
            .expect_err("rustup failed");
        assert!(err.contains("failed"), "{err}");
    }
}
