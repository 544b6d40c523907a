//! Behaviour of the store as a whole: one conformance suite for every backend.
//!
//! The files `accounts`, `audit`, `keys`, `listing`, `policies` and `rotation_and_budgets`
//! talk to the store only through the storage seam ([`Storage`]). Each is compiled once per
//! backend, inside that backend's module (`on_sled`, `on_postgres`), where `open()` and
//! `open_at_manual_time()` make a fresh store of that backend — as SpiceDB's and OpenFGA's
//! datastore suites run one set of tests against every datastore. A backend joins by adding
//! its module with the same two functions and the same file list. `opening` is about
//! sled's own files and migrations, so it runs against sled alone.

use crate::store::AUDIT_KEYS_MIGRATED;
use crate::*;

use std::sync::Arc;

use crate::clock::{Clock, ManualClock};

/// What keeps a test's store alive (its directory, its database): dropped with the test.
type Keep = Box<dyn std::any::Any>;

fn open_sled(options: &StoreOptions) -> (tempfile::TempDir, Box<dyn Storage>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_with(dir.path(), options).expect("open");
    (dir, Box::new(store))
}

/// The sled store itself, for tests of its files and trees.
fn open_sled_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    (dir, store)
}

mod on_postgres;
mod on_sled;

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

mod opening;
