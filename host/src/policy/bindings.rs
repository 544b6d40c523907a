//! Host bindings for the `billstack:policy` world: the one place `bindgen!` runs.
#![allow(missing_docs)] // generated code

wasmtime::component::bindgen!({
    world: "policy",
    path: "../wit",
});

pub use billstack::policy::types::{Denial, KeyInfo, ScopeInfo};
