//! The store-wide operations on PostgreSQL: the clock, emptiness, flush, and backups in the
//! one backup format both backends share — each table written as the sled tree that holds the
//! same records, encoded as sled encodes them, so a backup of either backend restores into
//! either.

use std::collections::BTreeMap;

use super::{PgStore, db_error};
use crate::backup::{BackupSummary, BackupWriter};
use crate::clock::SharedClock;
use crate::records::{StoredMembership, encode};
use crate::storage::Storage;
use crate::store::invitations::Invitation;
use crate::store::keys::age_key;
use crate::store::usage::usage_key;
use crate::store::{
    AUDIT_KEYS_MIGRATED, DailyUsage, KEYS_BY_AGE_INDEXED, LEGACY_POLICY_BLOBS, join,
};
use crate::{
    AuditEvent, Error, KeyRecord, Project, RateLimit, Result, Role, Session, Team, TeamPolicy, User,
};

/// sled's default tree, where its markers live.
const DEFAULT_TREE: &[u8] = b"__sled__default";

type Trees = BTreeMap<Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>>;

fn role(text: &str) -> Result<Role> {
    text.parse()
        .map_err(|e: String| Error::Corruption { what: e })
}

/// Every record, as the trees sled keeps them in, read in one consistent snapshot.
async fn snapshot(client: &mut deadpool_postgres::Object) -> Result<Trees> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(db_error)?;
    let mut trees = Trees::new();
    let mut put = |tree: &str, k: Vec<u8>, v: Vec<u8>| {
        trees
            .entry(tree.as_bytes().to_vec())
            .or_default()
            .push((k, v));
    };
    let q = |sql: &'static str| {
        let tx = &tx;
        async move { tx.query(sql, &[]).await.map_err(db_error) }
    };
    for row in q("SELECT id, name, created_at FROM teams").await? {
        let t = Team {
            id: row.get(0),
            name: row.get(1),
            created_at: row.get(2),
        };
        put("teams", t.id.as_bytes().to_vec(), encode(&t));
    }
    for row in q("SELECT team_id, id, name, created_at FROM projects").await? {
        let p = Project {
            team_id: row.get(0),
            id: row.get(1),
            name: row.get(2),
            created_at: row.get(3),
        };
        put("projects", join(&p.team_id, &p.id), encode(&p));
    }
    for row in q("SELECT id, email, password_hash, created_at, admin FROM users").await? {
        let u = User {
            id: row.get(0),
            email: row.get(1),
            password_hash: row.get(2),
            created_at: row.get(3),
            admin: row.get(4),
        };
        put(
            "user_email",
            u.email.as_bytes().to_vec(),
            u.id.as_bytes().to_vec(),
        );
        put("users", u.id.as_bytes().to_vec(), encode(&u));
    }
    for row in q("SELECT team_id, user_id, role, added_at FROM memberships").await? {
        let (team, user): (String, String) = (row.get(0), row.get(1));
        let value = encode(&StoredMembership::Full {
            role: role(row.get(2))?,
            added_at: row.get(3),
        });
        put("members", join(&team, &user), value.clone());
        put("user_teams", join(&user, &team), value);
    }
    for row in q("SELECT token_hash, user_id, created_at, last_seen_at FROM sessions").await? {
        let s = Session {
            user_id: row.get(1),
            created_at: row.get(2),
            last_seen_at: row.get(3),
        };
        put("sessions", row.get(0), encode(&s));
    }
    for row in q("SELECT token_hash, user_id, expires_at FROM invitations").await? {
        let i = Invitation {
            user_id: row.get(1),
            expires_at: row.get(2),
        };
        put("invitations", row.get(0), encode(&i));
    }
    for row in q(
        "SELECT id, team_id, project_id, name, prefix, scopes, expires_at, created_at, revoked_at, \
         last_used_at, hash, rotated_to, rate_limit, rate_window_seconds, disabled, created_by \
         FROM api_keys",
    )
    .await?
    {
        let limit: Option<i32> = row.get(12);
        let window: Option<i32> = row.get(13);
        let hash: Vec<u8> = row.get(10);
        let k = KeyRecord {
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
            hash: hex::encode(&hash),
            rotated_to: row.get(11),
            rate_limit: limit.zip(window).map(|(limit, window)| RateLimit {
                limit: u32::try_from(limit).unwrap_or(0),
                window_seconds: u32::try_from(window).unwrap_or(0),
            }),
            disabled: row.get(14),
            created_by: row.get(15),
        };
        // sled indexes only the keys that still work.
        if k.revoked_at.is_none() {
            put("key_hash", hash, k.id.as_bytes().to_vec());
            put("team_keys", join(&k.team_id, &k.id), Vec::new());
            put("team_keys_by_age", age_key(&k), Vec::new());
        }
        put("keys", k.id.as_bytes().to_vec(), encode(&k));
    }
    for row in q("SELECT key_id, day, allowed, denied, refused FROM key_usage").await? {
        let (key_id, day): (String, i64) = (row.get(0), row.get(1));
        let usage = DailyUsage {
            allowed: u64::try_from(row.get::<_, i64>(2)).unwrap_or(0),
            denied: u64::try_from(row.get::<_, i64>(3)).unwrap_or(0),
            refused: serde_json::from_value(row.get(4)).map_err(|e| Error::Corruption {
                what: format!("daily usage: {e}"),
            })?,
        };
        put("key_usage", usage_key(&key_id, day), encode(&usage));
    }
    for row in
        q("SELECT team_id, sha256, size, uploaded_at, uploaded_by FROM team_policies").await?
    {
        let p = TeamPolicy {
            team_id: row.get(0),
            sha256: row.get(1),
            size: u64::try_from(row.get::<_, i64>(2)).unwrap_or(0),
            uploaded_at: row.get(3),
            uploaded_by: row.get(4),
        };
        put("team_policy", p.team_id.as_bytes().to_vec(), encode(&p));
    }
    for row in q("SELECT sha256, bytes FROM policy_blobs").await? {
        let sha: String = row.get(0);
        put(LEGACY_POLICY_BLOBS, sha.into_bytes(), row.get(1));
    }
    for row in
        q("SELECT seq, at, team_id, actor, action, target, source, details FROM audit_log").await?
    {
        let e = AuditEvent {
            seq: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
            at: row.get(1),
            team_id: row.get(2),
            actor: row.get(3),
            action: row.get(4),
            target: row.get(5),
            source: row.get(6),
            details: row.get(7),
        };
        put(
            "audit",
            crate::audit::event_key(e.team_id.as_deref(), e.seq),
            encode(&e),
        );
    }
    // The marks a sled store of this version carries, so a restore into sled opens without
    // redoing migrations it does not need.
    put(
        std::str::from_utf8(DEFAULT_TREE).unwrap_or("__sled__default"),
        AUDIT_KEYS_MIGRATED.to_vec(),
        vec![1],
    );
    put(
        std::str::from_utf8(DEFAULT_TREE).unwrap_or("__sled__default"),
        KEYS_BY_AGE_INDEXED.to_vec(),
        vec![1],
    );
    tx.commit().await.map_err(db_error)?;
    for entries in trees.values_mut() {
        entries.sort();
    }
    Ok(trees)
}

impl Storage for PgStore {
    fn clock(&self) -> SharedClock {
        std::sync::Arc::clone(&self.clock)
    }

    fn is_empty(&self) -> Result<bool> {
        self.with_client(|client| async move {
            let row = client
                .query_one("SELECT NOT EXISTS (SELECT 1 FROM teams)", &[])
                .await
                .map_err(db_error)?;
            Ok(row.get(0))
        })
    }

    /// Every write is committed before it returns, usage batches included: nothing waits.
    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn backup_to(&self, out: &mut dyn std::io::Write) -> Result<BackupSummary> {
        let trees = self.with_client(|mut client| async move { snapshot(&mut client).await })?;
        let mut w = BackupWriter::new(out)?;
        for (name, entries) in &trees {
            w.tree(name)?;
            for (k, v) in entries {
                w.entry(k, v)?;
            }
        }
        w.finish()
    }
}
