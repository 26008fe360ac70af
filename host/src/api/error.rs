//! Errors, in one place: what a query can fail with ([`QueryError`]), and the API's one error shape, `{"error":
//! {"code", "message", "details"}}`, that every failure becomes ([`ApiError`]); details of a storage failure go to
//! the log, not to the caller.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::traces::otlp::Refusal;

/// Why a query has no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    #[error("{0}")]
    Invalid(String),
    /// A request whose fields are wrong, every problem named.
    #[error("{}", .0.join("; "))]
    Rejected(Vec<String>),
    #[error("{0}")]
    Conflict(String),
    /// Storage is behind: the caller should come back later.
    #[error("storage is behind; retry shortly")]
    Busy,
    /// A limit on open streams is reached.
    #[error("{0}")]
    Unavailable(String),
    /// No room to store what was sent: the disk is full or the store at `[storage] size_limit`.
    #[error("storage is full; nothing of the request was stored: retry once there is room")]
    Full,
    #[error("storage: {0}")]
    Storage(String),
}

/// Seconds a client is asked to wait before sending again what found storage full.
pub const FULL_RETRY_AFTER: u32 = 30;

/// An error answer: a status code, a stable machine-readable code and a message for people.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Each problem on its own, when there are several.
    details: Vec<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), details: Vec::new() }
    }

    /// The same error, with each of several problems on its own.
    pub fn with_details(self, details: Vec<String>) -> Self {
        Self { details, ..self }
    }
}

/// A refused request body (too large once inflated or decoded, an unknown encoding, no room to take it in) in the
/// one error shape.
impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        let code = match refusal.status {
            StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_encoding",
            StatusCode::SERVICE_UNAVAILABLE => "busy",
            _ => "bad_body",
        };
        Self::new(refusal.status, code, refusal.message)
    }
}

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> Self {
        match error {
            QueryError::NotFound { code, message } => Self::new(StatusCode::NOT_FOUND, code, message),
            QueryError::Invalid(message) => Self::new(StatusCode::BAD_REQUEST, "bad_query", message),
            QueryError::Rejected(problems) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid", problems.join("; ")).with_details(problems)
            }
            QueryError::Conflict(message) => Self::new(StatusCode::CONFLICT, "conflict", message),
            QueryError::Busy => Self::new(StatusCode::SERVICE_UNAVAILABLE, "busy", error.to_string()),
            QueryError::Unavailable(message) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message),
            QueryError::Full => Self::new(StatusCode::INSUFFICIENT_STORAGE, "storage_full", error.to_string()),
            QueryError::Storage(detail) => {
                // The details are for the log; the caller learns only that it failed.
                tracing::error!(detail, "A query failed in storage");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", "the data could not be read")
            }
        }
    }
}

/// Every error answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ErrorDetail {
    /// Stable and machine-readable: `not_found`, `bad_query`, `invalid`, `missing_key`, `rate_limited`,
    /// `storage_full`, ...
    code: &'static str,
    message: String,
    /// Each problem on its own, when there are several.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    details: Vec<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry_after = match self.status {
            StatusCode::SERVICE_UNAVAILABLE => Some(1),
            StatusCode::INSUFFICIENT_STORAGE => Some(FULL_RETRY_AFTER),
            _ => None,
        };
        let body = ErrorBody { error: ErrorDetail { code: self.code, message: self.message, details: self.details } };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
