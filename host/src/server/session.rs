//! Dashboard sessions over HTTP: login, logout, me; the session extractor (cookie) and the
//! CSRF check. The rules (limits, session ages, membership) are in [`crate::app::accounts`].

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::Response;
use billstack_keystore::{Role, Team, User};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::client::ClientIp;
use super::respond::{self, ApiError, ApiJson, ApiResult, ErrorBody};
use crate::app::Caller;
use crate::app::accounts::SignedIn;

/// The session cookie's name.
pub const COOKIE: &str = "billstack_session";

/// The signed-in user of a request (from the session cookie).
pub struct SessionUser {
    /// The user.
    pub user: User,
    /// The raw session token (to end the session).
    pub token: String,
    /// Where the request came from.
    pub source: std::net::IpAddr,
}

impl SessionUser {
    /// The caller the services see: this account, from this address.
    pub fn caller(&self) -> Caller {
        Caller::Account {
            user_id: self.user.id.clone(),
            source: self.source.to_string(),
        }
    }
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

fn is_state_changing(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The authority (`host[:port]`) of an `Origin` or `Referer` value.
fn authority_of(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    Some(rest.split(['/', '?', '#']).next().unwrap_or(rest))
}

/// CSRF: a state-changing request authenticated by cookie must come from a page of this
/// server: its `Origin` (or, failing that, `Referer`) must name the host it was sent to.
pub fn check_same_origin(parts: &Parts) -> ApiResult<()> {
    if !is_state_changing(&parts.method) {
        return Ok(());
    }
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    let claimed = parts
        .headers
        .get(header::ORIGIN)
        .or_else(|| parts.headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok())
        .and_then(authority_of);
    match (host, claimed) {
        (Some(host), Some(origin)) if host.eq_ignore_ascii_case(origin) => Ok(()),
        _ => Err(ApiError::csrf(
            "state-changing requests must carry an Origin (or Referer) header of this server",
        )),
    }
}

impl FromRequestParts<Arc<AppState>> for SessionUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> ApiResult<SessionUser> {
        let Some(token) = cookie_token(&parts.headers) else {
            if parts.headers.contains_key(header::AUTHORIZATION) {
                return Err(ApiError::unauthenticated(
                    "API keys cannot be used here; sign in to the dashboard (session cookie)",
                ));
            }
            return Err(ApiError::unauthenticated("sign in first"));
        };
        let looked_up = token.clone();
        let user = state
            .app
            .run(move |app| app.session_user(&looked_up))
            .await?;
        check_same_origin(parts)?;
        let source = super::client::client_ip(parts, &state.trusted_proxies);
        Ok(SessionUser {
            user,
            token,
            source,
        })
    }
}

pub(super) fn session_cookie(state: &AppState, value: &str, max_age: Option<u64>) -> HeaderValue {
    let mut cookie = format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/");
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    if state.cookie_secure {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie)
        .unwrap_or_else(|_| HeaderValue::from_static("billstack_session=; Path=/"))
}

/// The signed-in user and their teams.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeView {
    /// The account.
    pub user: UserView,
    /// The teams the account belongs to, with its role in each.
    pub teams: Vec<MembershipView>,
}

/// An account.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    /// `user_…`
    pub id: String,
    /// Its email address (lower case).
    pub email: String,
    /// A deployment administrator (may create teams).
    pub admin: bool,
}

/// A team the account belongs to.
#[derive(Debug, Serialize, ToSchema)]
pub struct MembershipView {
    /// `team_…`
    pub id: String,
    /// Display name.
    pub name: String,
    /// `owner` or `member`.
    pub role: String,
}

pub(super) fn me_view(user: &User, teams: Vec<(Team, Role)>) -> MeView {
    MeView {
        user: UserView {
            id: user.id.clone(),
            email: user.email.clone(),
            admin: user.admin,
        },
        teams: teams
            .into_iter()
            .map(|(team, role)| MembershipView {
                id: team.id,
                name: team.name,
                role: role.as_str().to_string(),
            })
            .collect(),
    }
}

/// The body of `POST /api/auth/login`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginBody {
    /// The account's email address.
    email: String,
    /// Its password.
    #[schema(format = Password)]
    password: String,
}

/// `POST /api/auth/login`.
#[utoipa::path(post, path = "/api/auth/login", operation_id = "signIn", tag = "sessions",
    request_body = LoginBody,
    responses(
        (status = 200, description = "Signed in; the session cookie is set", body = MeView,
            headers(("Set-Cookie" = String, description = "`billstack_session=…; HttpOnly; SameSite=Strict; Path=/`"))),
        (status = 400, description = "Malformed body", body = ErrorBody), (status = 401, description = "Wrong email or password", body = ErrorBody),
        (status = 403, description = "Cross-site sign-in", body = ErrorBody), (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 429, description = "Too many failed sign-ins; see Retry-After", body = ErrorBody)))]
pub(super) async fn login(
    State(state): State<Arc<AppState>>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginBody>,
) -> ApiResult<Response> {
    // Login is not cookie-authenticated, but a cross-site login (login CSRF) is still refused
    // when the browser says where it comes from.
    if let (Some(origin), Some(host)) = (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) && authority_of(origin).is_none_or(|a| !a.eq_ignore_ascii_case(host))
    {
        return Err(ApiError::csrf("cross-site sign-in refused"));
    }
    let source = ip.to_string();
    let signed_in = state
        .app
        .run(move |app| app.sign_in(&body.email, &body.password, &source))
        .await?;
    Ok(signed_in_response(&state, signed_in))
}

/// 200 with the account and its teams, and the new session's cookie: the answer to a sign-in
/// and to an accepted invitation.
pub(super) fn signed_in_response(state: &AppState, signed_in: SignedIn) -> Response {
    let mut response = respond::ok_json(me_view(&signed_in.user, signed_in.teams));
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(state, &signed_in.token, None),
    );
    response
}

/// `POST /api/auth/logout`.
#[utoipa::path(post, path = "/api/auth/logout", operation_id = "signOut", tag = "sessions", security(("session" = [])),
    responses((status = 204, description = "Signed out; the cookie is cleared"),
        (status = 401, description = "No session", body = ErrorBody), (status = 403, description = "Not from this server's pages (CSRF)", body = ErrorBody)))]
pub(super) async fn logout(
    State(state): State<Arc<AppState>>,
    session: SessionUser,
) -> ApiResult<Response> {
    state
        .app
        .run(move |app| app.sign_out(&session.token))
        .await?;
    let mut response = respond::no_content();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&state, "", Some(0)));
    Ok(response)
}

/// `GET /api/auth/me`.
#[utoipa::path(get, path = "/api/auth/me", operation_id = "getMe", tag = "sessions", security(("session" = [])),
    responses((status = 200, description = "The signed-in account and its teams", body = MeView),
        (status = 401, description = "No session", body = ErrorBody)))]
pub(super) async fn me(
    State(state): State<Arc<AppState>>,
    session: SessionUser,
) -> ApiResult<Json<MeView>> {
    let user = session.user;
    let id = user.id.clone();
    let teams = state.app.run(move |app| app.teams_of(&id)).await?;
    Ok(Json(me_view(&user, teams)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_parsing() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; billstack_session=abc ; b=2"),
        );
        assert_eq!(cookie_token(&h).as_deref(), Some("abc"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("billstack_session="),
        );
        assert_eq!(cookie_token(&h), None);
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("xbillstack_session=abc"),
        );
        assert_eq!(cookie_token(&h), None);
    }

    #[test]
    fn origins() {
        assert_eq!(
            authority_of("http://127.0.0.1:8080"),
            Some("127.0.0.1:8080")
        );
        assert_eq!(
            authority_of("https://keys.example.com/dashboard?x"),
            Some("keys.example.com")
        );
        assert_eq!(authority_of("null"), None);
    }
}
