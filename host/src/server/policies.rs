//! A team's policy over HTTP: `GET`, `PUT` (upload) and `DELETE` (reset)
//! `/api/billstack/teams/{teamId}/policy`. The rules (validation, storage, activation) are in
//! [`crate::app::policies`]; here the body is read within the size cap.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::header;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::respond::{ApiError, ApiResult, ErrorBody};
use super::session::SessionUser;
use crate::app::policies::UPLOAD;
use crate::app::{AppError, Need};
use crate::policy::{ActivePolicy, Plugin, PolicySource, ScopePolicy};

/// A team's active policy.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyView {
    /// `default` (the deployment's) or `team` (uploaded by the team).
    #[schema(value_type = String, pattern = "^(default|team)$")]
    pub source: PolicySource,
    /// The plugin's name.
    pub name: String,
    /// The plugin's version.
    pub version: String,
    /// Hex SHA-256 of the component.
    pub sha256: String,
    /// The scopes it defines.
    pub scopes: Vec<ScopeView>,
    /// `loaded`, or `failed` for a team policy that did not load: the team's SaaS requests
    /// then get 503 `policy_error` (never the deployment default) until an owner uploads,
    /// resets or rolls back. `name` and `version` are empty then.
    #[schema(pattern = "^(loaded|failed)$")]
    pub status: &'static str,
    /// Why the policy did not load (with `status` `failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<String>,
}

/// One scope of a policy's catalogue.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScopeView {
    /// e.g. `customers:read`.
    pub name: String,
    /// What it allows.
    pub description: String,
}

impl PolicyView {
    /// The view of a plugin.
    pub fn of(plugin: &Plugin, source: PolicySource) -> PolicyView {
        let info = plugin.info();
        PolicyView {
            source,
            name: info.name.clone(),
            version: info.version.clone(),
            sha256: plugin.sha256_hex(),
            scopes: info
                .scopes
                .iter()
                .map(|s| ScopeView {
                    name: s.name.clone(),
                    description: s.description.clone(),
                })
                .collect(),
            status: "loaded",
            error: None,
        }
    }

    /// The view of a team's active policy, loaded or not.
    pub fn of_active(policy: &ActivePolicy, source: PolicySource) -> PolicyView {
        match policy {
            ActivePolicy::Loaded(plugin) => PolicyView::of(plugin, source),
            ActivePolicy::Broken(broken) => PolicyView {
                source,
                name: String::new(),
                version: String::new(),
                sha256: broken.sha256_hex().to_owned(),
                scopes: Vec::new(),
                status: "failed",
                error: Some(broken.error().to_owned()),
            },
        }
    }
}

/// `{"policy": …}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActivePolicyView {
    /// The team's active policy.
    pub policy: PolicyView,
}

/// The answer to a policy upload or reset.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadedPolicyView {
    /// The team's policy from now on.
    pub policy: PolicyView,
    /// Keys holding scopes the policy now in force does not define (those scopes now allow
    /// nothing).
    pub keys_with_undefined_scopes: Vec<OrphanedKeyView>,
}

/// A key with scopes its team's policy does not define.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrphanedKeyView {
    /// `key_…`
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its scopes that the policy does not define.
    pub undefined_scopes: Vec<String>,
}

impl OrphanedKeyView {
    fn list(keys: Vec<(billstack_keystore::KeyRecord, Vec<String>)>) -> Vec<OrphanedKeyView> {
        keys.into_iter()
            .map(|(key, undefined_scopes)| OrphanedKeyView {
                id: key.id,
                name: key.name,
                undefined_scopes,
            })
            .collect()
    }
}

/// `GET /api/billstack/teams/{teamId}/policy`.
#[utoipa::path(get, path = "/api/billstack/teams/{teamId}/policy", operation_id = "getPolicy", tag = "policies", security(("session" = [])),
    params(("teamId" = String, Path, description = "The team, `team_…`")),
    responses((status = 200, description = "The team's active policy", body = ActivePolicyView),
        (status = 401, description = "No session", body = ErrorBody), (status = 404, description = "No such team (or not a member)", body = ErrorBody)))]
pub(super) async fn get(
    State(state): State<Arc<AppState>>,
    session: SessionUser,
    Path(team_id): Path<String>,
) -> ApiResult<Json<ActivePolicyView>> {
    let caller = session.caller();
    let (policy, source) = state
        .app
        .run(move |app| app.team_policy(&caller, &team_id))
        .await?;
    Ok(Json(ActivePolicyView {
        policy: PolicyView::of_active(&policy, source),
    }))
}

/// `PUT /api/billstack/teams/{teamId}/policy` with `Content-Type: application/wasm`.
#[utoipa::path(put, path = "/api/billstack/teams/{teamId}/policy", operation_id = "uploadPolicy", tag = "policies", security(("session" = [])),
    params(("teamId" = String, Path, description = "The team, `team_…`")),
    request_body(content = Vec<u8>, content_type = "application/wasm", description = "A policy component"),
    responses((status = 200, description = "Validated, stored and active", body = UploadedPolicyView),
        (status = 400, description = "Not a usable policy (see message)", body = ErrorBody), (status = 401, description = "No session", body = ErrorBody), (status = 403, description = "Not an owner, or CSRF", body = ErrorBody),
        (status = 404, description = "No such team (or not a member)", body = ErrorBody), (status = 413, description = "Larger than plugin_max_mib", body = ErrorBody),
        (status = 415, description = "Not application/wasm", body = ErrorBody)))]
pub(super) async fn upload(
    State(state): State<Arc<AppState>>,
    session: SessionUser,
    Path(team_id): Path<String>,
    request: Request,
) -> ApiResult<Json<UploadedPolicyView>> {
    // Owners only, checked before a byte of the body is read (up to the plugin cap); the
    // service checks again as it does for every caller.
    let caller = session.caller();
    let (c, team) = (caller.clone(), team_id.clone());
    state
        .app
        .run(move |app| app.authorize(&c, &team, Need::Owner(UPLOAD)))
        .await?;
    let headers = request.headers();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.split(';').next().map(str::trim) != Some("application/wasm") {
        return Err(ApiError::unsupported_media_type(
            "upload the component with Content-Type: application/wasm",
        ));
    }
    let max = state.app.engine().limits().max_plugin_bytes;
    let too_large = || ApiError::from(AppError::TooLarge(max));
    // Refuse by the announced length before reading a byte of the body.
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let bytes: Bytes = axum::body::to_bytes(request.into_body(), max)
        .await
        .map_err(|_| too_large())?;
    let uploaded = state
        .app
        .run(move |app| app.upload_policy(&caller, &team_id, &bytes))
        .await?;
    let orphaned = OrphanedKeyView::list(uploaded.keys_with_undefined_scopes);
    Ok(Json(UploadedPolicyView {
        policy: PolicyView::of(&uploaded.plugin, PolicySource::Team),
        keys_with_undefined_scopes: orphaned,
    }))
}

/// `DELETE /api/billstack/teams/{teamId}/policy`: back to the deployment default.
#[utoipa::path(delete, path = "/api/billstack/teams/{teamId}/policy", operation_id = "resetPolicy", tag = "policies", security(("session" = [])),
    params(("teamId" = String, Path, description = "The team, `team_…`")),
    responses((status = 200, description = "Back to the deployment default, with the keys holding scopes it does not define", body = UploadedPolicyView),
        (status = 401, description = "No session", body = ErrorBody), (status = 403, description = "Not an owner, or CSRF", body = ErrorBody), (status = 404, description = "No such team (or not a member)", body = ErrorBody)))]
pub(super) async fn reset(
    State(state): State<Arc<AppState>>,
    session: SessionUser,
    Path(team_id): Path<String>,
) -> ApiResult<Json<UploadedPolicyView>> {
    let caller = session.caller();
    let reset = state
        .app
        .run(move |app| app.reset_policy(&caller, &team_id))
        .await?;
    Ok(Json(UploadedPolicyView {
        policy: PolicyView::of_active(&reset.policy, reset.source),
        keys_with_undefined_scopes: OrphanedKeyView::list(reset.keys_with_undefined_scopes),
    }))
}
