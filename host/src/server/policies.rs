//! Per-team policy uploads: `PUT` and `DELETE /api/billstack/teams/{teamId}/policy`.
//!
//! An upload is validated completely (size cap, compiles, exports the world, `info()` answers
//! within the limits) and stored before it is activated; activation is one pointer swap, so
//! each decision sees the old policy or the new one, never a mix. A refused upload changes
//! nothing.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use serde_json::json;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::session::{SessionUser, require_owner};
use crate::policy::{Plugin, PolicySource, ScopePolicy};

/// The `{"policy": …}` body for a plugin.
pub(super) fn policy_json(plugin: &Plugin, source: PolicySource) -> serde_json::Value {
    let info = plugin.info();
    json!({
        "source": source,
        "name": info.name,
        "version": info.version,
        "sha256": plugin.sha256_hex(),
        "scopes": info.scopes,
    })
}

/// `PUT /api/billstack/teams/{teamId}/policy` with `Content-Type: application/wasm`.
pub(super) async fn upload(
    State(state): State<Arc<AppState>>,
    session: SessionUser,
    Path(team_id): Path<String>,
    request: Request,
) -> ApiResult<Json<serde_json::Value>> {
    require_owner(&state, &session, &team_id, "change the team's policy")?;
    let headers = request.headers();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.split(';').next().map(str::trim) != Some("application/wasm") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "upload the component with Content-Type: application/wasm",
        ));
    }
    let max = state.engine.limits().max_plugin_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the plugin is larger than the {max}-byte limit"),
        )
    };
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
    let engine = Arc::clone(&state.engine);
    let upload = bytes.clone();
    // Compiling takes up to seconds of CPU: off the executor.
    let loaded = tokio::task::spawn_blocking(move || engine.load_for_team(&upload)).await?;
    let plugin = loaded
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_policy", e.to_string()))?;
    let store = Arc::clone(&state.store);
    let (team, actor) = (team_id.clone(), session.audit_actor());
    tokio::task::spawn_blocking(move || store.put_team_policy(&team, &bytes, actor.get()))
        .await??;
    // Stored durably; now the one atomic switch.
    state.policies.set_team(&team_id, Arc::clone(&plugin));
    let catalogue = plugin.scope_names();
    let orphaned: Vec<serde_json::Value> = state
        .store
        .list_keys(&team_id)?
        .into_iter()
        .filter_map(|k| {
            let undefined: Vec<String> = k
                .scopes
                .iter()
                .filter(|s| !catalogue.contains(s))
                .cloned()
                .collect();
            (!undefined.is_empty())
                .then(|| json!({"id": k.id, "name": k.name, "undefinedScopes": undefined}))
        })
        .collect();
    tracing::info!(team = %team_id, sha256 = %plugin.sha256_hex(), "team policy uploaded");
    Ok(Json(
        json!({"policy": policy_json(&plugin, PolicySource::Team), "keysWithUndefinedScopes": orphaned}),
    ))
}

/// `DELETE /api/billstack/teams/{teamId}/policy`: back to the deployment default.
pub(super) async fn reset(
    State(state): State<Arc<AppState>>,
    session: SessionUser,
    Path(team_id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    require_owner(&state, &session, &team_id, "change the team's policy")?;
    let store = Arc::clone(&state.store);
    let (team, actor) = (team_id.clone(), session.audit_actor());
    tokio::task::spawn_blocking(move || store.delete_team_policy(&team, actor.get())).await??;
    state.policies.clear_team(&team_id);
    let (plugin, source) = state.policies.for_team(&team_id);
    Ok(Json(json!({"policy": policy_json(&plugin, source)})))
}
