//! The records kept in the store, and their on-disk encoding.
//!
//! Every value is one format byte followed by JSON. The format byte lets a later version change
//! the encoding without guessing; anything that does not decode is a [`Error::Corruption`].

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

const FORMAT_V1: u8 = 1;

/// An API key's metadata. The raw key is never part of it; `hash` is its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRecord {
    /// `key_…`
    pub id: String,
    /// The team that owns the key.
    pub team_id: String,
    /// The one project the key may use, or `None` for all of the team's projects.
    pub project_id: Option<String>,
    /// A person's label for the key.
    pub name: String,
    /// The first 7 characters of the raw key.
    pub prefix: String,
    /// Scopes; empty means full access.
    pub scopes: Vec<String>,
    /// Expiry in Unix ms, or `None` for none.
    pub expires_at: Option<i64>,
    /// Creation time in Unix ms.
    pub created_at: i64,
    /// Revocation time in Unix ms; a revoked key is no longer in the hash index.
    pub revoked_at: Option<i64>,
    /// Last successful use in Unix ms (written in batches, so it may trail by a few seconds).
    pub last_used_at: Option<i64>,
    /// Hex SHA-256 of the raw key.
    pub hash: String,
    /// The key that replaced this one in a rotation; its `expires_at` is then the end of the
    /// grace period, not the key's own expiry, and it cannot be rotated again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_to: Option<String>,
    /// Most requests the key may make per window, or `None` for no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Switched off by a member: refused like a revoked key until switched on again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// Who created it (`user_…`, `cli`, `system`); `None` for keys older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
}

/// A key's request budget: at most `limit` requests per `window_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed per window (1 to [`RateLimit::MAX_LIMIT`]).
    pub limit: u32,
    /// The window's length in seconds (1 to [`RateLimit::MAX_WINDOW_SECONDS`]).
    pub window_seconds: u32,
}

impl RateLimit {
    /// The largest `limit`.
    pub const MAX_LIMIT: u32 = 1_000_000_000;
    /// The longest window: one day.
    pub const MAX_WINDOW_SECONDS: u32 = 86_400;

    /// Checks the ranges; `Invalid` (field `rate_limit`) outside them.
    pub fn validate(&self) -> Result<()> {
        if !(1..=Self::MAX_LIMIT).contains(&self.limit) {
            return Err(crate::invalid(
                "rate_limit",
                format!("limit must be from 1 to {}", Self::MAX_LIMIT),
            ));
        }
        if !(1..=Self::MAX_WINDOW_SECONDS).contains(&self.window_seconds) {
            return Err(crate::invalid(
                "rate_limit",
                format!(
                    "windowSeconds must be from 1 to {} (a day)",
                    Self::MAX_WINDOW_SECONDS
                ),
            ));
        }
        Ok(())
    }
}

impl KeyRecord {
    /// Whether the key has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.expires_at.is_some_and(|at| at <= now_ms)
    }

    /// The key's status at `now_ms` (a revoked key has none: it is not listed).
    pub fn status(&self, now_ms: i64) -> KeyStatus {
        if self.disabled {
            KeyStatus::Disabled
        } else if self.is_expired(now_ms) {
            KeyStatus::Expired
        } else if self.rotated_to.is_some()
            || self
                .expires_at
                .is_some_and(|at| at - now_ms <= EXPIRING_WITHIN_MS)
        {
            KeyStatus::Expiring
        } else {
            KeyStatus::Active
        }
    }

    /// Whether a listing at `now_ms` shows the key: unrevoked, and not expired for longer
    /// than [`LISTED_AFTER_EXPIRY_MS`].
    pub fn is_listed(&self, now_ms: i64) -> bool {
        self.revoked_at.is_none()
            && self
                .expires_at
                .is_none_or(|at| now_ms.saturating_sub(at) < LISTED_AFTER_EXPIRY_MS)
    }
}

/// How close to its end a key is shown as [`KeyStatus::Expiring`]: 7 days.
pub const EXPIRING_WITHIN_MS: i64 = 7 * 24 * 3600 * 1000;

/// How long an expired (or rotated-out) key stays listed: 30 days.
pub const LISTED_AFTER_EXPIRY_MS: i64 = 30 * 24 * 3600 * 1000;

/// Where a key is in its life cycle, as listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyStatus {
    /// Works, and is not near its end.
    Active,
    /// Works, but ends soon: in a rotation's grace period, or expiring within 7 days.
    Expiring,
    /// Past its expiry (or its rotation's grace period).
    Expired,
    /// Switched off: refused like a revoked key until switched on.
    Disabled,
}

impl KeyStatus {
    /// Every status, in the API's order.
    pub const ALL: [KeyStatus; 4] = [
        KeyStatus::Active,
        KeyStatus::Expiring,
        KeyStatus::Expired,
        KeyStatus::Disabled,
    ];

    /// The API's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Expiring => "expiring",
            KeyStatus::Expired => "expired",
            KeyStatus::Disabled => "disabled",
        }
    }

    /// The status named by the API's word; `Invalid` (field `status`) otherwise.
    pub fn parse(word: &str) -> Result<KeyStatus> {
        KeyStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == word)
            .ok_or_else(|| {
                crate::invalid(
                    "status",
                    "must be one of active, expiring, expired, disabled",
                )
            })
    }
}

/// A team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Team {
    /// `team_…`
    pub id: String,
    /// Display name.
    pub name: String,
    /// Creation time in Unix ms.
    pub created_at: i64,
}

/// A project inside a team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    /// `proj_…`
    pub id: String,
    /// The owning team.
    pub team_id: String,
    /// Display name.
    pub name: String,
    /// Creation time in Unix ms.
    pub created_at: i64,
}

/// A dashboard user.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// `user_…`
    pub id: String,
    /// Email address, stored lower-cased.
    pub email: String,
    /// Argon2id hash in PHC string format; empty for an invited user who has not chosen a
    /// password yet (no password matches it).
    pub password_hash: String,
    /// Creation time in Unix ms.
    pub created_at: i64,
    /// A deployment administrator (may create teams).
    #[serde(default)]
    pub admin: bool,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// A member of a team, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// `user_…`
    pub user_id: String,
    /// Their email address.
    pub email: String,
    /// Their role in the team.
    pub role: Role,
    /// When they joined the team (Unix ms; for memberships older than this field, when the
    /// account was made).
    pub added_at: i64,
}

/// A membership as stored in the `members` tree: the role and when it was granted. Records
/// written before `added_at` existed hold the role alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum StoredMembership {
    /// Role and time.
    #[serde(rename_all = "camelCase")]
    Full {
        /// The role.
        role: Role,
        /// When it was granted.
        added_at: i64,
    },
    /// The role alone (older records).
    Legacy(Role),
}

impl StoredMembership {
    pub(crate) fn role(self) -> Role {
        match self {
            StoredMembership::Full { role, .. } | StoredMembership::Legacy(role) => role,
        }
    }

    pub(crate) fn added_at(self) -> Option<i64> {
        match self {
            StoredMembership::Full { added_at, .. } => Some(added_at),
            StoredMembership::Legacy(_) => None,
        }
    }
}

/// A user's role in a team.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May manage keys and the team's policy.
    Owner,
    /// May manage keys.
    Member,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "owner" => Ok(Role::Owner),
            "member" => Ok(Role::Member),
            other => Err(format!("unknown role {other:?}: expected owner or member")),
        }
    }
}

impl Role {
    /// The role's name as used in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Member => "member",
        }
    }
}

/// A dashboard session. Stored under the SHA-256 of its token, never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// The signed-in user.
    pub user_id: String,
    /// Creation time in Unix ms (for the absolute expiry).
    pub created_at: i64,
    /// Last use in Unix ms (for the idle expiry).
    pub last_seen_at: i64,
}

/// Metadata of a policy plugin uploaded by a team; the bytes are stored by SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TeamPolicy {
    /// The team the policy applies to.
    pub team_id: String,
    /// Hex SHA-256 of the component bytes.
    pub sha256: String,
    /// Size of the component in bytes.
    pub size: u64,
    /// Upload time in Unix ms.
    pub uploaded_at: i64,
    /// Who uploaded it (a user id, or `cli`).
    pub uploaded_by: String,
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// Monotonic sequence number.
    pub seq: u64,
    /// When, in Unix ms.
    pub at: i64,
    /// The team concerned, if any.
    pub team_id: Option<String>,
    /// Who did it: a user id, `cli`, or `system`.
    pub actor: String,
    /// What happened, e.g. `key.created`.
    pub action: String,
    /// The id of the object acted on.
    pub target: String,
    /// The client address the change came from (`None` for offline commands and for events
    /// recorded before addresses were).
    #[serde(default)]
    pub source: Option<String>,
    /// What changed, beyond the action and target: a JSON object (a rotation's new key and
    /// grace period, a change's new values, the object's name at the time). Never a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_V1];
    // Serialising these plain structs to JSON cannot fail (no maps with non-string keys).
    serde_json::to_writer(&mut out, value).expect("record serialises");
    out
}

pub(crate) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    match bytes.split_first() {
        Some((&FORMAT_V1, json)) => serde_json::from_slice(json).map_err(|e| Error::Corruption {
            what: format!("{what}: {e}"),
        }),
        Some((other, _)) => Err(Error::Corruption {
            what: format!("{what}: unknown record format {other}"),
        }),
        None => Err(Error::Corruption {
            what: format!("{what}: empty record"),
        }),
    }
}

pub(crate) fn decode_str(what: &str, bytes: &[u8]) -> Result<String> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| Error::Corruption {
            what: format!("{what}: not UTF-8"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_and_garbage_records_are_corruption_not_panics() {
        let team = Team {
            id: "team_1".into(),
            name: "A".into(),
            created_at: 1,
        };
        let bytes = encode(&team);
        assert_eq!(decode::<Team>("team", &bytes).expect("decodes"), team);
        for cut in 0..bytes.len() {
            let got = decode::<Team>("team", &bytes[..cut]);
            assert!(
                matches!(got, Err(Error::Corruption { .. })),
                "cut at {cut}: {got:?}"
            );
        }
        assert!(matches!(
            decode::<Team>("team", &[9, b'{', b'}']),
            Err(Error::Corruption { .. })
        ));
        assert!(matches!(
            decode::<Team>("team", &[1, 0xff, 0xfe]),
            Err(Error::Corruption { .. })
        ));
        assert!(matches!(
            decode_str("id", &[0xff]),
            Err(Error::Corruption { .. })
        ));
    }

    #[test]
    fn user_debug_hides_the_password_hash() {
        let user = User {
            id: "user_1".into(),
            email: "a@b.c".into(),
            password_hash: "$argon2id$secret".into(),
            created_at: 0,
            admin: false,
        };
        assert!(!format!("{user:?}").contains("argon2id"));
    }
}
