//! Teams, projects, accounts and the audit log as administered; readiness; the bootstrap of
//! an empty store.

use std::collections::HashMap;

use anyhow::Context;
use billstack_keystore::{AuditEvent, NewUser, Project, Role, Storage, Team, User};
use rand::Rng;

use super::{App, AppResult, Caller, Need};
use crate::console;
use crate::policy::ScopePolicy;

/// A page of a team's audit log, with the email of each actor that is an account and the name
/// of each object acted on.
pub struct AuditPageReport {
    /// Events, newest first.
    pub events: Vec<NamedEvent>,
    /// The cursor of the next (older) page, if there is one.
    pub next_before: Option<u64>,
}

/// An audit event with names for its ids.
pub struct NamedEvent {
    /// The event.
    pub event: AuditEvent,
    /// The actor's email (`None` for `cli`, `system`, `anonymous` or a deleted account).
    pub actor_email: Option<String>,
    /// What the target is called: a key's name (revoked keys too), an account's email, a
    /// project's or team's name (as recorded when it was deleted); `None` when unknown.
    pub target_name: Option<String>,
}

/// What `/readyz` reports.
pub struct Readiness {
    /// Whether the store answers.
    pub store_ok: bool,
    /// One line per check.
    pub lines: Vec<String>,
}

impl App {
    /// The team's projects.
    pub fn list_projects(&self, caller: &Caller, team_id: &str) -> AppResult<Vec<Project>> {
        self.authorize(caller, team_id, Need::Member)?;
        Ok(self.store.list_projects(team_id)?)
    }

    /// The operator creates a team.
    pub fn create_team(&self, caller: &Caller, id: Option<&str>, name: &str) -> AppResult<Team> {
        Ok(self.store.create_team(id, name, caller.actor())?)
    }

    /// The operator creates a project in a team.
    pub fn create_project(
        &self,
        caller: &Caller,
        team_id: &str,
        id: Option<&str>,
        name: &str,
    ) -> AppResult<Project> {
        Ok(self
            .store
            .create_project(team_id, id, name, caller.actor())?)
    }

    /// The operator creates an account in a team (an administrator when `admin`). An email
    /// that has an account already adds that account to the team (its password is kept; the
    /// one given is not used).
    pub fn create_user(&self, caller: &Caller, new: &NewUser, admin: bool) -> AppResult<User> {
        let user = match self.store.find_user_by_email(&new.email)? {
            Some(existing) => {
                self.store
                    .add_member(&new.team_id, &existing.id, new.role, caller.actor())?;
                existing
            }
            None => self.store.create_user(new, caller.actor())?,
        };
        if admin {
            return Ok(self.store.set_admin(&user.id, true, caller.actor())?);
        }
        Ok(user)
    }

    /// A page of the team's audit log (owners only): up to `limit` events older than
    /// `before`, newest first.
    pub fn audit_page(
        &self,
        caller: &Caller,
        team_id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> AppResult<AuditPageReport> {
        self.authorize(caller, team_id, Need::Owner("read the audit log"))?;
        let page = self.store.list_audit(team_id, before, limit)?;
        // Names are read once per page, however many events share them.
        let mut names: HashMap<String, Option<String>> = HashMap::new();
        let mut events = Vec::with_capacity(page.events.len());
        for event in page.events {
            let actor_email = self.name_of(team_id, &event.actor, &mut names)?;
            let recorded = event
                .details
                .as_ref()
                .and_then(|d| d.get("name").or_else(|| d.get("email")))
                .and_then(|n| n.as_str())
                .map(str::to_owned);
            let target_name = match self.name_of(team_id, &event.target, &mut names)? {
                Some(name) => Some(name),
                None => recorded,
            };
            events.push(NamedEvent {
                event,
                actor_email,
                target_name,
            });
        }
        Ok(AuditPageReport {
            events,
            next_before: page.next_before,
        })
    }

    /// What an id in the team's audit log is called now: a user's email, a key's name (revoked
    /// keys keep their records), a project's or the team's name.
    fn name_of(
        &self,
        team_id: &str,
        id: &str,
        names: &mut HashMap<String, Option<String>>,
    ) -> AppResult<Option<String>> {
        if let Some(name) = names.get(id) {
            return Ok(name.clone());
        }
        let name = if id.starts_with("user_") {
            self.store.get_user(id)?.map(|u| u.email)
        } else if id.starts_with("key_") {
            self.store.get_key(team_id, id)?.map(|k| k.name)
        } else if id.starts_with("proj_") {
            self.store.get_project(team_id, id)?.map(|p| p.name)
        } else if id == team_id {
            self.store.get_team(id)?.map(|t| t.name)
        } else {
            None
        };
        names.insert(id.to_owned(), name.clone());
        Ok(name)
    }

    /// Whether the server can serve: the store answers and a default policy is loaded. A
    /// team policy that did not load is listed but leaves the server ready: only that team's
    /// requests fail closed, and every replica would see the same.
    pub fn readiness(&self) -> Readiness {
        let mut lines = Vec::new();
        let store_ok = match self.store.get_team("") {
            Ok(_) => {
                lines.push("store: ok".to_string());
                true
            }
            Err(e) => {
                tracing::warn!(error = ?e, "readiness: the store does not answer");
                lines.push("store: failed".to_string());
                false
            }
        };
        let mut ready = store_ok;
        if let Some(replica) = self.store.replica_status() {
            let state = if !replica.caught_up {
                ready = false;
                "catching up with the change feed"
            } else if !replica.lease_valid {
                ready = false;
                "lease expired: cannot confirm the change feed, refusing until it can"
            } else {
                "ok"
            };
            lines.push(format!(
                "replica {}: {state} (applied {} of {}, confirmed {} ago, lease {} ms)",
                replica.id,
                replica.applied_seq,
                replica.head_seq,
                replica
                    .confirmed_ms_ago
                    .map_or_else(|| "never".to_string(), |ms| format!("{ms} ms")),
                replica.lease_ms
            ));
        }
        let store_ok = ready;
        let default = self.policies.default_policy();
        lines.push(format!(
            "default policy: ok ({} {}, sha256 {})",
            default.info().name,
            default.info().version,
            default.sha256_hex()
        ));
        for (team, broken) in self.policies.broken_teams() {
            lines.push(format!(
                "team policy {team}: failed to load (sha256 {}); its requests fail closed: {}",
                broken.sha256_hex(),
                broken.error().replace('\n', " ")
            ));
        }
        Readiness { store_ok, lines }
    }

    /// Writes a consistent copy of the store (the control socket's `backup`).
    pub fn backup(
        &self,
        out: &mut dyn std::io::Write,
    ) -> AppResult<billstack_keystore::BackupSummary> {
        Ok(self.store.backup_to(out)?)
    }
}

fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..24)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// On an empty store: a team, a project and an owner account. The password comes from
/// `BILLSTACK_ADMIN_PASSWORD` or is generated and printed once on stderr. Replicas starting
/// together on one empty database bootstrap once: the check and the creation run while no
/// other replica runs its own ([`Storage::while_alone`]).
pub fn bootstrap(store: &dyn Storage) -> anyhow::Result<()> {
    let mut outcome = Ok(());
    store.while_alone(&mut || outcome = bootstrap_if_empty(store))?;
    outcome
}

fn bootstrap_if_empty(store: &dyn Storage) -> anyhow::Result<()> {
    if !store.is_empty()? {
        return Ok(());
    }
    let team = store.create_team(None, "My team", "system".into())?;
    let project = store.create_project(&team.id, None, "My project", "system".into())?;
    let email =
        std::env::var("BILLSTACK_ADMIN_EMAIL").unwrap_or_else(|_| "admin@localhost".to_string());
    let (password, generated) = match std::env::var("BILLSTACK_ADMIN_PASSWORD") {
        Ok(p) if !p.is_empty() => (p, false),
        _ => (random_password(), true),
    };
    let user = store
        .create_user(
            &NewUser {
                email,
                password: password.clone(),
                team_id: team.id.clone(),
                role: Role::Owner,
            },
            "system".into(),
        )
        .context("cannot create the bootstrap account")?;
    // The first account administers the deployment: it may create teams.
    let user = store.set_admin(&user.id, true, "system".into())?;
    console::say(
        console::Level::Info,
        &format!(
            "bootstrap: created team {} with project {} and owner {}",
            team.id, project.id, user.email
        ),
        &[
            ("team", &team.id),
            ("project", &project.id),
            ("email", &user.email),
        ],
    );
    if generated {
        // Printed once, to the operator's terminal only; it is stored nowhere in clear.
        console::say(
            console::Level::Warn,
            &format!(
                "bootstrap: generated password for {}: {password}",
                user.email
            ),
            &[("email", &user.email)],
        );
    }
    Ok(())
}
