//! API keys: creation, lookup through the key cache, listing, revocation and rotation.

use super::*;
use crate::KeyStatus;

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
    /// A request budget, or `None` for no limit.
    pub rate_limit: Option<RateLimit>,
}

impl NewApiKey {
    /// A full-access key of `team_id` for all its projects, with no expiry and no budget;
    /// change fields with `..NewApiKey::new(…)`.
    pub fn new(team_id: impl Into<String>, name: impl Into<String>) -> NewApiKey {
        NewApiKey {
            team_id: team_id.into(),
            project_id: None,
            name: name.into(),
            scopes: Vec::new(),
            expires_at: None,
            rate_limit: None,
        }
    }
}

impl NewApiKey {
    /// Checks the request (name, scope names, budget, expiry in the future at `now`) and
    /// builds the key's record and its raw key: the same for every backend.
    pub(crate) fn record(&self, now: i64, actor: Actor<'_>) -> Result<(KeyRecord, apikey::NewKey)> {
        let name = validate_name("name", &self.name)?;
        let scopes = checked_scopes(&self.scopes)?;
        if let Some(limit) = &self.rate_limit {
            limit.validate()?;
        }
        if let Some(at) = self.expires_at
            && at <= now
        {
            return Err(invalid("expires_at", "must be in the future"));
        }
        let generated = apikey::generate();
        let record = KeyRecord {
            id: ids::new_id("key"),
            team_id: self.team_id.clone(),
            project_id: self.project_id.clone(),
            name,
            prefix: generated.prefix.clone(),
            scopes,
            expires_at: self.expires_at,
            created_at: now,
            revoked_at: None,
            last_used_at: None,
            hash: hex::encode(generated.hash),
            rotated_to: None,
            rate_limit: self.rate_limit,
            disabled: false,
            created_by: Some(actor.id.to_owned()),
        };
        Ok((record, generated))
    }
}

/// A [`KeyChanges`] whose values have been checked, ready to apply to a key.
pub(crate) struct CheckedChanges<'a> {
    changes: &'a KeyChanges,
    name: Option<String>,
    scopes: Option<Vec<String>>,
}

impl KeyChanges {
    /// Checks every value it sets as creation would (the expiry against `now`).
    pub(crate) fn checked(&self, now: i64) -> Result<CheckedChanges<'_>> {
        let name = self
            .name
            .as_deref()
            .map(|n| validate_name("name", n))
            .transpose()?;
        let scopes = self.scopes.as_deref().map(checked_scopes).transpose()?;
        if let Some(Some(limit)) = &self.rate_limit {
            limit.validate()?;
        }
        if let Some(Some(at)) = self.expires_at
            && at <= now
        {
            return Err(invalid("expires_at", "must be in the future"));
        }
        Ok(CheckedChanges {
            changes: self,
            name,
            scopes,
        })
    }
}

impl CheckedChanges<'_> {
    /// Applies the changes to `record`; `Invalid` (`expires_at`) for a new expiry on a rotated
    /// key, whose end is its grace period's.
    pub(crate) fn apply(&self, record: &mut KeyRecord) -> Result<()> {
        if let Some(name) = &self.name {
            record.name = name.clone();
        }
        if let Some(scopes) = &self.scopes {
            record.scopes = scopes.clone();
        }
        if let Some(expires_at) = self.changes.expires_at {
            if record.rotated_to.is_some() {
                return Err(invalid(
                    "expires_at",
                    "the key was rotated: its end is the grace period's",
                ));
            }
            record.expires_at = expires_at;
        }
        if let Some(rate_limit) = self.changes.rate_limit {
            record.rate_limit = rate_limit;
        }
        if let Some(enabled) = self.changes.enabled {
            record.disabled = !enabled;
        }
        Ok(())
    }
}

/// The key that replaces `old` in a rotation at `now`: the same team, project, name, scopes,
/// expiry, budget and switch, with a new secret.
pub(crate) fn successor(
    old: &KeyRecord,
    new_id: &str,
    generated: &apikey::NewKey,
    now: i64,
    actor: Actor<'_>,
) -> KeyRecord {
    KeyRecord {
        id: new_id.to_owned(),
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
        disabled: old.disabled,
        created_by: Some(actor.id.to_owned()),
    }
}

/// Why an old key cannot be rotated at `now` (expired, or rotated already), if so.
pub(crate) fn cannot_rotate(old: &KeyRecord, now: i64) -> Option<Error> {
    if old.is_expired(now) {
        return Some(invalid(
            "key_id",
            "the key has expired, so there is nothing to rotate; create a new key instead",
        ));
    }
    old.rotated_to.as_ref().map(|successor| {
        invalid(
            "key_id",
            format!("the key has already been rotated; rotate {successor} instead"),
        )
    })
}

/// Inside a transaction: the team's unrevoked key `key_id`; `NotFound` for a missing key, a
/// key of another team, or a revoked one.
pub(super) fn active_key_in(
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
pub(super) fn revoke_in(
    record: &mut KeyRecord,
    now: i64,
    key_hash: &TransactionalTree,
    team_keys: &TransactionalTree,
    by_age: &TransactionalTree,
) -> std::result::Result<(), ConflictableTransactionError<Error>> {
    let hash = stored_hash(record).or_else(abort)?;
    record.revoked_at = Some(now);
    key_hash.remove(&hash[..])?;
    team_keys.remove(join(&record.team_id, &record.id).as_slice())?;
    by_age.remove(age_key(record).as_slice())?;
    Ok(())
}

/// The key's entry in the team's by-age index: `team/`, the creation time (8 bytes, big
/// endian), the key id; so a team's keys sort by creation time, then id.
pub(crate) fn age_key(record: &KeyRecord) -> Vec<u8> {
    age_position(&record.team_id, record.created_at, &record.id)
}

fn age_position(team_id: &str, created_at: i64, key_id: &str) -> Vec<u8> {
    let mut k = prefix(team_id);
    k.extend_from_slice(&u64::try_from(created_at).unwrap_or(0).to_be_bytes());
    k.extend_from_slice(key_id.as_bytes());
    k
}

/// Most index entries one page of [`KeyStore::list_keys_page`] examines: a filter that
/// matches little answers a short page with a `next_cursor` instead of reading the whole team.
pub const MAX_KEYS_EXAMINED: usize = 5_000;

/// The default and the largest page of keys.
pub const DEFAULT_KEY_PAGE: usize = 100;
/// See [`DEFAULT_KEY_PAGE`].
pub const MAX_KEY_PAGE: usize = 500;

/// Longest search text.
pub const MAX_KEY_SEARCH_LEN: usize = 100;

/// Where a page of keys starts: after (older than) the key created at `created_at` with id
/// `key_id`. Shown to clients as an opaque string ([`KeyCursor::encode`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCursor {
    /// The last listed key's creation time (Unix ms).
    pub created_at: i64,
    /// The last listed key's id.
    pub key_id: String,
}

impl KeyCursor {
    /// The string clients pass back.
    pub fn encode(&self) -> String {
        format!("{:012x}.{}", self.created_at.max(0), self.key_id)
    }

    /// A string from [`KeyCursor::encode`]; `Invalid` (field `cursor`) for anything else.
    pub fn parse(text: &str) -> Result<KeyCursor> {
        let bad = || invalid("cursor", "is not a cursor from a previous page");
        let (time, key_id) = text.split_once('.').ok_or_else(bad)?;
        if time.len() != 12 || !ids::is_valid_id(key_id) {
            return Err(bad());
        }
        let created_at = i64::from_str_radix(time, 16).map_err(|_| bad())?;
        Ok(KeyCursor {
            created_at,
            key_id: key_id.to_owned(),
        })
    }
}

/// What [`KeyStore::list_keys_page`] lists: the listed keys ([`KeyRecord::is_listed`]) of a
/// team, newest first, matching every filter that is set.
#[derive(Debug, Clone, Default)]
pub struct KeyQuery {
    /// Most keys on the page (1 to [`MAX_KEY_PAGE`]).
    pub limit: usize,
    /// Start after this key (from the previous page's `next_cursor`).
    pub cursor: Option<KeyCursor>,
    /// Only keys with this status.
    pub status: Option<KeyStatus>,
    /// Only keys limited to this project.
    pub project_id: Option<String>,
    /// Only keys whose name or prefix contains this text (case-insensitive).
    pub q: Option<String>,
}

impl KeyQuery {
    /// A first page of `limit` keys with no filter.
    pub fn first(limit: usize) -> KeyQuery {
        KeyQuery {
            limit,
            ..KeyQuery::default()
        }
    }

    /// Checks the limit and the search text's length.
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_KEY_PAGE).contains(&self.limit) {
            return Err(invalid(
                "limit",
                format!("must be from 1 to {MAX_KEY_PAGE}"),
            ));
        }
        if let Some(q) = &self.q
            && q.chars().count() > MAX_KEY_SEARCH_LEN
        {
            return Err(invalid(
                "q",
                format!("must be at most {MAX_KEY_SEARCH_LEN} characters"),
            ));
        }
        Ok(())
    }

    pub(crate) fn matches(&self, record: &KeyRecord, now: i64, q_lower: Option<&str>) -> bool {
        record.is_listed(now)
            && self.status.is_none_or(|s| record.status(now) == s)
            && self
                .project_id
                .as_ref()
                .is_none_or(|p| record.project_id.as_ref() == Some(p))
            && q_lower
                .is_none_or(|q| record.name.to_lowercase().contains(q) || record.prefix.contains(q))
    }
}

/// One page of keys.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyPage {
    /// Newest first.
    pub keys: Vec<KeyRecord>,
    /// Where the next page starts, when there may be more. A page can be shorter than the
    /// limit and still have a next one, when a filter matched few of the keys examined.
    pub next_cursor: Option<KeyCursor>,
}

/// A key record's SHA-256, as stored (hex); anything else is corruption.
pub(super) fn stored_hash(record: &KeyRecord) -> Result<[u8; 32]> {
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

/// What [`KeyStore::update_key`] changes: each `Some` field is set (`Some(None)` clears an
/// expiry or a budget); `None` leaves it as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyChanges {
    /// A new label.
    pub name: Option<String>,
    /// New scopes (checked against the team's policy by the caller; here for form only).
    pub scopes: Option<Vec<String>>,
    /// A new expiry (in the future), or none.
    pub expires_at: Option<Option<i64>>,
    /// A new budget, or none.
    pub rate_limit: Option<Option<RateLimit>>,
    /// Switched on (`true`) or off.
    pub enabled: Option<bool>,
}

impl KeyChanges {
    /// The audit log's record of the change: `{"changed": {field: new value}}` in the API's
    /// words (times in RFC 3339; `null` for a cleared expiry or budget).
    pub fn audit_details(&self) -> serde_json::Value {
        let mut changed = serde_json::Map::new();
        if let Some(name) = &self.name {
            changed.insert("name".into(), name.clone().into());
        }
        if let Some(scopes) = &self.scopes {
            changed.insert("scopes".into(), scopes.clone().into());
        }
        if let Some(expires_at) = self.expires_at {
            changed.insert(
                "expiresAt".into(),
                expires_at.map(crate::clock::format_rfc3339).into(),
            );
        }
        if let Some(rate_limit) = self.rate_limit {
            changed.insert(
                "rateLimit".into(),
                rate_limit.map_or(
                    serde_json::Value::Null,
                    |r| serde_json::json!({ "limit": r.limit, "windowSeconds": r.window_seconds }),
                ),
            );
        }
        if let Some(enabled) = self.enabled {
            changed.insert("enabled".into(), enabled.into());
        }
        serde_json::json!({ "changed": changed })
    }

    /// The names of the fields it sets (for the audit log), in the API's words.
    pub fn fields(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (set, name) in [
            (self.name.is_some(), "name"),
            (self.scopes.is_some(), "scopes"),
            (self.expires_at.is_some(), "expiresAt"),
            (self.rate_limit.is_some(), "rateLimit"),
            (self.enabled.is_some(), "enabled"),
        ] {
            if set {
                out.push(name);
            }
        }
        out
    }
}

/// Scope names checked for form, in order, without duplicates.
pub(crate) fn checked_scopes(scopes: &[String]) -> Result<Vec<String>> {
    if scopes.len() > MAX_SCOPES {
        return Err(invalid("scopes", format!("at most {MAX_SCOPES} scopes")));
    }
    let mut out: Vec<String> = Vec::with_capacity(scopes.len());
    for scope in scopes {
        if !is_valid_scope_name(scope) {
            return Err(invalid("scopes", format!("{scope:?} is not a scope name")));
        }
        if !out.contains(scope) {
            out.push(scope.clone());
        }
    }
    Ok(out)
}

impl KeyStore for Store {
    fn create_key(&self, new: &NewApiKey, actor: Actor<'_>) -> Result<(KeyRecord, String)> {
        let _writing = self.writing();
        validate_name("name", &new.name)?;
        self.require_team(&new.team_id)?;
        // A project-scoped key and the deletion of its project must not cross.
        let structure = new.project_id.is_some().then(|| self.team_structure());
        if let Some(project) = &new.project_id
            && self.get_project(&new.team_id, project)?.is_none()
        {
            return Err(invalid(
                "project_id",
                format!("project {project} is not in team {}", new.team_id),
            ));
        }
        let (record, generated) = new.record(self.clock.now_ms(), actor)?;
        let (ak, av) = self.audit_event_with(
            Some(&new.team_id),
            actor,
            "key.created",
            &record.id,
            Some(serde_json::json!({ "name": record.name, "prefix": record.prefix })),
        )?;
        let encoded = encode(&record);
        let team_key = join(&record.team_id, &record.id);
        let age = age_key(&record);
        self.key_trees()
            .transaction(|(keys, key_hash, team_keys, by_age, audit)| {
                keys.insert(record.id.as_bytes(), encoded.as_slice())?;
                key_hash.insert(&generated.hash[..], record.id.as_bytes())?;
                team_keys.insert(team_key.as_slice(), &[][..])?;
                by_age.insert(age.as_slice(), &[][..])?;
                audit.insert(ak.as_slice(), av.as_slice())?;
                Ok(())
            })
            .map_err(tx_err)?;
        drop(structure);
        let raw = generated.raw;
        self.durable((record, raw))
    }

    fn lookup_key_hash(&self, hash: &[u8; 32]) -> Result<Option<Arc<KeyRecord>>> {
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

    fn cached_key(&self, raw: &str) -> Option<Arc<KeyRecord>> {
        self.key_cache.get_and_keep(&apikey::hash(raw)).record
    }

    fn lookup_key(&self, raw: &str) -> Result<Option<Arc<KeyRecord>>> {
        self.lookup_key_hash(&apikey::hash(raw))
    }

    fn get_key(&self, team_id: &str, key_id: &str) -> Result<Option<KeyRecord>> {
        let Some(bytes) = self.keys.get(key_id.as_bytes())? else {
            return Ok(None);
        };
        let record: KeyRecord = decode("key", &bytes)?;
        Ok((record.team_id == team_id).then_some(record))
    }

    fn list_keys(&self, team_id: &str) -> Result<Vec<KeyRecord>> {
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

    fn list_keys_page(&self, team_id: &str, query: &KeyQuery) -> Result<KeyPage> {
        query.validate()?;
        let now = self.clock.now_ms();
        let q_lower = query.q.as_deref().map(str::to_lowercase);
        let p = prefix(team_id);
        let entries: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> =
            match &query.cursor {
                None => Box::new(self.team_keys_by_age.scan_prefix(&p).rev()),
                Some(c) => Box::new(
                    self.team_keys_by_age
                        .range(p.clone()..age_position(team_id, c.created_at, &c.key_id))
                        .rev(),
                ),
            };
        let mut keys = Vec::new();
        let mut last: Option<KeyCursor> = None;
        for (examined, entry) in entries.enumerate() {
            if keys.len() == query.limit || examined == MAX_KEYS_EXAMINED {
                // More may follow: the next page starts after the last key examined.
                return Ok(KeyPage {
                    keys,
                    next_cursor: last,
                });
            }
            let (k, _) = entry?;
            let rest = &k[p.len()..];
            let Some((time, id)) = rest.split_first_chunk::<8>() else {
                return Err(Error::Corruption {
                    what: "team key age index: short entry".into(),
                });
            };
            let key_id = decode_str("team key age index", id)?;
            let Some(bytes) = self.keys.get(key_id.as_bytes())? else {
                return Err(Error::Corruption {
                    what: format!("team key age index names missing key {key_id}"),
                });
            };
            let record: KeyRecord = decode("key", &bytes)?;
            last = Some(KeyCursor {
                created_at: i64::try_from(u64::from_be_bytes(*time)).unwrap_or(i64::MAX),
                key_id,
            });
            if query.matches(&record, now, q_lower.as_deref()) {
                keys.push(record);
            }
        }
        Ok(KeyPage {
            keys,
            next_cursor: None,
        })
    }

    fn revoke_key(&self, team_id: &str, key_id: &str, actor: Actor<'_>) -> Result<KeyRecord> {
        let _writing = self.writing();
        let now = self.clock.now_ms();
        let name = self.get_key(team_id, key_id)?.map(|k| k.name);
        let (ak, av) = self.audit_event_with(
            Some(team_id),
            actor,
            "key.revoked",
            key_id,
            name.map(|name| serde_json::json!({ "name": name })),
        )?;
        let record = self
            .key_trees()
            .transaction(|(keys, key_hash, team_keys, by_age, audit)| {
                let mut record = active_key_in(keys, team_id, key_id)?;
                revoke_in(&mut record, now, key_hash, team_keys, by_age)?;
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

    fn update_key(
        &self,
        team_id: &str,
        key_id: &str,
        changes: &KeyChanges,
        actor: Actor<'_>,
    ) -> Result<KeyRecord> {
        let _writing = self.writing();
        let checked = changes.checked(self.clock.now_ms())?;
        let (ak, av) = self.audit_event_with(
            Some(team_id),
            actor,
            "key.updated",
            key_id,
            Some(changes.audit_details()),
        )?;
        let record = (&self.keys, &self.audit)
            .transaction(|(keys, audit)| {
                let Some(bytes) = keys.get(key_id.as_bytes())? else {
                    return abort(Error::NotFound {
                        kind: "key",
                        id: key_id.to_owned(),
                    });
                };
                let mut record: KeyRecord = decode("key", &bytes).or_else(abort)?;
                if record.team_id != team_id || record.revoked_at.is_some() {
                    return abort(Error::NotFound {
                        kind: "key",
                        id: key_id.to_owned(),
                    });
                }
                checked.apply(&mut record).or_else(abort)?;
                keys.insert(key_id.as_bytes(), encode(&record))?;
                audit.insert(ak.as_slice(), av.as_slice())?;
                Ok(record)
            })
            .map_err(tx_err)?;
        // As for revocation: only after the commit, so no request that starts after this
        // returns sees the key as it was.
        if let Ok(hash) = stored_hash(&record) {
            self.key_cache.invalidate(&hash);
        }
        self.durable(record)
    }

    fn rotate_key(
        &self,
        team_id: &str,
        key_id: &str,
        grace_seconds: u64,
        actor: Actor<'_>,
    ) -> Result<Rotated> {
        let _writing = self.writing();
        if grace_seconds > MAX_ROTATION_GRACE_SECONDS {
            return Err(invalid(
                "grace_seconds",
                format!("must be at most {MAX_ROTATION_GRACE_SECONDS} (30 days)"),
            ));
        }
        let now = self.clock.now_ms();
        let generated = apikey::generate();
        let new_id = ids::new_id("key");
        let (rk, rv) = self.audit_event_with(
            Some(team_id),
            actor,
            "key.rotated",
            key_id,
            Some(serde_json::json!({
                "newKeyId": new_id,
                "gracePeriodSeconds": grace_seconds,
            })),
        )?;
        let (ck, cv) = self.audit_event_with(
            Some(team_id),
            actor,
            "key.created",
            &new_id,
            Some(serde_json::json!({ "prefix": generated.prefix, "rotatedFrom": key_id })),
        )?;
        let grace_ms = i64::try_from(grace_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
        let ends_at = now.saturating_add(grace_ms);
        let new_team_key = join(team_id, &new_id);
        let (old, new) = self
            .key_trees()
            .transaction(|(keys, key_hash, team_keys, by_age, audit)| {
                let mut old = active_key_in(keys, team_id, key_id)?;
                if let Some(refusal) = cannot_rotate(&old, now) {
                    return abort(refusal);
                }
                let new = successor(&old, &new_id, &generated, now, actor);
                if grace_seconds == 0 {
                    revoke_in(&mut old, now, key_hash, team_keys, by_age)?;
                } else {
                    old.expires_at = Some(old.expires_at.map_or(ends_at, |at| at.min(ends_at)));
                }
                old.rotated_to = Some(new_id.clone());
                keys.insert(key_id.as_bytes(), encode(&old))?;
                keys.insert(new_id.as_bytes(), encode(&new))?;
                key_hash.insert(&generated.hash[..], new_id.as_bytes())?;
                team_keys.insert(new_team_key.as_slice(), &[][..])?;
                by_age.insert(age_key(&new).as_slice(), &[][..])?;
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
}

impl Store {
    /// The trees a key's creation, rotation or revocation changes together, in the order the
    /// transactions name them: records, hash index, team index, age index, audit log.
    fn key_trees(&self) -> (&Tree, &Tree, &Tree, &Tree, &Tree) {
        (
            &self.keys,
            &self.key_hash,
            &self.team_keys,
            &self.team_keys_by_age,
            &self.audit,
        )
    }

    pub(super) fn lookup_key_hash_uncached(&self, hash: &[u8; 32]) -> Result<Option<KeyRecord>> {
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
}
