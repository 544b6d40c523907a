//! The conformance suite against PostgreSQL: the same files as `on_sled`, with `open()` and
//! `open_at_manual_time()` making a fresh database on a throwaway cluster of this test's own.
//! Where PostgreSQL is not installed the suite says so and runs against sled instead (`.ci/run`
//! installs it and sets `BILLSTACK_REQUIRE_POSTGRES`, which makes that a failure).

// Each conformance file is compiled once per backend, on purpose.
#![allow(clippy::duplicate_mod)]

use billstack_pg_cluster::PgCluster;

use super::*;
use crate::pg::{PgOptions, PgStore};

fn open_with_clock(clock: crate::clock::SharedClock) -> (Keep, Box<dyn Storage>) {
    let Some(cluster) = PgCluster::start() else {
        eprintln!("PostgreSQL is not installed: this test ran against sled");
        let (dir, store) = open_sled(&StoreOptions {
            clock,
            ..StoreOptions::default()
        });
        return (Box::new(dir), store);
    };
    let store = PgStore::connect(
        &cluster.new_database(),
        &PgOptions {
            clock,
            ..PgOptions::default()
        },
    )
    .expect("connect to the test database");
    (Box::new(cluster), Box::new(store))
}

/// A fresh store, with the system clock.
fn open() -> (Keep, Box<dyn Storage>) {
    open_with_clock(crate::clock::system())
}

/// A fresh store whose time moves only when the test says.
fn open_at_manual_time() -> (Keep, Box<dyn Storage>, Arc<ManualClock>) {
    let clock = ManualClock::starting_now();
    let (keep, store) = open_with_clock(clock.clone());
    (keep, store, clock)
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
