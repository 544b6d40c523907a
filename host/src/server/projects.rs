//! A team's projects: `GET /api/billstack/teams/{teamId}/projects` (members), and renaming
//! and deleting one (owners) at `/api/billstack/teams/{teamId}/projects/{projectId}`. That
//! path is also the reverse proxy's project root: `PATCH` and `DELETE` on it are these
//! management operations (session cookie required, as everywhere in management), and every
//! other method there, and everything below it, is proxied (`server::routes`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::members::{NameBody, ProjectOneView};
use super::respond::{self, ApiJson, ApiResult, ErrorBody};
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

/// `PATCH /api/billstack/teams/{teamId}/projects/{projectId}` `{"name"}` (owners).
#[utoipa::path(patch, path = "/api/billstack/teams/{teamId}/projects/{projectId}", operation_id = "renameProject", tag = "teams", security(("session" = [])),
    params(("teamId" = String, Path, description = "The team, `team_…`"), ("projectId" = String, Path, description = "The project, `proj_…`")), request_body = NameBody,
    responses((status = 200, description = "Renamed", body = ProjectOneView),
        (status = 400, description = "Invalid name", body = ErrorBody), (status = 401, description = "No session", body = ErrorBody),
        (status = 403, description = "Not an owner, or CSRF", body = ErrorBody), (status = 404, description = "No such team or project", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody), (status = 415, description = "Not JSON", body = ErrorBody)))]
pub(super) async fn rename(
    State(state): State<Arc<AppState>>,
    session: SessionUser,
    Path((team_id, project_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<NameBody>,
) -> ApiResult<Json<ProjectOneView>> {
    let caller = session.caller();
    let project = state
        .app
        .run(move |app| app.rename_project(&caller, &team_id, &project_id, &body.name))
        .await?;
    Ok(Json(ProjectOneView {
        project: ProjectView {
            id: project.id,
            name: project.name,
        },
    }))
}

/// `DELETE /api/billstack/teams/{teamId}/projects/{projectId}` (owners).
#[utoipa::path(delete, path = "/api/billstack/teams/{teamId}/projects/{projectId}", operation_id = "deleteProject", tag = "teams", security(("session" = [])),
    params(("teamId" = String, Path, description = "The team, `team_…`"), ("projectId" = String, Path, description = "The project, `proj_…`")),
    responses((status = 204, description = "Deleted"),
        (status = 401, description = "No session", body = ErrorBody), (status = 403, description = "Not an owner, or CSRF", body = ErrorBody),
        (status = 404, description = "No such team or project", body = ErrorBody),
        (status = 409, description = "`project_in_use`: an unrevoked key is scoped to it", body = ErrorBody)))]
pub(super) async fn delete(
    State(state): State<Arc<AppState>>,
    session: SessionUser,
    Path((team_id, project_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let caller = session.caller();
    state
        .app
        .run(move |app| app.delete_project(&caller, &team_id, &project_id))
        .await?;
    Ok(respond::no_content())
}
