//! JSON shapes shared by the command line and the HTTP API (camelCase, RFC 3339 times).

use billstack_keystore::{KeyRecord, RateLimit, clock};
use serde::Serialize;

/// A key as clients see it: metadata only, never a hash or a raw key.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    /// `key_…`
    pub id: String,
    /// Label.
    pub name: String,
    /// First 7 characters of the raw key.
    pub prefix: String,
    /// Project restriction, or null.
    pub project_id: Option<String>,
    /// Scopes; empty means full access.
    pub scopes: Vec<String>,
    /// Expiry, or null.
    pub expires_at: Option<String>,
    /// Creation time.
    pub created_at: String,
    /// Last use (listing only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<Option<String>>,
    /// The request budget, present only on keys that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

impl KeyView {
    /// The create-response shape (no `lastUsedAt`).
    pub fn created(k: &KeyRecord) -> KeyView {
        KeyView {
            id: k.id.clone(),
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            project_id: k.project_id.clone(),
            scopes: k.scopes.clone(),
            expires_at: k.expires_at.map(clock::format_rfc3339),
            created_at: clock::format_rfc3339(k.created_at),
            last_used_at: None,
            rate_limit: k.rate_limit,
        }
    }

    /// The listing shape (with `lastUsedAt`, null when never used).
    pub fn listed(k: &KeyRecord) -> KeyView {
        KeyView {
            last_used_at: Some(k.last_used_at.map(clock::format_rfc3339)),
            ..KeyView::created(k)
        }
    }
}

/// `{"key": …, "rawKey": …}`: the one and only time the raw key is shown.
#[derive(Serialize)]
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
