//! The storage seam: every operation the product performs on its records, named by entity, and
//! the guarantees each one keeps. [`crate::Store`] (embedded sled) implements it today; a
//! second backend (PostgreSQL) implements the same traits, and the keystore's tests run
//! through them (`store_tests`), so both are held to the same behaviour.
//!
//! # Guarantees every implementation keeps
//!
//! - **Durability.** A write that returns `Ok` survives a crash of the process (and, for a
//!   backend with replicas, of the machine), except where an operation says it is advisory:
//!   [`SessionStore::touch_session`] and [`UsageStore::record_key_usage`] ride on the next
//!   durable write or [`Storage::flush`].
//! - **Atomicity.** One call is one change: a change touching several records (a key and its
//!   hash index; a rotation's two keys and its audit events; a revocation and its audit event;
//!   a policy and the bytes it names) is applied whole or not at all. A call that returns an
//!   error has changed nothing.
//! - **Validation.** Bad input is [`crate::Error::Invalid`] naming the field in snake_case, and
//!   writes nothing. Unknown or other-team objects are [`crate::Error::NotFound`], never a hint
//!   that they exist elsewhere.
//! - **The key cache.** [`KeyStore::cached_key`] and [`KeyStore::lookup_key_hash`] may answer
//!   from memory. Any write that can change a decision — revoking, rotating (the old key's new
//!   end) — removes the affected entries before it returns, so no caller that starts after the
//!   call returned sees the old answer. Creating a key needs no invalidation (an absent key is
//!   never cached). `last_used_at` in a cached answer may trail.
//! - **Time.** Every "now" (creation times, expiry and grace-period checks) comes from
//!   [`Storage::clock`], so tests move time instead of waiting.
//! - **Blocking.** Every operation may wait on I/O (or, for passwords, burn tens of
//!   milliseconds of CPU): call them off an async executor, except [`KeyStore::cached_key`],
//!   which only reads memory.
//! - **Audit.** Every change made on someone's behalf (an [`Actor`]) writes its audit event in
//!   the same atomic step.

use std::sync::Arc;

use crate::audit::{Actor, AuditPage};
use crate::backup::BackupSummary;
use crate::clock::SharedClock;
use crate::store::{
    DailyUsage, Invited, KeyChanges, KeyPage, KeyQuery, KeyUsage, NewApiKey, NewUser, Rotated,
};
use crate::{KeyRecord, Member, Project, Result, Role, Session, Team, TeamPolicy, User};

/// Everything a backend provides: the entity operations plus the store-wide ones.
pub trait Storage:
    TeamStore
    + UserStore
    + MemberStore
    + SessionStore
    + KeyStore
    + UsageStore
    + PolicyStore
    + AuditStore
    + Send
    + Sync
    + std::fmt::Debug
{
    /// The clock this store reads "now" from.
    fn clock(&self) -> SharedClock;

    /// Whether the store holds no team yet (a fresh deployment, to be bootstrapped).
    fn is_empty(&self) -> Result<bool>;

    /// Makes every write so far durable, the advisory ones included (at shutdown, and after a
    /// usage batch someone is about to read back).
    fn flush(&self) -> Result<()>;

    /// Writes a consistent copy of every record (in the BillStack backup format) to `out`;
    /// writes wait while it runs, reads do not.
    fn backup_to(&self, out: &mut dyn std::io::Write) -> Result<BackupSummary>;

    /// Runs `work` while no other process sharing this store runs its own `while_alone` (the
    /// first-start bootstrap, so replicas starting together on an empty database bootstrap
    /// once). sled is opened by one process only, so there it simply runs `work`.
    fn while_alone(&self, work: &mut dyn FnMut()) -> Result<()> {
        work();
        Ok(())
    }

    /// This process as a replica following other processes' changes (`None` for a store only
    /// this process writes, such as sled).
    fn replica_status(&self) -> Option<crate::pg::ReplicaStatus> {
        None
    }

    /// Counters shared by every process using this store (replicas on PostgreSQL), or `None`
    /// when one process uses it and counting in its memory is exact.
    fn shared_counters(&self) -> Option<&dyn SharedCounters> {
        None
    }

    /// The server is stopping: a replica stops following and leaves, so no writer waits for
    /// it. Nothing for a store only this process writes.
    fn leave(&self) {}

    /// Calls `listener` for every change another process may have made (a replica's feed);
    /// never called for a store only this process writes.
    fn on_change(&self, listener: crate::pg::ChangeListener) {
        let _ = listener;
    }
}

/// One addition to a shared counter: `delta` to counter `name` in the window that starts at
/// `window_start` (a multiple of `window_ms`, so every replica names the same window).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterAdd {
    /// What is counted (`key:ID`, `login:…`).
    pub name: String,
    /// The window's start, Unix ms.
    pub window_start: i64,
    /// The window's length, ms.
    pub window_ms: i64,
    /// How much to add (0 reads the total).
    pub delta: u64,
}

/// Counters shared by replicas: request budgets and sign-in throttles. Counts are advisory
/// (a crash may lose a few); windows that have ended are pruned.
pub trait SharedCounters: Send + Sync {
    /// Adds each of `adds`, in one transaction, and returns each counter's total after it.
    fn add_counts(&self, adds: &[CounterAdd]) -> Result<Vec<u64>>;

    /// Forgets counter `name` in every window (a successful sign-in clears its failures).
    fn reset_count(&self, name: &str) -> Result<()>;
}

/// Teams and their projects.
pub trait TeamStore {
    /// Creates a team with a new random id, or `id` if given (`AlreadyExists` if taken).
    fn create_team(&self, id: Option<&str>, name: &str, actor: Actor<'_>) -> Result<Team>;
    /// A team by id.
    fn get_team(&self, id: &str) -> Result<Option<Team>>;
    /// All teams, by id.
    fn list_teams(&self) -> Result<Vec<Team>>;
    /// Creates a project in `team_id` (`NotFound` for no such team).
    fn create_project(
        &self,
        team_id: &str,
        id: Option<&str>,
        name: &str,
        actor: Actor<'_>,
    ) -> Result<Project>;
    /// A project of a team; `None` if it does not exist in that team.
    fn get_project(&self, team_id: &str, project_id: &str) -> Result<Option<Project>>;
    /// The team's projects, by id.
    fn list_projects(&self, team_id: &str) -> Result<Vec<Project>>;
    /// Renames a project (`NotFound` for no such project in the team).
    fn rename_project(
        &self,
        team_id: &str,
        project_id: &str,
        name: &str,
        actor: Actor<'_>,
    ) -> Result<Project>;
    /// Deletes a project; `Conflict` (`project_in_use`) while an unrevoked key is scoped to it
    /// (checked and committed with no key creation for the team in between).
    fn delete_project(&self, team_id: &str, project_id: &str, actor: Actor<'_>) -> Result<()>;
}

/// Accounts, passwords and team memberships.
pub trait UserStore {
    /// Creates a user (Argon2id-hashed password) as a member of one team.
    fn create_user(&self, new: &NewUser, actor: Actor<'_>) -> Result<User>;
    /// Adds an existing user to a team, or changes their role there.
    fn set_membership(
        &self,
        team_id: &str,
        user_id: &str,
        role: Role,
        actor: Actor<'_>,
    ) -> Result<()>;
    /// A user by id.
    fn get_user(&self, id: &str) -> Result<Option<User>>;
    /// A user by email (case-insensitive).
    fn find_user_by_email(&self, email: &str) -> Result<Option<User>>;
    /// Checks a password. Takes about as long for an unknown email as for a wrong password, so
    /// the timing does not reveal which emails have accounts. CPU-heavy (tens of ms).
    fn verify_password(&self, email: &str, password: &str) -> Result<Option<User>>;
    /// Replaces a user's password (the same rules as at creation) and ends every session of
    /// theirs; returns how many ended.
    fn set_password(&self, user_id: &str, password: &str, actor: Actor<'_>) -> Result<usize>;
    /// Grants or takes away the deployment-wide admin flag (admins create teams).
    fn set_admin(&self, user_id: &str, admin: bool, actor: Actor<'_>) -> Result<User>;
    /// Invites `email` into a team with `role`. An unknown email becomes a user with no
    /// password, and so does the answer's one-time token (stored hashed, valid
    /// [`crate::INVITATION_LIFETIME_MS`]); a user who has not accepted an earlier invitation
    /// gets a fresh token (the old one stops working); a user with a password is simply added.
    /// `AlreadyExists` for someone already in the team.
    fn invite(&self, team_id: &str, email: &str, role: Role, actor: Actor<'_>) -> Result<Invited>;
    /// Sets the password of the invitation's user and uses the token up. `Invalid` (`token`)
    /// for an unknown, used or expired token; nothing changes then.
    fn accept_invitation(&self, token: &str, password: &str) -> Result<User>;
    /// The user's role in a team, or `None` if not a member.
    fn membership(&self, team_id: &str, user_id: &str) -> Result<Option<Role>>;
    /// The teams a user belongs to, with their role in each.
    fn user_teams(&self, user_id: &str) -> Result<Vec<(Team, Role)>>;
}

/// Who is in a team. A team always keeps at least one owner.
pub trait MemberStore {
    /// The team's members, oldest membership first (`NotFound` for no such team).
    fn list_members(&self, team_id: &str) -> Result<Vec<Member>>;
    /// Adds an existing user to a team (`AlreadyExists` if they are in it).
    fn add_member(
        &self,
        team_id: &str,
        user_id: &str,
        role: Role,
        actor: Actor<'_>,
    ) -> Result<Member>;
    /// Changes a member's role; `Conflict` (`last_owner`) when it would leave the team with
    /// no owner; `NotFound` for someone not in the team.
    fn change_role(
        &self,
        team_id: &str,
        user_id: &str,
        role: Role,
        actor: Actor<'_>,
    ) -> Result<Member>;
    /// Takes a member out of the team; their sessions lose it at once (membership is read on
    /// every request). `Conflict` (`last_owner`) for the last owner.
    fn remove_member(&self, team_id: &str, user_id: &str, actor: Actor<'_>) -> Result<()>;
}

/// Dashboard sessions, stored by the SHA-256 of their token.
pub trait SessionStore {
    /// Starts a session; returns the raw token (for the cookie) and the record.
    fn create_session(&self, user_id: &str) -> Result<(String, Session)>;
    /// The session for a raw token, if it exists.
    fn get_session(&self, token: &str) -> Result<Option<Session>>;
    /// Records activity on a session (for the idle expiry). Advisory: losing a few seconds of
    /// idle time in a crash only ends a session sooner; a concurrent logout wins.
    fn touch_session(&self, token: &str, now_ms: i64) -> Result<()>;
    /// Ends a session. Durable: a logged-out token never works again, even after a crash.
    fn delete_session(&self, token: &str) -> Result<()>;
    /// Deletes sessions for which `expired` is true; returns how many.
    fn purge_sessions(&self, expired: &dyn Fn(&Session) -> bool) -> Result<usize>;
}

/// API keys: only their SHA-256 is stored.
pub trait KeyStore {
    /// Creates a key; returns its record and the raw key, which exists nowhere else.
    fn create_key(&self, new: &NewApiKey, actor: Actor<'_>) -> Result<(KeyRecord, String)>;
    /// The active (unrevoked) key with this SHA-256, if any: the hot path of every decision,
    /// served from memory when it can be (`last_used_at` may trail).
    fn lookup_key_hash(&self, hash: &[u8; 32]) -> Result<Option<Arc<KeyRecord>>>;
    /// The active key for a raw key if it is in the in-memory cache; `None` means "not cached"
    /// (it may still exist). Never waits on I/O.
    fn cached_key(&self, raw: &str) -> Option<Arc<KeyRecord>>;
    /// The active key for a raw key string (hashes it first).
    fn lookup_key(&self, raw: &str) -> Result<Option<Arc<KeyRecord>>>;
    /// A key of a team by id, revoked or not; `None` if it does not exist in that team.
    fn get_key(&self, team_id: &str, key_id: &str) -> Result<Option<KeyRecord>>;
    /// The team's unrevoked keys, oldest first (expired ones included).
    fn list_keys(&self, team_id: &str) -> Result<Vec<KeyRecord>>;
    /// One page of the team's listed keys ([`KeyRecord::is_listed`]), newest first, filtered
    /// by `query`; reads at most [`crate::MAX_KEYS_EXAMINED`] keys, however large the team.
    /// `Invalid` (`limit`, `q`) for a query out of range.
    fn list_keys_page(&self, team_id: &str, query: &KeyQuery) -> Result<KeyPage>;
    /// Revokes a key of a team, atomically with its audit event, invalidating the key cache.
    /// `NotFound` for an unknown key, a key of another team, or one already revoked.
    fn revoke_key(&self, team_id: &str, key_id: &str, actor: Actor<'_>) -> Result<KeyRecord>;
    /// Changes a key's name, scopes, expiry, budget or switch (`KeyChanges`), atomically with
    /// its audit event, and invalidates the key cache before it returns: from then on every
    /// lookup sees the change. `NotFound` as for revoke; `Invalid` as at creation.
    fn update_key(
        &self,
        team_id: &str,
        key_id: &str,
        changes: &KeyChanges,
        actor: Actor<'_>,
    ) -> Result<KeyRecord>;
    /// Rotates a key: a new key with the same name, project, scopes, budget and expiry, and the
    /// old one ends `grace_seconds` from now (its expiry moves there unless it was sooner) or,
    /// with 0, is revoked — all in one atomic step. `NotFound` as for revoke; `Invalid`
    /// (`key_id`) for an expired key, (`grace_seconds`) for a grace period over
    /// [`crate::MAX_ROTATION_GRACE_SECONDS`].
    fn rotate_key(
        &self,
        team_id: &str,
        key_id: &str,
        grace_seconds: u64,
        actor: Actor<'_>,
    ) -> Result<Rotated>;
}

/// Per-key request counts per day and `last_used_at`.
pub trait UsageStore {
    /// Adds a batch of key uses. Revoked or vanished keys get no `last_used_at`, and an older
    /// use never moves it back; counts are kept regardless. Advisory (not flushed by itself).
    fn record_key_usage(&self, uses: &[KeyUsage]) -> Result<()>;
    /// Drops every key's counts for days before `first_kept_day`; returns how many went.
    fn prune_key_usage(&self, first_kept_day: i64) -> Result<usize>;
    /// A key's counts for the `days` days ending with `last_day` (days since the epoch, UTC),
    /// oldest first, with zeros for days without requests.
    fn key_usage(&self, key_id: &str, last_day: i64, days: u32) -> Result<Vec<(i64, DailyUsage)>>;
}

/// Team policy plugins (the caller validates a component; this stores bytes).
pub trait PolicyStore {
    /// Stores a team's plugin and makes it the team's policy: the bytes are durable before
    /// the record naming them commits.
    fn put_team_policy(&self, team_id: &str, bytes: &[u8], actor: Actor<'_>) -> Result<TeamPolicy>;
    /// The team's uploaded policy and its bytes, if it has one.
    fn get_team_policy(&self, team_id: &str) -> Result<Option<(TeamPolicy, Vec<u8>)>>;
    /// Every team that has uploaded a policy.
    fn list_team_policies(&self) -> Result<Vec<TeamPolicy>>;
    /// The SHA-256 of every policy blob kept; only blobs a team policy names are kept.
    fn stored_policy_blobs(&self) -> Result<Vec<String>>;
    /// Removes a team's policy (back to the deployment default). `true` if it had one.
    fn delete_team_policy(&self, team_id: &str, actor: Actor<'_>) -> Result<bool>;
}

/// The audit log, per team, newest first.
pub trait AuditStore {
    /// One page: up to `limit` (at most [`crate::MAX_AUDIT_PAGE`]) events older than `before`
    /// (from the previous page's [`AuditPage::next_before`]), or the newest.
    fn list_audit(&self, team_id: &str, before: Option<u64>, limit: usize) -> Result<AuditPage>;
    /// Records a sign-in attempt (in each of the account's teams; a failure for an unknown
    /// email under no team, without the email). Durable before it returns.
    fn record_sign_in(&self, email: &str, succeeded: bool, source: &str) -> Result<()>;
}
