//! What a service can answer instead of a value. Each variant is a kind of outcome, not a
//! status code: `server::respond` maps them to HTTP, the CLI prints them.

/// A service's failure.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A field of the request is invalid; nothing changed. `field` is the API's name for it.
    #[error("{message}")]
    Invalid {
        /// The field, as the API and the CLI name it (`expiresAt`, `scopes`).
        field: &'static str,
        /// A sentence for people.
        message: String,
    },
    /// The object does not exist, or the caller may not know that it does. The id is for the
    /// operator's command line; the HTTP answer names only the kind.
    #[error("{kind} {id} not found")]
    NotFound {
        /// `team`, `key`, `project`, …
        kind: &'static str,
        /// What was looked up.
        id: String,
    },
    /// An object with that id or email exists already.
    #[error("{kind} {id} already exists")]
    Conflict {
        /// `team`, `user`, …
        kind: &'static str,
        /// The conflicting id or email.
        id: String,
    },
    /// The change would break a rule of the data as a whole: `code` is stable (`last_owner`,
    /// `project_in_use`).
    #[error("{message}")]
    Refused {
        /// A stable snake_case code.
        code: &'static str,
        /// A sentence for people.
        message: String,
    },
    /// An invitation token that is unknown, used or expired.
    #[error("the invitation is unknown, used or expired; ask for a new one")]
    InvalidInvitation,
    /// Only a deployment administrator may do this; completes "only administrators can …".
    #[error("only administrators can {0}")]
    AdminsOnly(&'static str),
    /// The caller is known but may not do this; completes "only team owners can …".
    #[error("only team owners can {0}")]
    OwnersOnly(&'static str),
    /// No valid session, or a wrong email or password.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// Too many failed attempts; retry after this many seconds.
    #[error("too many failed attempts; try again later")]
    RateLimited {
        /// Seconds until a retry may succeed.
        retry_after: u64,
    },
    /// An uploaded policy was refused (it does not compile, export the world, or answer).
    #[error("{0}")]
    InvalidPolicy(String),
    /// The body is larger than the limit (in bytes) for it.
    #[error("the plugin is larger than the {0}-byte limit")]
    TooLarge(usize),
    /// The store failed.
    #[error(transparent)]
    Store(billstack_keystore::Error),
    /// Something else inside failed; the detail is for the log only.
    #[error("{0}")]
    Internal(String),
}

/// A service's result.
pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    /// No such `kind` with this id (or not visible to the caller).
    pub fn not_found(kind: &'static str, id: &str) -> AppError {
        AppError::NotFound {
            kind,
            id: id.to_owned(),
        }
    }

    /// A field that failed validation.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> AppError {
        AppError::Invalid {
            field,
            message: message.into(),
        }
    }
}

/// The API's (camelCase) name for a field the keystore names in snake_case.
pub fn api_field(store_field: &'static str) -> &'static str {
    match store_field {
        "expires_at" => "expiresAt",
        "key_id" => "keyId",
        "project_id" => "projectId",
        "rate_limit" => "rateLimit",
        "grace_seconds" => "gracePeriodSeconds",
        "data_dir" => "dataDir",
        "new_password" => "newPassword",
        other => other,
    }
}

impl From<billstack_keystore::Error> for AppError {
    fn from(e: billstack_keystore::Error) -> AppError {
        use billstack_keystore::Error as E;
        match e {
            E::Invalid { field, message } => {
                let field = api_field(field);
                AppError::Invalid {
                    field,
                    message: format!("invalid {field}: {message}"),
                }
            }
            E::NotFound { kind, id } => AppError::NotFound { kind, id },
            E::AlreadyExists { kind, id } => AppError::Conflict { kind, id },
            E::Conflict { reason, message } => AppError::Refused {
                code: reason,
                message,
            },
            other => AppError::Store(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_name_the_api_field() {
        let e = AppError::from(billstack_keystore::Error::Invalid {
            field: "expires_at",
            message: "must be in the future".into(),
        });
        match e {
            AppError::Invalid { field, message } => {
                assert_eq!(field, "expiresAt");
                assert_eq!(message, "invalid expiresAt: must be in the future");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            AppError::from(billstack_keystore::Error::NotFound {
                kind: "key",
                id: "key_1".into()
            }),
            AppError::NotFound { kind: "key", .. }
        ));
    }
}
