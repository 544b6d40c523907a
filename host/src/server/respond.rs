//! The only module that chooses an HTTP status: for every domain outcome (a service's
//! [`AppError`], a front-door [`Denied`], an extractor's rejection) and for every success
//! (`201 Created`, `204 No Content`, …). Handlers return these and never name a status. A 5xx
//! says "internal error" and nothing else; the detail goes to the log.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::app::AppError;
use crate::decision::{Denied, DenyKind};

/// The body of every error answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// One error.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    /// A stable snake_case code, e.g. `validation_error`, `unauthenticated`, `insufficient_scope`.
    pub code: String,
    /// A sentence for people.
    pub message: String,
    /// For `validation_error`: the request field (or `query`) at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub field: Option<String>,
    /// For `insufficient_scope`: the scope that would have allowed the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub required_scope: Option<String>,
}

/// An error answered as `{"error": {"code", "message", "field"?}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<&'static str>,
    retry_after: Option<u64>,
    internal: Option<String>,
}

/// Seconds a client is asked to wait when the store (PostgreSQL) does not answer.
pub const STORE_RETRY_AFTER_SECS: u64 = 1;

/// Handler result.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// A 4xx with a code and a message for the client.
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
            internal: None,
        }
    }

    /// 400 for a field that failed validation.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            field: Some(field),
            ..ApiError::new(StatusCode::BAD_REQUEST, "validation_error", message)
        }
    }

    /// 401: no valid session.
    pub fn unauthenticated(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    /// 400 with a code other than `validation_error`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 403: a state-changing request that did not come from this server's pages.
    pub fn csrf(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "csrf_rejected", message)
    }

    /// 415: the body is not of the one type the endpoint takes.
    pub fn unsupported_media_type(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }

    /// 413.
    pub fn payload_too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// 404 for a path no route serves.
    pub fn no_such_endpoint() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
    }

    /// 503: the proxy has nowhere to send requests.
    pub fn no_upstream() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_upstream",
            "no upstream is configured for the proxy",
        )
    }

    /// 502: the upstream could not be reached.
    pub fn bad_gateway() -> ApiError {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            "the upstream could not be reached",
        )
    }

    /// 504: the upstream did not answer in time.
    pub fn gateway_timeout() -> ApiError {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "gateway_timeout",
            "the upstream did not answer in time",
        )
    }

    /// 404.
    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 429 with `Retry-After`.
    pub fn rate_limited(retry_after_secs: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after_secs.max(1)),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many failed attempts; try again later",
            )
        }
    }

    /// 500, with the detail kept for the log only.
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        ApiError {
            internal: Some(detail.to_string()),
            ..ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "internal error",
            )
        }
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> ApiError {
        match e {
            AppError::Invalid { field, message } => ApiError::invalid(field, message),
            AppError::NotFound { kind, .. } => ApiError::not_found(kind),
            AppError::Conflict { kind, .. } => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("that {kind} already exists"),
            ),
            AppError::Refused { code, message } => {
                ApiError::new(StatusCode::CONFLICT, code, message)
            }
            AppError::InvalidInvitation => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_invitation", e.to_string())
            }
            AppError::AdminsOnly(_) | AppError::OwnersOnly(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", e.to_string())
            }
            AppError::Unauthenticated(message) => ApiError::unauthenticated(message),
            AppError::RateLimited { retry_after } => ApiError::rate_limited(retry_after),
            AppError::InvalidPolicy(message) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_policy", message)
            }
            AppError::TooLarge(_) => ApiError::payload_too_large(e.to_string()),
            AppError::Store(billstack_keystore::Error::Unavailable(detail)) => ApiError {
                retry_after: Some(STORE_RETRY_AFTER_SECS),
                internal: Some(detail),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the store is not answering; nothing was changed; retry shortly",
                )
            },
            AppError::Store(e) => ApiError::internal(e),
            AppError::Internal(detail) => ApiError::internal(detail),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

/// The status of a front-door refusal.
pub fn deny_status(kind: DenyKind) -> StatusCode {
    match kind {
        DenyKind::MissingCredential
        | DenyKind::InvalidKey
        | DenyKind::ExpiredKey
        | DenyKind::DisabledKey => StatusCode::UNAUTHORIZED,
        DenyKind::InvalidRequest => StatusCode::BAD_REQUEST,
        DenyKind::TeamMismatch | DenyKind::ProjectMismatch | DenyKind::InsufficientScope => {
            StatusCode::FORBIDDEN
        }
        DenyKind::UnknownRoute => StatusCode::NOT_FOUND,
        DenyKind::PolicyError | DenyKind::Internal | DenyKind::StoreUnavailable => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        DenyKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
    }
}

/// A refusal: status, JSON error, RFC 6750 `WWW-Authenticate`. A failure of the host is a
/// plain 500-style internal error (its cause goes to the log only).
impl IntoResponse for &Denied {
    fn into_response(self) -> Response {
        let d = self;
        if d.kind == DenyKind::Internal {
            return ApiError::internal(
                d.cause
                    .as_ref()
                    .map_or_else(|| "decision failed".to_string(), ToString::to_string),
            )
            .into_response();
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: d.code().to_string(),
                message: d.message.clone(),
                field: None,
                required_scope: d.required_scope.clone(),
            },
        };
        let mut response = (deny_status(d.kind), Json(body)).into_response();
        let challenge = match d.kind {
            DenyKind::MissingCredential if !d.credential_sent => {
                Some("Bearer realm=\"billstack\"".to_string())
            }
            DenyKind::MissingCredential
            | DenyKind::InvalidKey
            | DenyKind::ExpiredKey
            | DenyKind::DisabledKey => {
                Some("Bearer realm=\"billstack\", error=\"invalid_token\"".to_string())
            }
            // RFC 6750 § 3: `scope` names what would be enough; a policy that refuses for
            // another reason (a read-only team, say) names none, and then there is no `scope`.
            DenyKind::InsufficientScope => Some(match &d.required_scope {
                Some(scope) => format!(
                    "Bearer realm=\"billstack\", error=\"insufficient_scope\", scope=\"{scope}\""
                ),
                None => "Bearer realm=\"billstack\", error=\"insufficient_scope\"".to_string(),
            }),
            _ => None,
        };
        if d.kind == DenyKind::StoreUnavailable {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(STORE_RETRY_AFTER_SECS),
            );
        }
        if let Some(c) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, c);
        }
        response
    }
}

/// `201 Created` with a JSON body.
pub fn created(body: impl Serialize) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}

/// `204 No Content`.
pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// `200 OK` with no body (forward auth's "allowed").
pub fn ok_empty() -> Response {
    StatusCode::OK.into_response()
}

/// `200 OK` with a JSON body, for handlers that add headers to it.
pub fn ok_json(body: impl Serialize) -> Response {
    (StatusCode::OK, Json(body)).into_response()
}

/// `/readyz`: 200 when ready, else 503, with a plain-text report.
pub fn readiness(ready: bool, text: String) -> Response {
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, text).into_response()
}

/// The status of a request that ran out of time (the timeout layers).
pub const TIMED_OUT: StatusCode = StatusCode::REQUEST_TIMEOUT;

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        match r {
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ),
            JsonRejection::BytesRejection(_) => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is too large",
            ),
            other => ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", other.body_text()),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> ApiError {
        ApiError::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(detail) = &self.internal {
            tracing::error!(code = self.code, detail = %detail, "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                field: self.field.map(str::to_string),
                required_scope: None,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// A JSON body extractor whose failures have the API's error shape. Every body the API takes
/// is a JSON object: an array is refused even where serde would read it as a struct's fields
/// in order.
pub struct ApiJson<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<serde_json::Value>::from_request(request, state).await?;
        object_body(value).map(ApiJson)
    }
}

/// A JSON value as the body type `T`, refusing anything but an object (400 `invalid_json`).
pub fn object_body<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> ApiResult<T> {
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the body must be a JSON object",
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("Failed to deserialize the JSON body into the target type: {e}"),
        )
    })
}
