//! API keys: create (scopes checked against the team's active policy), list, revoke, rotate,
//! and per-day usage.

use std::collections::HashMap;

use billstack_keystore::{
    DailyUsage, KeyChanges, KeyPage, KeyQuery, KeyRecord, NewApiKey, RateLimit, Rotated,
};

use crate::views::{CreatedByView, KeyView};

use super::usage::RETENTION_DAYS;
use super::{App, AppError, AppResult, Caller, Need};

/// The old key's grace period when a rotation does not say: 24 hours.
pub const DEFAULT_ROTATION_GRACE_SECONDS: u64 = 24 * 60 * 60;
/// Days of usage shown when the request does not say.
pub const DEFAULT_USAGE_DAYS: u32 = 30;

/// A key to create, as the caller asked for it (parsed, not yet checked).
#[derive(Debug, Clone, Default)]
pub struct KeyRequest {
    /// Label.
    pub name: String,
    /// One project of the team, or `None` for all.
    pub project_id: Option<String>,
    /// Scopes the team's policy defines; empty for full access.
    pub scopes: Vec<String>,
    /// Expiry in Unix ms.
    pub expires_at: Option<i64>,
    /// A request budget.
    pub rate_limit: Option<RateLimit>,
}

/// A key's requests per day, with its latest use.
#[derive(Debug, Clone)]
pub struct UsageReport {
    /// The key's latest allowed request (Unix ms).
    pub last_used_at: Option<i64>,
    /// Days since the epoch (UTC) and their counts, oldest first, ending today.
    pub days: Vec<(i64, DailyUsage)>,
}

impl App {
    /// Checks scope names against the catalogue of the team's active policy. A team whose
    /// policy does not load can get no scoped key (its scopes cannot be checked).
    pub fn check_scopes(&self, team_id: &str, scopes: &[String]) -> AppResult<()> {
        if scopes.is_empty() {
            return Ok(());
        }
        let (policy, _) = self.policies.for_team(team_id);
        if let Some(error) = policy.load_error() {
            return Err(AppError::invalid(
                "scopes",
                format!(
                    "the team's policy does not load, so scopes cannot be checked ({error}); upload a working policy or reset the team to the default first"
                ),
            ));
        }
        let catalogue = crate::policy::ScopePolicy::scope_names(policy.as_policy());
        if let Some(unknown) = scopes.iter().find(|s| !catalogue.contains(s)) {
            let shown: String = unknown.chars().take(80).collect();
            return Err(AppError::invalid(
                "scopes",
                format!("scope {shown:?} is not defined by the team's policy"),
            ));
        }
        Ok(())
    }

    /// Creates a key in `team_id`; returns its record and the raw key (shown once).
    pub fn create_key(
        &self,
        caller: &Caller,
        team_id: &str,
        request: KeyRequest,
    ) -> AppResult<(KeyRecord, String)> {
        self.authorize(caller, team_id, Need::Member)?;
        self.check_scopes(team_id, &request.scopes)?;
        if request.project_id.as_deref() == Some("") {
            return Err(AppError::invalid(
                "projectId",
                "projectId must be a project id or null",
            ));
        }
        let new = NewApiKey {
            team_id: team_id.to_owned(),
            project_id: request.project_id,
            name: request.name,
            scopes: request.scopes,
            expires_at: request.expires_at,
            rate_limit: request.rate_limit,
        };
        let (record, raw) = self.store.create_key(&new, caller.actor())?;
        tracing::info!(team = %record.team_id, key = %record.id, actor = %caller.id(), "key created");
        Ok((record, raw))
    }

    /// The team's active keys, oldest first; uses still in memory are written first, so
    /// `last_used_at` includes the latest requests.
    pub fn list_keys(&self, caller: &Caller, team_id: &str) -> AppResult<Vec<KeyRecord>> {
        self.authorize(caller, team_id, Need::Member)?;
        self.usage.flush(&*self.store)?;
        Ok(self.store.list_keys(team_id)?)
    }

    /// One page of the team's keys, newest first, filtered by `query` (see
    /// [`billstack_keystore::KeyStore::list_keys_page`]); uses still in memory are written
    /// first, so `last_used_at` includes the latest requests.
    pub fn list_keys_page(
        &self,
        caller: &Caller,
        team_id: &str,
        query: &KeyQuery,
    ) -> AppResult<KeyPage> {
        self.authorize(caller, team_id, Need::Member)?;
        self.usage.flush(&*self.store)?;
        Ok(self.store.list_keys_page(team_id, query)?)
    }

    /// Who created each key, in order (`None` where it was not recorded); each account is
    /// read once however many of the keys it created.
    pub fn creators(&self, keys: &[KeyRecord]) -> AppResult<Vec<Option<CreatedByView>>> {
        let mut emails: HashMap<&str, Option<String>> = HashMap::new();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(actor) = key.created_by.as_deref() else {
                out.push(None);
                continue;
            };
            if actor.starts_with("user_") && !emails.contains_key(actor) {
                let email = self.store.get_user(actor)?.map(|u| u.email);
                emails.insert(actor, email);
            }
            out.push(Some(CreatedByView::of(actor, |id| {
                emails.get(id).cloned().flatten()
            })));
        }
        Ok(out)
    }

    /// The listing view of each key (with `lastUsedAt` and `createdBy`), as of now.
    pub fn key_views(&self, keys: &[KeyRecord]) -> AppResult<Vec<KeyView>> {
        let now = self.now_ms();
        Ok(keys
            .iter()
            .zip(self.creators(keys)?)
            .map(|(k, by)| KeyView::listed(k, now).by(by))
            .collect())
    }

    /// The create-response view of a new key (no `lastUsedAt`; with `createdBy`).
    pub fn new_key_view(&self, key: &KeyRecord) -> AppResult<KeyView> {
        let by = self.creators(std::slice::from_ref(key))?.pop().flatten();
        Ok(KeyView::created(key, self.now_ms()).by(by))
    }

    /// A key of the team that is still listed ([`KeyRecord::is_listed`]); `NotFound` for a
    /// revoked key, a long-expired one, or another team's.
    pub fn get_key(&self, caller: &Caller, team_id: &str, key_id: &str) -> AppResult<KeyRecord> {
        self.authorize(caller, team_id, Need::Member)?;
        self.usage.flush(&*self.store)?;
        self.store
            .get_key(team_id, key_id)?
            .filter(|k| k.is_listed(self.now_ms()))
            .ok_or_else(|| AppError::not_found("key", key_id))
    }

    /// Changes a key's name, scopes (checked against the team's policy, as at creation),
    /// expiry, budget or switch. Like revocation, the change holds on every front door from
    /// the moment this returns.
    pub fn update_key(
        &self,
        caller: &Caller,
        team_id: &str,
        key_id: &str,
        changes: KeyChanges,
    ) -> AppResult<KeyRecord> {
        self.authorize(caller, team_id, Need::Member)?;
        if let Some(scopes) = &changes.scopes {
            self.check_scopes(team_id, scopes)?;
        }
        let record = self
            .store
            .update_key(team_id, key_id, &changes, caller.actor())?;
        tracing::info!(team = %team_id, key = %key_id, fields = ?changes.fields(), actor = %caller.id(), "key updated");
        Ok(record)
    }

    /// Revokes a key: it stops working before this returns.
    pub fn revoke_key(&self, caller: &Caller, team_id: &str, key_id: &str) -> AppResult<KeyRecord> {
        self.authorize(caller, team_id, Need::Member)?;
        let record = self.store.revoke_key(team_id, key_id, caller.actor())?;
        tracing::info!(team = %record.team_id, key = %record.id, actor = %caller.id(), "key revoked");
        Ok(record)
    }

    /// Rotates a key: a copy with a new secret, and the old one ends after `grace_seconds`
    /// ([`DEFAULT_ROTATION_GRACE_SECONDS`] when `None`; 0 ends it at once).
    pub fn rotate_key(
        &self,
        caller: &Caller,
        team_id: &str,
        key_id: &str,
        grace_seconds: Option<i64>,
    ) -> AppResult<Rotated> {
        self.authorize(caller, team_id, Need::Member)?;
        let grace = match grace_seconds {
            None => DEFAULT_ROTATION_GRACE_SECONDS,
            Some(g) => u64::try_from(g).map_err(|_| {
                AppError::invalid(
                    "gracePeriodSeconds",
                    "gracePeriodSeconds must be 0 (end the old key now) or more",
                )
            })?,
        };
        // The successor gets the old key's scopes: like a new key, only scopes the team's
        // policy defines now (a key made before a policy change may hold others).
        if let Some(old) = self.store.get_key(team_id, key_id)? {
            self.check_scopes(team_id, &old.scopes)
                .map_err(|e| match e {
                    AppError::Invalid { message, .. } => AppError::invalid(
                        "scopes",
                        format!(
                            "the key cannot be rotated: {message}; change its scopes (PATCH) first"
                        ),
                    ),
                    other => other,
                })?;
        }
        let rotated = self
            .store
            .rotate_key(team_id, key_id, grace, caller.actor())?;
        tracing::info!(
            team = %rotated.new.team_id,
            old_key = %rotated.old.id,
            new_key = %rotated.new.id,
            grace_seconds = grace,
            actor = %caller.id(),
            "key rotated"
        );
        Ok(rotated)
    }

    /// A key's requests per day for `days` days (1 to [`RETENTION_DAYS`]) ending today, with
    /// counts still in memory written first. Revoked keys too: their history stays until it
    /// ages out.
    pub fn key_usage(
        &self,
        caller: &Caller,
        team_id: &str,
        key_id: &str,
        days: u32,
    ) -> AppResult<UsageReport> {
        self.authorize(caller, team_id, Need::Member)?;
        if !(1..=RETENTION_DAYS).contains(&days) {
            return Err(AppError::invalid(
                "days",
                format!("days must be a whole number from 1 to {RETENTION_DAYS}"),
            ));
        }
        let today = super::usage::day_of(self.now_ms());
        self.usage.flush(&*self.store)?;
        let Some(key) = self.store.get_key(team_id, key_id)? else {
            return Err(AppError::not_found("key", key_id));
        };
        Ok(UsageReport {
            last_used_at: key.last_used_at,
            days: self.store.key_usage(&key.id, today, days)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use billstack_keystore::{NewUser, Role};

    use super::*;
    use crate::app::testing::{app, options};

    fn request(scopes: &[&str]) -> KeyRequest {
        KeyRequest {
            name: "k".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            ..KeyRequest::default()
        }
    }

    fn field(e: AppError) -> &'static str {
        match e {
            AppError::Invalid { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scopes_must_be_in_the_teams_catalogue_and_nothing_is_created_otherwise() {
        let t = app(options());
        let op = Caller::Operator;
        t.app
            .create_key(&op, "team_a", request(&["customers:read"]))
            .expect("a defined scope");
        let e = t
            .app
            .create_key(&op, "team_a", request(&["customers:read", "nope:never"]))
            .expect_err("an undefined scope");
        assert_eq!(field(e), "scopes");
        let e = t
            .app
            .create_key(
                &op,
                "team_a",
                KeyRequest {
                    project_id: Some(String::new()),
                    ..request(&[])
                },
            )
            .expect_err("an empty project id");
        assert_eq!(field(e), "projectId");
        let e = t
            .app
            .create_key(
                &op,
                "team_a",
                KeyRequest {
                    expires_at: Some(t.app.now_ms()),
                    ..request(&[])
                },
            )
            .expect_err("an expiry that is not in the future");
        assert_eq!(
            field(e),
            "expiresAt",
            "the store's field, in the API's name"
        );
        assert_eq!(t.app.list_keys(&op, "team_a").expect("list").len(), 1);
        assert!(matches!(
            t.app.create_key(&op, "team_nope", request(&[])),
            Err(AppError::NotFound { kind: "team", .. })
        ));
    }

    #[test]
    fn only_members_of_the_team_manage_its_keys() {
        let t = app(options());
        let store = t.app.store();
        let bob = store
            .create_user(
                &NewUser {
                    email: "bob@b.test".into(),
                    password: "bob-password-12".into(),
                    team_id: "team_b".into(),
                    role: Role::Member,
                },
                "test".into(),
            )
            .expect("bob");
        let bob = Caller::Account {
            user_id: bob.id,
            source: "192.0.2.1".into(),
        };
        let (key, _) = t
            .app
            .create_key(&Caller::Operator, "team_a", request(&[]))
            .expect("key");
        for refused in [
            t.app.create_key(&bob, "team_a", request(&[])).map(drop),
            t.app.list_keys(&bob, "team_a").map(drop),
            t.app.revoke_key(&bob, "team_a", &key.id).map(drop),
            t.app.rotate_key(&bob, "team_a", &key.id, None).map(drop),
            t.app.key_usage(&bob, "team_a", &key.id, 1).map(drop),
        ] {
            assert!(
                matches!(refused, Err(AppError::NotFound { kind: "team", .. })),
                "{refused:?}"
            );
        }
        assert!(
            store
                .get_key("team_a", &key.id)
                .expect("get")
                .is_some_and(|k| k.revoked_at.is_none()),
            "nothing changed"
        );
    }

    #[test]
    fn usage_days_and_grace_periods_are_checked_both_ways() {
        let t = app(options());
        let op = Caller::Operator;
        let (key, _) = t.app.create_key(&op, "team_a", request(&[])).expect("key");
        for days in [1, RETENTION_DAYS] {
            let report = t
                .app
                .key_usage(&op, "team_a", &key.id, days)
                .expect("within");
            assert_eq!(report.days.len(), days as usize);
        }
        for days in [0, RETENTION_DAYS + 1] {
            let e = t
                .app
                .key_usage(&op, "team_a", &key.id, days)
                .expect_err("over");
            assert_eq!(field(e), "days");
        }
        let e = t
            .app
            .rotate_key(&op, "team_a", &key.id, Some(-1))
            .expect_err("negative");
        assert_eq!(field(e), "gracePeriodSeconds");
        let rotated = t
            .app
            .rotate_key(&op, "team_a", &key.id, None)
            .expect("the default grace");
        assert_eq!(
            rotated.old.expires_at,
            Some(t.app.now_ms() + DEFAULT_ROTATION_GRACE_SECONDS as i64 * 1000)
        );
    }
}
