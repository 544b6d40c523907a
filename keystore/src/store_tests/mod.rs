//! Behaviour of the store as a whole.
//!
//! Every test here but `opening` (which is about sled's files) talks to the store only through
//! the storage seam ([`Storage`]), so a second backend can be held to the same tests by adding
//! it to [`backends`].

use crate::store::AUDIT_KEYS_MIGRATED;
use crate::*;

use std::sync::Arc;

use crate::clock::{Clock, ManualClock};

/// A fresh store of each backend, with the system clock.
fn backends() -> Vec<(tempfile::TempDir, Box<dyn Storage>)> {
    vec![open_sled(&StoreOptions::default())]
}

fn open_sled(options: &StoreOptions) -> (tempfile::TempDir, Box<dyn Storage>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_with(dir.path(), options).expect("open");
    (dir, Box::new(store))
}

/// The store the tests use: the first backend.
fn open() -> (tempfile::TempDir, Box<dyn Storage>) {
    backends().remove(0)
}

/// The sled store itself, for tests of its files and trees.
fn open_sled_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    (dir, store)
}

/// A store whose time moves only when the test says.
fn open_at_manual_time() -> (tempfile::TempDir, Box<dyn Storage>, Arc<ManualClock>) {
    let clock = ManualClock::starting_now();
    let (dir, store) = open_sled(&StoreOptions {
        clock: clock.clone(),
        ..StoreOptions::default()
    });
    (dir, store, clock)
}

fn team_and_project(store: &dyn Storage) -> (Team, Project) {
    let team = store
        .create_team(Some("team_a"), "Acme", "test".into())
        .expect("team");
    let project = store
        .create_project(&team.id, Some("proj_a"), "Web", "test".into())
        .expect("project");
    (team, project)
}

/// Every record the store holds, as bytes (its backup), for tests that a secret is stored
/// nowhere, whatever the backend's layout.
fn everything_stored(store: &dyn Storage) -> Vec<u8> {
    let mut out = Vec::new();
    store.backup_to(&mut out).expect("backup");
    out
}

fn new_key(team: &str) -> NewApiKey {
    NewApiKey::new(team, "ci")
}

mod accounts;
mod audit;
mod keys;
mod listing;
mod opening;
mod policies;
mod rotation_and_budgets;
