//! The documented key-management endpoints (session cookie required; API keys refused).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use billstack_keystore::{
    DEFAULT_KEY_PAGE, KeyChanges, KeyCursor, KeyQuery, KeyStatus, MAX_KEY_PAGE, RateLimit, clock,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::respond::{self, ApiError, ApiJson, ApiResult, ErrorBody};
use super::session::SessionUser;
use crate::app::keys::{DEFAULT_USAGE_DAYS, KeyRequest};
use crate::app::usage::DAY_MS;
use crate::views::{CreatedKey, KeyView, RateLimitView};
use std::collections::BTreeMap;

/// The body of a key creation.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct CreateKey {
    /// A label, 1-100 characters, not blank, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: String,
    /// Limit the key to one project of the team; null or absent for all.
    #[serde(default)]
    project_id: Option<String>,
    /// Scopes the team's policy defines; none means full access.
    #[serde(default)]
    scopes: Option<Vec<String>>,
    /// Expiry, RFC 3339, in the future.
    #[serde(default)]
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    /// A request budget.
    #[serde(default)]
    #[schema(value_type = Option<RateLimitView>)]
    rate_limit: Option<serde_json::Value>,
}

/// A page of a team's keys.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyListView {
    /// Newest first.
    pub keys: Vec<KeyView>,
    /// Pass as `cursor` for the next page; absent on the last one. A page may be shorter
    /// than `limit` and still have a next one, when a filter matched few of the keys read.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub next_cursor: Option<String>,
}

/// The list's query string.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Keys per page (1-500, default 100).
    #[serde(default)]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// `nextCursor` of the previous page.
    #[serde(default)]
    #[param(pattern = "^[0-9a-f]{12}[.][A-Za-z0-9_-]{1,64}$")]
    cursor: Option<String>,
    /// Only keys with this status.
    #[serde(default)]
    #[param(pattern = "^(active|expiring|expired|disabled)$")]
    status: Option<String>,
    /// Only keys limited to this project.
    #[serde(default)]
    project_id: Option<String>,
    /// Only keys whose name or prefix contains this text (any case; at most 100 characters).
    #[serde(default)]
    #[param(max_length = 100)]
    q: Option<String>,
}

impl ListQuery {
    fn parse(self) -> ApiResult<KeyQuery> {
        let limit = match self.limit.as_deref() {
            None => DEFAULT_KEY_PAGE,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_KEY_PAGE).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid(
                        "limit",
                        format!("limit must be a whole number from 1 to {MAX_KEY_PAGE}"),
                    )
                })?,
        };
        let query = KeyQuery {
            limit,
            cursor: self
                .cursor
                .as_deref()
                .map(KeyCursor::parse)
                .transpose()
                .map_err(|_| {
                    ApiError::invalid(
                        "cursor",
                        "cursor must be a nextCursor value from a previous page",
                    )
                })?,
            status: self
                .status
                .as_deref()
                .map(KeyStatus::parse)
                .transpose()
                .map_err(|_| {
                    ApiError::invalid(
                        "status",
                        "status must be one of active, expiring, expired, disabled",
                    )
                })?,
            project_id: self.project_id.filter(|p| !p.is_empty()),
            q: self.q.filter(|q| !q.is_empty()),
        };
        query.validate().map_err(|e| match e {
            billstack_keystore::Error::Invalid { field, message } => {
                ApiError::invalid(field, format!("{field} {message}"))
            }
            other => ApiError::invalid("query", other.to_string()),
        })?;
        Ok(query)
    }
}

/// A key's requests per day.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageView {
    /// The key.
    pub key_id: String,
    /// Its latest allowed request (RFC 3339), or null.
    #[schema(required)]
    pub last_used_at: Option<String>,
    /// One entry per day (UTC), oldest first, ending today.
    pub days: Vec<DailyUsageView>,
}

/// One day of a key's requests.
#[derive(Debug, Serialize, ToSchema)]
pub struct DailyUsageView {
    /// `YYYY-MM-DD` (UTC).
    #[schema(format = Date)]
    pub date: String,
    /// Requests allowed.
    pub allowed: u64,
    /// Requests refused after the key was recognised (scope, project, route, rate limit).
    pub denied: u64,
    /// `allowed + denied`.
    pub requests: u64,
    /// Refused requests by reason (`insufficient_scope`, `rate_limited`, `expired_key`, …);
    /// empty on days recorded before reasons were.
    pub refused: BTreeMap<String, u64>,
}

/// `rateLimit` of a create request: null, or `{"limit": N, "windowSeconds": S}` in range.
fn parse_rate_limit(value: Option<serde_json::Value>) -> ApiResult<Option<RateLimitView>> {
    let shape = || {
        ApiError::invalid(
            "rateLimit",
            format!(
                "rateLimit must be {{\"limit\": N, \"windowSeconds\": S}} with N from 1 to {} and \
                 S from 1 to {}",
                RateLimit::MAX_LIMIT,
                RateLimit::MAX_WINDOW_SECONDS
            ),
        )
    };
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => {
            let limit: RateLimitView = serde_json::from_value(v).map_err(|_| shape())?;
            RateLimit::from(limit).validate().map_err(|_| shape())?;
            Ok(Some(limit))
        }
    }
}

/// `POST /api/billstack/teams/{teamId}/api-keys`.
#[utoipa::path(post, path = "/api/billstack/teams/{teamId}/api-keys", operation_id = "createApiKey", tag = "keys", security(("session" = [])),
    params(("teamId" = String, Path, description = "The team, `team_…`")), request_body = CreateKey,
    responses((status = 201, description = "Created; `rawKey` is shown this once", body = CreatedKey),
        (status = 400, description = "Invalid field (see `field`)", body = ErrorBody), (status = 401, description = "No session", body = ErrorBody), (status = 403, description = "CSRF", body = ErrorBody),
        (status = 404, description = "No such team (or not a member)", body = ErrorBody), (status = 413, description = "Body too large", body = ErrorBody), (status = 415, description = "Not JSON", body = ErrorBody)))]
pub(super) async fn create(
    State(state): State<Arc<AppState>>,
    session: SessionUser,
    Path(team_id): Path<String>,
    ApiJson(body): ApiJson<CreateKey>,
) -> ApiResult<Response> {
    let expires_at = match body.expires_at.as_deref() {
        None => None,
        Some(text) => Some(clock::parse_rfc3339(text).ok_or_else(|| {
            ApiError::invalid(
                "expiresAt",
                "expiresAt must be an RFC 3339 time such as 2027-01-31T00:00:00Z",
            )
        })?),
    };
    let request = KeyRequest {
        name: body.name,
        project_id: body.project_id,
        scopes: body.scopes.unwrap_or_default(),
        expires_at,
        rate_limit: parse_rate_limit(body.rate_limit)?.map(RateLimit::from),
    };
    let caller = session.caller();
    let (key, raw_key) = state
        .app
        .run(move |app| {
            let (record, raw_key) = app.create_key(&caller, &team_id, request)?;
            Ok((app.new_key_view(&record)?, raw_key))
        })
        .await?;
    Ok(respond::created(CreatedKey { key, raw_key }))
}

/// `GET /api/billstack/teams/{teamId}/api-keys?limit=&cursor=&status=&projectId=&q=`: a page
/// of the team's keys, newest first. Revoked keys are not listed; expired and rotated-out keys
/// are, as `expired`, for 30 days.
#[utoipa::path(get, path = "/api/billstack/teams/{teamId}/api-keys", operation_id = "listApiKeys", tag = "keys", security(("session" = [])),
    params(("teamId" = String, Path, description = "The team, `team_…`"), ListQuery),
    responses((status = 200, description = "A page of the team's keys, newest first", body = KeyListView),
        (status = 400, description = "Invalid `limit`, `cursor`, `status` or `q`", body = ErrorBody),
        (status = 401, description = "No session", body = ErrorBody), (status = 404, description = "No such team (or not a member)", body = ErrorBody)))]
pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    session: SessionUser,
    Path(team_id): Path<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<KeyListView>> {
    let Query(query) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let query = query.parse()?;
    let caller = session.caller();
    let (keys, next_cursor) = state
        .app
        .run(move |app| {
            let page = app.list_keys_page(&caller, &team_id, &query)?;
            Ok((app.key_views(&page.keys)?, page.next_cursor))
        })
        .await?;
    Ok(Json(KeyListView {
        keys,
        next_cursor: next_cursor.map(|c| c.encode()),
    }))
}

/// `GET /api/billstack/teams/{teamId}/api-keys/{keyId}`: one listed key (as in the list).
#[utoipa::path(get, path = "/api/billstack/teams/{teamId}/api-keys/{keyId}", operation_id = "getApiKey", tag = "keys", security(("session" = [])),
    params(("teamId" = String, Path, description = "The team, `team_…`"), ("keyId" = String, Path, description = "The key, `key_…`")),
    responses((status = 200, description = "The key", body = KeyOneView),
        (status = 401, description = "No session", body = ErrorBody), (status = 404, description = "No such listed key in the team", body = ErrorBody)))]
pub(super) async fn get(
    State(state): State<Arc<AppState>>,
    session: SessionUser,
    Path((team_id, key_id)): Path<(String, String)>,
) -> ApiResult<Json<KeyOneView>> {
    let caller = session.caller();
    let key = state
        .app
        .run(move |app| {
            let record = app.get_key(&caller, &team_id, &key_id)?;
            Ok(app.key_views(std::slice::from_ref(&record))?.remove(0))
        })
        .await?;
    Ok(Json(KeyOneView { key }))
}

/// `DELETE /api/billstack/teams/{teamId}/api-keys/{keyId}`.
#[utoipa::path(delete, path = "/api/billstack/teams/{teamId}/api-keys/{keyId}", operation_id = "revokeApiKey", tag = "keys", security(("session" = [])),
    params(("teamId" = String, Path, description = "The team, `team_…`"), ("keyId" = String, Path, description = "The key, `key_…`")),
    responses((status = 204, description = "Revoked: it stops working at once"),
        (status = 401, description = "No session", body = ErrorBody), (status = 403, description = "CSRF", body = ErrorBody), (status = 404, description = "No such active key in the team", body = ErrorBody)))]
pub(super) async fn revoke(
    State(state): State<Arc<AppState>>,
    session: SessionUser,
    Path((team_id, key_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let caller = session.caller();
    state
        .app
        .run(move |app| app.revoke_key(&caller, &team_id, &key_id))
        .await?;
    Ok(respond::no_content())
}

/// A field that may be absent (`None`), `null` (`Some(None)`) or a value.
fn present<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// The body of a key change: only the fields present change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct UpdateKey {
    /// A new label, 1-100 characters, not blank, no control characters.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: Option<String>,
    /// New scopes (the team's policy must define them); empty for full access.
    #[serde(default)]
    scopes: Option<Vec<String>>,
    /// A new expiry (RFC 3339, in the future), or null for none.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = DateTime, nullable)]
    expires_at: Option<Option<String>>,
    /// A new budget, or null for none.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<RateLimitView>, nullable)]
    rate_limit: Option<Option<serde_json::Value>>,
    /// `false` switches the key off (refused like a revoked key), `true` on again.
    #[serde(default)]
    enabled: Option<bool>,
}

/// `{"key": …}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyOneView {
    /// The key as it now stands.
    pub key: KeyView,
}

/// `PATCH /api/billstack/teams/{teamId}/api-keys/{keyId}`.
#[utoipa::path(patch, path = "/api/billstack/teams/{teamId}/api-keys/{keyId}", operation_id = "updateApiKey", tag = "keys", security(("session" = [])),
    params(("teamId" = String, Path, description = "The team, `team_…`"), ("keyId" = String, Path, description = "The key, `key_…`")), request_body = UpdateKey,
    responses((status = 200, description = "Changed: every front door sees the change from now on", body = KeyOneView),
        (status = 400, description = "Invalid field (see `field`)", body = ErrorBody), (status = 401, description = "No session", body = ErrorBody),
        (status = 403, description = "CSRF", body = ErrorBody), (status = 404, description = "No such active key in the team", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody), (status = 415, description = "Not JSON", body = ErrorBody)))]
pub(super) async fn update(
    State(state): State<Arc<AppState>>,
    session: SessionUser,
    Path((team_id, key_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<UpdateKey>,
) -> ApiResult<Json<KeyOneView>> {
    let expires_at = match body.expires_at {
        None => None,
        Some(None) => Some(None),
        Some(Some(text)) => Some(Some(clock::parse_rfc3339(&text).ok_or_else(|| {
            ApiError::invalid(
                "expiresAt",
                "expiresAt must be an RFC 3339 time such as 2027-01-31T00:00:00Z, or null",
            )
        })?)),
    };
    let rate_limit = match body.rate_limit {
        None => None,
        Some(value) => Some(parse_rate_limit(value)?.map(RateLimit::from)),
    };
    let changes = KeyChanges {
        name: body.name,
        scopes: body.scopes,
        expires_at,
        rate_limit,
        enabled: body.enabled,
    };
    let caller = session.caller();
    let key = state
        .app
        .run(move |app| {
            let record = app.update_key(&caller, &team_id, &key_id, changes)?;
            Ok(app.key_views(std::slice::from_ref(&record))?.remove(0))
        })
        .await?;
    Ok(Json(KeyOneView { key }))
}

/// The body of a rotation.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RotateKey {
    /// How long the old key keeps working, in seconds (0 = stops at once; default 86400; at
    /// most 2592000).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 2_592_000)]
    grace_period_seconds: Option<i64>,
}

/// `POST /api/billstack/teams/{teamId}/api-keys/{keyId}/rotate` with `{"gracePeriodSeconds": N}`
/// (an empty body or `{}` means 24 hours; 0 ends the old key at once): 201 with the new key,
/// shaped as for create.
#[utoipa::path(post, path = "/api/billstack/teams/{teamId}/api-keys/{keyId}/rotate", operation_id = "rotateApiKey", tag = "keys", security(("session" = [])),
    params(("teamId" = String, Path, description = "The team, `team_…`"), ("keyId" = String, Path, description = "The key, `key_…`")), request_body(content = Option<RotateKey>, description = "Optional; an empty body means 24 hours"),
    responses((status = 201, description = "The new key, shown this once", body = CreatedKey),
        (status = 400, description = "Invalid grace period, or the key expired or was rotated already", body = ErrorBody), (status = 401, description = "No session", body = ErrorBody),
        (status = 403, description = "CSRF", body = ErrorBody), (status = 404, description = "No such active key in the team", body = ErrorBody), (status = 415, description = "Not JSON", body = ErrorBody)))]
pub(super) async fn rotate(
    State(state): State<Arc<AppState>>,
    session: SessionUser,
    Path((team_id, key_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let grace = if body.is_empty() {
        None
    } else {
        let is_json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
        if !is_json {
            return Err(ApiError::from(JsonRejection::MissingJsonContentType(
                Default::default(),
            )));
        }
        let Json(RotateKey {
            grace_period_seconds,
        }) = Json::<serde_json::Value>::from_bytes(&body)
            .map_err(ApiError::from)
            .and_then(|Json(v)| respond::object_body::<RotateKey>(v))
            .map(Json)?;
        grace_period_seconds
    };
    let caller = session.caller();
    let (key, raw_key) = state
        .app
        .run(move |app| {
            let rotated = app.rotate_key(&caller, &team_id, &key_id, grace)?;
            Ok((app.new_key_view(&rotated.new)?, rotated.raw_key))
        })
        .await?;
    Ok(respond::created(CreatedKey { key, raw_key }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct UsageQuery {
    /// Days to show, ending today (1-90, default 30).
    #[serde(default)]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 90)]
    days: Option<String>,
}

/// `GET /api/billstack/teams/{teamId}/api-keys/{keyId}/usage?days=N`: the key's requests per
/// day (UTC), oldest first, ending today, with `lastUsedAt`. Members of the team; revoked keys
/// too (their history stays until it ages out).
#[utoipa::path(get, path = "/api/billstack/teams/{teamId}/api-keys/{keyId}/usage", operation_id = "getApiKeyUsage", tag = "keys", security(("session" = [])),
    params(("teamId" = String, Path, description = "The team, `team_…`"), ("keyId" = String, Path, description = "The key, `key_…`"), UsageQuery),
    responses((status = 200, description = "Requests per day", body = UsageView),
        (status = 400, description = "Invalid `days`", body = ErrorBody), (status = 401, description = "No session", body = ErrorBody), (status = 404, description = "No such key in the team", body = ErrorBody)))]
pub(super) async fn usage(
    State(state): State<Arc<AppState>>,
    session: SessionUser,
    Path((team_id, key_id)): Path<(String, String)>,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> ApiResult<Json<UsageView>> {
    let Query(query) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let days = match query.days.as_deref() {
        None => DEFAULT_USAGE_DAYS,
        // Out of range is the service's to refuse; not a number at all is refused here.
        Some(text) => text.parse::<u32>().unwrap_or(0),
    };
    let caller = session.caller();
    let key = key_id.clone();
    let report = state
        .app
        .run(move |app| app.key_usage(&caller, &team_id, &key, days))
        .await?;
    let (counts, last_used_at) = (report.days, report.last_used_at);
    let days = counts
        .iter()
        .map(|(day, c)| DailyUsageView {
            date: clock::format_rfc3339(day * DAY_MS)
                .chars()
                .take(10)
                .collect(),
            allowed: c.allowed,
            denied: c.denied,
            requests: c.allowed + c.denied,
            refused: c.refused.clone(),
        })
        .collect();
    Ok(Json(UsageView {
        key_id,
        last_used_at: last_used_at.map(clock::format_rfc3339),
        days,
    }))
}
