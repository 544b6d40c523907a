//! The one HTTP error type: the only place a status is chosen for a failure. A 5xx says
//! "internal error" and nothing else; the detail goes to the log.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

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

/// Handler result.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// A 4xx with a code and a message for the client.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
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

impl From<billstack_keystore::Error> for ApiError {
    fn from(e: billstack_keystore::Error) -> ApiError {
        use billstack_keystore::Error as E;
        match e {
            E::Invalid { field, message } => {
                ApiError::invalid(field, format!("invalid {field}: {message}"))
            }
            E::NotFound { kind, .. } => ApiError::not_found(kind),
            E::AlreadyExists { kind, .. } => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("that {kind} already exists"),
            ),
            other => ApiError::internal(other),
        }
    }
}

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

/// A JSON body extractor whose failures have the API's error shape.
#[derive(axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);
