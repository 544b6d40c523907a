//! Behaviour of the store as a whole.

use crate::store::AUDIT_KEYS_MIGRATED;
use crate::*;

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    (dir, store)
}

fn team_and_project(store: &Store) -> (Team, Project) {
    let team = store
        .create_team(Some("team_a"), "Acme", "test".into())
        .expect("team");
    let project = store
        .create_project(&team.id, Some("proj_a"), "Web", "test".into())
        .expect("project");
    (team, project)
}

fn new_key(team: &str) -> NewApiKey {
    NewApiKey::new(team, "ci", "test")
}

mod accounts;
mod audit;
mod keys;
mod opening;
mod policies;
mod rotation_and_budgets;
