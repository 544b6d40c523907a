//! The OpenAPI 3.1 document of the whole HTTP API, at `GET /api/openapi.json`. It is generated
//! from the handlers' annotations and the response types the handlers actually serialise, so
//! it changes with the code; `.ci/run` checks real responses against it with schemathesis.

use std::sync::OnceLock;

use axum::Json;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{front, projects, proxy, respond};

/// The document's definition.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "BillStack Keys",
        description = "Issues, stores and checks BillStack API keys. Key management and the \
            dashboard use a session cookie (`POST /api/auth/login`); cookie-authenticated \
            state changes must carry this server's `Origin`. SaaS requests are decided by the \
            three front doors: forward auth, the reverse proxy and JSON verify.",
        license(name = "Apache-2.0")
    ),
    // Only the routes registered by hand (see `super::routes`); every other path comes from
    // the router itself.
    paths(front::forward_auth, proxy::proxy, projects::rename, projects::delete),
    components(schemas(respond::ErrorBody)),
    modifiers(&Security),
    tags(
        (name = "sessions", description = "Dashboard sign-in"),
        (name = "keys", description = "API keys of a team"),
        (name = "teams", description = "Projects and the audit log"),
        (name = "policies", description = "The team's scope policy plugin"),
        (name = "decisions", description = "The front doors for SaaS requests"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                super::COOKIE,
                "The dashboard session, from POST /api/auth/login",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key: `Authorization: Bearer bs_…`"))
                    .build(),
            ),
        );
    }
}

/// What the router starts from: the document's info, tags, security schemes, and the paths of
/// the routes registered by hand.
pub fn base_document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document, built once from the routes themselves.
pub fn document() -> &'static serde_json::Value {
    static DOC: OnceLock<serde_json::Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = super::routes().into_openapi();
        doc.info.version = env!("CARGO_PKG_VERSION").to_string();
        let mut doc = serde_json::to_value(&doc).unwrap_or_default();
        unique_operation_ids(&mut doc);
        doc
    })
}

/// An operation id must be unique in the document (client generators name functions after
/// it), but one handler answering several methods (`forwardAuth`, `proxy`) gets its one id on
/// every method: those become `forwardAuthGet`, `forwardAuthPost`, …
fn unique_operation_ids(doc: &mut serde_json::Value) {
    let mut seen = std::collections::HashMap::<String, usize>::new();
    let operations = |doc: &mut serde_json::Value| -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(paths) = doc["paths"].as_object() {
            for (path, item) in paths {
                if let Some(item) = item.as_object() {
                    for method in item.keys() {
                        out.push((path.clone(), method.clone()));
                    }
                }
            }
        }
        out
    };
    let all = operations(doc);
    for (path, method) in &all {
        if let Some(id) = doc["paths"][path][method]["operationId"].as_str() {
            *seen.entry(id.to_owned()).or_default() += 1;
        }
    }
    for (path, method) in &all {
        let op = &mut doc["paths"][path][method];
        let Some(id) = op["operationId"].as_str().map(str::to_owned) else {
            continue;
        };
        if seen.get(&id).is_some_and(|n| *n > 1) {
            let mut suffix = method.to_ascii_lowercase();
            if let Some(first) = suffix.get_mut(..1) {
                first.make_ascii_uppercase();
            }
            op["operationId"] = serde_json::Value::from(format!("{id}{suffix}"));
        }
    }
}

/// `GET /api/openapi.json`.
#[utoipa::path(get, path = "/api/openapi.json", operation_id = "openapiDocument", tag = "operations",
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json")))]
pub(super) async fn openapi_json() -> Response {
    Json(document()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_and_covers_every_documented_endpoint() {
        let doc = document();
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1")),
            "{}",
            doc["openapi"]
        );
        let paths = doc["paths"].as_object().expect("paths");
        for (path, method) in [
            ("/api/auth/login", "post"),
            ("/api/billstack/teams/{teamId}/api-keys", "post"),
            ("/api/billstack/teams/{teamId}/api-keys", "get"),
            ("/api/billstack/teams/{teamId}/api-keys/{keyId}", "delete"),
            (
                "/api/billstack/teams/{teamId}/api-keys/{keyId}/rotate",
                "post",
            ),
            (
                "/api/billstack/teams/{teamId}/api-keys/{keyId}/usage",
                "get",
            ),
            ("/api/billstack/teams/{teamId}/audit-log", "get"),
            ("/api/billstack/teams/{teamId}/policy", "put"),
            ("/api/billstack/keys/verify", "post"),
            ("/auth/verify", "get"),
        ] {
            assert!(
                paths.get(path).and_then(|p| p.get(method)).is_some(),
                "{method} {path}"
            );
        }
        // Every schema a response names exists.
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for name in [
            "CreatedKey",
            "KeyView",
            "ErrorBody",
            "VerifyView",
            "AuditPageView",
            "UsageView",
        ] {
            assert!(schemas.contains_key(name), "{name}");
        }
        assert!(
            !text.contains("#/components/schemas/Value"),
            "an untyped body slipped in"
        );
    }

    #[test]
    fn every_operation_id_is_unique() {
        let doc = document();
        let mut ids = Vec::new();
        for item in doc["paths"].as_object().expect("paths").values() {
            for op in item.as_object().expect("item").values() {
                if let Some(id) = op["operationId"].as_str() {
                    ids.push(id.to_string());
                }
            }
        }
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(ids.len(), unique.len(), "{ids:?}");
        assert!(ids.contains(&"forwardAuthGet".to_string()), "{ids:?}");
        assert!(ids.contains(&"proxyPost".to_string()), "{ids:?}");
        assert!(ids.contains(&"verifyKey".to_string()), "{ids:?}");
    }
}
