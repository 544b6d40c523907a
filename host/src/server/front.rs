//! The front doors for SaaS requests over HTTP — forward auth and JSON verify here, the reverse
//! proxy in [`super::proxy`] — each turning its request into one [`VerifyRequest`] for the
//! verify service ([`crate::app::App::verify`]) and its answer into headers and a body.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::client::ClientIp;
use super::respond::{self, ApiError, ApiJson, ErrorBody};
use crate::app::verify::{Budget, Checked, FrontDoor, Presented, VerifyRequest};
use crate::decision::{Decision, DenyKind};

/// How long the proxy waits for the upstream's response headers.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// Where forward auth is served (any method).
pub(super) const FORWARD_AUTH_PATH: &str = "/auth/verify";

/// The `code` of `POST /api/billstack/keys/verify` for a refusal.
pub fn verify_code(kind: DenyKind) -> &'static str {
    match kind {
        DenyKind::MissingCredential
        | DenyKind::InvalidKey
        | DenyKind::Internal
        | DenyKind::StoreUnavailable => "INVALID_KEY",
        DenyKind::ExpiredKey => "EXPIRED",
        DenyKind::DisabledKey => "DISABLED",
        DenyKind::InvalidRequest | DenyKind::UnknownRoute => "UNKNOWN_ROUTE",
        DenyKind::TeamMismatch => "TEAM_MISMATCH",
        DenyKind::ProjectMismatch => "PROJECT_MISMATCH",
        DenyKind::InsufficientScope => "INSUFFICIENT_SCOPE",
        DenyKind::PolicyError => "POLICY_ERROR",
        DenyKind::RateLimited => "RATE_LIMITED",
    }
}

/// Adds the budget's headers: `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`
/// (for a key with a budget, and for a throttled address), and, when `retry_after` is asked
/// for (a 429), `Retry-After` whenever the request was refused for the budget.
pub(super) fn budget_headers(headers: &mut HeaderMap, budget: Option<&Budget>, retry_after: bool) {
    let mut put = |name: &'static str, value: u64| {
        headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
    };
    let Some(budget) = budget else {
        return;
    };
    let (limit, remaining, reset) = budget.headers();
    put("ratelimit-limit", u64::from(limit));
    put("ratelimit-remaining", u64::from(remaining));
    put("ratelimit-reset", reset);
    if retry_after && let Some(seconds) = budget.retry_after() {
        put("retry-after", seconds);
    }
}

pub(super) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(super) fn identity_headers(headers: &mut HeaderMap, decision: &Decision) {
    let Some(id) = decision.identity() else {
        return;
    };
    let mut put = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    put("x-billstack-key-id", &id.key_id);
    put("x-billstack-team-id", &id.team_id);
    if let Some(p) = &id.project_id {
        put("x-billstack-project-id", p);
    }
    put("x-billstack-scopes", &id.scopes.join(","));
}

/// `/auth/verify` (any method): forward auth for nginx, Traefik, Caddy and Envoy.
#[utoipa::path(method(get, post, put, patch, delete, head, options, trace), path = "/auth/verify", operation_id = "forwardAuth", tag = "decisions", security(("bearer" = [])),
    description = "Forward auth for nginx `auth_request`, Traefik, Caddy and Envoy: any method; the original request is described by the headers.",
    params(
        ("X-Forwarded-Method" = String, Header, pattern = "^[A-Z]{1,16}$",
            description = "The original method (or X-Original-Method)"),
        ("X-Forwarded-Uri" = String, Header,
            pattern = "^(/[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,100}){1,20}/?([?][A-Za-z0-9._~=&-]{0,200})?$",
            description = "The original path and query (or X-Original-URI)")),
    responses(
        (status = 200, description = "Allowed; identity in X-BillStack-Key-Id, -Team-Id, -Project-Id, -Scopes"),
        (status = 400, description = "Missing or malformed original request", body = ErrorBody), (status = 401, description = "No, bad, revoked or expired key", body = ErrorBody),
        (status = 403, description = "Another team or project, or a missing scope", body = ErrorBody), (status = 404, description = "Unknown route", body = ErrorBody),
        (status = 429, description = "Over the key's budget, or the address is throttled; see Retry-After", body = ErrorBody),
        (status = 503, description = "The decision could not be made (fails closed)", body = ErrorBody)))]
pub(super) async fn forward_auth(
    State(state): State<Arc<AppState>>,
    ClientIp(client): ClientIp,
    request: Request,
) -> Response {
    let headers = request.headers();
    let original = header_str(headers, "x-forwarded-method")
        .zip(header_str(headers, "x-forwarded-uri"))
        .or_else(|| {
            header_str(headers, "x-original-method").zip(header_str(headers, "x-original-uri"))
        });
    let Some((method, uri)) = original else {
        return ApiError::bad_request(
            "missing_original_request",
            "send X-Forwarded-Method and X-Forwarded-Uri (or X-Original-Method and X-Original-URI)",
        )
        .into_response();
    };
    // Envoy and some proxies send an absolute URI; decide on its path and query.
    let target = match uri.parse::<Uri>() {
        Ok(u) if u.scheme().is_some() => u
            .path_and_query()
            .map_or("/".to_string(), |pq| pq.as_str().to_string()),
        _ => uri.to_string(),
    };
    let authorization = header_str(headers, "authorization").map(str::to_owned);
    let Checked { decision, budget } = state
        .app
        .verify(VerifyRequest {
            door: FrontDoor::ForwardAuth,
            client,
            credential: Presented::AuthorizationHeader(authorization),
            method: method.to_string(),
            target,
        })
        .await;
    let mut response = match &decision {
        Decision::Allow(_) => {
            let mut response = respond::ok_empty();
            identity_headers(response.headers_mut(), &decision);
            response
        }
        Decision::Deny(d) => with_error_header(d.into_response()).await,
    };
    budget_headers(response.headers_mut(), budget.as_ref(), true);
    response
}

/// The header that repeats a forward-auth refusal's JSON body, for proxies that pass a
/// subrequest's headers but not its body (nginx `auth_request`; see examples/nginx).
pub(super) const ERROR_HEADER: &str = "x-billstack-error";

/// Copies a refusal's JSON body into [`ERROR_HEADER`], with every non-ASCII character
/// escaped (`\uXXXX`), so it is a valid header value and still the same JSON.
async fn with_error_header(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return ApiError::internal("a refusal's body could not be read").into_response();
    };
    let text = String::from_utf8_lossy(&bytes);
    if let Ok(value) = HeaderValue::from_str(&ascii_json(&text)) {
        parts
            .headers
            .insert(HeaderName::from_static(ERROR_HEADER), value);
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// JSON text with every non-ASCII character written as `\uXXXX` (UTF-16, as JSON escapes
/// are): the same value, in bytes a header may carry. Non-ASCII only occurs inside strings.
fn ascii_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// The answer of `POST /api/billstack/keys/verify`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifyView {
    /// Whether the request would be allowed.
    pub valid: bool,
    /// `VALID`, `INVALID_KEY`, `EXPIRED`, `DISABLED`, `TEAM_MISMATCH`, `PROJECT_MISMATCH`,
    /// `INSUFFICIENT_SCOPE`, `UNKNOWN_ROUTE`, `POLICY_ERROR` or `RATE_LIMITED`.
    pub code: String,
    /// For a refusal by the policy: its deny code, the one the HTTP doors give in their error
    /// body: the plugin's own (`read_only`, `invoices_frozen`) or the conventional
    /// `insufficient_scope`/`unknown_route`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub denial_code: Option<String>,
    /// For `INSUFFICIENT_SCOPE`: the scope that would allow it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub required_scope: Option<String>,
    /// The key, when it was recognised.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub key_id: Option<String>,
    /// The key's team, when it was recognised.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub team_id: Option<String>,
    /// The key's project restriction (null for all projects), when it was recognised.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub project_id: Option<Option<String>>,
    /// The key's effective scopes, when it was recognised.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub scopes: Option<Vec<String>>,
    /// With `RATE_LIMITED`: seconds until the key's budget resets.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub retry_after: Option<u64>,
}

/// The body of `POST /api/billstack/keys/verify`: a key and the request to decide.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct VerifyBody {
    /// The raw API key (`bs_` + 48 hex).
    key: String,
    /// The request's method, e.g. `GET`.
    method: String,
    /// The request's path and query.
    path: String,
}

/// `POST /api/billstack/keys/verify`: always 200 with `{"valid", "code", …}` for a decision,
/// `RATE_LIMITED` (with `retryAfter` and the `RateLimit-*` headers) included. Never throttled
/// by the caller's address: a backend verifies for many end users from one address.
#[utoipa::path(post, path = "/api/billstack/keys/verify", operation_id = "verifyKey", tag = "decisions",
    request_body = VerifyBody,
    responses((status = 200, description = "The decision (allowed or not; `RATE_LIMITED` over the key's budget, with `retryAfter` and the RateLimit-* headers)", body = VerifyView),
        (status = 400, description = "Malformed body", body = ErrorBody), (status = 413, description = "Body too large", body = ErrorBody), (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 503, description = "The decision could not be made (fails closed)", body = ErrorBody)))]
pub(super) async fn json_verify(
    State(state): State<Arc<AppState>>,
    ClientIp(client): ClientIp,
    ApiJson(body): ApiJson<VerifyBody>,
) -> Response {
    let Checked { decision, budget } = state
        .app
        .verify(VerifyRequest {
            door: FrontDoor::JsonVerify,
            client,
            credential: Presented::RawKey(body.key),
            method: body.method,
            target: body.path,
        })
        .await;
    let (code, required_scope, denial_code) = match &decision {
        Decision::Allow(_) => ("VALID", None, None),
        // No answer to give: the caller gets the failure itself (500, or 503 to retry).
        Decision::Deny(d) if matches!(d.kind, DenyKind::Internal | DenyKind::StoreUnavailable) => {
            return d.into_response();
        }
        Decision::Deny(d) => (
            verify_code(d.kind),
            d.required_scope.clone(),
            d.policy_code.clone(),
        ),
    };
    let id = decision.identity();
    let out = VerifyView {
        valid: matches!(decision, Decision::Allow(_)),
        code: code.to_string(),
        denial_code,
        required_scope,
        key_id: id.map(|i| i.key_id.clone()),
        team_id: id.map(|i| i.team_id.clone()),
        project_id: id.map(|i| i.project_id.clone()),
        scopes: id.map(|i| i.scopes.clone()),
        retry_after: match &decision {
            Decision::Deny(d) if d.kind == DenyKind::RateLimited => {
                budget.as_ref().and_then(Budget::retry_after)
            }
            _ => None,
        },
    };
    let mut response = respond::ok_json(out);
    budget_headers(response.headers_mut(), budget.as_ref(), false);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_header_is_the_same_json_in_ascii() {
        let body = r#"{"error":{"code":"read_only","message":"Nur Lesen — 読み取り 🔒"}}"#;
        let header = ascii_json(body);
        assert!(header.is_ascii(), "{header}");
        assert!(HeaderValue::from_str(&header).is_ok());
        let a: serde_json::Value = serde_json::from_str(body).expect("json");
        let b: serde_json::Value = serde_json::from_str(&header).expect("json");
        assert_eq!(a, b);
    }
}
