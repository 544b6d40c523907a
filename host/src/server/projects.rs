//! A team's projects: `GET /api/billstack/teams/{teamId}/projects`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::respond::{ApiResult, ErrorBody};
use super::session::SessionUser;

/// A team's projects.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectListView {
    /// The projects.
    pub projects: Vec<ProjectView>,
}

/// A project.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectView {
    /// `proj_…`
    pub id: String,
    /// Display name.
    pub name: String,
}

/// `GET /api/billstack/teams/{teamId}/projects`.
#[utoipa::path(get, path = "/api/billstack/teams/{teamId}/projects", operation_id = "listProjects", tag = "teams", security(("session" = [])),
    params(("teamId" = String, Path, description = "The team, `team_…`")),
    responses((status = 200, description = "The team's projects", body = ProjectListView),
        (status = 401, description = "No session", body = ErrorBody), (status = 404, description = "No such team (or not a member)", body = ErrorBody)))]
pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    session: SessionUser,
    Path(team_id): Path<String>,
) -> ApiResult<Json<ProjectListView>> {
    let caller = session.caller();
    let projects = state
        .app
        .run(move |app| app.list_projects(&caller, &team_id))
        .await?
        .into_iter()
        .map(|p| ProjectView {
            id: p.id,
            name: p.name,
        })
        .collect();
    Ok(Json(ProjectListView { projects }))
}
