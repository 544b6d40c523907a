//! The sled-backed [`Store`].

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng as PhOsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::TryRngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sled::Tree;
use sled::transaction::{
    ConflictableTransactionError, TransactionError, Transactional, TransactionalTree,
};

use crate::audit::{ANONYMOUS, Actor, AuditPage, MAX_AUDIT_PAGE, event_key, is_legacy_key};
use crate::blobs::BlobDir;
use crate::group_flush::GroupFlush;
use crate::records::{decode, decode_str, encode};
use crate::{
    AuditEvent, Error, KeyRecord, MAX_SCOPES, Project, RateLimit, Result, Role, Session, Team,
    TeamPolicy, User, apikey, clock, ids, invalid, is_valid_scope_name, validate_name,
};

/// Tunables for [`Store::open_with`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// sled's page cache budget in bytes (default 32 MiB, which keeps the idle footprint small;
    /// key lookups stay fast because the hash index is small and hot).
    pub cache_capacity: u64,
    /// Most active keys held in the in-memory lookup cache (about 400 bytes each); 0 turns the
    /// cache off, so every lookup reads sled.
    pub key_cache_capacity: usize,
    /// Whether each write is on disk before it returns (the default, and the only safe choice
    /// for a server). `false` is for bulk loads (imports, benchmarks): writes reach disk at
    /// [`Store::flush`] or with sled's background flush, and a crash before then loses them.
    pub durable_writes: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_capacity: 32 * 1024 * 1024,
            key_cache_capacity: DEFAULT_KEY_CACHE_CAPACITY,
            durable_writes: true,
        }
    }
}

/// One key's uses since the last batch, for [`Store::record_key_usage`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyUsage {
    /// The key.
    pub key_id: String,
    /// Its latest allowed request (Unix ms), if any.
    pub last_used_at: Option<i64>,
    /// Requests per day (days since the Unix epoch, UTC).
    pub days: Vec<(i64, DailyUsage)>,
}

/// One key's requests on one day: decided and allowed, or refused after the key was
/// recognised (scope, project, route, rate limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyUsage {
    /// Allowed requests.
    pub allowed: u64,
    /// Refused requests.
    pub denied: u64,
}

impl DailyUsage {
    /// The sum of two counts.
    pub fn plus(self, other: &DailyUsage) -> DailyUsage {
        DailyUsage {
            allowed: self.allowed.saturating_add(other.allowed),
            denied: self.denied.saturating_add(other.denied),
        }
    }
}

/// What [`Store::create_key`] needs. Scope names must already be checked against the team's
/// active policy by the caller; here they are only checked for form.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// Owning team.
    pub team_id: String,
    /// Limit to one project of the team, or `None` for all.
    pub project_id: Option<String>,
    /// Label.
    pub name: String,
    /// Scopes; empty means full access.
    pub scopes: Vec<String>,
    /// Expiry in Unix ms; must be in the future.
    pub expires_at: Option<i64>,
    /// Who is creating it, for the audit log.
    pub actor: String,
    /// The address the request came from, for the audit log (`None` offline).
    pub source: Option<String>,
    /// A request budget, or `None` for no limit.
    pub rate_limit: Option<RateLimit>,
}

impl NewApiKey {
    /// A full-access key of `team_id` for all its projects, with no expiry and no budget, made
    /// by `actor` offline (no source address); change fields with `..NewApiKey::new(…)`.
    pub fn new(
        team_id: impl Into<String>,
        name: impl Into<String>,
        actor: impl Into<String>,
    ) -> NewApiKey {
        NewApiKey {
            team_id: team_id.into(),
            project_id: None,
            name: name.into(),
            scopes: Vec::new(),
            expires_at: None,
            actor: actor.into(),
            source: None,
            rate_limit: None,
        }
    }
}

/// Inside a transaction: the team's unrevoked key `key_id`; `NotFound` for a missing key, a
/// key of another team, or a revoked one.
fn active_key_in(
    keys: &TransactionalTree,
    team_id: &str,
    key_id: &str,
) -> std::result::Result<KeyRecord, ConflictableTransactionError<Error>> {
    let not_found = || Error::NotFound {
        kind: "key",
        id: key_id.to_owned(),
    };
    let Some(bytes) = keys.get(key_id.as_bytes())? else {
        return abort(not_found());
    };
    let record: KeyRecord = decode("key", &bytes).or_else(abort)?;
    if record.team_id != team_id || record.revoked_at.is_some() {
        return abort(not_found());
    }
    Ok(record)
}

/// Inside a transaction: marks `record` revoked at `now` and takes it out of the hash index
/// (so no lookup finds it) and the team's list; the caller writes the record itself.
fn revoke_in(
    record: &mut KeyRecord,
    now: i64,
    key_hash: &TransactionalTree,
    team_keys: &TransactionalTree,
) -> std::result::Result<(), ConflictableTransactionError<Error>> {
    let hash = stored_hash(record).or_else(abort)?;
    record.revoked_at = Some(now);
    key_hash.remove(&hash[..])?;
    team_keys.remove(join(&record.team_id, &record.id).as_slice())?;
    Ok(())
}

/// A key record's SHA-256, as stored (hex); anything else is corruption.
fn stored_hash(record: &KeyRecord) -> Result<[u8; 32]> {
    hex::decode(&record.hash)
        .ok()
        .and_then(|h| <[u8; 32]>::try_from(h.as_slice()).ok())
        .ok_or_else(|| Error::Corruption {
            what: format!("key {}: bad hash", record.id),
        })
}

/// The longest grace period a rotation may give the old key: 30 days.
pub const MAX_ROTATION_GRACE_SECONDS: u64 = 30 * 24 * 60 * 60;

/// The outcome of [`Store::rotate_key`].
#[derive(Debug, Clone)]
pub struct Rotated {
    /// The new key's record.
    pub new: KeyRecord,
    /// The new key itself: shown once, never stored.
    pub raw_key: String,
    /// The old key as it now stands: ending at the grace period's end, or revoked.
    pub old: KeyRecord,
}

/// What [`Store::create_user`] needs.
#[derive(Clone)]
pub struct NewUser {
    /// Email address (case-insensitive, unique).
    pub email: String,
    /// The password, hashed with Argon2id before it is stored.
    pub password: String,
    /// The team the user joins.
    pub team_id: String,
    /// Their role in it.
    pub role: Role,
}

/// Active keys by hash, in memory, so the hot path skips sled and JSON. Bounded, with two
/// generations for a cheap approximation of least-recently-used: fills go to `recent`; when it
/// holds half the capacity it becomes `older` (and the previous `older` is dropped). A hit in
/// `older` is moved back to `recent`, so keys in use survive every rotation and a hot set
/// larger than the cache costs misses in proportion, never a cliff where everything is evicted
/// at once.
///
/// Revocation must never be undone by a stale fill: a lookup reads the generation before it
/// reads sled and fills only if no invalidation happened since; every invalidation bumps the
/// generation and removes the entry under the write lock, after the revocation committed.
struct KeyCache {
    inner: std::sync::RwLock<KeyCacheInner>,
    capacity: usize,
}

#[derive(Default)]
struct KeyCacheInner {
    generation: u64,
    recent: HashMap<[u8; 32], Arc<KeyRecord>>,
    older: HashMap<[u8; 32], Arc<KeyRecord>>,
}

/// A cache answer: the record if cached, the generation seen, and whether the hit came from
/// the older half (and should be moved to the recent one).
struct Cached {
    record: Option<Arc<KeyRecord>>,
    generation: u64,
    from_older: bool,
}

/// Most keys held in the lookup cache by default (about 400 bytes each: 20 MB).
pub const DEFAULT_KEY_CACHE_CAPACITY: usize = 50_000;

impl KeyCache {
    fn new(capacity: usize) -> KeyCache {
        KeyCache {
            inner: std::sync::RwLock::default(),
            capacity,
        }
    }

    fn get(&self, hash: &[u8; 32]) -> Cached {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let (record, from_older) = match inner.recent.get(hash) {
            Some(r) => (Some(Arc::clone(r)), false),
            None => (inner.older.get(hash).cloned(), true),
        };
        Cached {
            from_older: from_older && record.is_some(),
            record,
            generation: inner.generation,
        }
    }

    /// `get`, moving a hit in the older half back to the recent one.
    fn get_and_keep(&self, hash: &[u8; 32]) -> Cached {
        let cached = self.get(hash);
        if let (true, Some(record)) = (cached.from_older, &cached.record) {
            self.fill(*hash, record, cached.generation);
        }
        cached
    }

    fn fill(&self, hash: [u8; 32], record: &Arc<KeyRecord>, seen_generation: u64) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if inner.generation != seen_generation || self.capacity == 0 {
            return;
        }
        inner.older.remove(&hash);
        if inner.recent.len() >= self.capacity.div_ceil(2) {
            inner.older = std::mem::take(&mut inner.recent);
        }
        inner.recent.insert(hash, Arc::clone(record));
    }

    fn invalidate(&self, hash: &[u8; 32]) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner.generation += 1;
        inner.recent.remove(hash);
        inner.older.remove(hash);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.recent.len() + inner.older.len()
    }
}

/// Shortest accepted dashboard password.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest accepted dashboard password (bytes); bounds the hashing cost.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// The BillStack Keys database. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Store {
    db: sled::Db,
    path: PathBuf,
    keys: Tree,
    key_hash: Tree,
    team_keys: Tree,
    teams: Tree,
    projects: Tree,
    users: Tree,
    user_email: Tree,
    members: Tree,
    user_teams: Tree,
    sessions: Tree,
    team_policy: Tree,
    /// Policy plugin bytes, as files (see [`crate::blobs`]).
    policy_files: BlobDir,
    /// Held by every change to team policies and by the deletion of unreferenced blobs, so a
    /// blob written for a change that has not committed yet is never taken for garbage.
    policy_changes: Mutex<()>,
    audit: Tree,
    key_usage: Tree,
    key_cache: KeyCache,
    group_flush: GroupFlush,
    // Every write holds this shared; a backup holds it exclusively, so that what it copies is
    // one consistent state (reads never wait on it).
    write_gate: RwLock<()>,
    durable_writes: bool,
    // Held for the store's lifetime: the OS lock that keeps a second process out.
    _lock: File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn join(a: &str, b: &str) -> Vec<u8> {
    // Ids never contain '/', so it separates the parts of a composite key unambiguously.
    let mut k = Vec::with_capacity(a.len() + b.len() + 1);
    k.extend_from_slice(a.as_bytes());
    k.push(b'/');
    k.extend_from_slice(b.as_bytes());
    k
}

/// `key_id/day`, the day big-endian so that a key's days sort in order. Days before 1970 never
/// occur, so the sign bit does not disturb the order.
fn usage_key(key_id: &str, day: i64) -> Vec<u8> {
    let mut k = prefix(key_id);
    k.extend_from_slice(&day.to_be_bytes());
    k
}

fn prefix(a: &str) -> Vec<u8> {
    join(a, "")
}

fn tx_err(e: TransactionError<Error>) -> Error {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => Error::Storage(e),
    }
}

fn abort<T>(e: Error) -> std::result::Result<T, ConflictableTransactionError<Error>> {
    Err(ConflictableTransactionError::Abort(e))
}

fn check_id(kind: &'static str, id: &str) -> Result<()> {
    if ids::is_valid_id(id) {
        Ok(())
    } else {
        Err(Error::Invalid {
            field: "id",
            message: format!("{kind} id {id:?} must be 1-64 characters of A-Z, a-z, 0-9, _ and -"),
        })
    }
}

fn dummy_password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let salt = SaltString::generate(&mut PhOsRng);
        Argon2::default()
            .hash_password(b"not a real password", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// Hashes a password with Argon2id (the crate's defaults: 19 MiB, 2 passes).
pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut PhOsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::PasswordHash(e.to_string()))
}

fn password_matches(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

fn validate_email(email: &str) -> Result<String> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(user, domain)| {
            !user.is_empty() && !domain.is_empty() && !domain.contains('@')
        });
    if valid {
        Ok(email)
    } else {
        Err(invalid(
            "email",
            format!("{email:?} is not an email address"),
        ))
    }
}

/// The sled tree that held policy bytes before they moved to files ([`crate::blobs`]); backups
/// still carry them under this name.
pub(crate) const LEGACY_POLICY_BLOBS: &str = "policy_blobs";

/// Marker (in sled's default tree) that the audit log is keyed `team/seq`.
pub(crate) const AUDIT_KEYS_MIGRATED: &[u8] = b"meta/audit-keys-by-team";

impl Store {
    /// Whether `dir` holds a store (of any version), without opening or creating anything.
    pub fn exists_in(dir: impl AsRef<Path>) -> bool {
        dir.as_ref().join("db").is_dir()
    }

    /// Opens (or creates) the store in `dir` with default options.
    pub fn open(dir: impl AsRef<Path>) -> Result<Store> {
        Store::open_with(dir, &StoreOptions::default())
    }

    /// Opens (or creates) the store in `dir`. Fails with [`Error::Locked`] when another process
    /// has it open.
    pub fn open_with(dir: impl AsRef<Path>, options: &StoreOptions) -> Result<Store> {
        let path = dir.as_ref().to_path_buf();
        if path.exists() && !path.is_dir() {
            return Err(crate::invalid(
                "dataDir",
                format!("{} is not a directory", path.display()),
            ));
        }
        std::fs::create_dir_all(&path)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join("LOCK"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(Error::Locked(path)),
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::Io(e)),
        }
        let db = sled::Config::new()
            .path(path.join("db"))
            .cache_capacity(options.cache_capacity)
            .open()?;
        let tree = |name: &str| db.open_tree(name);
        let store = Store {
            keys: tree("keys")?,
            key_hash: tree("key_hash")?,
            team_keys: tree("team_keys")?,
            teams: tree("teams")?,
            projects: tree("projects")?,
            users: tree("users")?,
            user_email: tree("user_email")?,
            members: tree("members")?,
            user_teams: tree("user_teams")?,
            sessions: tree("sessions")?,
            team_policy: tree("team_policy")?,
            policy_files: BlobDir::open(&path)?,
            policy_changes: Mutex::new(()),
            audit: tree("audit")?,
            key_usage: tree("key_usage")?,
            key_cache: KeyCache::new(options.key_cache_capacity),
            group_flush: GroupFlush::default(),
            write_gate: RwLock::new(()),
            durable_writes: options.durable_writes,
            db,
            path,
            _lock: lock,
        };
        store.migrate_audit_keys()?;
        store.migrate_policy_blobs()?;
        store.gc_policy_blobs()?;
        Ok(store)
    }

    /// Held (shared) by every write for its whole length.
    fn writing(&self) -> RwLockReadGuard<'_, ()> {
        self.write_gate.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Held (exclusively) while a backup copies the store: no write is in progress or starts.
    pub(crate) fn quiesced(&self) -> RwLockWriteGuard<'_, ()> {
        self.write_gate.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The sled database, for backup and restore.
    pub(crate) fn db(&self) -> &sled::Db {
        &self.db
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Forces everything written so far to disk. Every write method already does this before
    /// returning; call it at shutdown for the batched `lastUsedAt` updates.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// Returns `value` once the write just made is on disk. Concurrent writers share one
    /// flush (group commit); none is acknowledged before a flush that covers it succeeds.
    fn durable<T>(&self, value: T) -> Result<T> {
        if !self.durable_writes {
            return Ok(value);
        }
        self.group_flush
            .wait_durable(|| self.db.flush().map(drop))?;
        Ok(value)
    }

    /// An audit event's key and bytes, to be written in the transaction of the change.
    fn audit_event(
        &self,
        team_id: Option<&str>,
        actor: Actor<'_>,
        action: &str,
        target: &str,
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        let seq = self.db.generate_id()?;
        let event = AuditEvent {
            seq,
            at: clock::now_ms(),
            team_id: team_id.map(str::to_owned),
            actor: actor.id.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            source: actor.source.map(str::to_owned),
        };
        Ok((event_key(team_id, seq), encode(&event)))
    }

    /// Rewrites audit events stored under their bare sequence number (before events were
    /// grouped by team) under their team's prefix, once: a marker in the default tree records
    /// that the log is in the current form, so later opens read one key instead of the log.
    fn migrate_audit_keys(&self) -> Result<()> {
        if self.db.get(AUDIT_KEYS_MIGRATED)?.is_some() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        let mut moved = 0usize;
        for entry in self.audit.iter() {
            let (k, v) = entry?;
            if is_legacy_key(&k) {
                let event: AuditEvent = decode("audit event", &v)?;
                batch.remove(k);
                batch.insert(event_key(event.team_id.as_deref(), event.seq), v);
                moved += 1;
            }
        }
        if moved > 0 {
            self.audit.apply_batch(batch)?;
            // The moved events reach disk before the marker: a crash in between leaves no
            // marker, and the next open finishes the (idempotent) move.
            self.db.flush()?;
        }
        self.db.insert(AUDIT_KEYS_MIGRATED, &[1u8])?;
        self.db.flush()?;
        Ok(())
    }

    /// True when no team exists yet (a fresh data directory).
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.teams.is_empty())
    }

    // ----- teams and projects -------------------------------------------------------------

    /// Creates a team with a new random id, or `id` if given.
    pub fn create_team(&self, id: Option<&str>, name: &str, actor: Actor<'_>) -> Result<Team> {
        let _writing = self.writing();
        let name = validate_name("name", name)?;
        let id = match id {
            Some(id) => {
                check_id("team", id)?;
                id.to_owned()
            }
            None => ids::new_id("team"),
        };
        let team = Team {
            id: id.clone(),
            name,
            created_at: clock::now_ms(),
        };
        let (ak, av) = self.audit_event(Some(&id), actor, "team.created", &id)?;
        (&self.teams, &self.audit)
            .transaction(|(teams, audit)| {
                if teams.get(id.as_bytes())?.is_some() {
                    return abort(Error::AlreadyExists {
                        kind: "team",
                        id: id.clone(),
                    });
                }
                teams.insert(id.as_bytes(), encode(&team))?;
                audit.insert(ak.as_slice(), av.as_slice())?;
                Ok(())
            })
            .map_err(tx_err)?;
        self.durable(team)
    }

    /// A team by id.
    pub fn get_team(&self, id: &str) -> Result<Option<Team>> {
        self.teams
            .get(id.as_bytes())?
            .map(|v| decode("team", &v))
            .transpose()
    }

    /// All teams, by id.
    pub fn list_teams(&self) -> Result<Vec<Team>> {
        self.teams
            .iter()
            .values()
            .map(|v| decode("team", &v?))
            .collect()
    }

    fn require_team(&self, id: &str) -> Result<Team> {
        self.get_team(id)?.ok_or_else(|| Error::NotFound {
            kind: "team",
            id: id.to_owned(),
        })
    }

    /// Creates a project in `team_id`.
    pub fn create_project(
        &self,
        team_id: &str,
        id: Option<&str>,
        name: &str,
        actor: Actor<'_>,
    ) -> Result<Project> {
        let _writing = self.writing();
        let name = validate_name("name", name)?;
        self.require_team(team_id)?;
        let id = match id {
            Some(id) => {
                check_id("project", id)?;
                id.to_owned()
            }
            None => ids::new_id("proj"),
        };
        let project = Project {
            id: id.clone(),
            team_id: team_id.to_owned(),
            name,
            created_at: clock::now_ms(),
        };
        let key = join(team_id, &id);
        let (ak, av) = self.audit_event(Some(team_id), actor, "project.created", &id)?;
        (&self.teams, &self.projects, &self.audit)
            .transaction(|(teams, projects, audit)| {
                // Re-read the team inside the transaction so a concurrent delete cannot race us.
                if teams.get(team_id.as_bytes())?.is_none() {
                    return abort(Error::NotFound {
                        kind: "team",
                        id: team_id.to_owned(),
                    });
                }
                if projects.get(key.as_slice())?.is_some() {
                    return abort(Error::AlreadyExists {
                        kind: "project",
                        id: id.clone(),
                    });
                }
                projects.insert(key.as_slice(), encode(&project))?;
                audit.insert(ak.as_slice(), av.as_slice())?;
                Ok(())
            })
            .map_err(tx_err)?;
        self.durable(project)
    }

    /// A project of a team; `None` if it does not exist in that team.
    pub fn get_project(&self, team_id: &str, project_id: &str) -> Result<Option<Project>> {
        self.projects
            .get(join(team_id, project_id))?
            .map(|v| decode("project", &v))
            .transpose()
    }

    /// The team's projects, by id.
    pub fn list_projects(&self, team_id: &str) -> Result<Vec<Project>> {
        self.projects
            .scan_prefix(prefix(team_id))
            .values()
            .map(|v| decode("project", &v?))
            .collect()
    }

    // ----- users, memberships, sessions -----------------------------------------------------

    /// Creates a user (Argon2id-hashed password) as a member of one team.
    pub fn create_user(&self, new: &NewUser, actor: Actor<'_>) -> Result<User> {
        let _writing = self.writing();
        let email = validate_email(&new.email)?;
        if new.password.chars().count() < MIN_PASSWORD_LEN {
            return Err(invalid(
                "password",
                format!("must be at least {MIN_PASSWORD_LEN} characters"),
            ));
        }
        if new.password.len() > MAX_PASSWORD_LEN {
            return Err(invalid(
                "password",
                format!("must be at most {MAX_PASSWORD_LEN} bytes"),
            ));
        }
        self.require_team(&new.team_id)?;
        let user = User {
            id: ids::new_id("user"),
            email: email.clone(),
            password_hash: hash_password(&new.password)?,
            created_at: clock::now_ms(),
        };
        let role = encode(&new.role);
        let (ak, av) = self.audit_event(Some(&new.team_id), actor, "user.created", &user.id)?;
        let team_id = new.team_id.as_str();
        (
            &self.users,
            &self.user_email,
            &self.members,
            &self.user_teams,
            &self.teams,
            &self.audit,
        )
            .transaction(|(users, user_email, members, user_teams, teams, audit)| {
                if teams.get(team_id.as_bytes())?.is_none() {
                    return abort(Error::NotFound {
                        kind: "team",
                        id: team_id.to_owned(),
                    });
                }
                if user_email.get(email.as_bytes())?.is_some() {
                    return abort(Error::AlreadyExists {
                        kind: "user",
                        id: email.clone(),
                    });
                }
                users.insert(user.id.as_bytes(), encode(&user))?;
                user_email.insert(email.as_bytes(), user.id.as_bytes())?;
                members.insert(join(team_id, &user.id), role.as_slice())?;
                user_teams.insert(join(&user.id, team_id), role.as_slice())?;
                audit.insert(ak.as_slice(), av.as_slice())?;
                Ok(())
            })
            .map_err(tx_err)?;
        self.durable(user)
    }

    /// Adds an existing user to a team, or changes their role there.
    pub fn set_membership(
        &self,
        team_id: &str,
        user_id: &str,
        role: Role,
        actor: Actor<'_>,
    ) -> Result<()> {
        let _writing = self.writing();
        self.require_team(team_id)?;
        if self.get_user(user_id)?.is_none() {
            return Err(Error::NotFound {
                kind: "user",
                id: user_id.to_owned(),
            });
        }
        let role = encode(&role);
        let (ak, av) = self.audit_event(Some(team_id), actor, "member.set", user_id)?;
        (&self.members, &self.user_teams, &self.audit)
            .transaction(|(members, user_teams, audit)| {
                members.insert(join(team_id, user_id), role.as_slice())?;
                user_teams.insert(join(user_id, team_id), role.as_slice())?;
                audit.insert(ak.as_slice(), av.as_slice())?;
                Ok(())
            })
            .map_err(tx_err)?;
        self.durable(())
    }

    /// A user by id.
    pub fn get_user(&self, id: &str) -> Result<Option<User>> {
        self.users
            .get(id.as_bytes())?
            .map(|v| decode("user", &v))
            .transpose()
    }

    /// A user by email (case-insensitive).
    pub fn find_user_by_email(&self, email: &str) -> Result<Option<User>> {
        let email = email.trim().to_lowercase();
        match self.user_email.get(email.as_bytes())? {
            Some(id) => self.get_user(&decode_str("user email index", &id)?),
            None => Ok(None),
        }
    }

    /// Checks a password. Takes about as long for an unknown email as for a wrong password, so
    /// the timing does not reveal which emails have accounts. CPU-heavy (tens of ms): call it
    /// off any async executor.
    pub fn verify_password(&self, email: &str, password: &str) -> Result<Option<User>> {
        if password.len() > MAX_PASSWORD_LEN {
            return Ok(None);
        }
        match self.find_user_by_email(email)? {
            Some(user) if password_matches(password, &user.password_hash) => Ok(Some(user)),
            Some(_) => Ok(None),
            None => {
                let _ = password_matches(password, dummy_password_hash());
                Ok(None)
            }
        }
    }

    /// The user's role in a team, or `None` if not a member.
    pub fn membership(&self, team_id: &str, user_id: &str) -> Result<Option<Role>> {
        self.members
            .get(join(team_id, user_id))?
            .map(|v| decode("membership", &v))
            .transpose()
    }

    /// The teams a user belongs to, with their role in each.
    pub fn user_teams(&self, user_id: &str) -> Result<Vec<(Team, Role)>> {
        let mut out = Vec::new();
        for entry in self.user_teams.scan_prefix(prefix(user_id)) {
            let (k, v) = entry?;
            let team_id = decode_str("user team index", &k[user_id.len() + 1..])?;
            let role = decode("membership", &v)?;
            if let Some(team) = self.get_team(&team_id)? {
                out.push((team, role));
            }
        }
        Ok(out)
    }

    /// Starts a session; returns the raw token (for the cookie) and the record. Only the
    /// token's SHA-256 is stored.
    pub fn create_session(&self, user_id: &str) -> Result<(String, Session)> {
        let _writing = self.writing();
        let mut raw = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut raw)
            .expect("the OS random number generator is unavailable");
        let token = hex::encode(raw);
        let now = clock::now_ms();
        let session = Session {
            user_id: user_id.to_owned(),
            created_at: now,
            last_seen_at: now,
        };
        self.sessions.insert(
            Sha256::digest(token.as_bytes()).as_slice(),
            encode(&session),
        )?;
        self.durable((token, session))
    }

    /// The session for a raw token, if it exists.
    pub fn get_session(&self, token: &str) -> Result<Option<Session>> {
        let k = Sha256::digest(token.as_bytes());
        self.sessions
            .get(k.as_slice())?
            .map(|v| decode("session", &v))
            .transpose()
    }

    /// Records activity on a session (for the idle expiry). Not flushed: losing a few seconds of
    /// idle time in a crash only ends a session sooner.
    pub fn touch_session(&self, token: &str, now_ms: i64) -> Result<()> {
        let _writing = self.writing();
        let k = Sha256::digest(token.as_bytes());
        if let Some(v) = self.sessions.get(k.as_slice())? {
            let mut session: Session = decode("session", &v)?;
            session.last_seen_at = now_ms;
            // Only update if it still holds what we read, so a concurrent logout wins.
            let _ =
                self.sessions
                    .compare_and_swap(k.as_slice(), Some(v), Some(encode(&session)))?;
        }
        Ok(())
    }

    /// Ends a session. Durable: a logged-out token never works again, even after a crash.
    pub fn delete_session(&self, token: &str) -> Result<()> {
        let _writing = self.writing();
        let k = Sha256::digest(token.as_bytes());
        self.sessions.remove(k.as_slice())?;
        self.durable(())
    }

    /// Deletes sessions for which `expired` is true; returns how many.
    pub fn purge_sessions(&self, expired: impl Fn(&Session) -> bool) -> Result<usize> {
        let _writing = self.writing();
        let mut n = 0;
        for entry in self.sessions.iter() {
            let (k, v) = entry?;
            let gone = match decode::<Session>("session", &v) {
                Ok(s) => expired(&s),
                Err(_) => true,
            };
            if gone {
                self.sessions.remove(k)?;
                n += 1;
            }
        }
        self.durable(n)
    }

    // ----- API keys ---------------------------------------------------------------------

    /// Creates a key; returns its record and the raw key, which exists nowhere else.
    pub fn create_key(&self, new: &NewApiKey) -> Result<(KeyRecord, String)> {
        let _writing = self.writing();
        let name = validate_name("name", &new.name)?;
        self.require_team(&new.team_id)?;
        if let Some(project) = &new.project_id
            && self.get_project(&new.team_id, project)?.is_none()
        {
            return Err(invalid(
                "projectId",
                format!("project {project} is not in team {}", new.team_id),
            ));
        }
        if new.scopes.len() > MAX_SCOPES {
            return Err(invalid("scopes", format!("at most {MAX_SCOPES} scopes")));
        }
        if let Some(limit) = &new.rate_limit {
            limit.validate()?;
        }
        let mut scopes: Vec<String> = Vec::with_capacity(new.scopes.len());
        for scope in &new.scopes {
            if !is_valid_scope_name(scope) {
                return Err(invalid("scopes", format!("{scope:?} is not a scope name")));
            }
            if !scopes.contains(scope) {
                scopes.push(scope.clone());
            }
        }
        let now = clock::now_ms();
        if let Some(at) = new.expires_at
            && at <= now
        {
            return Err(invalid("expiresAt", "must be in the future"));
        }
        let generated = apikey::generate();
        let record = KeyRecord {
            id: ids::new_id("key"),
            team_id: new.team_id.clone(),
            project_id: new.project_id.clone(),
            name,
            prefix: generated.prefix.clone(),
            scopes,
            expires_at: new.expires_at,
            created_at: now,
            revoked_at: None,
            last_used_at: None,
            hash: hex::encode(generated.hash),
            rotated_to: None,
            rate_limit: new.rate_limit,
        };
        let (ak, av) = self.audit_event(
            Some(&new.team_id),
            Actor {
                id: &new.actor,
                source: new.source.as_deref(),
            },
            "key.created",
            &record.id,
        )?;
        let encoded = encode(&record);
        let team_key = join(&record.team_id, &record.id);
        (&self.keys, &self.key_hash, &self.team_keys, &self.audit)
            .transaction(|(keys, key_hash, team_keys, audit)| {
                keys.insert(record.id.as_bytes(), encoded.as_slice())?;
                key_hash.insert(&generated.hash[..], record.id.as_bytes())?;
                team_keys.insert(team_key.as_slice(), &[][..])?;
                audit.insert(ak.as_slice(), av.as_slice())?;
                Ok(())
            })
            .map_err(tx_err)?;
        let raw = generated.raw;
        self.durable((record, raw))
    }

    /// The active (unrevoked) key with this SHA-256, if any. The hot path of every decision,
    /// served from an in-memory cache when it can be; `last_used_at` in the answer may trail
    /// (use [`Store::get_key`] or [`Store::list_keys`] for it).
    pub fn lookup_key_hash(&self, hash: &[u8; 32]) -> Result<Option<Arc<KeyRecord>>> {
        let cached = self.key_cache.get_and_keep(hash);
        if cached.record.is_some() {
            return Ok(cached.record);
        }
        let found = self.lookup_key_hash_uncached(hash)?.map(Arc::new);
        if let Some(record) = &found {
            self.key_cache.fill(*hash, record, cached.generation);
        }
        Ok(found)
    }

    fn lookup_key_hash_uncached(&self, hash: &[u8; 32]) -> Result<Option<KeyRecord>> {
        let Some(id) = self.key_hash.get(hash)? else {
            return Ok(None);
        };
        let Some(bytes) = self.keys.get(&id)? else {
            return Err(Error::Corruption {
                what: "key hash index points at a missing key".into(),
            });
        };
        let record: KeyRecord = decode("key", &bytes)?;
        // The index entry is removed in the same transaction as revocation; check anyway.
        Ok(if record.revoked_at.is_some() {
            None
        } else {
            Some(record)
        })
    }

    /// The active key for a raw key string if it is in the in-memory lookup cache; `None`
    /// means "not cached" (it may still exist: ask [`Store::lookup_key`]). Never touches disk,
    /// so it is safe on an async executor. Revocation removes the entry before it returns.
    pub fn cached_key(&self, raw: &str) -> Option<Arc<KeyRecord>> {
        self.key_cache.get_and_keep(&apikey::hash(raw)).record
    }

    /// The active key for a raw key string (hashes it first).
    pub fn lookup_key(&self, raw: &str) -> Result<Option<Arc<KeyRecord>>> {
        self.lookup_key_hash(&apikey::hash(raw))
    }

    /// A key of a team by id, revoked or not; `None` if it does not exist in that team.
    pub fn get_key(&self, team_id: &str, key_id: &str) -> Result<Option<KeyRecord>> {
        let Some(bytes) = self.keys.get(key_id.as_bytes())? else {
            return Ok(None);
        };
        let record: KeyRecord = decode("key", &bytes)?;
        Ok((record.team_id == team_id).then_some(record))
    }

    /// The team's unrevoked keys, oldest first (expired keys included: they still need revoking
    /// or rotating, and the list shows their expiry).
    pub fn list_keys(&self, team_id: &str) -> Result<Vec<KeyRecord>> {
        let mut out = Vec::new();
        let p = prefix(team_id);
        for entry in self.team_keys.scan_prefix(&p) {
            let (k, _) = entry?;
            let key_id = decode_str("team key index", &k[p.len()..])?;
            match self.keys.get(key_id.as_bytes())? {
                Some(bytes) => {
                    let record: KeyRecord = decode("key", &bytes)?;
                    if record.revoked_at.is_none() {
                        out.push(record);
                    }
                }
                None => {
                    return Err(Error::Corruption {
                        what: format!("team key index names missing key {key_id}"),
                    });
                }
            }
        }
        out.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(out)
    }

    /// Revokes a key of a team: removes it from the hash index in the same atomic step as
    /// marking it revoked, and flushes before returning. `NotFound` for an unknown key, a key of
    /// another team, or one already revoked.
    pub fn revoke_key(&self, team_id: &str, key_id: &str, actor: Actor<'_>) -> Result<KeyRecord> {
        let _writing = self.writing();
        let now = clock::now_ms();
        let (ak, av) = self.audit_event(Some(team_id), actor, "key.revoked", key_id)?;
        let record = (&self.keys, &self.key_hash, &self.team_keys, &self.audit)
            .transaction(|(keys, key_hash, team_keys, audit)| {
                let mut record = active_key_in(keys, team_id, key_id)?;
                revoke_in(&mut record, now, key_hash, team_keys)?;
                keys.insert(key_id.as_bytes(), encode(&record))?;
                audit.insert(ak.as_slice(), av.as_slice())?;
                Ok(record)
            })
            .map_err(tx_err)?;
        // Only after the commit: a lookup racing with us either saw the key before the
        // revocation (and answered before DELETE returned) or finds it gone.
        if let Ok(hash) = stored_hash(&record) {
            self.key_cache.invalidate(&hash);
        }
        self.durable(record)
    }

    /// Rotates a key of a team: a new key with the same name, project, scopes and expiry, and
    /// the old one ends `grace_seconds` from now (its expiry moves there unless it was sooner)
    /// or, with 0, is revoked in the same atomic step. Both keys, the old one's new end and the
    /// audit events are written together and flushed before returning. `NotFound` as for
    /// [`Store::revoke_key`]; `Invalid` for an expired key (there is nothing to keep working:
    /// create a new key) or a grace period over [`MAX_ROTATION_GRACE_SECONDS`].
    pub fn rotate_key(
        &self,
        team_id: &str,
        key_id: &str,
        grace_seconds: u64,
        actor: Actor<'_>,
    ) -> Result<Rotated> {
        let _writing = self.writing();
        if grace_seconds > MAX_ROTATION_GRACE_SECONDS {
            return Err(invalid(
                "gracePeriodSeconds",
                format!("must be at most {MAX_ROTATION_GRACE_SECONDS} (30 days)"),
            ));
        }
        let now = clock::now_ms();
        let generated = apikey::generate();
        let new_id = ids::new_id("key");
        let (rk, rv) = self.audit_event(Some(team_id), actor, "key.rotated", key_id)?;
        let (ck, cv) = self.audit_event(Some(team_id), actor, "key.created", &new_id)?;
        let grace_ms = i64::try_from(grace_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
        let ends_at = now.saturating_add(grace_ms);
        let new_team_key = join(team_id, &new_id);
        let (old, new) = (&self.keys, &self.key_hash, &self.team_keys, &self.audit)
            .transaction(|(keys, key_hash, team_keys, audit)| {
                let mut old = active_key_in(keys, team_id, key_id)?;
                if old.is_expired(now) {
                    return abort(invalid(
                        "keyId",
                        "the key has expired, so there is nothing to rotate; create a new key \
                         instead",
                    ));
                }
                if let Some(successor) = &old.rotated_to {
                    return abort(invalid(
                        "keyId",
                        format!("the key has already been rotated; rotate {successor} instead"),
                    ));
                }
                let new = KeyRecord {
                    id: new_id.clone(),
                    team_id: old.team_id.clone(),
                    project_id: old.project_id.clone(),
                    name: old.name.clone(),
                    prefix: generated.prefix.clone(),
                    scopes: old.scopes.clone(),
                    expires_at: old.expires_at,
                    created_at: now,
                    revoked_at: None,
                    last_used_at: None,
                    hash: hex::encode(generated.hash),
                    rotated_to: None,
                    rate_limit: old.rate_limit,
                };
                if grace_seconds == 0 {
                    revoke_in(&mut old, now, key_hash, team_keys)?;
                } else {
                    old.expires_at = Some(old.expires_at.map_or(ends_at, |at| at.min(ends_at)));
                }
                old.rotated_to = Some(new_id.clone());
                keys.insert(key_id.as_bytes(), encode(&old))?;
                keys.insert(new_id.as_bytes(), encode(&new))?;
                key_hash.insert(&generated.hash[..], new_id.as_bytes())?;
                team_keys.insert(new_team_key.as_slice(), &[][..])?;
                audit.insert(rk.as_slice(), rv.as_slice())?;
                audit.insert(ck.as_slice(), cv.as_slice())?;
                Ok((old, new))
            })
            .map_err(tx_err)?;
        // The cached copy of the old key still has its old expiry (or is revoked now).
        if let Ok(hash) = stored_hash(&old) {
            self.key_cache.invalidate(&hash);
        }
        self.durable(Rotated {
            new,
            raw_key: generated.raw,
            old,
        })
    }

    /// Records a batch of key uses: each key's latest successful use (`lastUsedAt`) and its
    /// request counts per day, added to what is stored. Revoked or vanished keys get no
    /// `lastUsedAt`, and a use older than the stored one never moves it back; their counts are
    /// still kept (they happened). Not flushed by itself: usage is advisory, and the next
    /// durable write or [`Store::flush`] persists it.
    pub fn record_key_usage(&self, uses: &[KeyUsage]) -> Result<()> {
        let _writing = self.writing();
        for usage in uses {
            if let Some(at) = usage.last_used_at {
                self.keys.fetch_and_update(usage.key_id.as_bytes(), |old| {
                    let old = old?;
                    match decode::<KeyRecord>("key", old) {
                        Ok(mut r)
                            if r.revoked_at.is_none() && r.last_used_at.is_none_or(|t| t < at) =>
                        {
                            r.last_used_at = Some(at);
                            Some(encode(&r))
                        }
                        _ => Some(old.to_vec()),
                    }
                })?;
            }
            if usage.days.is_empty() || self.keys.get(usage.key_id.as_bytes())?.is_none() {
                continue;
            }
            for (day, counts) in &usage.days {
                let k = usage_key(&usage.key_id, *day);
                self.key_usage.fetch_and_update(k, |old| {
                    let before = old
                        .and_then(|b| decode::<DailyUsage>("daily usage", b).ok())
                        .unwrap_or_default();
                    Some(encode(&before.plus(counts)))
                })?;
            }
        }
        Ok(())
    }

    /// Drops every key's counts for days before `first_kept_day`; returns how many went.
    pub fn prune_key_usage(&self, first_kept_day: i64) -> Result<usize> {
        let _writing = self.writing();
        let mut batch = sled::Batch::default();
        let mut removed = 0;
        for k in self.key_usage.iter().keys() {
            let k = k?;
            let day = k
                .len()
                .checked_sub(8)
                .and_then(|at| <[u8; 8]>::try_from(&k[at..]).ok())
                .map(i64::from_be_bytes);
            if day.is_none_or(|d| d < first_kept_day) {
                batch.remove(k);
                removed += 1;
            }
        }
        self.key_usage.apply_batch(batch)?;
        Ok(removed)
    }

    /// A key's request counts for the `days` days ending with `last_day` (days since the Unix
    /// epoch, UTC), oldest first, with zeros for days without requests.
    pub fn key_usage(
        &self,
        key_id: &str,
        last_day: i64,
        days: u32,
    ) -> Result<Vec<(i64, DailyUsage)>> {
        let first_day = last_day - i64::from(days) + 1;
        let mut stored = HashMap::new();
        for entry in self
            .key_usage
            .range(usage_key(key_id, first_day)..=usage_key(key_id, last_day))
        {
            let (k, v) = entry?;
            let day_bytes: [u8; 8] =
                k[k.len() - 8..].try_into().map_err(|_| Error::Corruption {
                    what: "usage key".into(),
                })?;
            stored.insert(
                i64::from_be_bytes(day_bytes),
                decode::<DailyUsage>("daily usage", &v)?,
            );
        }
        Ok((first_day..=last_day)
            .map(|day| (day, stored.remove(&day).unwrap_or_default()))
            .collect())
    }

    // ----- per-team policies --------------------------------------------------------------

    /// Stores a team's policy plugin and makes it the team's policy. The caller validates the
    /// component first; this only stores bytes.
    pub fn put_team_policy(
        &self,
        team_id: &str,
        bytes: &[u8],
        actor: Actor<'_>,
    ) -> Result<TeamPolicy> {
        let _writing = self.writing();
        let _policies = self
            .policy_changes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.require_team(team_id)?;
        // The bytes are on disk before the record that names them commits.
        let sha = self.policy_files.put(bytes)?;
        let meta = TeamPolicy {
            team_id: team_id.to_owned(),
            sha256: sha.clone(),
            size: bytes.len() as u64,
            uploaded_at: clock::now_ms(),
            uploaded_by: actor.id.to_owned(),
        };
        let (ak, av) = self.audit_event(Some(team_id), actor, "policy.uploaded", &sha)?;
        (&self.team_policy, &self.audit)
            .transaction(|(team_policy, audit)| {
                team_policy.insert(team_id.as_bytes(), encode(&meta))?;
                audit.insert(ak.as_slice(), av.as_slice())?;
                Ok(())
            })
            .map_err(tx_err)?;
        let meta = self.durable(meta)?;
        // Only once the new record is durable may the blob it replaced go.
        self.gc_policy_blobs_locked()?;
        Ok(meta)
    }

    /// The team's uploaded policy and its bytes, if it has one.
    pub fn get_team_policy(&self, team_id: &str) -> Result<Option<(TeamPolicy, Vec<u8>)>> {
        let Some(meta) = self.team_policy.get(team_id.as_bytes())? else {
            return Ok(None);
        };
        let meta: TeamPolicy = decode("team policy", &meta)?;
        let Some(bytes) = self.policy_files.get(&meta.sha256)? else {
            return Err(Error::Corruption {
                what: format!("policy blob {} of team {team_id} is missing", meta.sha256),
            });
        };
        Ok(Some((meta, bytes)))
    }

    /// Every team that has uploaded a policy.
    pub fn list_team_policies(&self) -> Result<Vec<TeamPolicy>> {
        self.team_policy
            .iter()
            .values()
            .map(|v| decode("team policy", &v?))
            .collect()
    }

    /// The SHA-256 of every policy blob kept on disk. Only blobs that a team policy names are
    /// kept, so a team stores at most one plugin however many it uploads.
    pub fn stored_policy_blobs(&self) -> Result<Vec<String>> {
        self.policy_files.list()
    }

    /// Removes a team's policy (back to the deployment default). `true` if it had one.
    pub fn delete_team_policy(&self, team_id: &str, actor: Actor<'_>) -> Result<bool> {
        let _writing = self.writing();
        let _policies = self
            .policy_changes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (ak, av) = self.audit_event(Some(team_id), actor, "policy.reset", team_id)?;
        let removed = (&self.team_policy, &self.audit)
            .transaction(|(team_policy, audit)| {
                let had = team_policy.remove(team_id.as_bytes())?.is_some();
                if had {
                    audit.insert(ak.as_slice(), av.as_slice())?;
                }
                Ok(had)
            })
            .map_err(tx_err)?;
        let removed = self.durable(removed)?;
        self.gc_policy_blobs_locked()?;
        Ok(removed)
    }

    /// Deletes the blobs no team policy names (and files a crash left half-written).
    fn gc_policy_blobs(&self) -> Result<()> {
        let _policies = self
            .policy_changes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.gc_policy_blobs_locked()
    }

    fn gc_policy_blobs_locked(&self) -> Result<()> {
        let live: std::collections::HashSet<String> = self
            .list_team_policies()?
            .into_iter()
            .map(|meta| meta.sha256)
            .collect();
        self.policy_files.retain(&live)?;
        Ok(())
    }

    /// Stores of earlier versions kept policy bytes in a sled tree, whose space sled never
    /// returns: move them to files, then drop the tree. Safe to repeat after a crash (a file
    /// written twice is the same file; the tree goes only once all are written).
    fn migrate_policy_blobs(&self) -> Result<()> {
        if !self
            .db
            .tree_names()
            .iter()
            .any(|n| &n[..] == LEGACY_POLICY_BLOBS.as_bytes())
        {
            return Ok(());
        }
        let tree = self.db.open_tree(LEGACY_POLICY_BLOBS)?;
        for entry in tree.iter() {
            let (k, v) = entry?;
            let sha = self.policy_files.put(&v)?;
            if sha.as_bytes() != &k[..] {
                return Err(Error::Corruption {
                    what: format!(
                        "policy blob {} does not match its hash",
                        String::from_utf8_lossy(&k)
                    ),
                });
            }
        }
        drop(tree);
        self.db.drop_tree(LEGACY_POLICY_BLOBS)?;
        self.db.flush()?;
        Ok(())
    }

    /// The directory of policy blob files, for backup and restore.
    pub(crate) fn policy_files(&self) -> &BlobDir {
        &self.policy_files
    }

    // ----- audit ----------------------------------------------------------------------------

    /// One page of a team's audit log, newest first: up to `limit` (at most
    /// [`MAX_AUDIT_PAGE`]) events older than `before` (a sequence number from the previous
    /// page's [`AuditPage::next_before`]), or the newest when `before` is `None`.
    pub fn list_audit(
        &self,
        team_id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<AuditPage> {
        let limit = limit.clamp(1, MAX_AUDIT_PAGE);
        let start = event_key(Some(team_id), 0);
        let end = event_key(Some(team_id), before.unwrap_or(u64::MAX));
        let mut events = Vec::with_capacity(limit);
        let mut next_before = None;
        // `end` itself is excluded: with `before` it is the last event already shown, and
        // sequence number u64::MAX is never generated.
        for entry in self.audit.range(start..end).rev() {
            let (_, v) = entry?;
            let event: AuditEvent = decode("audit event", &v)?;
            if events.len() == limit {
                next_before = events.last().map(|e: &AuditEvent| e.seq);
                break;
            }
            events.push(event);
        }
        Ok(AuditPage {
            events,
            next_before,
        })
    }

    /// Records a sign-in attempt for `email` from `source`. A success, or a failure for an
    /// existing account, is recorded in each of the account's teams (a failure with actor
    /// `anonymous`, since whoever tried is not known to be the user); a failure for an unknown
    /// email is recorded under no team, without the email (people type passwords into email
    /// fields). Flushed before returning.
    pub fn record_sign_in(&self, email: &str, succeeded: bool, source: &str) -> Result<()> {
        let _writing = self.writing();
        let user = match validate_email(email) {
            Ok(email) => self.find_user_by_email(&email)?,
            Err(_) => None,
        };
        let (action, actor_id) = match (&user, succeeded) {
            (Some(user), true) => ("auth.signed_in", user.id.as_str()),
            _ => ("auth.sign_in_failed", ANONYMOUS),
        };
        let actor = Actor::from_address(actor_id, source);
        let mut batch = sled::Batch::default();
        match &user {
            Some(user) => {
                for (team, _) in self.user_teams(&user.id)? {
                    let (k, v) = self.audit_event(Some(&team.id), actor, action, &user.id)?;
                    batch.insert(k, v);
                }
            }
            None => {
                let (k, v) = self.audit_event(None, actor, action, "unknown-account")?;
                batch.insert(k, v);
            }
        }
        self.audit.apply_batch(batch)?;
        self.durable(())
    }

    #[cfg(test)]
    pub(crate) fn raw_tree(&self, name: &str) -> Tree {
        self.db.open_tree(name).expect("tree")
    }

    #[cfg(test)]
    pub(crate) fn tree_names(&self) -> Vec<sled::IVec> {
        self.db.tree_names()
    }
}

#[cfg(test)]
mod key_cache_tests {
    use super::*;

    fn record(n: u8) -> ([u8; 32], Arc<KeyRecord>) {
        let record = KeyRecord {
            id: format!("key_{n}"),
            team_id: "team_a".into(),
            project_id: None,
            name: format!("key {n}"),
            prefix: "bs_0000".into(),
            scopes: Vec::new(),
            expires_at: None,
            created_at: 0,
            revoked_at: None,
            last_used_at: None,
            hash: String::new(),
            rotated_to: None,
            rate_limit: None,
        };
        ([n; 32], Arc::new(record))
    }

    fn fill(cache: &KeyCache, n: u8) {
        let (hash, r) = record(n);
        let generation = cache.get(&hash).generation;
        cache.fill(hash, &r, generation);
    }

    fn cached(cache: &KeyCache, n: u8) -> bool {
        cache.get_and_keep(&[n; 32]).record.is_some()
    }

    #[test]
    fn the_cache_never_holds_more_than_its_capacity() {
        let cache = KeyCache::new(8);
        for n in 0..100 {
            fill(&cache, n);
            assert!(cache.len() <= 8, "{} entries after {n} fills", cache.len());
        }
        // Within the capacity, everything filled is still there.
        let cache = KeyCache::new(8);
        for n in 0..4 {
            fill(&cache, n);
        }
        assert!((0..4).all(|n| cached(&cache, n)));
    }

    #[test]
    fn a_key_in_use_survives_any_number_of_other_fills() {
        let cache = KeyCache::new(8);
        fill(&cache, 0);
        for n in 1..200 {
            fill(&cache, n);
            assert!(cached(&cache, 0), "the key in use was evicted at fill {n}");
        }
        // A key not used since is gone.
        assert!(!cached(&cache, 1));
    }

    #[test]
    fn invalidation_reaches_both_halves_and_blocks_stale_fills() {
        let cache = KeyCache::new(4);
        fill(&cache, 1);
        fill(&cache, 2);
        fill(&cache, 3); // rotates 1 and 2 into the older half
        cache.invalidate(&[1; 32]);
        assert!(!cached(&cache, 1), "removed from the older half");
        cache.invalidate(&[3; 32]);
        assert!(!cached(&cache, 3), "removed from the recent half");

        // A fill that read the generation before an invalidation is dropped.
        let (hash, r) = record(5);
        let seen = cache.get(&hash).generation;
        cache.invalidate(&hash);
        cache.fill(hash, &r, seen);
        assert!(!cached(&cache, 5));
    }

    #[test]
    fn capacity_zero_caches_nothing() {
        let cache = KeyCache::new(0);
        fill(&cache, 1);
        assert!(!cached(&cache, 1));
    }
}
