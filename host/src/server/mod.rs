//! `billstack serve`: the HTTP server (axum).
//!
//! Routes: health and metrics; dashboard sessions ([`session`]); the documented key endpoints
//! ([`keys`]), a team's projects ([`projects`]), policy ([`policies`]) and audit log
//! ([`audit`]); and the three front doors for SaaS requests ([`front`]). Decisions run on the
//! blocking pool behind a semaphore, so a slow plugin holds at most that many threads and never
//! an executor worker.

mod audit;
mod client;
pub mod control;
mod dashboard;
mod error;
mod front;
mod keys;
mod metrics;
pub mod openapi;
mod policies;
mod projects;
mod proxy;
mod reload;
mod session;
mod usage;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use billstack_keystore::{NewUser, Role, Store};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::Rng;
use tokio::sync::Semaphore;
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument;

pub use error::{ApiError, ApiResult};
pub use metrics::Metrics;
pub use session::{COOKIE, MAX_FAILURES_PER_EMAIL, MAX_FAILURES_PER_IP};

use crate::config::Settings;
use crate::console;
use crate::policy::{PolicySet, ScopePolicy};

/// Shared server state.
pub struct AppState {
    /// The store.
    pub store: Arc<Store>,
    /// Active policies.
    pub policies: Arc<PolicySet>,
    /// Bounds concurrent decisions (each may run a plugin for up to its deadline).
    pub decisions: Semaphore,
    /// Metrics.
    pub metrics: Metrics,
    /// Failed-login counters.
    pub login_limiter: session::LoginLimiter,
    /// Pending `lastUsedAt` updates.
    pub usage: Arc<usage::UsageTracker>,
    /// Mark cookies `Secure`.
    pub cookie_secure: bool,
    /// Upstream for the reverse proxy.
    pub upstream: Option<String>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Per-key request budgets.
    pub key_limiter: crate::ratelimit::KeyLimiter,
    /// Failed keys per client address.
    pub address_throttle: crate::ratelimit::AddressThrottle,
    /// Forward `Authorization` upstream.
    pub forward_authorization: bool,
    /// Served over HTTPS (for the proxy's `X-Forwarded-Proto`).
    pub tls: bool,
    /// The proxy's HTTP client.
    pub http: Client<HttpConnector, axum::body::Body>,
    /// Compiles and validates uploaded policies.
    pub engine: Arc<crate::policy::PolicyEngine>,
}

impl AppState {
    /// State for a store and policies, configured from `settings`.
    pub fn new(
        store: Arc<Store>,
        policies: Arc<PolicySet>,
        engine: Arc<crate::policy::PolicyEngine>,
        settings: &Settings,
    ) -> AppState {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_nodelay(true);
        AppState {
            store,
            policies,
            decisions: Semaphore::new(MAX_CONCURRENT_DECISIONS),
            metrics: Metrics::default(),
            login_limiter: session::LoginLimiter::default(),
            usage: Arc::new(usage::UsageTracker::default()),
            cookie_secure: settings.cookie_secure,
            upstream: settings.upstream.clone(),
            trusted_proxies: settings.trusted_proxies.clone(),
            key_limiter: crate::ratelimit::KeyLimiter::default(),
            address_throttle: crate::ratelimit::AddressThrottle::new(
                settings.unknown_keys_per_address,
                settings.throttle_window,
            ),
            forward_authorization: settings.forward_authorization,
            tls: settings.tls.is_some(),
            http: Client::builder(TokioExecutor::new()).build(connector),
            engine,
        }
    }
}

/// The one rule for blocking work in the server: a store call never runs on an executor thread
/// (sled may wait for the disk, and every write waits while a backup holds the write gate), and
/// neither does compiling a plugin. Handlers reach the store only through this, which runs `f`
/// on the blocking pool; the exceptions are memory-only reads made for speed on the decision
/// path (`Store::cached_key`).
pub(crate) async fn on_store<T, E>(
    store: &Arc<Store>,
    f: impl FnOnce(&Store) -> Result<T, E> + Send + 'static,
) -> ApiResult<T>
where
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
{
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || f(&store))
        .await?
        .map_err(Into::into)
}

/// Most decisions run at once; the rest queue.
pub const MAX_CONCURRENT_DECISIONS: usize = 64;
/// Largest JSON body the API accepts.
pub const MAX_JSON_BODY: usize = 64 * 1024;
/// Longest an API request (not a proxied one) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a policy upload (validation includes compiling the component) may take.
pub const POLICY_UPLOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// The application's routes.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/api/auth/login", post(session::login))
        .route("/api/auth/logout", post(session::logout))
        .route("/api/auth/me", get(session::me))
        .route(
            "/api/billstack/teams/{team_id}/api-keys",
            post(keys::create).get(keys::list),
        )
        .route(
            "/api/billstack/teams/{team_id}/api-keys/{key_id}",
            axum::routing::delete(keys::revoke),
        )
        .route(
            "/api/billstack/teams/{team_id}/api-keys/{key_id}/rotate",
            post(keys::rotate),
        )
        .route(
            "/api/billstack/teams/{team_id}/api-keys/{key_id}/usage",
            get(keys::usage),
        )
        .route(
            "/api/billstack/teams/{team_id}/projects",
            get(projects::list),
        )
        .route("/api/billstack/teams/{team_id}/audit-log", get(audit::list))
        .route("/api/billstack/keys/verify", post(front::json_verify))
        .route("/auth/verify", any(front::forward_auth))
        .route("/", get(dashboard::index))
        .route("/assets/app.js", get(dashboard::app_js))
        .route("/assets/app.css", get(dashboard::app_css))
        .route("/favicon.svg", get(dashboard::favicon))
        .route("/favicon.ico", get(dashboard::favicon))
        .route("/healthz", get(healthz))
        .route("/api/openapi.json", get(openapi::openapi_json))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ));
    // A policy upload is compiled before it is answered, which takes seconds of CPU for a big
    // (JavaScript) plugin, so it gets its own, longer timeout; the handler enforces the plugin
    // size cap itself.
    let policy = Router::new()
        .route(
            "/api/billstack/teams/{team_id}/policy",
            get(policies::get)
                .put(policies::upload)
                .delete(policies::reset),
        )
        .layer(DefaultBodyLimit::disable())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            POLICY_UPLOAD_TIMEOUT,
        ));
    // Proxied requests stream their bodies to the upstream, so no body limit or timeout here
    // beyond the upstream timeout in `front::proxy`.
    let proxied = Router::new()
        .route(
            "/api/billstack/teams/{team_id}/projects/{project_id}",
            any(proxy::proxy),
        )
        .route(
            "/api/billstack/teams/{team_id}/projects/{project_id}/{*rest}",
            any(proxy::proxy),
        );
    api.merge(policy)
        .merge(proxied)
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            observe,
        ))
        .with_state(state)
}

/// The response header that carries a request's id (also accepted from a trusted caller).
pub const REQUEST_ID: &str = "x-request-id";

/// A request id sent by the client is kept when it is short and plain; otherwise (or when
/// there is none) a random one is made.
fn request_id(request: &Request) -> String {
    request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
        .map_or_else(
            || format!("{:016x}", rand::rng().random::<u64>()),
            str::to_owned,
        )
}

/// Every request: an id (in the `request` span of everything logged while it runs, and in the
/// `X-Request-Id` response header), a log line when it ends (debug; warn for a 5xx), and the
/// request metrics. Only the path is logged, never the query, headers or body, which is where
/// keys, cookies and passwords travel.
async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let method = request.method().as_str().to_string();
    let id = request_id(&request);
    let span = tracing::info_span!(
        "request",
        id = %id,
        method = %method,
        path = %request.uri().path(),
    );
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let seconds = started.elapsed().as_secs_f64();
    state.metrics.request(&route, &method, status, seconds);
    let _entered = span.enter();
    let ms = seconds * 1000.0;
    if status >= 500 {
        tracing::warn!(status, ms, "request failed");
    } else {
        tracing::debug!(status, ms, "request finished");
    }
    if let Ok(v) = axum::http::HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    response
}

/// `GET /healthz`.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "operations",
    responses((status = 200, description = "The process answers: `ok`", content_type = "text/plain", body = String)))]
async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`.
///
/// The first line is `ready` or `not ready`; one line per check follows. A team policy that
/// did not load is listed (`team policy TEAM: failed …`) but leaves the server ready: only
/// that team's requests fail closed, and every replica would see the same.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "operations",
    responses(
        (status = 200, description = "The store answers and a default policy is loaded: `ready`, then one line per check (including team policies that failed to load)", content_type = "text/plain", body = String),
        (status = 503, description = "Not ready: `not ready`, then one line per check", content_type = "text/plain", body = String)))]
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let mut lines = Vec::new();
    let store_ok = match on_store(&state.store, |store| store.get_team("")).await {
        Ok(_) => {
            lines.push("store: ok".to_string());
            true
        }
        Err(e) => {
            tracing::warn!(error = ?e, "readiness: the store does not answer");
            lines.push("store: failed".to_string());
            false
        }
    };
    let default = state.policies.default_policy();
    lines.push(format!(
        "default policy: ok ({} {}, sha256 {})",
        default.info().name,
        default.info().version,
        default.sha256_hex()
    ));
    for (team, broken) in state.policies.broken_teams() {
        lines.push(format!(
            "team policy {team}: failed to load (sha256 {}); its requests fail closed: {}",
            broken.sha256_hex(),
            broken.error().replace('\n', " ")
        ));
    }
    let (status, head) = if store_ok {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    };
    (status, format!("{head}\n{}\n", lines.join("\n"))).into_response()
}

/// `GET /metrics`.
///
/// OpenMetrics 1.0 when `Accept` names `application/openmetrics-text` (as Prometheus does),
/// otherwise the Prometheus text format 0.0.4.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4, or OpenMetrics 1.0 when Accept asks for it", content_type = "text/plain", body = String)))]
async fn metrics_text(
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
) -> Response {
    let format = metrics::Format::negotiate(
        headers
            .get(axum::http::header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    );
    (
        [(axum::http::header::CONTENT_TYPE, format.content_type())],
        state.metrics.render(format),
    )
        .into_response()
}

fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..24)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// On an empty store: a team, a project and an owner account. The password comes from
/// `BILLSTACK_ADMIN_PASSWORD` or is generated and printed once on stderr.
pub fn bootstrap(store: &Store) -> anyhow::Result<()> {
    if !store.is_empty()? {
        return Ok(());
    }
    let team = store.create_team(None, "My team", "system".into())?;
    let project = store.create_project(&team.id, None, "My project", "system".into())?;
    let email =
        std::env::var("BILLSTACK_ADMIN_EMAIL").unwrap_or_else(|_| "admin@localhost".to_string());
    let (password, generated) = match std::env::var("BILLSTACK_ADMIN_PASSWORD") {
        Ok(p) if !p.is_empty() => (p, false),
        _ => (random_password(), true),
    };
    let user = store
        .create_user(
            &NewUser {
                email,
                password: password.clone(),
                team_id: team.id.clone(),
                role: Role::Owner,
            },
            "system".into(),
        )
        .context("cannot create the bootstrap account")?;
    console::say(
        console::Level::Info,
        &format!(
            "bootstrap: created team {} with project {} and owner {}",
            team.id, project.id, user.email
        ),
        &[
            ("team", &team.id),
            ("project", &project.id),
            ("email", &user.email),
        ],
    );
    if generated {
        // Printed once, to the operator's terminal only; it is stored nowhere in clear.
        console::say(
            console::Level::Warn,
            &format!(
                "bootstrap: generated password for {}: {password}",
                user.email
            ),
            &[("email", &user.email)],
        );
    }
    Ok(())
}

/// Runs the server until SIGINT or SIGTERM.
pub fn serve_blocking(settings: Settings) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(settings))
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
}

/// Opens everything, binds, and serves until a shutdown signal; in-flight requests finish,
/// then pending usage is written and the store flushed.
///
/// Everything that can refuse a start is checked before the store is touched: the upstream,
/// the data directory's path, the listen address (bound), the TLS files (loaded) and the
/// deployment default policy (loaded). Only then is the store opened, and an empty one
/// bootstrapped, so a failed start spends no one-time password and leaves no store behind.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    if let Some(u) = &settings.upstream
        && u.starts_with("https://")
    {
        bail!(
            "upstream {u}: https upstreams are not supported yet; use http:// on a trusted network"
        );
    }
    if settings.data_dir.exists() && !settings.data_dir.is_dir() {
        bail!(
            "the data directory {} is not a directory",
            settings.data_dir.display()
        );
    }
    let listener = std::net::TcpListener::bind(settings.listen)
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    listener.set_nonblocking(true)?;
    let tls = match &settings.tls {
        None => None,
        Some(tls) => Some(
            axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
                .await
                .with_context(|| {
                    format!(
                        "cannot use the TLS certificate {} and key {}",
                        tls.cert.display(),
                        tls.key.display()
                    )
                })?,
        ),
    };
    let engine = crate::startup::engine_for(&settings)?;
    let default_policy = {
        let (engine, settings) = (Arc::clone(&engine), settings.clone());
        tokio::task::spawn_blocking(move || crate::startup::load_default_policy(&engine, &settings))
            .await??
    };
    let store = {
        let dir = settings.data_dir.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<Arc<Store>> {
            let store = Arc::new(Store::open(&dir)?);
            bootstrap(&store)?;
            Ok(store)
        })
        .await??
    };
    let policies = PolicySet::new(default_policy);
    let policies = {
        let (engine, store) = (Arc::clone(&engine), Arc::clone(&store));
        tokio::task::spawn_blocking(move || {
            crate::startup::load_team_policies(&engine, &policies, &store).map(|()| policies)
        })
        .await??
    };
    let state = Arc::new(AppState::new(
        Arc::clone(&store),
        Arc::new(policies),
        Arc::clone(&engine),
        &settings,
    ));
    usage::spawn_flusher(Arc::clone(&state.usage), Arc::clone(&store));
    control::spawn(Arc::clone(&store), &settings.data_dir);
    if let Some(path) = &settings.policy {
        reload::spawn(
            path.clone(),
            Arc::clone(&engine),
            Arc::clone(&state.policies),
        );
    }
    let addr = listener.local_addr()?;
    let app = router(Arc::clone(&state)).into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        None => {
            // A fixed line that scripts and tests wait for (the port matters with --listen :0).
            let url = format!("http://{addr}");
            console::say(
                console::Level::Info,
                &format!("billstack listening on {url}"),
                &[("url", &url)],
            );
            axum::serve(tokio::net::TcpListener::from_std(listener)?, app)
                .with_graceful_shutdown(shutdown_signal())
                .await?;
        }
        Some(config) => {
            let handle = axum_server::Handle::new();
            let stopping = handle.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                stopping.graceful_shutdown(Some(REQUEST_TIMEOUT));
            });
            let url = format!("https://{addr}");
            console::say(
                console::Level::Info,
                &format!("billstack listening on {url}"),
                &[("url", &url)],
            );
            axum_server::from_tcp_rustls(listener, config)?
                .handle(handle)
                .serve(app)
                .await?;
        }
    }
    control::remove(&settings.data_dir);
    let usage = Arc::clone(&state.usage);
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        usage.flush(&store)?;
        store.flush()?;
        Ok(())
    })
    .await??;
    console::say(console::Level::Info, "billstack stopped", &[]);
    Ok(())
}
