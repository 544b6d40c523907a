//! The one decision function behind every front door (forward auth, reverse proxy, JSON
//! verify): DESIGN.md § Decision order. Host invariants first — credential, key, tenant,
//! project — then the team's policy plugin. No plugin answer can get past a host check.

use std::sync::Arc;

use billstack_keystore::{KeyRecord, RateLimit, Storage, apikey};

use crate::policy::{PluginError, PolicyDecision, PolicyRequest, PolicySet, ScopePolicy};

mod target;

pub use target::{MAX_TARGET_LEN, Target, TargetError, parse_target};

/// Longest HTTP method accepted.
pub const MAX_METHOD_LEN: usize = 16;

/// Why a request was refused. Each kind has one error code (also its metrics label); its HTTP
/// status and JSON-verify code are the HTTP layer's business (`server::respond`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyKind {
    /// No credential at all.
    MissingCredential,
    /// Malformed, unknown or revoked key.
    InvalidKey,
    /// The key has expired.
    ExpiredKey,
    /// The key is switched off (refused like a revoked one until switched on).
    DisabledKey,
    /// The method or path is malformed (traversal, encoded slash, ...).
    InvalidRequest,
    /// The path names another team.
    TeamMismatch,
    /// The path names a project the key may not use.
    ProjectMismatch,
    /// The policy requires a scope the key lacks.
    InsufficientScope,
    /// The policy (or the host, for paths outside the team API) does not know the route.
    UnknownRoute,
    /// The plugin failed: fail closed.
    PolicyError,
    /// Storage failed: fail closed.
    Internal,
    /// The store (PostgreSQL) did not answer for a key not in memory: fail closed, retry soon.
    StoreUnavailable,
    /// Over the key's request budget, or too many failed keys from the client's address.
    RateLimited,
}

impl DenyKind {
    /// The stable snake_case code: the `code` of JSON error bodies and the metrics outcome.
    pub fn code(self) -> &'static str {
        match self {
            DenyKind::MissingCredential => "missing_credential",
            DenyKind::InvalidKey => "invalid_key",
            DenyKind::ExpiredKey => "expired_key",
            DenyKind::DisabledKey => "disabled_key",
            DenyKind::InvalidRequest => "invalid_request",
            DenyKind::TeamMismatch => "team_mismatch",
            DenyKind::ProjectMismatch => "project_mismatch",
            DenyKind::InsufficientScope => "insufficient_scope",
            DenyKind::UnknownRoute => "unknown_route",
            DenyKind::PolicyError => "policy_error",
            DenyKind::Internal => "internal_error",
            DenyKind::StoreUnavailable => "store_unavailable",
            DenyKind::RateLimited => "rate_limited",
        }
    }
}

/// The identity of an authenticated key, as sent upstream in `X-BillStack-*` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `key_…`
    pub key_id: String,
    /// The key's team.
    pub team_id: String,
    /// The key's project restriction, if any.
    pub project_id: Option<String>,
    /// Effective scopes under the team's active policy.
    pub scopes: Vec<String>,
    /// The key's request budget, if it has one (enforced by the front doors).
    pub rate_limit: Option<RateLimit>,
}

/// A refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// Which rule refused.
    pub kind: DenyKind,
    /// A sentence for the caller; never contains the key or internal details.
    pub message: String,
    /// For `insufficient_scope`: the scope that would have allowed it.
    pub required_scope: Option<String>,
    /// The key, when it was authenticated before the refusal.
    pub identity: Option<Identity>,
    /// Whether any credential was presented (for `WWW-Authenticate: error="invalid_token"`).
    pub credential_sent: bool,
    /// For `policy_error`/`internal_error`: the cause, for logs and metrics only.
    pub cause: Option<DenyCause>,
    /// For a refusal by the policy: the plugin's deny code (snake_case, validated by the
    /// runtime): its own, such as `read_only`, or the conventional one of `kind`.
    pub policy_code: Option<String>,
}

/// Why a request failed closed: for logs and metrics, never for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyCause {
    /// The policy plugin failed (a trap, a limit, an invalid answer, not loaded, …).
    Plugin(PluginError),
    /// The host failed (storage, a task that did not finish).
    Internal(String),
}

impl DenyCause {
    /// A short, bounded label for metrics: the plugin error's cause, or `internal`.
    pub fn label(&self) -> &'static str {
        match self {
            DenyCause::Plugin(e) => e.cause(),
            DenyCause::Internal(_) => "internal",
        }
    }
}

impl std::fmt::Display for DenyCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DenyCause::Plugin(e) => write!(f, "{}: {e}", e.cause()),
            DenyCause::Internal(detail) => f.write_str(detail),
        }
    }
}

/// The outcome of a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let the request through, with this identity.
    Allow(Identity),
    /// Refuse it.
    Deny(Denied),
}

impl Decision {
    /// The identity, if the key was authenticated (allowed or not).
    pub fn identity(&self) -> Option<&Identity> {
        match self {
            Decision::Allow(id) => Some(id),
            Decision::Deny(d) => d.identity.as_ref(),
        }
    }
}

impl Denied {
    /// A refusal of `kind` with no identity, scope or cause yet (set the fields to add them).
    pub fn new(kind: DenyKind, message: impl Into<String>, credential_sent: bool) -> Denied {
        Denied {
            kind,
            message: message.into(),
            required_scope: None,
            identity: None,
            credential_sent,
            cause: None,
            policy_code: None,
        }
    }

    /// The code the caller sees: the plugin's own deny code for a refusal by the policy
    /// (`read_only`, `invoices_frozen`), else the stable code of `kind`.
    pub fn code(&self) -> &str {
        self.policy_code.as_deref().unwrap_or(self.kind.code())
    }
}

/// A fail-closed refusal for a failure of the host (storage, say): `cause` is for logs and
/// metrics only, never for the caller.
pub fn internal(cause: impl Into<String>) -> Decision {
    Decision::Deny(Denied {
        cause: Some(DenyCause::Internal(cause.into())),
        ..Denied::new(DenyKind::Internal, "internal error", true)
    })
}

/// A refusal of `kind` for a request that presented a credential, before any key was known.
pub fn deny(kind: DenyKind, message: impl Into<String>, credential_sent: bool) -> Decision {
    Decision::Deny(Denied::new(kind, message, credential_sent))
}

/// The credential a front door received.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    /// The value of an `Authorization` header, if there was one.
    AuthorizationHeader(Option<&'a str>),
    /// A raw key given directly (JSON verify).
    RawKey(&'a str),
}

impl<'a> Credential<'a> {
    /// The presented token, or `None` when nothing usable was sent. `Some("")` means a
    /// credential was sent but is empty or not a bearer token.
    pub fn token(self) -> Option<&'a str> {
        match self {
            Credential::RawKey(k) => Some(k),
            Credential::AuthorizationHeader(None) => None,
            Credential::AuthorizationHeader(Some(value)) => {
                let value = value.trim();
                match value.split_once(' ') {
                    Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                        Some(token.trim())
                    }
                    _ => Some(""),
                }
            }
        }
    }
}

fn valid_method(method: &str) -> bool {
    !method.is_empty()
        && method.len() <= MAX_METHOD_LEN
        && method.bytes().all(|b| b.is_ascii_uppercase())
}

/// Makes decisions against a store and a set of policies, at one instant.
pub struct Decider<'a> {
    /// Where keys are looked up.
    pub store: &'a dyn Storage,
    /// The active policies.
    pub policies: &'a PolicySet,
    /// "Now", in Unix ms, for expiry: one instant per request.
    pub now_ms: i64,
}

impl Decider<'_> {
    /// Decides one request: `method` and `target` (path and query) of the original request.
    pub fn decide(&self, credential: Credential<'_>, method: &str, target: &str) -> Decision {
        let key = match authenticate(self.store, credential, self.now_ms) {
            Ok(key) => key,
            Err(denied) => return denied,
        };
        let (policy, _) = self.policies.for_team(&key.team_id);
        decide_for_key(&key, policy.as_policy(), method, target)
    }

    /// The same decision as [`Decider::decide`] when it can be made without blocking: the
    /// credential is refused before any storage access, or the key is in the store's memory
    /// cache and its team uses the deployment default policy (operator-trusted, never queued,
    /// bounded by the plugin deadline). `None` means the decision needs storage or a team's
    /// own plugin (which may queue behind that team's concurrency bound): call
    /// [`Decider::decide`] where blocking is allowed.
    pub fn decide_without_blocking(
        &self,
        credential: Credential<'_>,
        method: &str,
        target: &str,
    ) -> Option<Decision> {
        let token = match check_credential(credential) {
            Ok(token) => token,
            Err(refused) => return Some(refused),
        };
        let key = self.store.cached_key(token)?;
        let (policy, source) = self.policies.for_team(&key.team_id);
        if source != crate::policy::PolicySource::Default {
            return None;
        }
        Some(match check_expiry(key, self.now_ms) {
            Ok(key) => decide_for_key(&key, policy.as_policy(), method, target),
            Err(refused) => refused,
        })
    }
}

/// Step 1: a well-formed bearer credential (no storage access).
#[allow(clippy::result_large_err)]
fn check_credential(credential: Credential<'_>) -> Result<&str, Decision> {
    let Some(token) = credential.token() else {
        return Err(deny(
            DenyKind::MissingCredential,
            "an API key is required (Authorization: Bearer bs_…)",
            false,
        ));
    };
    if let Err(why) = apikey::check_format(token) {
        return Err(deny(
            DenyKind::InvalidKey,
            format!("invalid API key: {why}"),
            true,
        ));
    }
    Ok(token)
}

#[allow(clippy::result_large_err)]
fn check_expiry(key: Arc<KeyRecord>, now_ms: i64) -> Result<Arc<KeyRecord>, Decision> {
    if key.disabled {
        return Err(deny(DenyKind::DisabledKey, "the API key is disabled", true));
    }
    if key.is_expired(now_ms) {
        return Err(deny(DenyKind::ExpiredKey, "the API key has expired", true));
    }
    Ok(key)
}

/// Steps 1 and 2: a well-formed bearer credential naming an active, unexpired key.
// The refusal is the decision itself; boxing it would allocate on every refused request.
#[allow(clippy::result_large_err)]
pub fn authenticate(
    store: &dyn Storage,
    credential: Credential<'_>,
    now_ms: i64,
) -> Result<Arc<KeyRecord>, Decision> {
    let token = check_credential(credential)?;
    let key = match store.lookup_key(token) {
        Ok(Some(key)) => key,
        Ok(None) => {
            return Err(deny(
                DenyKind::InvalidKey,
                "invalid API key: unknown or revoked",
                true,
            ));
        }
        Err(billstack_keystore::Error::Unavailable(detail)) => {
            return Err(Decision::Deny(Denied {
                cause: Some(DenyCause::Internal(detail)),
                ..Denied::new(
                    DenyKind::StoreUnavailable,
                    "the key store is not answering; retry shortly",
                    true,
                )
            }));
        }
        Err(e) => return Err(internal(e.to_string())),
    };
    check_expiry(key, now_ms)
}

/// The key's effective scopes under `policy`: all of the catalogue for a full-access key,
/// otherwise the key's scopes that the policy defines.
pub fn effective_scopes(key: &KeyRecord, policy: &dyn ScopePolicy) -> Vec<String> {
    let catalogue = policy.scope_names();
    if key.scopes.is_empty() {
        catalogue.to_vec()
    } else {
        key.scopes
            .iter()
            .filter(|s| catalogue.contains(s))
            .cloned()
            .collect()
    }
}

/// Steps 3 to 6 for an authenticated key: tenant, project, then the policy plugin.
pub fn decide_for_key(
    key: &KeyRecord,
    policy: &dyn ScopePolicy,
    method: &str,
    target: &str,
) -> Decision {
    let identity = Identity {
        key_id: key.id.clone(),
        team_id: key.team_id.clone(),
        project_id: key.project_id.clone(),
        scopes: effective_scopes(key, policy),
        rate_limit: key.rate_limit,
    };
    let refuse_with_code = |kind: DenyKind,
                            message: String,
                            required_scope: Option<String>,
                            cause: Option<DenyCause>,
                            code: Option<String>| {
        Decision::Deny(Denied {
            kind,
            message,
            required_scope,
            identity: Some(identity.clone()),
            credential_sent: true,
            cause,
            policy_code: code,
        })
    };
    let refuse = |kind: DenyKind,
                  message: String,
                  required_scope: Option<String>,
                  cause: Option<DenyCause>| {
        refuse_with_code(kind, message, required_scope, cause, None)
    };
    if !valid_method(method) {
        return refuse(
            DenyKind::InvalidRequest,
            "the method is not a valid HTTP method".into(),
            None,
            None,
        );
    }
    let target = match parse_target(target) {
        Ok(t) => t,
        Err(TargetError::Invalid(why)) => return refuse(DenyKind::InvalidRequest, why, None, None),
        Err(TargetError::NotTeamApi) => {
            return refuse(
                DenyKind::UnknownRoute,
                "not a route under /api/billstack/teams/{teamId}/projects/{projectId}/".into(),
                None,
                None,
            );
        }
    };
    if target.team_id != key.team_id {
        return refuse(
            DenyKind::TeamMismatch,
            "the API key belongs to another team".into(),
            None,
            None,
        );
    }
    if let Some(project) = &key.project_id
        && target.project_id != project
    {
        return refuse(
            DenyKind::ProjectMismatch,
            "the API key is limited to another project".into(),
            None,
            None,
        );
    }
    let request = PolicyRequest {
        method,
        path: target.path,
        resource: target.resource,
        query: target.query,
        team_id: target.team_id,
        project_id: target.project_id,
        key_id: &key.id,
        key_project_id: key.project_id.as_deref(),
        scopes: &identity.scopes,
    };
    match policy.authorize(&request) {
        Ok(PolicyDecision::Allow) => Decision::Allow(identity),
        // The plugin's status picks the kind (and so the HTTP status, the metrics outcome and
        // the usage reason, all bounded); its own code is what the caller reads.
        Ok(PolicyDecision::Deny {
            status: 404,
            message,
            code,
            ..
        }) => refuse_with_code(DenyKind::UnknownRoute, message, None, None, Some(code)),
        Ok(PolicyDecision::Deny {
            message,
            required_scope,
            code,
            ..
        }) => refuse_with_code(
            DenyKind::InsufficientScope,
            message,
            required_scope,
            None,
            Some(code),
        ),
        Err(e) => refuse(
            DenyKind::PolicyError,
            "the scope policy failed; the request is refused".into(),
            None,
            // "<label>: <detail>", the label being PluginError::cause() for metrics.
            Some(DenyCause::Plugin(e)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn bearer_parsing() {
        assert_eq!(Credential::AuthorizationHeader(None).token(), None);
        assert_eq!(
            Credential::AuthorizationHeader(Some("Bearer bs_x")).token(),
            Some("bs_x")
        );
        assert_eq!(
            Credential::AuthorizationHeader(Some("bearer  bs_x ")).token(),
            Some("bs_x")
        );
        assert_eq!(
            Credential::AuthorizationHeader(Some("Basic abc")).token(),
            Some("")
        );
        assert_eq!(
            Credential::AuthorizationHeader(Some("bs_x")).token(),
            Some("")
        );
        assert_eq!(Credential::RawKey("bs_y").token(), Some("bs_y"));
    }

    #[test]
    fn methods() {
        assert!(valid_method("GET"));
        assert!(valid_method("PATCH"));
        assert!(!valid_method("get"));
        assert!(!valid_method(""));
        assert!(!valid_method("G ET"));
        assert!(!valid_method(&"A".repeat(MAX_METHOD_LEN + 1)));
        assert!(valid_method(&"A".repeat(MAX_METHOD_LEN)));
    }
}
