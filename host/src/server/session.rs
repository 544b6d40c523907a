//! Dashboard sessions: login, logout, me; the session extractor; the CSRF check; login rate
//! limiting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use billstack_keystore::{Actor, Role, User, clock};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::client::ClientIp;
use super::error::{ApiError, ApiJson, ApiResult, ErrorBody};

/// The session cookie's name.
pub const COOKIE: &str = "billstack_session";
/// A session ends after this long without use.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(12 * 3600);
/// A session ends this long after login, used or not.
pub const ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Activity is written back at most this often per session (it only moves the idle expiry).
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Failed logins allowed per (email address, client address) in a window. Counted per pair,
/// never per account alone: a guesser can then lock an account out from their own address,
/// but never its owner out from theirs.
pub const MAX_FAILURES_PER_EMAIL: u32 = 5;
/// Failed logins allowed per client address in a window, over every account it tries.
pub const MAX_FAILURES_PER_IP: u32 = 50;
/// The rate-limit window.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Counts failed logins per email and per client address.
#[derive(Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginLimiter {
    fn check(&self, keys: &[(String, u32)]) -> Result<(), u64> {
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        for (key, limit) in keys {
            if let Some((count, start)) = map.get(key) {
                let elapsed = start.elapsed();
                if elapsed < FAILURE_WINDOW && count >= limit {
                    return Err((FAILURE_WINDOW - elapsed).as_secs() + 1);
                }
            }
        }
        Ok(())
    }

    fn fail(&self, keys: &[(String, u32)]) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, (_, start)| start.elapsed() < FAILURE_WINDOW);
        }
        for (key, _) in keys {
            let entry = map.entry(key.clone()).or_insert((0, Instant::now()));
            if entry.1.elapsed() >= FAILURE_WINDOW {
                *entry = (0, Instant::now());
            }
            entry.0 += 1;
        }
    }

    fn succeed(&self, email_key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(email_key);
    }
}

/// Whether a session has ended at `now_ms`: idle too long, or older than the absolute limit.
pub fn session_expired(session: &billstack_keystore::Session, now_ms: i64) -> bool {
    let idle = now_ms - session.last_seen_at > IDLE_TIMEOUT.as_millis() as i64;
    let old = now_ms - session.created_at > ABSOLUTE_TIMEOUT.as_millis() as i64;
    idle || old
}

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
    /// Who to record in the audit log for this request's changes, owned so that it can move
    /// into a blocking task.
    pub fn audit_actor(&self) -> AuditActor {
        AuditActor {
            id: self.user.id.clone(),
            source: self.source.to_string(),
        }
    }
}

/// An owned [`Actor`]: a user and the address they acted from.
#[derive(Debug, Clone)]
pub struct AuditActor {
    id: String,
    source: String,
}

impl AuditActor {
    /// The borrowed form the store takes.
    pub fn get(&self) -> Actor<'_> {
        Actor::from_address(&self.id, &self.source)
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
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf_rejected",
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
        let Some(session) =
            super::on_store(&state.store, move |store| store.get_session(&looked_up)).await?
        else {
            return Err(ApiError::unauthenticated(
                "the session has ended; sign in again",
            ));
        };
        let now = clock::now_ms();
        if session_expired(&session, now) {
            let t = token.clone();
            super::on_store(&state.store, move |store| store.delete_session(&t)).await?;
            return Err(ApiError::unauthenticated(
                "the session has expired; sign in again",
            ));
        }
        check_same_origin(parts)?;
        let touched = token.clone();
        let user_id = session.user_id.clone();
        let touch = now - session.last_seen_at > TOUCH_EVERY.as_millis() as i64;
        let user = super::on_store(&state.store, move |store| {
            let user = store.get_user(&user_id)?;
            if user.is_some() && touch {
                store.touch_session(&touched, now)?;
            }
            Ok::<_, billstack_keystore::Error>(user)
        })
        .await?;
        let Some(user) = user else {
            return Err(ApiError::unauthenticated("the account no longer exists"));
        };
        let source = super::client::client_ip(parts, &state.trusted_proxies);
        Ok(SessionUser {
            user,
            token,
            source,
        })
    }
}

fn session_cookie(state: &AppState, value: &str, max_age: Option<u64>) -> HeaderValue {
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

async fn me_view(state: &AppState, user: &User) -> ApiResult<MeView> {
    let user_id = user.id.clone();
    let teams = super::on_store(&state.store, move |store| store.user_teams(&user_id))
        .await?
        .into_iter()
        .map(|(team, role)| MembershipView {
            id: team.id,
            name: team.name,
            role: role.as_str().to_string(),
        })
        .collect();
    Ok(MeView {
        user: UserView {
            id: user.id.clone(),
            email: user.email.clone(),
        },
        teams,
    })
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
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf_rejected",
            "cross-site sign-in refused",
        ));
    }
    let email = body.email.trim().to_lowercase();
    let keys = [
        (format!("account:{email} from:{ip}"), MAX_FAILURES_PER_EMAIL),
        (format!("ip:{ip}"), MAX_FAILURES_PER_IP),
    ];
    if let Err(retry_after) = state.login_limiter.check(&keys) {
        state.metrics.login("rate_limited");
        return Err(ApiError::rate_limited(retry_after));
    }
    let store = Arc::clone(&state.store);
    let password = body.password;
    let email_for_check = email.clone();
    let source = ip.to_string();
    // Argon2id takes tens of milliseconds of CPU: never on an executor thread. The attempt is
    // in the audit log before it is answered.
    let verified = tokio::task::spawn_blocking(move || {
        let verified = store.verify_password(&email_for_check, &password)?;
        store.record_sign_in(&email_for_check, verified.is_some(), &source)?;
        Ok::<_, billstack_keystore::Error>(verified)
    })
    .await??;
    let Some(user) = verified else {
        state.login_limiter.fail(&keys);
        state.metrics.login("failure");
        tracing::info!(client = %ip, "sign-in failed");
        return Err(ApiError::unauthenticated("wrong email or password"));
    };
    state.login_limiter.succeed(&keys[0].0);
    state.metrics.login("success");
    tracing::info!(user = %user.id, client = %ip, "signed in");
    let store = Arc::clone(&state.store);
    let user_id = user.id.clone();
    let (token, _) = tokio::task::spawn_blocking(move || store.create_session(&user_id)).await??;
    let body = me_view(&state, &user).await?;
    let mut response = (StatusCode::OK, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&state, &token, None));
    Ok(response)
}

/// `POST /api/auth/logout`.
#[utoipa::path(post, path = "/api/auth/logout", operation_id = "signOut", tag = "sessions", security(("session" = [])),
    responses((status = 204, description = "Signed out; the cookie is cleared"),
        (status = 401, description = "No session", body = ErrorBody), (status = 403, description = "Not from this server's pages (CSRF)", body = ErrorBody)))]
pub(super) async fn logout(
    State(state): State<Arc<AppState>>,
    session: SessionUser,
) -> ApiResult<Response> {
    let store = Arc::clone(&state.store);
    tokio::task::spawn_blocking(move || store.delete_session(&session.token)).await??;
    let mut response = StatusCode::NO_CONTENT.into_response();
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
    Ok(Json(me_view(&state, &session.user).await?))
}

/// The caller's role in `team_id`; 404 (not 403) for a non-member, so a team's existence is
/// not revealed.
pub async fn require_member(
    state: &AppState,
    session: &SessionUser,
    team_id: &str,
) -> ApiResult<Role> {
    let (team, user) = (team_id.to_owned(), session.user.id.clone());
    super::on_store(&state.store, move |store| store.membership(&team, &user))
        .await?
        .ok_or_else(|| ApiError::not_found("team"))
}

/// Like [`require_member`], and 403 for a member who is not an owner; `action` completes
/// "only team owners can …".
pub async fn require_owner(
    state: &AppState,
    session: &SessionUser,
    team_id: &str,
    action: &str,
) -> ApiResult<()> {
    match require_member(state, session, team_id).await? {
        Role::Owner => Ok(()),
        Role::Member => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("only team owners can {action}"),
        )),
    }
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

    #[test]
    fn sessions_expire_when_idle_or_old_and_not_before() {
        let idle = IDLE_TIMEOUT.as_millis() as i64;
        let absolute = ABSOLUTE_TIMEOUT.as_millis() as i64;
        let s = billstack_keystore::Session {
            user_id: "user_1".into(),
            created_at: 0,
            last_seen_at: 0,
        };
        assert!(
            !session_expired(&s, idle),
            "exactly at the idle limit is still fine"
        );
        assert!(session_expired(&s, idle + 1), "idle too long");
        // Kept busy, it still ends at the absolute limit.
        let busy = billstack_keystore::Session {
            last_seen_at: absolute,
            ..s.clone()
        };
        assert!(!session_expired(&busy, absolute));
        assert!(session_expired(&busy, absolute + 1));
    }

    #[test]
    fn limiter_allows_up_to_the_limit_then_refuses() {
        let l = LoginLimiter::default();
        let keys = [("email:a".to_string(), 2)];
        assert!(l.check(&keys).is_ok());
        l.fail(&keys);
        assert!(l.check(&keys).is_ok());
        l.fail(&keys);
        assert!(l.check(&keys).is_err());
        l.succeed("email:a");
        assert!(l.check(&keys).is_ok());
    }
}
