//! BillStack Keys: issues, stores and checks BillStack API keys, and asks a sandboxed
//! WebAssembly policy plugin which scope each SaaS route needs.
//!
//! Everything lives here; `main.rs` only parses the command line and calls [`cli::run`].
//! Layers, outermost first: [`server`] (HTTP) and [`cli`] (the command line) call the services
//! in [`app`], which use [`decision`] (the one decision function every front door uses),
//! [`policy`] (the Wasm sandbox and the active policies), [`ratelimit`] (request budgets),
//! [`metrics`] and the store (`billstack_keystore::Storage`). Beside them: [`config`] (file and
//! environment), [`startup`] (the engine and the policies a process starts with),
//! [`policytest`] (`billstack policy test`), [`views`] (the JSON shapes shared by the CLI and the
//! HTTP API), [`console`] (the operator's fixed lines on stderr). docs/architecture.md has the
//! map.

pub mod app;
pub mod cli;
pub mod config;
pub mod console;
pub mod decision;
pub mod metrics;
pub mod policy;
pub mod policytest;
pub mod ratelimit;
pub mod server;
pub mod startup;
pub mod views;

/// Compile-time artefacts from `build.rs`.
pub mod plugins {
    include!(concat!(env!("OUT_DIR"), "/plugins.rs"));
}
