//! Host bindings for the `billstack:policy` world: the one place `bindgen!` runs.
#![allow(missing_docs)] // generated code

wasmtime::component::bindgen!({
    world: "policy",
    path: "../wit",
    // The request is lowered straight from borrowed host strings: no owned copy per call.
    ownership: Borrowing { duplicate_if_necessary: true },
});

pub use billstack::policy::types::{Denial, KeyInfo, ScopeInfo};
