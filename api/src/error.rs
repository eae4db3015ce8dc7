//! The one place errors become HTTP responses: `{"error":{"code":"...","message":"..."}}`.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use services::ServiceError;

/// An error answered to an API client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match &e {
            ServiceError::Invalid { .. } => Self::bad_request(e.to_string()),
            ServiceError::NotFound { .. } => Self::not_found(e.to_string()),
            ServiceError::Conflict { .. } => {
                Self::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            ServiceError::Duplicate { .. } => {
                Self::new(StatusCode::CONFLICT, "already_exists", e.to_string())
            }
            ServiceError::Unprocessable { code, .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, e.to_string())
            }
            ServiceError::Unauthenticated { .. } => {
                Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string())
            }
            ServiceError::Forbidden { .. } => {
                Self::new(StatusCode::FORBIDDEN, "forbidden", e.to_string())
            }
            ServiceError::RateLimited { .. } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", e.to_string())
            }
            ServiceError::Unavailable(source) => {
                tracing::warn!(error = %source, "database unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database is unavailable; try again",
                )
            }
            ServiceError::Database(source) => {
                tracing::error!(error = %source, "database error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
            ServiceError::Broadcast {
                unavailable: true, ..
            } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
            ServiceError::Broadcast { .. } => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
        }
    }
}

impl From<crate::http::body::BodyError> for ApiError {
    fn from(e: crate::http::body::BodyError) -> Self {
        use crate::http::body::BodyError;
        let (status, code) = match &e {
            BodyError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            BodyError::Timeout { .. } => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            BodyError::Unreadable(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
        };
        Self::new(status, code, e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send a JSON body with Content-Type: application/json",
            ),
            JsonRejection::JsonSyntaxError(e) => {
                Self::new(StatusCode::BAD_REQUEST, "malformed_json", e.body_text())
            }
            JsonRejection::JsonDataError(e) => Self::bad_request(e.body_text()),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                other.body_text(),
            ),
            other => Self::bad_request(other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::bad_request(r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::bad_request(r.body_text())
    }
}
