//! BillStack Keys: issues, stores and checks BillStack API keys, and asks a sandboxed
//! WebAssembly policy plugin which scope each SaaS route needs.
//!
//! Everything lives here; `main.rs` only parses the command line and calls [`cli::run`].
//! Modules: [`config`] (file and environment), [`policy`] (the Wasm sandbox and the active
//! policies), [`decision`] (the one decision function every front door uses), [`cli`] (the
//! offline commands), [`policytest`] (`billstack policy test`), [`views`] (the JSON shapes shared
//! by the CLI and the HTTP API), [`startup`] (the engine and the active policies a process starts
//! with), [`console`] (the operator's fixed lines on stderr), [`ratelimit`] (request budgets).

pub mod cli;
pub mod config;
pub mod console;
pub mod decision;
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
