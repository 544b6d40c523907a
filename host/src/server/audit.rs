//! `GET /api/billstack/teams/{teamId}/audit-log`: the team's audit log for its owners, newest
//! first, a page at a time.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use billstack_keystore::{MAX_AUDIT_PAGE, clock};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::respond::{ApiError, ApiResult, ErrorBody};
use super::session::SessionUser;
use crate::app::admin::NamedEvent;

/// Events per page when the request does not say.
pub const DEFAULT_AUDIT_PAGE: usize = 50;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditQuery {
    /// Events per page (1-200, default 50).
    #[serde(default)]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// `nextCursor` of the previous page.
    #[serde(default)]
    #[param(pattern = "^[1-9][0-9]{0,18}$")]
    cursor: Option<String>,
}

/// One event as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEventView {
    /// The event's sequence number (increasing with time).
    pub id: String,
    /// When, RFC 3339.
    pub at: String,
    /// What happened, e.g. `key.created`, `auth.sign_in_failed`.
    pub action: String,
    /// Who did it.
    pub actor: ActorView,
    /// The id of the object acted on (a key, a user, a policy's SHA-256, …).
    pub target: String,
    /// What the object is called: a key's name (revoked keys too), an account's email, a
    /// project's or the team's name; null when there is none.
    #[schema(required)]
    pub target_name: Option<String>,
    /// What changed, when the action has more to say (a rotation's `newKeyId` and
    /// `gracePeriodSeconds`; a key change's `changed` fields and their new values; a role
    /// change's `from` and `role`). Never a secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, nullable = false)]
    pub details: Option<serde_json::Value>,
    /// The client address, or null for offline (CLI) changes.
    #[schema(required)]
    pub source: Option<String>,
}

/// The actor of an event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ActorView {
    /// A user id, or `cli`, `system`, `anonymous`.
    pub id: String,
    /// The user's email when the actor is a user who still exists.
    #[schema(required)]
    pub email: Option<String>,
}

/// One page.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditPageView {
    /// Newest first.
    pub events: Vec<AuditEventView>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    #[schema(required)]
    pub next_cursor: Option<String>,
}

fn parse_limit(text: Option<&str>) -> ApiResult<usize> {
    let Some(text) = text else {
        return Ok(DEFAULT_AUDIT_PAGE);
    };
    text.parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_AUDIT_PAGE).contains(n))
        .ok_or_else(|| {
            ApiError::invalid(
                "limit",
                format!("limit must be a whole number from 1 to {MAX_AUDIT_PAGE}"),
            )
        })
}

fn parse_cursor(text: Option<&str>) -> ApiResult<Option<u64>> {
    text.map(|t| {
        t.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
            ApiError::invalid(
                "cursor",
                "cursor must be a nextCursor value from a previous page",
            )
        })
    })
    .transpose()
}

/// `GET /api/billstack/teams/{teamId}/audit-log?limit=N&cursor=C`, owners only.
#[utoipa::path(get, path = "/api/billstack/teams/{teamId}/audit-log", operation_id = "listAuditLog", tag = "teams", security(("session" = [])),
    params(("teamId" = String, Path, description = "The team, `team_…`"), AuditQuery),
    responses((status = 200, description = "A page of the audit log, newest first", body = AuditPageView),
        (status = 400, description = "Invalid `limit` or `cursor`", body = ErrorBody), (status = 401, description = "No session", body = ErrorBody), (status = 403, description = "Not a team owner", body = ErrorBody),
        (status = 404, description = "No such team (or not a member)", body = ErrorBody)))]
pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    session: SessionUser,
    Path(team_id): Path<String>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<AuditPageView>> {
    let Query(query) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let limit = parse_limit(query.limit.as_deref())?;
    let before = parse_cursor(query.cursor.as_deref())?;
    let caller = session.caller();
    let page = state
        .app
        .run(move |app| app.audit_page(&caller, &team_id, before, limit))
        .await?;
    Ok(Json(AuditPageView {
        events: page.events.into_iter().map(view).collect(),
        next_cursor: page.next_before.map(|seq| seq.to_string()),
    }))
}

fn view(named: NamedEvent) -> AuditEventView {
    let NamedEvent {
        event,
        actor_email: email,
        target_name,
    } = named;
    AuditEventView {
        id: event.seq.to_string(),
        at: clock::format_rfc3339(event.at),
        action: event.action,
        actor: ActorView {
            id: event.actor,
            email,
        },
        target: event.target,
        target_name,
        details: event.details,
        source: event.source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_cursors_are_checked_both_ways() {
        assert_eq!(parse_limit(None).ok(), Some(DEFAULT_AUDIT_PAGE));
        assert_eq!(parse_limit(Some("1")).ok(), Some(1));
        assert_eq!(parse_limit(Some("200")).ok(), Some(MAX_AUDIT_PAGE));
        for bad in ["0", "201", "-1", "ten", ""] {
            assert!(parse_limit(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(parse_cursor(None).ok(), Some(None));
        assert_eq!(parse_cursor(Some("17")).ok(), Some(Some(17)));
        for bad in ["0", "x", "-3", "18446744073709551616"] {
            assert!(parse_cursor(Some(bad)).is_err(), "{bad}");
        }
    }
}
