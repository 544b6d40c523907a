//! API keys: create (scopes checked against the team's active policy), list, revoke, rotate,
//! and per-day usage.

use billstack_keystore::{DailyUsage, KeyRecord, NewApiKey, RateLimit, Rotated};

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
