//! Test-only: paths of the fixture plugins (`plugins/fixtures/`) and the example policies
//! (`examples/policies/`), built for `wasm32-wasip2` by this crate's build script.
//!
//! A dev-dependency of the host, so `cargo build --release` never compiles these components;
//! only the tests, benchmarks and fuzz targets that use them do (the pattern of wasmtime's
//! `test-programs/artifacts`). It holds paths, not bytes, so a test binary stays small.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));

/// Reads one of the components above.
pub fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read the built component {path}: {e}"))
}
