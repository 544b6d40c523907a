//! The reverse-proxy front door: requests under
//! `/api/billstack/teams/{teamId}/projects/{projectId}/…` are decided like forward auth, then
//! forwarded to the configured upstream with the identity and `X-Forwarded-*` headers.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::client::ClientIp;
use super::front::{UPSTREAM_TIMEOUT, budget_headers, header_str, identity_headers};
use super::respond::{ApiError, ErrorBody};
use crate::app::verify::{Checked, FrontDoor, Presented, VerifyRequest};
use crate::decision::Decision;

/// A project's root, proxied.
pub(super) const PROJECT_ROOT: &str = "/api/billstack/teams/{team_id}/projects/{project_id}";
/// Everything below a project, proxied.
pub(super) const BELOW_PROJECT: &str =
    "/api/billstack/teams/{team_id}/projects/{project_id}/{*rest}";

/// Headers that describe one hop and must not be forwarded (RFC 9110 § 7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    for name in HOP_BY_HOP.iter().copied().map(str::to_string).chain(named) {
        headers.remove(name.as_str());
    }
}

/// Requests under `/api/billstack/teams/{teamId}/projects/{projectId}/…`: decided, then
/// forwarded to the upstream with the identity headers.
#[utoipa::path(method(get, post, put, patch, delete), path = "/api/billstack/teams/{teamId}/projects/{projectId}/{resource}", operation_id = "proxy", tag = "decisions",
    security(("bearer" = [])),
    description = "The reverse proxy (with `upstream` configured): any method and any path below the project; decided like forward auth, then forwarded with the identity headers.",
    params(("teamId" = String, Path, description = "The team, `team_…`"), ("projectId" = String, Path, description = "The project, `proj_…`"),
        ("resource" = String, Path, pattern = "^[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,200}$",
            description = "The rest of the path (may contain `/`)")),
    responses(
        (status = 200, description = "The upstream's answer (any status)"),
        (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No, bad, revoked or expired key", body = ErrorBody),
        (status = 403, description = "Another team or project, or a missing scope", body = ErrorBody), (status = 404, description = "Unknown route", body = ErrorBody),
        (status = 429, description = "Over budget; see Retry-After", body = ErrorBody), (status = 502, description = "The upstream could not be reached", body = ErrorBody),
        (status = 503, description = "No upstream configured, or the decision failed", body = ErrorBody), (status = 504, description = "The upstream timed out", body = ErrorBody)))]
pub(super) async fn proxy(
    State(state): State<Arc<AppState>>,
    ClientIp(client): ClientIp,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let target = parts.uri.path_and_query().map_or_else(
        || parts.uri.path().to_string(),
        |pq| pq.as_str().to_string(),
    );
    let authorization = header_str(&parts.headers, "authorization").map(str::to_owned);
    let Checked { decision, budget } = state
        .app
        .verify(VerifyRequest {
            door: FrontDoor::Proxy,
            client,
            credential: Presented::AuthorizationHeader(authorization),
            method: parts.method.as_str().to_string(),
            target: target.clone(),
        })
        .await;
    let mut response = forward(&state, parts, body, &decision, target).await;
    budget_headers(response.headers_mut(), budget.as_ref(), true);
    response
}

/// Sets `X-Forwarded-For`, `-Proto` and `-Host` for the upstream. From a trusted proxy
/// (`trusted_proxies`) its chain and claims are kept and the peer is appended; from anyone
/// else they are replaced, since nothing vouches for what a client says of itself.
fn forwarded_headers(state: &AppState, parts: &mut axum::http::request::Parts) {
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let trusted = peer.is_some_and(|ip| state.trusted_proxies.iter().any(|n| n.contains(&ip)));
    let xff = HeaderName::from_static("x-forwarded-for");
    let proto = HeaderName::from_static("x-forwarded-proto");
    let host = HeaderName::from_static("x-forwarded-host");
    let chain: Vec<String> = if trusted {
        parts
            .headers
            .get_all(&xff)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    } else {
        Vec::new()
    };
    let kept_proto = trusted
        .then(|| parts.headers.get(&proto).cloned())
        .flatten();
    let kept_host = trusted.then(|| parts.headers.get(&host).cloned()).flatten();
    for name in [&xff, &proto, &host] {
        parts.headers.remove(name);
    }
    let mut chain = chain;
    if let Some(ip) = peer {
        chain.push(ip.to_string());
    }
    if let Ok(v) = HeaderValue::from_str(&chain.join(", "))
        && !chain.is_empty()
    {
        parts.headers.insert(xff, v);
    }
    let scheme = if state.tls {
        HeaderValue::from_static("https")
    } else {
        HeaderValue::from_static("http")
    };
    parts.headers.insert(proto, kept_proto.unwrap_or(scheme));
    if let Some(h) = kept_host.or_else(|| parts.headers.get(header::HOST).cloned()) {
        parts.headers.insert(host, h);
    }
}

/// The proxy's answer once decided: the refusal, or the upstream's response.
async fn forward(
    state: &AppState,
    mut parts: axum::http::request::Parts,
    body: Body,
    decision: &Decision,
    target: String,
) -> Response {
    if let Decision::Deny(d) = decision {
        return d.into_response();
    }
    let Some(upstream) = &state.upstream else {
        return ApiError::no_upstream().into_response();
    };
    let uri: Uri = match format!("{}{}", upstream.trim_end_matches('/'), target).parse() {
        Ok(u) => u,
        Err(_) => {
            return ApiError::bad_request(
                "invalid_request",
                "the request target is not a valid URI",
            )
            .into_response();
        }
    };
    forwarded_headers(state, &mut parts);
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::HOST);
    let spoofed: Vec<HeaderName> = parts
        .headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-billstack-"))
        .cloned()
        .collect();
    for name in spoofed {
        parts.headers.remove(&name);
    }
    if !state.forward_authorization {
        parts.headers.remove(header::AUTHORIZATION);
    }
    identity_headers(&mut parts.headers, decision);
    parts.uri = uri;
    let outbound = Request::from_parts(parts, body);
    match tokio::time::timeout(UPSTREAM_TIMEOUT, state.http.request(outbound)).await {
        Ok(Ok(response)) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "upstream request failed");
            ApiError::bad_gateway().into_response()
        }
        Err(_) => ApiError::gateway_timeout().into_response(),
    }
}
