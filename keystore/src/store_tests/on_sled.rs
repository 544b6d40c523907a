//! The conformance suite against sled: every backend-neutral file of `store_tests`, with
//! `open()` and `open_at_manual_time()` making sled stores.

// Each conformance file is compiled once per backend, on purpose.
#![allow(clippy::duplicate_mod)]

use super::*;

/// A fresh store, with the system clock.
fn open() -> (Keep, Box<dyn Storage>) {
    let (dir, store) = open_sled(&StoreOptions::default());
    (Box::new(dir), store)
}

/// A fresh store whose time moves only when the test says.
fn open_at_manual_time() -> (Keep, Box<dyn Storage>, Arc<ManualClock>) {
    let clock = ManualClock::starting_now();
    let (dir, store) = open_sled(&StoreOptions {
        clock: clock.clone(),
        ..StoreOptions::default()
    });
    (Box::new(dir), store, clock)
}

#[path = "accounts.rs"]
mod accounts;
#[path = "audit.rs"]
mod audit;
#[path = "keys.rs"]
mod keys;
#[path = "listing.rs"]
mod listing;
#[path = "policies.rs"]
mod policies;
#[path = "rotation_and_budgets.rs"]
mod rotation_and_budgets;
