//! JSON shapes shared by the command line and the HTTP API (camelCase, RFC 3339 times).

use billstack_keystore::{KeyRecord, RateLimit, clock};
use serde::Serialize;
use utoipa::ToSchema;

/// A key's request budget: at most `limit` requests per `windowSeconds`, the window starting
/// with its first request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitView {
    /// Requests allowed per window.
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub limit: u32,
    /// The window's length in seconds.
    #[schema(minimum = 1, maximum = 86_400)]
    pub window_seconds: u32,
}

impl From<RateLimit> for RateLimitView {
    fn from(r: RateLimit) -> Self {
        RateLimitView {
            limit: r.limit,
            window_seconds: r.window_seconds,
        }
    }
}

impl From<RateLimitView> for RateLimit {
    fn from(r: RateLimitView) -> Self {
        RateLimit {
            limit: r.limit,
            window_seconds: r.window_seconds,
        }
    }
}

/// A key as clients see it: metadata only, never a hash or a raw key.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    /// `key_…`
    pub id: String,
    /// Label.
    pub name: String,
    /// First 7 characters of the raw key.
    pub prefix: String,
    /// Project restriction, or null.
    #[schema(required)]
    pub project_id: Option<String>,
    /// Scopes; empty means full access.
    pub scopes: Vec<String>,
    /// Expiry (RFC 3339), or null.
    #[schema(required)]
    pub expires_at: Option<String>,
    /// Creation time.
    pub created_at: String,
    /// Last use (listing only; null when never used).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, nullable)]
    pub last_used_at: Option<Option<String>>,
    /// The request budget, present only on keys that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub rate_limit: Option<RateLimitView>,
    /// `active`; `expiring` (in a rotation's grace period, or expiring within 7 days);
    /// `expired`; `disabled` (refused until switched on again).
    #[schema(pattern = "^(active|expiring|expired|disabled)$")]
    pub status: &'static str,
    /// After a rotation: the key that replaced this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub rotated_to: Option<String>,
    /// Who created it: an account, or the operator's command line. Absent for keys created
    /// before this was recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub created_by: Option<CreatedByView>,
}

/// Who created a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum CreatedByView {
    /// A team member (or an administrator), by id and email.
    Account {
        /// `user_…`
        #[serde(rename = "userId")]
        user_id: String,
        /// The account's email (null if the account no longer exists).
        #[schema(required)]
        email: Option<String>,
    },
    /// The operator, with `billstack key create` (offline or through the control socket).
    Cli {
        /// Always `true`.
        cli: bool,
    },
}

impl CreatedByView {
    /// The view of a recorded creator (`user_…` or an operator's id such as `cli`), given a
    /// way to find an account's email.
    pub fn of(actor: &str, email_of: impl FnOnce(&str) -> Option<String>) -> CreatedByView {
        if actor.starts_with("user_") {
            CreatedByView::Account {
                user_id: actor.to_owned(),
                email: email_of(actor),
            }
        } else {
            CreatedByView::Cli { cli: true }
        }
    }
}

/// A key's status at `now_ms` (see [`KeyView::status`]).
pub fn key_status(k: &KeyRecord, now_ms: i64) -> &'static str {
    k.status(now_ms).as_str()
}

impl KeyView {
    /// The create-response shape (no `lastUsedAt`), as of `now_ms`.
    pub fn created(k: &KeyRecord, now_ms: i64) -> KeyView {
        KeyView {
            id: k.id.clone(),
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            project_id: k.project_id.clone(),
            scopes: k.scopes.clone(),
            expires_at: k.expires_at.map(clock::format_rfc3339),
            created_at: clock::format_rfc3339(k.created_at),
            last_used_at: None,
            rate_limit: k.rate_limit.map(RateLimitView::from),
            status: key_status(k, now_ms),
            rotated_to: k.rotated_to.clone(),
            created_by: None,
        }
    }

    /// The same view, naming its creator.
    pub fn by(self, created_by: Option<CreatedByView>) -> KeyView {
        KeyView { created_by, ..self }
    }

    /// The listing shape (with `lastUsedAt`, null when never used), as of `now_ms`.
    pub fn listed(k: &KeyRecord, now_ms: i64) -> KeyView {
        KeyView {
            last_used_at: Some(k.last_used_at.map(clock::format_rfc3339)),
            ..KeyView::created(k, now_ms)
        }
    }
}

/// `{"key": …, "rawKey": …}`: the one and only time the raw key is shown.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedKey {
    /// Metadata.
    pub key: KeyView,
    /// The secret.
    pub raw_key: String,
}

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}
