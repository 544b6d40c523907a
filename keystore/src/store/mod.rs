//! The sled-backed [`Store`], split by entity: this module holds the struct, opening and
//! migrations, and what every write shares (the write gate, durability, audit events);
//! `teams`, `users`, `sessions`, `keys` (with `key_cache` in front of it), `usage`, `policies`
//! and `audit_log` each add the operations on one kind of record as an `impl Store` block.
//!
//! The guarantees every operation keeps: a write that returns `Ok` is flushed to disk (except
//! usage batches, which are advisory and ride on the next flush); a change that touches several
//! trees (a key and its hash index, a revocation and its audit event) is one sled transaction;
//! and a write that can change a decision (revoke, rotate) invalidates the key cache before it
//! returns.

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
use crate::storage::*;
use crate::{
    AuditEvent, Error, KeyRecord, MAX_SCOPES, Project, RateLimit, Result, Role, Session, Team,
    TeamPolicy, User, apikey, clock, ids, invalid, is_valid_scope_name, validate_name,
};

mod audit_log;
pub(crate) mod invitations;
pub(crate) mod key_cache;
pub(crate) mod keys;
mod members;
mod policies;
mod sessions;
mod teams;
pub(crate) mod usage;
pub(crate) mod users;

pub use invitations::{INVITATION_LIFETIME_MS, Invited};
pub use key_cache::DEFAULT_KEY_CACHE_CAPACITY;
use key_cache::KeyCache;
pub use keys::{
    DEFAULT_KEY_PAGE, KeyChanges, KeyCursor, KeyPage, KeyQuery, MAX_KEY_PAGE, MAX_KEY_SEARCH_LEN,
    MAX_KEYS_EXAMINED, MAX_ROTATION_GRACE_SECONDS, NewApiKey, Rotated,
};
pub use usage::{DailyUsage, KeyUsage};
use users::validate_email;
pub use users::{MAX_PASSWORD_LEN, MIN_PASSWORD_LEN, NewUser};

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
    /// Where "now" comes from: creation times, expiry and grace-period checks (the system
    /// clock unless a test moves time by hand).
    pub clock: clock::SharedClock,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_capacity: 32 * 1024 * 1024,
            key_cache_capacity: DEFAULT_KEY_CACHE_CAPACITY,
            durable_writes: true,
            clock: clock::system(),
        }
    }
}

/// The BillStack Keys database. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Store {
    db: sled::Db,
    path: PathBuf,
    keys: Tree,
    key_hash: Tree,
    team_keys: Tree,
    /// A team's keys by creation time (`keys::age_key`), for paged listing.
    team_keys_by_age: Tree,
    teams: Tree,
    projects: Tree,
    users: Tree,
    user_email: Tree,
    members: Tree,
    user_teams: Tree,
    sessions: Tree,
    invitations: Tree,
    team_policy: Tree,
    /// Policy plugin bytes, as files (see [`crate::blobs`]).
    policy_files: BlobDir,
    /// Held by every change to team policies and by the deletion of unreferenced blobs, so a
    /// blob written for a change that has not committed yet is never taken for garbage.
    policy_changes: Mutex<()>,
    /// Held by changes whose check needs a team's members, projects or keys as a whole (the
    /// last owner, a project still in use), from the check to the commit.
    team_structure: Mutex<()>,
    audit: Tree,
    key_usage: Tree,
    key_cache: KeyCache,
    group_flush: GroupFlush,
    // Every write holds this shared; a backup holds it exclusively, so that what it copies is
    // one consistent state (reads never wait on it).
    write_gate: RwLock<()>,
    durable_writes: bool,
    clock: clock::SharedClock,
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

pub(crate) fn join(a: &str, b: &str) -> Vec<u8> {
    // Ids never contain '/', so it separates the parts of a composite key unambiguously.
    let mut k = Vec::with_capacity(a.len() + b.len() + 1);
    k.extend_from_slice(a.as_bytes());
    k.push(b'/');
    k.extend_from_slice(b.as_bytes());
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

pub(crate) fn check_id(kind: &'static str, id: &str) -> Result<()> {
    if ids::is_valid_id(id) {
        Ok(())
    } else {
        Err(Error::Invalid {
            field: "id",
            message: format!("{kind} id {id:?} must be 1-64 characters of A-Z, a-z, 0-9, _ and -"),
        })
    }
}

/// The sled tree that held policy bytes before they moved to files ([`crate::blobs`]); backups
/// still carry them under this name.
pub(crate) const LEGACY_POLICY_BLOBS: &str = "policy_blobs";

/// Marker (in sled's default tree) that the audit log is keyed `team/seq`.
pub(crate) const AUDIT_KEYS_MIGRATED: &[u8] = b"meta/audit-keys-by-team";

/// Marker (in sled's default tree) that `team_keys_by_age` indexes every listed key.
pub(crate) const KEYS_BY_AGE_INDEXED: &[u8] = b"meta/team-keys-by-age";

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
                "data_dir",
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
            team_keys_by_age: tree("team_keys_by_age")?,
            teams: tree("teams")?,
            projects: tree("projects")?,
            users: tree("users")?,
            user_email: tree("user_email")?,
            members: tree("members")?,
            user_teams: tree("user_teams")?,
            sessions: tree("sessions")?,
            invitations: tree("invitations")?,
            team_policy: tree("team_policy")?,
            policy_files: BlobDir::open(&path)?,
            policy_changes: Mutex::new(()),
            team_structure: Mutex::new(()),
            audit: tree("audit")?,
            key_usage: tree("key_usage")?,
            key_cache: KeyCache::new(options.key_cache_capacity),
            group_flush: GroupFlush::default(),
            write_gate: RwLock::new(()),
            durable_writes: options.durable_writes,
            clock: Arc::clone(&options.clock),
            db,
            path,
            _lock: lock,
        };
        store.migrate_audit_keys()?;
        store.index_keys_by_age()?;
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

    /// Holds the team-structure lock (see the field).
    fn team_structure(&self) -> std::sync::MutexGuard<'_, ()> {
        self.team_structure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        self.audit_event_with(team_id, actor, action, target, None)
    }

    /// [`Store::audit_event`] with details (a JSON object; never a secret).
    fn audit_event_with(
        &self,
        team_id: Option<&str>,
        actor: Actor<'_>,
        action: &str,
        target: &str,
        details: Option<serde_json::Value>,
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        let seq = self.db.generate_id()?;
        let event = AuditEvent {
            seq,
            at: self.clock.now_ms(),
            team_id: team_id.map(str::to_owned),
            actor: actor.id.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            source: actor.source.map(str::to_owned),
            details,
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

    /// Builds the by-age index of a store written before it existed, once (the marker
    /// records that it is complete; a crash before the marker redoes the idempotent build).
    fn index_keys_by_age(&self) -> Result<()> {
        if self.db.get(KEYS_BY_AGE_INDEXED)?.is_some() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for entry in self.team_keys.iter() {
            let (k, _) = entry?;
            let Some(slash) = k.iter().position(|&b| b == b'/') else {
                return Err(Error::Corruption {
                    what: "team key index: entry without a team".into(),
                });
            };
            let key_id = decode_str("team key index", &k[slash + 1..])?;
            let Some(bytes) = self.keys.get(key_id.as_bytes())? else {
                return Err(Error::Corruption {
                    what: format!("team key index names missing key {key_id}"),
                });
            };
            let record: KeyRecord = decode("key", &bytes)?;
            batch.insert(keys::age_key(&record), &[][..]);
        }
        self.team_keys_by_age.apply_batch(batch)?;
        self.db.flush()?;
        self.db.insert(KEYS_BY_AGE_INDEXED, &[1u8])?;
        self.db.flush()?;
        Ok(())
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

impl Storage for Store {
    fn clock(&self) -> clock::SharedClock {
        Arc::clone(&self.clock)
    }

    fn is_empty(&self) -> Result<bool> {
        Ok(self.teams.is_empty())
    }

    fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    fn backup_to(&self, out: &mut dyn std::io::Write) -> Result<crate::BackupSummary> {
        self.write_backup(out)
    }
}
