//! `billstack serve`: the HTTP server.
//!
//! Serves the health endpoints and the decision through forward auth (`/auth/verify`) and JSON
//! verify (`POST /api/billstack/keys/verify`). Decisions run on the blocking pool behind a
//! semaphore, so a slow plugin can hold at most that many threads and never an executor worker.

use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use billstack_keystore::{NewUser, Role, Store};
use rand::Rng;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::config::Settings;
use crate::decision::{Credential, Decider, Decision, DenyKind};
use crate::policy::PolicySet;

/// Shared server state.
pub struct AppState {
    /// The store.
    pub store: Arc<Store>,
    /// Active policies.
    pub policies: Arc<PolicySet>,
    /// Bounds concurrent decisions (each may run a plugin for up to its deadline).
    pub decisions: Semaphore,
}

/// Most decisions run at once; the rest queue.
const MAX_CONCURRENT_DECISIONS: usize = 64;

/// The application's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/auth/verify", any(forward_auth))
        .route("/api/billstack/keys/verify", post(json_verify))
        .with_state(state)
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    // Ready when the store answers and a default policy is loaded.
    let store_ok = state.store.get_team("").is_ok();
    let policy_ok = !state.policies.default_policy().sha256_hex().is_empty();
    if store_ok && policy_ok {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn decide(state: &Arc<AppState>, credential: Option<String>, raw_key: bool, method: String, target: String) -> Decision {
    let Ok(_permit) = state.decisions.acquire().await else {
        return internal_decision("decision semaphore closed");
    };
    let state = Arc::clone(state);
    let joined = tokio::task::spawn_blocking(move || {
        let decider = Decider { store: &state.store, policies: &state.policies };
        let credential = match (&credential, raw_key) {
            (Some(k), true) => Credential::RawKey(k),
            (c, _) => Credential::AuthorizationHeader(c.as_deref()),
        };
        decider.decide(credential, &method, &target)
    })
    .await;
    match joined {
        Ok(d) => d,
        Err(e) => internal_decision(&e.to_string()),
    }
}

fn internal_decision(cause: &str) -> Decision {
    Decision::Deny(crate::decision::Denied {
        kind: DenyKind::Internal,
        message: "internal error".into(),
        required_scope: None,
        identity: None,
        credential_sent: true,
        cause: Some(cause.to_string()),
    })
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn forward_auth(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let headers = request.headers();
    let (method, target) = match (
        header_str(headers, "x-forwarded-method").zip(header_str(headers, "x-forwarded-uri")),
        header_str(headers, "x-original-method").zip(header_str(headers, "x-original-uri")),
    ) {
        (Some((m, u)), _) | (None, Some((m, u))) => (m.to_string(), u.to_string()),
        (None, None) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "missing_original_request",
                "send X-Forwarded-Method and X-Forwarded-Uri (or X-Original-Method and X-Original-URI)",
            );
        }
    };
    let authorization = header_str(headers, "authorization").map(str::to_owned);
    let has_auth_header = headers.contains_key(header::AUTHORIZATION);
    let decision = decide(&state, authorization, false, method, target).await;
    decision_response(&decision, has_auth_header)
}

/// `{"error": {"code", "message"}}` with a status.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": {"code": code, "message": message}}))).into_response()
}

fn identity_headers(headers: &mut HeaderMap, decision: &Decision) {
    let Some(id) = decision.identity() else { return };
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

/// The HTTP form of a decision, shared by forward auth and (later) the proxy.
pub fn decision_response(decision: &Decision, credential_sent: bool) -> Response {
    match decision {
        Decision::Allow(_) => {
            let mut response = StatusCode::OK.into_response();
            identity_headers(response.headers_mut(), decision);
            response
        }
        Decision::Deny(d) => {
            if let Some(cause) = &d.cause {
                tracing::warn!(code = d.kind.code(), cause = %cause, "request refused by a failure");
            }
            let status = StatusCode::from_u16(d.kind.status()).unwrap_or(StatusCode::FORBIDDEN);
            let message = if d.kind == DenyKind::Internal { "internal error" } else { d.message.as_str() };
            let mut body = json!({"error": {"code": d.kind.code(), "message": message}});
            if let Some(scope) = &d.required_scope {
                body["error"]["requiredScope"] = json!(scope);
            }
            let mut response = (status, Json(body)).into_response();
            let challenge = match d.kind {
                DenyKind::MissingCredential if !credential_sent => Some("Bearer realm=\"billstack\"".to_string()),
                DenyKind::MissingCredential | DenyKind::InvalidKey | DenyKind::ExpiredKey => {
                    Some("Bearer realm=\"billstack\", error=\"invalid_token\"".to_string())
                }
                DenyKind::InsufficientScope => Some(format!(
                    "Bearer realm=\"billstack\", error=\"insufficient_scope\", scope=\"{}\"",
                    d.required_scope.as_deref().unwrap_or_default()
                )),
                _ => None,
            };
            if let Some(c) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, c);
            }
            response
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyRequest {
    key: String,
    method: String,
    path: String,
}

async fn json_verify(State(state): State<Arc<AppState>>, body: axum::body::Bytes) -> Response {
    let request: VerifyRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, "invalid_json", &format!("invalid request body: {e}")),
    };
    let decision = decide(&state, Some(request.key), true, request.method, request.path).await;
    if let Decision::Deny(d) = &decision {
        if d.kind == DenyKind::Internal {
            return decision_response(&decision, true);
        }
    }
    let mut body = match &decision {
        Decision::Allow(_) => json!({"valid": true, "code": "VALID"}),
        Decision::Deny(d) => {
            let mut b = json!({"valid": false, "code": d.kind.verify_code()});
            if let Some(s) = &d.required_scope {
                b["requiredScope"] = json!(s);
            }
            b
        }
    };
    if let Some(id) = decision.identity() {
        body["keyId"] = json!(id.key_id);
        body["teamId"] = json!(id.team_id);
        body["projectId"] = json!(id.project_id);
        body["scopes"] = json!(id.scopes);
    }
    (StatusCode::OK, Json(body)).into_response()
}

fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..24).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// On an empty store: a team, a project and an owner account. The password comes from
/// `BILLSTACK_ADMIN_PASSWORD` or is generated and printed once on stderr.
pub fn bootstrap(store: &Store) -> anyhow::Result<()> {
    if !store.is_empty()? {
        return Ok(());
    }
    let team = store.create_team(None, "My team", "system")?;
    let project = store.create_project(&team.id, None, "My project", "system")?;
    let email = std::env::var("BILLSTACK_ADMIN_EMAIL").unwrap_or_else(|_| "admin@localhost".to_string());
    let (password, generated) = match std::env::var("BILLSTACK_ADMIN_PASSWORD") {
        Ok(p) if !p.is_empty() => (p, false),
        _ => (random_password(), true),
    };
    let user = store
        .create_user(&NewUser { email: email.clone(), password: password.clone(), team_id: team.id.clone(), role: Role::Owner }, "system")
        .context("cannot create the bootstrap account")?;
    eprintln!("bootstrap: created team {} with project {} and owner {}", team.id, project.id, user.email);
    if generated {
        // Printed once, to the operator's terminal only; it is not stored anywhere in clear.
        eprintln!("bootstrap: generated password for {}: {password}", user.email);
    }
    Ok(())
}

/// Runs the server until SIGINT or SIGTERM.
pub fn serve_blocking(settings: Settings) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(serve(settings))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Opens everything, binds, and serves until a shutdown signal; then flushes the store.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let store = Arc::new(Store::open(&settings.data_dir)?);
    bootstrap(&store)?;
    let engine = crate::runtime::engine_for(&settings)?;
    let policies = {
        let (engine, settings, store) = (Arc::clone(&engine), settings.clone(), Arc::clone(&store));
        tokio::task::spawn_blocking(move || crate::runtime::load_policies(&engine, &settings, &store)).await??
    };
    let state = Arc::new(AppState {
        store: Arc::clone(&store),
        policies: Arc::new(policies),
        decisions: Semaphore::new(MAX_CONCURRENT_DECISIONS),
    });
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    // A fixed line that scripts and tests wait for (the port matters when --listen used :0).
    eprintln!("billstack listening on http://{addr}");
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown_signal()).await?;
    store.flush()?;
    eprintln!("billstack stopped");
    Ok(())
}
