//! Online administration over HTTP: a team's members and invitations, new teams and projects,
//! and each user's own password. The rules are in [`crate::app::members`].

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use billstack_keystore::{Member, Role, clock};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::client::ClientIp;
use super::respond::{self, ApiError, ApiJson, ApiResult, ErrorBody};
use super::session::{MeView, SessionUser, session_cookie, signed_in_response};

/// One member of a team.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberView {
    /// `user_…`
    pub user_id: String,
    /// Their email address.
    pub email: String,
    /// `owner` or `member`.
    #[schema(pattern = "^(owner|member)$")]
    pub role: String,
    /// When they joined the team (RFC 3339).
    #[schema(format = DateTime)]
    pub added_at: String,
}

impl From<Member> for MemberView {
    fn from(m: Member) -> MemberView {
        MemberView {
            user_id: m.user_id,
            email: m.email,
            role: m.role.as_str().to_string(),
            added_at: clock::format_rfc3339(m.added_at),
        }
    }
}

/// A team's members.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberListView {
    /// Oldest membership first.
    pub members: Vec<MemberView>,
}

/// `{"member": …}`, with the invitation link when the person has no password yet.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddedMemberView {
    /// The membership.
    pub member: MemberView,
    /// For a new person: the one-time link that lets them choose a password (valid 7 days),
    /// shown this once.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub invite_url: Option<String>,
}

/// `{"member": …}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberOneView {
    /// The membership.
    pub member: MemberView,
}

/// The body of adding a member.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AddMember {
    /// Their email address.
    email: String,
    /// `owner` or `member`.
    #[schema(pattern = "^(owner|member)$")]
    role: String,
}

/// The body of a role change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ChangeRole {
    /// `owner` or `member`.
    #[schema(pattern = "^(owner|member)$")]
    role: String,
}

fn role(text: &str) -> ApiResult<Role> {
    text.parse::<Role>()
        .map_err(|_| ApiError::invalid("role", "role must be owner or member"))
}

/// `GET /api/billstack/teams/{teamId}/members`.
#[utoipa::path(get, path = "/api/billstack/teams/{teamId}/members", operation_id = "listMembers", tag = "teams", security(("session" = [])),
    params(("teamId" = String, Path, description = "The team, `team_…`")),
    responses((status = 200, description = "The team's members", body = MemberListView),
        (status = 401, description = "No session", body = ErrorBody), (status = 404, description = "No such team (or not a member)", body = ErrorBody)))]
pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    session: SessionUser,
    Path(team_id): Path<String>,
) -> ApiResult<Json<MemberListView>> {
    let caller = session.caller();
    let members = state
        .app
        .run(move |app| app.list_members(&caller, &team_id))
        .await?;
    Ok(Json(MemberListView {
        members: members.into_iter().map(MemberView::from).collect(),
    }))
}

/// The link an invited person opens: the dashboard with the token in the fragment (which
/// browsers never send to a server, so it stays out of access logs).
fn invite_url(state: &AppState, headers: &HeaderMap, token: &str) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if state.tls { "https" } else { "http" };
    format!("{scheme}://{host}/#invite={token}")
}

/// `POST /api/billstack/teams/{teamId}/members` `{"email","role"}`.
#[utoipa::path(post, path = "/api/billstack/teams/{teamId}/members", operation_id = "addMember", tag = "teams", security(("session" = [])),
    params(("teamId" = String, Path, description = "The team, `team_…`")), request_body = AddMember,
    responses((status = 201, description = "Added; a new person's `inviteUrl` is shown this once", body = AddedMemberView),
        (status = 400, description = "Invalid email or role", body = ErrorBody), (status = 401, description = "No session", body = ErrorBody),
        (status = 403, description = "Not an owner, or CSRF", body = ErrorBody), (status = 404, description = "No such team (or not a member)", body = ErrorBody),
        (status = 409, description = "Already a member", body = ErrorBody), (status = 413, description = "Body too large", body = ErrorBody), (status = 415, description = "Not JSON", body = ErrorBody)))]
pub(super) async fn add(
    State(state): State<Arc<AppState>>,
    session: SessionUser,
    Path(team_id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<AddMember>,
) -> ApiResult<Response> {
    let role = role(&body.role)?;
    let caller = session.caller();
    let added = state
        .app
        .run(move |app| app.add_member(&caller, &team_id, &body.email, role))
        .await?;
    Ok(respond::created(AddedMemberView {
        member: added.member.into(),
        invite_url: added
            .invitation
            .map(|token| invite_url(&state, &headers, &token)),
    }))
}

/// `PATCH /api/billstack/teams/{teamId}/members/{userId}` `{"role"}`.
#[utoipa::path(patch, path = "/api/billstack/teams/{teamId}/members/{userId}", operation_id = "changeMemberRole", tag = "teams", security(("session" = [])),
    params(("teamId" = String, Path, description = "The team, `team_…`"), ("userId" = String, Path, description = "The member, `user_…`")), request_body = ChangeRole,
    responses((status = 200, description = "The new role", body = MemberOneView),
        (status = 400, description = "Invalid role", body = ErrorBody), (status = 401, description = "No session", body = ErrorBody),
        (status = 403, description = "Not an owner, or CSRF", body = ErrorBody), (status = 404, description = "No such team or member", body = ErrorBody),
        (status = 409, description = "`last_owner`: the team would have no owner", body = ErrorBody), (status = 415, description = "Not JSON", body = ErrorBody)))]
pub(super) async fn change_role(
    State(state): State<Arc<AppState>>,
    session: SessionUser,
    Path((team_id, user_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<ChangeRole>,
) -> ApiResult<Json<MemberOneView>> {
    let role = role(&body.role)?;
    let caller = session.caller();
    let member = state
        .app
        .run(move |app| app.change_role(&caller, &team_id, &user_id, role))
        .await?;
    Ok(Json(MemberOneView {
        member: member.into(),
    }))
}

/// `DELETE /api/billstack/teams/{teamId}/members/{userId}`.
#[utoipa::path(delete, path = "/api/billstack/teams/{teamId}/members/{userId}", operation_id = "removeMember", tag = "teams", security(("session" = [])),
    params(("teamId" = String, Path, description = "The team, `team_…`"), ("userId" = String, Path, description = "The member, `user_…`")),
    responses((status = 204, description = "Removed: their sessions lose the team at once"),
        (status = 401, description = "No session", body = ErrorBody), (status = 403, description = "Not an owner, or CSRF", body = ErrorBody),
        (status = 404, description = "No such team or member", body = ErrorBody), (status = 409, description = "`last_owner`", body = ErrorBody)))]
pub(super) async fn remove(
    State(state): State<Arc<AppState>>,
    session: SessionUser,
    Path((team_id, user_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let caller = session.caller();
    state
        .app
        .run(move |app| app.remove_member(&caller, &team_id, &user_id))
        .await?;
    Ok(respond::no_content())
}

/// The body of accepting an invitation.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AcceptInvitation {
    /// The token from the invitation link.
    token: String,
    /// The password to choose (12 to 1024 characters).
    #[schema(format = Password)]
    password: String,
}

/// `POST /api/auth/invitations/accept` `{"token","password"}`: as a sign-in.
#[utoipa::path(post, path = "/api/auth/invitations/accept", operation_id = "acceptInvitation", tag = "sessions",
    request_body = AcceptInvitation,
    responses((status = 200, description = "The password is set and the session cookie too", body = MeView),
        (status = 400, description = "`invalid_invitation` (unknown, used or expired), or an invalid password", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody)))]
pub(super) async fn accept(
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<AcceptInvitation>,
) -> ApiResult<Response> {
    let signed_in = state
        .app
        .run(move |app| app.accept_invitation(&body.token, &body.password))
        .await?;
    Ok(signed_in_response(&state, signed_in))
}

/// The body of a password change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct ChangePassword {
    /// The password now.
    #[schema(format = Password)]
    current_password: String,
    /// The new one (12 to 1024 characters).
    #[schema(format = Password)]
    new_password: String,
}

/// `POST /api/auth/password` `{"currentPassword","newPassword"}`.
#[utoipa::path(post, path = "/api/auth/password", operation_id = "changePassword", tag = "sessions", security(("session" = [])),
    request_body = ChangePassword,
    responses((status = 204, description = "Changed; every other session ended, and this one is replaced (new cookie)"),
        (status = 400, description = "The current password is wrong, or the new one is invalid", body = ErrorBody),
        (status = 401, description = "No session", body = ErrorBody), (status = 403, description = "CSRF", body = ErrorBody), (status = 415, description = "Not JSON", body = ErrorBody)))]
pub(super) async fn change_password(
    State(state): State<Arc<AppState>>,
    session: SessionUser,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<ChangePassword>,
) -> ApiResult<Response> {
    let source = ip.to_string();
    let user = session.user;
    let signed_in = state
        .app
        .run(move |app| {
            app.change_password(&user, &source, &body.current_password, &body.new_password)
        })
        .await?;
    let mut response = respond::no_content();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&state, &signed_in.token, None),
    );
    Ok(response)
}

/// The body of creating a team or a project.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NameBody {
    /// 1-100 characters, not blank, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub(super) name: String,
}

/// A team.
#[derive(Debug, Serialize, ToSchema)]
pub struct TeamView {
    /// `team_…`
    pub id: String,
    /// Display name.
    pub name: String,
}

/// `{"team": …}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedTeamView {
    /// The new team.
    pub team: TeamView,
}

/// `POST /api/billstack/teams` `{"name"}` (administrators): the caller becomes its owner.
#[utoipa::path(post, path = "/api/billstack/teams", operation_id = "createTeam", tag = "teams", security(("session" = [])),
    request_body = NameBody,
    responses((status = 201, description = "Created; the caller is its owner", body = CreatedTeamView),
        (status = 400, description = "Invalid name", body = ErrorBody), (status = 401, description = "No session", body = ErrorBody),
        (status = 403, description = "Not an administrator, or CSRF", body = ErrorBody), (status = 415, description = "Not JSON", body = ErrorBody)))]
pub(super) async fn create_team(
    State(state): State<Arc<AppState>>,
    session: SessionUser,
    ApiJson(body): ApiJson<NameBody>,
) -> ApiResult<Response> {
    let caller = session.caller();
    let team = state
        .app
        .run(move |app| app.create_team_as(&caller, &body.name))
        .await?;
    Ok(respond::created(CreatedTeamView {
        team: TeamView {
            id: team.id,
            name: team.name,
        },
    }))
}

/// A project.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectOneView {
    /// The project.
    pub project: super::projects::ProjectView,
}

/// `POST /api/billstack/teams/{teamId}/projects` `{"name"}` (owners).
#[utoipa::path(post, path = "/api/billstack/teams/{teamId}/projects", operation_id = "createProject", tag = "teams", security(("session" = [])),
    params(("teamId" = String, Path, description = "The team, `team_…`")), request_body = NameBody,
    responses((status = 201, description = "Created", body = ProjectOneView),
        (status = 400, description = "Invalid name", body = ErrorBody), (status = 401, description = "No session", body = ErrorBody),
        (status = 403, description = "Not an owner, or CSRF", body = ErrorBody), (status = 404, description = "No such team (or not a member)", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody)))]
pub(super) async fn create_project(
    State(state): State<Arc<AppState>>,
    session: SessionUser,
    Path(team_id): Path<String>,
    ApiJson(body): ApiJson<NameBody>,
) -> ApiResult<Response> {
    let caller = session.caller();
    let project = state
        .app
        .run(move |app| app.create_project_as(&caller, &team_id, &body.name))
        .await?;
    Ok(respond::created(ProjectOneView {
        project: super::projects::ProjectView {
            id: project.id,
            name: project.name,
        },
    }))
}
