//! Storage for BillStack Keys, on an embedded sled database.
//!
//! Holds API keys (only their SHA-256), teams, projects, users (Argon2id password hashes),
//! dashboard sessions (hashed tokens), per-team policy plugins and an audit log. Every write
//! that returns `Ok` has been flushed to disk, so it survives a crash of the process.
//!
//! This crate deliberately knows nothing of HTTP or WebAssembly: which scopes exist is the
//! policy plugin's business, so callers check scope names against the active catalogue
//! before calling [`Store::create_key`]; this crate only checks their form.

pub mod apikey;
mod audit;
mod backup;
mod blobs;
pub mod clock;
mod group_flush;
pub mod ids;
pub mod pg;
mod records;
pub mod storage;
mod store;
#[cfg(test)]
mod store_tests;

pub use audit::{ANONYMOUS, Actor, AuditPage, MAX_AUDIT_PAGE};
pub use backup::{BackupSummary, verify_backup};
pub use records::{
    AuditEvent, EXPIRING_WITHIN_MS, KeyRecord, KeyStatus, LISTED_AFTER_EXPIRY_MS, Member, Project,
    RateLimit, Role, Session, Team, TeamPolicy, User,
};
pub use storage::{
    AuditStore, KeyStore, MemberStore, PolicyStore, SessionStore, Storage, TeamStore, UsageStore,
    UserStore,
};
pub use store::{
    DEFAULT_KEY_PAGE, DailyUsage, INVITATION_LIFETIME_MS, Invited, KeyChanges, KeyCursor, KeyPage,
    KeyQuery, KeyUsage, MAX_KEY_PAGE, MAX_KEY_SEARCH_LEN, MAX_KEYS_EXAMINED, MAX_PASSWORD_LEN,
    MAX_ROTATION_GRACE_SECONDS, MIN_PASSWORD_LEN, NewApiKey, NewUser, Rotated, Store, StoreOptions,
};

use std::path::PathBuf;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another process (usually a running `billstack serve`) has the data directory open.
    #[error(
        "the data directory {0} is in use by another billstack process (is the server running?); \
         stop it or use the HTTP API"
    )]
    Locked(PathBuf),
    /// A filesystem error outside sled.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// sled reported an error.
    #[error("storage error: {0}")]
    Storage(#[from] sled::Error),
    /// A stored record could not be decoded.
    #[error("corrupt record: {what}")]
    Corruption {
        /// Which record, and why.
        what: String,
    },
    /// The object does not exist (or is not visible to the caller).
    #[error("{kind} {id} not found")]
    NotFound {
        /// `team`, `project`, `key`, `user`, …
        kind: &'static str,
        /// The id that was looked up.
        id: String,
    },
    /// An object with that id or email already exists.
    #[error("{kind} {id} already exists")]
    AlreadyExists {
        /// `team`, `project`, `user`, …
        kind: &'static str,
        /// The conflicting id or email.
        id: String,
    },
    /// Input failed validation; nothing was written.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The offending field or argument, in snake_case as in this crate (`expires_at`,
        /// `rate_limit`); callers translate it into their own vocabulary.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The change would break a rule of the data as a whole (`last_owner`: a team keeps an
    /// owner; `project_in_use`: a project with keys stays); nothing was written.
    #[error("{message}")]
    Conflict {
        /// A stable snake_case reason.
        reason: &'static str,
        /// What is in the way.
        message: String,
    },
    /// Argon2 failed to hash a password.
    #[error("password hashing failed: {0}")]
    PasswordHash(String),
    /// The database did not answer, or failed (PostgreSQL): nothing was written; retry later.
    /// The message never carries a password.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The database's schema was migrated by a newer release than this one.
    #[error(
        "the database schema is at version {found}, newer than this release knows ({known}); \
         run the newer release, or restore a backup into a new database"
    )]
    SchemaTooNew {
        /// The newest migration found in the database.
        found: i64,
        /// The newest migration this binary has.
        known: i64,
    },
}

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Error {
    Error::Invalid {
        field,
        message: message.into(),
    }
}

/// Maximum length of a key, team, project name (in characters).
pub const MAX_NAME_CHARS: usize = 100;
/// Maximum number of scopes on one key.
pub const MAX_SCOPES: usize = 64;
/// Maximum length of a scope name in bytes.
pub const MAX_SCOPE_LEN: usize = 64;

/// Checks a display name: trimmed, 1–100 characters, no control characters.
pub fn validate_name(field: &'static str, name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(invalid(
            field,
            format!("must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(name.to_string())
}

/// Whether `scope` has the form of a scope name: lowercase ASCII letters, digits, `_` and `-`,
/// in parts separated by single `:`, starting with a letter, at most 64 bytes.
pub fn is_valid_scope_name(scope: &str) -> bool {
    scope.len() <= MAX_SCOPE_LEN
        && scope.split(':').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        })
        && scope.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_names() {
        for ok in ["customers:read", "a", "invoices:line-items:write", "x_1"] {
            assert!(is_valid_scope_name(ok), "{ok}");
        }
        for bad in [
            "",
            ":",
            "customers:",
            ":read",
            "Customers:read",
            "a b",
            "1abc",
            "a::b",
        ] {
            assert!(!is_valid_scope_name(bad), "{bad}");
        }
        assert!(is_valid_scope_name(&"a".repeat(MAX_SCOPE_LEN)));
        assert!(!is_valid_scope_name(&"a".repeat(MAX_SCOPE_LEN + 1)));
    }

    #[test]
    fn names() {
        assert_eq!(
            validate_name("name", "  ci deploy ").expect("ok"),
            "ci deploy"
        );
        assert!(validate_name("name", "   ").is_err());
        assert!(validate_name("name", &"é".repeat(MAX_NAME_CHARS)).is_ok());
        assert!(validate_name("name", &"é".repeat(MAX_NAME_CHARS + 1)).is_err());
        assert!(validate_name("name", "a\nb").is_err());
    }
}
