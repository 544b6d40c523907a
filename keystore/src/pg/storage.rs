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
use crate::{AuditEvent, Error, KeyRecord, Project, Result, Role, Session, Team, TeamPolicy, User};

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
    for row in tx.query(super::keys::KEY, &[]).await.map_err(db_error)? {
        let k = super::keys::key(&row)?;
        let hash: Vec<u8> = row.get(10);
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

    /// Under a session advisory lock on a connection taken out of the pool: if this process
    /// dies holding it, the connection closes and the lock goes with it.
    fn while_alone(&self, work: &mut dyn FnMut()) -> Result<()> {
        let client = self.run(|pool| async move {
            let client = pool.get().await.map_err(db_error)?;
            client
                .execute("SELECT pg_advisory_lock($1)", &[&super::BOOTSTRAP_LOCK])
                .await
                .map_err(db_error)?;
            Ok(deadpool_postgres::Object::take(client))
        })?;
        work();
        self.run(move |_| async move {
            let _ = client
                .execute("SELECT pg_advisory_unlock($1)", &[&super::BOOTSTRAP_LOCK])
                .await;
            drop(client);
            Ok(())
        })
    }

    fn replica_status(&self) -> Option<crate::pg::ReplicaStatus> {
        PgStore::replica_status(self)
    }

    fn leave(&self) {
        PgStore::leave(self);
    }

    fn shared_counters(&self) -> Option<&dyn crate::storage::SharedCounters> {
        Some(self)
    }

    fn on_change(&self, listener: crate::pg::ChangeListener) {
        PgStore::on_change(self, listener);
    }
}

/// One table's count and checksum after a restore, compared with the backup it came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TableCheck {
    /// The records, named as the backup names them (`keys`, `users`, …).
    pub table: String,
    /// Records in the backup.
    pub expected: u64,
    /// Records now in the database.
    pub found: u64,
    /// SHA-256 of the backup's records (each decoded and written out again, so older record
    /// forms compare equal to what they became).
    pub expected_sha256: String,
    /// SHA-256 of the same records read back from the database.
    pub found_sha256: String,
}

impl TableCheck {
    /// Whether the database holds exactly the backup's records.
    pub fn matches(&self) -> bool {
        self.expected == self.found && self.expected_sha256 == self.found_sha256
    }
}

/// Per-table count and SHA-256 of sorted entries.
fn digest(entries: &[(Vec<u8>, Vec<u8>)]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (k, v) in entries {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k);
        h.update((v.len() as u64).to_be_bytes());
        h.update(v);
    }
    hex::encode(h.finalize())
}

/// The records of a backup, decoded (and so checked), in the order they can be inserted.
#[derive(Default)]
struct Records {
    teams: Vec<Team>,
    projects: Vec<Project>,
    users: Vec<User>,
    members: Vec<(String, String, Role, Option<i64>)>,
    sessions: Vec<(Vec<u8>, Session)>,
    invitations: Vec<(Vec<u8>, Invitation)>,
    keys: Vec<KeyRecord>,
    usage: Vec<(String, i64, DailyUsage)>,
    policies: Vec<TeamPolicy>,
    blobs: Vec<(String, Vec<u8>)>,
    audit: Vec<AuditEvent>,
}

fn split_join(k: &[u8]) -> Result<(String, String)> {
    let text = std::str::from_utf8(k).map_err(|_| crate::backup::bad("a key that is not UTF-8"))?;
    let (a, b) = text
        .split_once('/')
        .ok_or_else(|| crate::backup::bad("a composite key without its separator"))?;
    Ok((a.to_owned(), b.to_owned()))
}

impl Records {
    fn add(&mut self, tree: &[u8], k: &[u8], v: &[u8]) -> Result<()> {
        use crate::records::decode;
        match tree {
            b"teams" => self.teams.push(decode("team", v)?),
            b"projects" => self.projects.push(decode("project", v)?),
            b"users" => self.users.push(decode("user", v)?),
            b"members" => {
                let (team, user) = split_join(k)?;
                let m: StoredMembership = decode("membership", v)?;
                self.members.push((team, user, m.role(), m.added_at()));
            }
            b"sessions" => self.sessions.push((k.to_vec(), decode("session", v)?)),
            b"invitations" => self
                .invitations
                .push((k.to_vec(), decode("invitation", v)?)),
            b"keys" => self.keys.push(decode("key", v)?),
            b"key_usage" => {
                let split = k
                    .len()
                    .checked_sub(9)
                    .ok_or_else(|| crate::backup::bad("a short usage key"))?;
                let key_id = std::str::from_utf8(&k[..split])
                    .map_err(|_| crate::backup::bad("a usage key that is not UTF-8"))?;
                let day = i64::from_be_bytes(
                    k[split + 1..]
                        .try_into()
                        .map_err(|_| crate::backup::bad("a usage day"))?,
                );
                self.usage
                    .push((key_id.to_owned(), day, decode("daily usage", v)?));
            }
            b"team_policy" => self.policies.push(decode("team policy", v)?),
            b"audit" => self.audit.push(decode("audit event", v)?),
            t if t == LEGACY_POLICY_BLOBS.as_bytes() => {
                let sha = std::str::from_utf8(k)
                    .map_err(|_| crate::backup::bad("a policy blob name"))?
                    .to_owned();
                self.blobs.push((sha, v.to_vec()));
            }
            // Indexes and sled's own markers: rebuilt from the records.
            b"key_hash" | b"team_keys" | b"team_keys_by_age" | b"user_email" | b"user_teams" => {}
            t if t == DEFAULT_TREE => {}
            other => {
                return Err(crate::backup::bad(&format!(
                    "records of an unknown kind ({})",
                    String::from_utf8_lossy(other)
                )));
            }
        }
        Ok(())
    }
}

async fn insert_all(tx: &deadpool_postgres::Transaction<'_>, r: &Records) -> Result<()> {
    let exec = |sql: &'static str| async move { tx.prepare_cached(sql).await.map_err(db_error) };
    let team = exec("INSERT INTO teams (id, name, created_at) VALUES ($1, $2, $3)").await?;
    for t in &r.teams {
        tx.execute(&team, &[&t.id, &t.name, &t.created_at])
            .await
            .map_err(db_error)?;
    }
    let user = exec(
        "INSERT INTO users (id, email, password_hash, created_at, admin) VALUES ($1, $2, $3, $4, $5)",
    )
    .await?;
    for u in &r.users {
        tx.execute(
            &user,
            &[&u.id, &u.email, &u.password_hash, &u.created_at, &u.admin],
        )
        .await
        .map_err(db_error)?;
    }
    let project =
        exec("INSERT INTO projects (team_id, id, name, created_at) VALUES ($1, $2, $3, $4)")
            .await?;
    for p in &r.projects {
        tx.execute(&project, &[&p.team_id, &p.id, &p.name, &p.created_at])
            .await
            .map_err(db_error)?;
    }
    let member = exec(
        "INSERT INTO memberships (team_id, user_id, role, added_at) VALUES ($1, $2, $3, \
         COALESCE($4, (SELECT created_at FROM users WHERE id = $2)))",
    )
    .await?;
    for (team, user, role, added_at) in &r.members {
        tx.execute(&member, &[team, user, &role.as_str(), added_at])
            .await
            .map_err(db_error)?;
    }
    let invitation =
        exec("INSERT INTO invitations (token_hash, user_id, expires_at) VALUES ($1, $2, $3)")
            .await?;
    for (hash, i) in &r.invitations {
        tx.execute(&invitation, &[hash, &i.user_id, &i.expires_at])
            .await
            .map_err(db_error)?;
    }
    let session = exec(
        "INSERT INTO sessions (token_hash, user_id, created_at, last_seen_at) VALUES ($1, $2, $3, $4)",
    )
    .await?;
    for (hash, s) in &r.sessions {
        tx.execute(
            &session,
            &[hash, &s.user_id, &s.created_at, &s.last_seen_at],
        )
        .await
        .map_err(db_error)?;
    }
    for k in &r.keys {
        super::keys::insert_key(tx, k).await?;
    }
    let usage = exec(
        "INSERT INTO key_usage (key_id, day, allowed, denied, refused) VALUES ($1, $2, $3, $4, $5)",
    )
    .await?;
    for (key_id, day, u) in &r.usage {
        tx.execute(
            &usage,
            &[
                key_id,
                day,
                &i64::try_from(u.allowed).unwrap_or(i64::MAX),
                &i64::try_from(u.denied).unwrap_or(i64::MAX),
                &serde_json::to_value(&u.refused).unwrap_or_default(),
            ],
        )
        .await
        .map_err(db_error)?;
    }
    let blob = exec("INSERT INTO policy_blobs (sha256, bytes) VALUES ($1, $2)").await?;
    for (sha, bytes) in &r.blobs {
        tx.execute(&blob, &[sha, bytes]).await.map_err(db_error)?;
    }
    let policy = exec(
        "INSERT INTO team_policies (team_id, sha256, size, uploaded_at, uploaded_by) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .await?;
    for p in &r.policies {
        tx.execute(
            &policy,
            &[
                &p.team_id,
                &p.sha256,
                &i64::try_from(p.size).unwrap_or(i64::MAX),
                &p.uploaded_at,
                &p.uploaded_by,
            ],
        )
        .await
        .map_err(db_error)?;
    }
    let event = exec(
        "INSERT INTO audit_log (seq, at, team_id, actor, action, target, source, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .await?;
    for e in &r.audit {
        tx.execute(
            &event,
            &[
                &i64::try_from(e.seq).unwrap_or(i64::MAX),
                &e.at,
                &e.team_id,
                &e.actor,
                &e.action,
                &e.target,
                &e.source,
                &e.details,
            ],
        )
        .await
        .map_err(db_error)?;
    }
    // New events are numbered after the restored ones.
    tx.execute(
        "SELECT setval('audit_seq', GREATEST((SELECT COALESCE(MAX(seq), 0) FROM audit_log), 1))",
        &[],
    )
    .await
    .map_err(db_error)?;
    Ok(())
}

impl PgStore {
    /// Restores a backup (of either backend) into this database, which must hold no
    /// BillStack records: the whole backup is read and checked first, then written in one
    /// transaction, then read back and compared table by table (count and SHA-256). `open`
    /// gives the backup from its start and is called twice.
    pub fn restore_from<R: std::io::Read>(
        &self,
        open: impl Fn() -> std::io::Result<R>,
    ) -> Result<(BackupSummary, Vec<TableCheck>)> {
        let summary = crate::backup::parse(open()?, |_, _, _| Ok(()))?;
        let mut records = Records::default();
        let mut expected = Trees::new();
        crate::backup::parse(open()?, |tree, k, v| records.add(tree, k, v))?;
        let empty: bool = self.with_client(|client| async move {
            let row = client
                .query_one(
                    "SELECT NOT EXISTS (SELECT 1 FROM teams) AND NOT EXISTS (SELECT 1 FROM users) \
                     AND NOT EXISTS (SELECT 1 FROM api_keys) AND NOT EXISTS (SELECT 1 FROM audit_log)",
                    &[],
                )
                .await
                .map_err(db_error)?;
            Ok(row.get(0))
        })?;
        if !empty {
            return Err(crate::invalid(
                "storage",
                "the database already holds BillStack records; restore into an empty database",
            ));
        }
        let records = std::sync::Arc::new(records);
        let inserted = std::sync::Arc::clone(&records);
        self.with_client(move |mut client| async move {
            let tx = client.transaction().await.map_err(db_error)?;
            insert_all(&tx, &inserted).await?;
            tx.commit().await.map_err(db_error)
        })?;
        // What the backup says, in the canonical form the database is read back in.
        let found = self.with_client(|mut client| async move { snapshot(&mut client).await })?;
        expected.extend(found.keys().map(|k| (k.clone(), Vec::new())));
        canonical(&records, &mut expected);
        let checks = expected
            .iter()
            .filter(|(name, _)| name.as_slice() != DEFAULT_TREE)
            .map(|(name, entries)| {
                let there = found.get(name).cloned().unwrap_or_default();
                TableCheck {
                    table: String::from_utf8_lossy(name).into_owned(),
                    expected: entries.len() as u64,
                    found: there.len() as u64,
                    expected_sha256: digest(entries),
                    found_sha256: digest(&there),
                }
            })
            .collect();
        Ok((summary, checks))
    }
}

/// The trees `records` make, encoded as [`snapshot`] encodes the database.
fn canonical(r: &Records, trees: &mut Trees) {
    let mut put = |tree: &[u8], k: Vec<u8>, v: Vec<u8>| {
        trees.entry(tree.to_vec()).or_default().push((k, v));
    };
    for t in &r.teams {
        put(b"teams", t.id.as_bytes().to_vec(), encode(t));
    }
    for p in &r.projects {
        put(b"projects", join(&p.team_id, &p.id), encode(p));
    }
    let created: BTreeMap<&str, i64> = r
        .users
        .iter()
        .map(|u| (u.id.as_str(), u.created_at))
        .collect();
    for u in &r.users {
        put(
            b"user_email",
            u.email.as_bytes().to_vec(),
            u.id.as_bytes().to_vec(),
        );
        put(b"users", u.id.as_bytes().to_vec(), encode(u));
    }
    for (team, user, role, added_at) in &r.members {
        let value = encode(&StoredMembership::Full {
            role: *role,
            added_at: added_at.unwrap_or_else(|| created.get(user.as_str()).copied().unwrap_or(0)),
        });
        put(b"members", join(team, user), value.clone());
        put(b"user_teams", join(user, team), value);
    }
    for (hash, s) in &r.sessions {
        put(b"sessions", hash.clone(), encode(s));
    }
    for (hash, i) in &r.invitations {
        put(b"invitations", hash.clone(), encode(i));
    }
    for k in &r.keys {
        if k.revoked_at.is_none() {
            put(
                b"key_hash",
                hex::decode(&k.hash).unwrap_or_default(),
                k.id.as_bytes().to_vec(),
            );
            put(b"team_keys", join(&k.team_id, &k.id), Vec::new());
            put(b"team_keys_by_age", age_key(k), Vec::new());
        }
        put(b"keys", k.id.as_bytes().to_vec(), encode(k));
    }
    for (key_id, day, u) in &r.usage {
        put(b"key_usage", usage_key(key_id, *day), encode(u));
    }
    for p in &r.policies {
        put(b"team_policy", p.team_id.as_bytes().to_vec(), encode(p));
    }
    for (sha, bytes) in &r.blobs {
        put(
            LEGACY_POLICY_BLOBS.as_bytes(),
            sha.as_bytes().to_vec(),
            bytes.clone(),
        );
    }
    for e in &r.audit {
        put(
            b"audit",
            crate::audit::event_key(e.team_id.as_deref(), e.seq),
            encode(e),
        );
    }
    for entries in trees.values_mut() {
        entries.sort();
    }
}
