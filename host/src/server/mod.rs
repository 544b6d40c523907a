//! `billstack serve`: the HTTP layer (axum) over the services in [`crate::app`].
//!
//! Handlers only extract, call one service, and turn its result into a response through
//! [`respond`], the one module that picks status codes. Routes are registered once, in
//! [`routes`]: dashboard sessions ([`session`]); keys ([`keys`]), projects ([`projects`]),
//! policy ([`policies`]) and audit log ([`audit`]); the three front doors ([`front`],
//! [`proxy`]); health, readiness, metrics and the OpenAPI document. No handler touches the
//! store: services that may block run on the blocking pool through [`App::run`].

mod audit;
mod client;
pub mod control;
mod dashboard;
mod front;
mod keys;
mod members;
pub mod openapi;
mod policies;
mod projects;
mod proxy;
mod reload;
pub mod respond;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::Rng;
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use crate::app::accounts::{MAX_FAILURES_PER_EMAIL, MAX_FAILURES_PER_IP};
pub use respond::{ApiError, ApiResult};
pub use session::COOKIE;

use crate::app::App;
use crate::config::Settings;
use crate::console;

/// What the HTTP layer holds: the services, and the settings only HTTP needs.
pub struct AppState {
    /// The services.
    pub app: Arc<App>,
    /// Mark cookies `Secure`.
    pub cookie_secure: bool,
    /// Upstream for the reverse proxy.
    pub upstream: Option<String>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Forward `Authorization` upstream.
    pub forward_authorization: bool,
    /// Served over HTTPS (for the proxy's `X-Forwarded-Proto`).
    pub tls: bool,
    /// The proxy's HTTP client.
    pub http: Client<HttpConnector, axum::body::Body>,
}

impl AppState {
    /// HTTP state around `app`, configured from `settings`.
    pub fn new(app: Arc<App>, settings: &Settings) -> AppState {
        AppState {
            cookie_secure: settings.cookie_secure,
            trusted_proxies: settings.trusted_proxies.clone(),
            forward_authorization: settings.forward_authorization,
            tls: settings.tls.is_some(),
            ..AppState::plain(app, settings.upstream.clone())
        }
    }

    /// HTTP state around `app` with the defaults (plain HTTP, no trusted proxies, the key not
    /// forwarded) and an optional proxy upstream: for in-process tests and embedding.
    pub fn plain(app: Arc<App>, upstream: Option<String>) -> AppState {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_nodelay(true);
        AppState {
            app,
            cookie_secure: false,
            upstream,
            trusted_proxies: Vec::new(),
            forward_authorization: false,
            tls: false,
            http: Client::builder(TokioExecutor::new()).build(connector),
        }
    }
}

/// Largest JSON body the API accepts.
pub const MAX_JSON_BODY: usize = 64 * 1024;
/// Longest an API request (not a proxied one) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a policy upload (validation includes compiling the component) may take.
pub const POLICY_UPLOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// Every route, registered once: the documented endpoints through `routes!` (their paths come
/// from their `#[utoipa::path]`, so the router and the OpenAPI document cannot disagree), and
/// the few whose shape OpenAPI cannot express (forward auth answers any method, the proxy any
/// path below a project; both are documented in [`openapi::ApiDoc`]) and the dashboard's
/// assets, by hand.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    let api = OpenApiRouter::with_openapi(openapi::base_document())
        .routes(routes!(session::login))
        .routes(routes!(session::logout))
        .routes(routes!(session::me))
        .routes(routes!(members::accept))
        .routes(routes!(members::change_password))
        .routes(routes!(members::create_team))
        .routes(routes!(members::list, members::add))
        .routes(routes!(members::change_role, members::remove))
        .routes(routes!(keys::create, keys::list))
        .routes(routes!(keys::get, keys::revoke, keys::update))
        .routes(routes!(keys::rotate))
        .routes(routes!(keys::usage))
        .routes(routes!(projects::list, members::create_project))
        .routes(routes!(audit::list))
        .routes(routes!(front::json_verify))
        .route(front::FORWARD_AUTH_PATH, any(front::forward_auth))
        .route("/", get(dashboard::index))
        .route("/assets/app.js", get(dashboard::app_js))
        .route("/assets/app.css", get(dashboard::app_css))
        .route("/favicon.svg", get(dashboard::favicon))
        .route("/favicon.ico", get(dashboard::favicon))
        .routes(routes!(healthz))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(readyz))
        .routes(routes!(metrics_text))
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(TimeoutLayer::with_status_code(
            respond::TIMED_OUT,
            REQUEST_TIMEOUT,
        ));
    // A policy upload is compiled before it is answered, which takes seconds of CPU for a big
    // (JavaScript) plugin, so it gets its own, longer timeout; the handler enforces the plugin
    // size cap itself.
    let policy = OpenApiRouter::new()
        .routes(routes!(policies::get, policies::upload, policies::reset))
        .layer(DefaultBodyLimit::disable())
        .layer(TimeoutLayer::with_status_code(
            respond::TIMED_OUT,
            POLICY_UPLOAD_TIMEOUT,
        ));
    // Proxied requests stream their bodies to the upstream, so no body limit or timeout here
    // beyond the upstream timeout in `front::proxy`.
    // The project root also takes the owners' PATCH (rename) and DELETE (see `projects`); their
    // JSON bodies are bounded like the rest of the API's (a proxied body streams, unbounded by
    // this limit, which applies to extractors only).
    let proxied = OpenApiRouter::new()
        .route(
            proxy::PROJECT_ROOT,
            axum::routing::patch(projects::rename)
                .delete(projects::delete)
                .fallback(proxy::proxy),
        )
        .route(proxy::BELOW_PROJECT, any(proxy::proxy))
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY));
    api.merge(policy).merge(proxied)
}

/// The application's router.
pub fn router(state: Arc<AppState>) -> Router {
    let (router, _) = routes().split_for_parts();
    router
        .fallback(|| async { ApiError::no_such_endpoint() })
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
    state
        .app
        .metrics()
        .request(&route, &method, status, seconds);
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
    let app = Arc::clone(&state.app);
    let report = tokio::task::spawn_blocking(move || app.readiness()).await;
    match report {
        Ok(r) => {
            let head = if r.store_ok { "ready" } else { "not ready" };
            respond::readiness(r.store_ok, format!("{head}\n{}\n", r.lines.join("\n")))
        }
        Err(e) => ApiError::internal(e).into_response(),
    }
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
    let format = crate::metrics::Format::negotiate(
        headers
            .get(axum::http::header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    );
    if let Some(status) = state.app.store().replica_status() {
        state.app.metrics().replica_status(&status);
    }
    (
        [(axum::http::header::CONTENT_TYPE, format.content_type())],
        state.app.metrics().render(format),
    )
        .into_response()
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
    let app = {
        let settings = settings.clone();
        Arc::new(
            tokio::task::spawn_blocking(move || crate::startup::serving_app(&settings)).await??,
        )
    };
    let state = Arc::new(AppState::new(Arc::clone(&app), &settings));
    app.spawn_background();
    control::spawn(Arc::clone(&app), &settings.data_dir);
    if let Some(path) = &settings.policy {
        reload::spawn(path.clone(), Arc::clone(&app));
    }
    let addr = listener.local_addr()?;
    let service = router(Arc::clone(&state)).into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        None => {
            // A fixed line that scripts and tests wait for (the port matters with --listen :0).
            let url = format!("http://{addr}");
            console::say(
                console::Level::Info,
                &format!("billstack listening on {url}"),
                &[("url", &url)],
            );
            axum::serve(tokio::net::TcpListener::from_std(listener)?, service)
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
                .serve(service)
                .await?;
        }
    }
    control::remove(&settings.data_dir);
    tokio::task::spawn_blocking(move || app.shut_down()).await??;
    console::say(console::Level::Info, "billstack stopped", &[]);
    Ok(())
}
