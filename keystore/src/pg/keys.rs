//! API keys, their usage counts and team policies on PostgreSQL, with the sled store's
//! validation, errors and guarantees: every change is one transaction with its audit event and
//! change-feed row, and a change that can alter a decision (revoke, update, rotate) removes
//! the key from the in-memory cache after it commits and before it returns.

use std::sync::Arc;

use deadpool_postgres::GenericClient;
use sha2::{Digest, Sha256};
use tokio_postgres::Row;

use super::{Change, Event, PgStore, append_change, db_error, write_event};
use crate::audit::Actor;
use crate::storage::*;
use crate::store::keys::{cannot_rotate, successor};
use crate::store::{
    DailyUsage, KeyChanges, KeyCursor, KeyPage, KeyQuery, KeyUsage, MAX_KEYS_EXAMINED,
    MAX_ROTATION_GRACE_SECONDS, NewApiKey, Rotated,
};
use crate::{Error, KeyRecord, RateLimit, Result, TeamPolicy, apikey, ids, invalid};

/// The columns [`key`] reads, in its order.
macro_rules! key_columns {
    () => {
        "id, team_id, project_id, name, prefix, scopes, expires_at, created_at, revoked_at, \
         last_used_at, hash, rotated_to, rate_limit, rate_window_seconds, disabled, created_by"
    };
}

pub(crate) const KEY: &str = concat!("SELECT ", key_columns!(), " FROM api_keys");

/// A cache miss: the active key with this hash, if any, and the change feed's position in the
/// same snapshot (one statement, one round trip). Always one row: the key's columns are null
/// when there is no such key, and the position (column 16) is always there.
const KEY_AND_FEED_POSITION: &str = concat!(
    "SELECT ",
    key_columns!(),
    ", head.seq FROM change_feed_head head \
     LEFT JOIN api_keys ON hash = $1 AND revoked_at IS NULL"
);

/// A budget from its two columns (both or neither).
fn rate_limit_of(limit: Option<i32>, window: Option<i32>) -> Result<Option<RateLimit>> {
    match (limit, window) {
        (Some(limit), Some(window)) => Ok(Some(RateLimit {
            limit: u32::try_from(limit).map_err(|_| corrupt("rate_limit"))?,
            window_seconds: u32::try_from(window).map_err(|_| corrupt("rate_window_seconds"))?,
        })),
        _ => Ok(None),
    }
}

/// A budget as its two columns.
fn rate_columns(k: &KeyRecord) -> (Option<i32>, Option<i32>) {
    (
        k.rate_limit
            .map(|r| i32::try_from(r.limit).unwrap_or(i32::MAX)),
        k.rate_limit
            .map(|r| i32::try_from(r.window_seconds).unwrap_or(i32::MAX)),
    )
}

/// A key record from a row of [`KEY`]'s columns (in that order).
pub(crate) fn key(row: &Row) -> Result<KeyRecord> {
    let rate_limit = rate_limit_of(row.get(12), row.get(13))?;
    Ok(KeyRecord {
        id: row.get(0),
        team_id: row.get(1),
        project_id: row.get(2),
        name: row.get(3),
        prefix: row.get(4),
        scopes: row.get(5),
        expires_at: row.get(6),
        created_at: row.get(7),
        revoked_at: row.get(8),
        last_used_at: row.get(9),
        hash: hex::encode(row.get::<_, Vec<u8>>(10)),
        rotated_to: row.get(11),
        rate_limit,
        disabled: row.get(14),
        created_by: row.get(15),
    })
}

fn corrupt(what: &str) -> Error {
    Error::Corruption {
        what: format!("api key column {what} out of range"),
    }
}

fn not_found(key_id: &str) -> Error {
    Error::NotFound {
        kind: "key",
        id: key_id.to_owned(),
    }
}

fn hash_bytes(record: &KeyRecord) -> Result<Vec<u8>> {
    hex::decode(&record.hash)
        .ok()
        .filter(|h| h.len() == 32)
        .ok_or_else(|| Error::Corruption {
            what: format!("key {}: bad hash", record.id),
        })
}

pub(crate) async fn insert_key(client: &impl GenericClient, k: &KeyRecord) -> Result<()> {
    let hash = hash_bytes(k)?;
    let (limit, window) = rate_columns(k);
    client
        .execute(
            "INSERT INTO api_keys (id, team_id, project_id, name, prefix, scopes, expires_at, \
             created_at, revoked_at, last_used_at, hash, rotated_to, rate_limit, \
             rate_window_seconds, disabled, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            &[
                &k.id,
                &k.team_id,
                &k.project_id,
                &k.name,
                &k.prefix,
                &k.scopes,
                &k.expires_at,
                &k.created_at,
                &k.revoked_at,
                &k.last_used_at,
                &hash,
                &k.rotated_to,
                &limit,
                &window,
                &k.disabled,
                &k.created_by,
            ],
        )
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Writes every mutable column of `k` back.
async fn update_key_row(client: &impl GenericClient, k: &KeyRecord) -> Result<()> {
    let (limit, window) = rate_columns(k);
    client
        .execute(
            "UPDATE api_keys SET name = $2, scopes = $3, expires_at = $4, revoked_at = $5, \
             rotated_to = $6, rate_limit = $7, rate_window_seconds = $8, disabled = $9 \
             WHERE id = $1",
            &[
                &k.id,
                &k.name,
                &k.scopes,
                &k.expires_at,
                &k.revoked_at,
                &k.rotated_to,
                &limit,
                &window,
                &k.disabled,
            ],
        )
        .await
        .map_err(db_error)?;
    Ok(())
}

/// The team's unrevoked key `key_id`, locked for the transaction; `NotFound` otherwise.
async fn active_key_for_update(
    client: &impl GenericClient,
    team_id: &str,
    key_id: &str,
) -> Result<KeyRecord> {
    let row = client
        .query_opt(
            &format!("{KEY} WHERE id = $1 AND team_id = $2 AND revoked_at IS NULL FOR UPDATE"),
            &[&key_id, &team_id],
        )
        .await
        .map_err(db_error)?
        .ok_or_else(|| not_found(key_id))?;
    key(&row)
}

impl PgStore {
    fn forget_cached(&self, record: &KeyRecord) {
        if let Ok(hash) = hash_bytes(record)
            && let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice())
        {
            self.key_cache.invalidate(&hash);
        }
    }

    /// Fills the cache with the active keys used most recently (at most `most`, used within
    /// the last day), so a replica that starts in front of traffic answers its callers' keys
    /// from memory at once. Returns how many were loaded.
    pub(crate) fn preload_recent(&self, most: usize) -> Result<usize> {
        let generation = self.key_cache.get(&[0; 32]).generation;
        let since = self.now().saturating_sub(24 * 3600 * 1000);
        let most = i64::try_from(most).unwrap_or(i64::MAX);
        let rows = self.with_client(move |client| async move {
            client
                .query(
                    &format!(
                        "{KEY} WHERE revoked_at IS NULL AND last_used_at > $1 \
                         ORDER BY last_used_at DESC LIMIT $2"
                    ),
                    &[&since, &most],
                )
                .await
                .map_err(db_error)
        })?;
        let now = self.now();
        let mut loaded = 0;
        for row in &rows {
            let record = key(row)?;
            if record.expires_at.is_some_and(|at| at <= now) {
                continue;
            }
            let Ok(hash) = hash_bytes(&record) else {
                continue;
            };
            let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) else {
                continue;
            };
            self.key_cache.fill(hash, &Arc::new(record), generation);
            loaded += 1;
        }
        Ok(loaded)
    }

    /// Reads a key that is not cached, and records the feed position its snapshot had seen.
    fn uncached_key(&self, hash: [u8; 32]) -> Result<Option<KeyRecord>> {
        let (found, position) = self.with_client(move |client| async move {
            let row = client
                .query_one(KEY_AND_FEED_POSITION, &[&&hash[..]])
                .await
                .map_err(db_error)?;
            let position: i64 = row.get(16);
            let found = match row.get::<_, Option<String>>(0) {
                Some(_) => Some(key(&row)?),
                None => None,
            };
            Ok((found, position))
        })?;
        self.feed_position_read
            .fetch_max(position, std::sync::atomic::Ordering::Relaxed);
        Ok(found)
    }
}

impl KeyStore for PgStore {
    fn create_key(&self, new: &NewApiKey, actor: Actor<'_>) -> Result<(KeyRecord, String)> {
        let now = self.now();
        let (record, generated) = new.record(now, actor)?;
        let event = Event::new(Some(&new.team_id), actor, "key.created", &record.id)
            .with(serde_json::json!({ "name": record.name, "prefix": record.prefix }));
        let stored = record.clone();
        self.with_client(move |mut client| async move {
            let tx = client.transaction().await.map_err(db_error)?;
            // Shared with other creations, exclusive of a project's deletion.
            tx.query_opt(
                "SELECT 1 FROM teams WHERE id = $1 FOR SHARE",
                &[&stored.team_id],
            )
            .await
            .map_err(db_error)?
            .ok_or_else(|| Error::NotFound {
                kind: "team",
                id: stored.team_id.clone(),
            })?;
            if let Some(project) = &stored.project_id {
                let exists = tx
                    .query_opt(
                        "SELECT 1 FROM projects WHERE team_id = $1 AND id = $2",
                        &[&stored.team_id, project],
                    )
                    .await
                    .map_err(db_error)?
                    .is_some();
                if !exists {
                    return Err(invalid(
                        "project_id",
                        format!("project {project} is not in team {}", stored.team_id),
                    ));
                }
            }
            insert_key(&tx, &stored).await?;
            write_event(&tx, now, &event).await?;
            append_change(&tx, now, Change::Key, &stored.team_id, &stored.id).await?;
            tx.commit().await.map_err(db_error)
        })?;
        Ok((record, generated.raw))
    }

    fn lookup_key_hash(&self, hash: &[u8; 32]) -> Result<Option<Arc<KeyRecord>>> {
        if self.follower.is_none() {
            // A command that does not follow the feed keeps no cache: every read is fresh.
            return Ok(self.uncached_key(*hash)?.map(Arc::new));
        }
        self.check_lease()?;
        let cached = self.key_cache.get_and_keep(hash);
        if cached.record.is_some() {
            return Ok(cached.record);
        }
        let found = self.uncached_key(*hash)?.map(Arc::new);
        if let Some(record) = &found {
            self.key_cache.fill(*hash, record, cached.generation);
        }
        Ok(found)
    }

    fn cached_key(&self, raw: &str) -> Option<Arc<KeyRecord>> {
        if self.follower.is_none() || !self.lease_valid() {
            return None;
        }
        self.key_cache.get_and_keep(&apikey::hash(raw)).record
    }

    fn lookup_key(&self, raw: &str) -> Result<Option<Arc<KeyRecord>>> {
        self.lookup_key_hash(&apikey::hash(raw))
    }

    fn get_key(&self, team_id: &str, key_id: &str) -> Result<Option<KeyRecord>> {
        let (team_id, key_id) = (team_id.to_owned(), key_id.to_owned());
        self.with_client(move |client| async move {
            client
                .query_opt(
                    &format!("{KEY} WHERE id = $1 AND team_id = $2"),
                    &[&key_id, &team_id],
                )
                .await
                .map_err(db_error)?
                .as_ref()
                .map(key)
                .transpose()
        })
    }

    fn list_keys(&self, team_id: &str) -> Result<Vec<KeyRecord>> {
        let team_id = team_id.to_owned();
        self.with_client(move |client| async move {
            client
                .query(
                    &format!(
                        "{KEY} WHERE team_id = $1 AND revoked_at IS NULL ORDER BY created_at, id"
                    ),
                    &[&team_id],
                )
                .await
                .map_err(db_error)?
                .iter()
                .map(key)
                .collect()
        })
    }

    fn list_keys_page(&self, team_id: &str, query: &KeyQuery) -> Result<KeyPage> {
        query.validate()?;
        let now = self.now();
        let q_lower = query.q.as_deref().map(str::to_lowercase);
        // Read in batches, newest first, exactly as sled walks its by-age index: a page ends
        // when it is full and another key follows, or after MAX_KEYS_EXAMINED keys.
        let batch = i64::try_from((query.limit + 1).min(MAX_KEYS_EXAMINED + 1)).unwrap_or(501);
        let mut after = query.cursor.clone();
        let mut keys = Vec::new();
        let mut last: Option<KeyCursor> = None;
        let mut examined = 0usize;
        loop {
            let team = team_id.to_owned();
            let position = after.clone();
            let rows: Vec<KeyRecord> = self.with_client(move |client| async move {
                let rows = match position {
                    None => {
                        client
                            .query(
                                &format!(
                                    "{KEY} WHERE team_id = $1 AND revoked_at IS NULL \
                                     ORDER BY created_at DESC, id DESC LIMIT $2"
                                ),
                                &[&team, &batch],
                            )
                            .await
                    }
                    Some(c) => {
                        client
                            .query(
                                &format!(
                                    "{KEY} WHERE team_id = $1 AND revoked_at IS NULL \
                                     AND (created_at, id) < ($2, $3) \
                                     ORDER BY created_at DESC, id DESC LIMIT $4"
                                ),
                                &[&team, &c.created_at, &c.key_id, &batch],
                            )
                            .await
                    }
                }
                .map_err(db_error)?;
                rows.iter().map(key).collect()
            })?;
            let full_batch = i64::try_from(rows.len()).unwrap_or(0) == batch;
            for record in rows {
                if keys.len() == query.limit || examined == MAX_KEYS_EXAMINED {
                    return Ok(KeyPage {
                        keys,
                        next_cursor: last,
                    });
                }
                examined += 1;
                let position = KeyCursor {
                    created_at: record.created_at.max(0),
                    key_id: record.id.clone(),
                };
                last = Some(position.clone());
                after = Some(position);
                if query.matches(&record, now, q_lower.as_deref()) {
                    keys.push(record);
                }
            }
            if !full_batch {
                return Ok(KeyPage {
                    keys,
                    next_cursor: None,
                });
            }
        }
    }

    fn revoke_key(&self, team_id: &str, key_id: &str, actor: Actor<'_>) -> Result<KeyRecord> {
        let (team_id, key_id) = (team_id.to_owned(), key_id.to_owned());
        let actor = Event::new(Some(&team_id), actor, "key.revoked", &key_id);
        let now = self.now();
        let (record, seq) = self.with_client(move |mut client| async move {
            let tx = client.transaction().await.map_err(db_error)?;
            let mut record = active_key_for_update(&tx, &team_id, &key_id).await?;
            record.revoked_at = Some(now);
            update_key_row(&tx, &record).await?;
            write_event(
                &tx,
                now,
                &actor.with(serde_json::json!({ "name": record.name })),
            )
            .await?;
            let seq = append_change(&tx, now, Change::Key, &team_id, &key_id).await?;
            tx.commit().await.map_err(db_error)?;
            Ok((record, seq))
        })?;
        // Only after the commit: a lookup racing with us either saw the key before the
        // revocation (and answered before DELETE returned) or finds it gone. Then every other
        // replica confirms, or stops allowing by itself.
        self.forget_cached(&record);
        self.confirm(seq);
        Ok(record)
    }

    fn update_key(
        &self,
        team_id: &str,
        key_id: &str,
        changes: &KeyChanges,
        actor: Actor<'_>,
    ) -> Result<KeyRecord> {
        let now = self.now();
        // Checked here, so a refusal costs no round trip; applied below by the same code.
        changes.checked(now)?;
        let event =
            Event::new(Some(team_id), actor, "key.updated", key_id).with(changes.audit_details());
        let (team_id, key_id, changes) = (team_id.to_owned(), key_id.to_owned(), changes.clone());
        let (record, seq) = self.with_client(move |mut client| async move {
            let tx = client.transaction().await.map_err(db_error)?;
            let mut record = active_key_for_update(&tx, &team_id, &key_id).await?;
            changes.checked(now)?.apply(&mut record)?;
            update_key_row(&tx, &record).await?;
            write_event(&tx, now, &event).await?;
            let seq = append_change(&tx, now, Change::Key, &team_id, &key_id).await?;
            tx.commit().await.map_err(db_error)?;
            Ok((record, seq))
        })?;
        self.forget_cached(&record);
        self.confirm(seq);
        Ok(record)
    }

    fn rotate_key(
        &self,
        team_id: &str,
        key_id: &str,
        grace_seconds: u64,
        actor: Actor<'_>,
    ) -> Result<Rotated> {
        if grace_seconds > MAX_ROTATION_GRACE_SECONDS {
            return Err(invalid(
                "grace_seconds",
                format!("must be at most {MAX_ROTATION_GRACE_SECONDS} (30 days)"),
            ));
        }
        let now = self.now();
        let generated = apikey::generate();
        let new_id = ids::new_id("key");
        let rotated_event = Event::new(Some(team_id), actor, "key.rotated", key_id)
            .with(serde_json::json!({ "newKeyId": new_id, "gracePeriodSeconds": grace_seconds }));
        let created_event = Event::new(Some(team_id), actor, "key.created", &new_id)
            .with(serde_json::json!({ "prefix": generated.prefix, "rotatedFrom": key_id }));
        let grace_ms = i64::try_from(grace_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
        let ends_at = now.saturating_add(grace_ms);
        let (team_id, key_id) = (team_id.to_owned(), key_id.to_owned());
        let raw_key = generated.raw.clone();
        let created_by = actor.id.to_owned();
        let (old, new, seq) = self.with_client(move |mut client| async move {
            let tx = client.transaction().await.map_err(db_error)?;
            let mut old = active_key_for_update(&tx, &team_id, &key_id).await?;
            if let Some(refusal) = cannot_rotate(&old, now) {
                return Err(refusal);
            }
            let new = successor(
                &old,
                &new_id,
                &generated,
                now,
                Actor::from(created_by.as_str()),
            );
            if grace_seconds == 0 {
                old.revoked_at = Some(now);
            } else {
                old.expires_at = Some(old.expires_at.map_or(ends_at, |at| at.min(ends_at)));
            }
            old.rotated_to = Some(new_id.clone());
            update_key_row(&tx, &old).await?;
            insert_key(&tx, &new).await?;
            write_event(&tx, now, &rotated_event).await?;
            write_event(&tx, now, &created_event).await?;
            let seq = append_change(&tx, now, Change::Key, &team_id, &key_id).await?;
            append_change(&tx, now, Change::Key, &team_id, &new_id).await?;
            tx.commit().await.map_err(db_error)?;
            Ok((old, new, seq))
        })?;
        // The cached copy of the old key still has its old expiry (or is revoked now).
        self.forget_cached(&old);
        self.confirm(seq);
        Ok(Rotated { new, raw_key, old })
    }
}

impl UsageStore for PgStore {
    fn record_key_usage(&self, uses: &[KeyUsage]) -> Result<()> {
        let uses = uses.to_vec();
        self.with_client(move |mut client| async move {
            let tx = client.transaction().await.map_err(db_error)?;
            for usage in &uses {
                if let Some(at) = usage.last_used_at {
                    tx.execute(
                        "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 \
                         AND revoked_at IS NULL AND (last_used_at IS NULL OR last_used_at < $2)",
                        &[&usage.key_id, &at],
                    )
                    .await
                    .map_err(db_error)?;
                }
                let exists = tx
                    .query_opt("SELECT 1 FROM api_keys WHERE id = $1", &[&usage.key_id])
                    .await
                    .map_err(db_error)?
                    .is_some();
                if !exists {
                    continue;
                }
                for (day, counts) in &usage.days {
                    let before = tx
                        .query_opt(
                            "SELECT allowed, denied, refused FROM key_usage \
                             WHERE key_id = $1 AND day = $2 FOR UPDATE",
                            &[&usage.key_id, day],
                        )
                        .await
                        .map_err(db_error)?
                        .map(|row| daily(&row))
                        .transpose()?
                        .unwrap_or_default();
                    let after = before.plus(counts);
                    tx.execute(
                        "INSERT INTO key_usage (key_id, day, allowed, denied, refused) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key_id, day) DO UPDATE \
                         SET allowed = EXCLUDED.allowed, denied = EXCLUDED.denied, \
                         refused = EXCLUDED.refused",
                        &[
                            &usage.key_id,
                            day,
                            &i64::try_from(after.allowed).unwrap_or(i64::MAX),
                            &i64::try_from(after.denied).unwrap_or(i64::MAX),
                            &serde_json::to_value(&after.refused).unwrap_or_default(),
                        ],
                    )
                    .await
                    .map_err(db_error)?;
                }
            }
            tx.commit().await.map_err(db_error)
        })
    }

    fn prune_key_usage(&self, first_kept_day: i64) -> Result<usize> {
        self.with_client(move |client| async move {
            let n = client
                .execute("DELETE FROM key_usage WHERE day < $1", &[&first_kept_day])
                .await
                .map_err(db_error)?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    fn key_usage(&self, key_id: &str, last_day: i64, days: u32) -> Result<Vec<(i64, DailyUsage)>> {
        let first_day = last_day - i64::from(days) + 1;
        let key_id = key_id.to_owned();
        let mut stored: std::collections::HashMap<i64, DailyUsage> =
            self.with_client(move |client| async move {
                client
                    .query(
                        "SELECT day, allowed, denied, refused FROM key_usage \
                         WHERE key_id = $1 AND day BETWEEN $2 AND $3",
                        &[&key_id, &first_day, &last_day],
                    )
                    .await
                    .map_err(db_error)?
                    .iter()
                    .map(|row| {
                        let day: i64 = row.get(0);
                        Ok((
                            day,
                            DailyUsage {
                                allowed: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
                                denied: u64::try_from(row.get::<_, i64>(2)).unwrap_or(0),
                                refused: serde_json::from_value(row.get(3)).map_err(|e| {
                                    Error::Corruption {
                                        what: format!("daily usage: {e}"),
                                    }
                                })?,
                            },
                        ))
                    })
                    .collect::<Result<_>>()
            })?;
        Ok((first_day..=last_day)
            .map(|day| (day, stored.remove(&day).unwrap_or_default()))
            .collect())
    }
}

fn daily(row: &Row) -> Result<DailyUsage> {
    Ok(DailyUsage {
        allowed: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
        denied: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
        refused: serde_json::from_value(row.get(2)).map_err(|e| Error::Corruption {
            what: format!("daily usage: {e}"),
        })?,
    })
}

fn team_policy(row: &Row) -> TeamPolicy {
    TeamPolicy {
        team_id: row.get(0),
        sha256: row.get(1),
        size: u64::try_from(row.get::<_, i64>(2)).unwrap_or(0),
        uploaded_at: row.get(3),
        uploaded_by: row.get(4),
    }
}

/// Deletes the blobs no team policy names, in the transaction of the change that freed them.
async fn collect_blobs(client: &impl GenericClient) -> Result<()> {
    client
        .execute(
            "DELETE FROM policy_blobs b WHERE NOT EXISTS \
             (SELECT 1 FROM team_policies p WHERE p.sha256 = b.sha256)",
            &[],
        )
        .await
        .map_err(db_error)?;
    Ok(())
}

impl PolicyStore for PgStore {
    fn put_team_policy(&self, team_id: &str, bytes: &[u8], actor: Actor<'_>) -> Result<TeamPolicy> {
        let sha = hex::encode(Sha256::digest(bytes));
        let meta = TeamPolicy {
            team_id: team_id.to_owned(),
            sha256: sha.clone(),
            size: bytes.len() as u64,
            uploaded_at: self.now(),
            uploaded_by: actor.id.to_owned(),
        };
        let event = Event::new(Some(team_id), actor, "policy.uploaded", &sha);
        let (stored, bytes, at) = (meta.clone(), bytes.to_vec(), self.now());
        self.with_client(move |mut client| async move {
            let tx = client.transaction().await.map_err(db_error)?;
            tx.query_opt(
                "SELECT 1 FROM teams WHERE id = $1 FOR SHARE",
                &[&stored.team_id],
            )
            .await
            .map_err(db_error)?
            .ok_or_else(|| Error::NotFound {
                kind: "team",
                id: stored.team_id.clone(),
            })?;
            tx.execute(
                "INSERT INTO policy_blobs (sha256, bytes) VALUES ($1, $2) \
                 ON CONFLICT (sha256) DO NOTHING",
                &[&stored.sha256, &bytes],
            )
            .await
            .map_err(db_error)?;
            tx.execute(
                "INSERT INTO team_policies (team_id, sha256, size, uploaded_at, uploaded_by) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (team_id) DO UPDATE SET \
                 sha256 = EXCLUDED.sha256, size = EXCLUDED.size, \
                 uploaded_at = EXCLUDED.uploaded_at, uploaded_by = EXCLUDED.uploaded_by",
                &[
                    &stored.team_id,
                    &stored.sha256,
                    &i64::try_from(stored.size).unwrap_or(i64::MAX),
                    &stored.uploaded_at,
                    &stored.uploaded_by,
                ],
            )
            .await
            .map_err(db_error)?;
            collect_blobs(&tx).await?;
            write_event(&tx, at, &event).await?;
            append_change(&tx, at, Change::Policy, &stored.team_id, &stored.team_id).await?;
            tx.commit().await.map_err(db_error)
        })?;
        Ok(meta)
    }

    fn get_team_policy(&self, team_id: &str) -> Result<Option<(TeamPolicy, Vec<u8>)>> {
        let team_id = team_id.to_owned();
        self.with_client(move |client| async move {
            Ok(client
                .query_opt(
                    "SELECT p.team_id, p.sha256, p.size, p.uploaded_at, p.uploaded_by, b.bytes \
                     FROM team_policies p JOIN policy_blobs b ON b.sha256 = p.sha256 \
                     WHERE p.team_id = $1",
                    &[&team_id],
                )
                .await
                .map_err(db_error)?
                .map(|row| (team_policy(&row), row.get(5))))
        })
    }

    fn list_team_policies(&self) -> Result<Vec<TeamPolicy>> {
        self.with_client(move |client| async move {
            Ok(client
                .query(
                    "SELECT team_id, sha256, size, uploaded_at, uploaded_by FROM team_policies \
                     ORDER BY team_id",
                    &[],
                )
                .await
                .map_err(db_error)?
                .iter()
                .map(team_policy)
                .collect())
        })
    }

    fn stored_policy_blobs(&self) -> Result<Vec<String>> {
        self.with_client(move |client| async move {
            Ok(client
                .query("SELECT sha256 FROM policy_blobs ORDER BY sha256", &[])
                .await
                .map_err(db_error)?
                .iter()
                .map(|row| row.get(0))
                .collect())
        })
    }

    fn delete_team_policy(&self, team_id: &str, actor: Actor<'_>) -> Result<bool> {
        let event = Event::new(Some(team_id), actor, "policy.reset", team_id);
        let (team_id, at) = (team_id.to_owned(), self.now());
        self.with_client(move |mut client| async move {
            let tx = client.transaction().await.map_err(db_error)?;
            let removed = tx
                .execute("DELETE FROM team_policies WHERE team_id = $1", &[&team_id])
                .await
                .map_err(db_error)?
                > 0;
            if removed {
                collect_blobs(&tx).await?;
                write_event(&tx, at, &event).await?;
                append_change(&tx, at, Change::Policy, &team_id, &team_id).await?;
            }
            tx.commit().await.map_err(db_error)?;
            Ok(removed)
        })
    }
}
