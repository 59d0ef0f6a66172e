//! The response envelope every REST answer but the token exchange is wrapped in, as the Go
//! manager's `APIResponse`:
//!
//! ```json
//! {"success": true, "message": "…", "data": {…}}
//! {"success": false, "error": {"code": "…", "message": "…", "details": {…}}}
//! ```

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// A successful answer: status, message and data.
#[derive(Debug)]
pub struct Success<T> {
    /// The HTTP status (200, 201 or 206).
    pub status: StatusCode,
    /// The envelope's `message`.
    pub message: String,
    /// The envelope's `data`.
    pub data: T,
}

impl<T> Success<T> {
    /// A 200 answer.
    pub fn ok(message: impl Into<String>, data: T) -> Self {
        Success {
            status: StatusCode::OK,
            message: message.into(),
            data,
        }
    }

    /// An answer with another status.
    pub fn with_status(status: StatusCode, message: impl Into<String>, data: T) -> Self {
        Success {
            status,
            message: message.into(),
            data,
        }
    }
}

/// The envelope on the wire (also the OpenAPI schema of every answer).
#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope {
    /// Whether the request succeeded (also true for 206: some devices succeeded).
    pub success: bool,
    /// What happened, for humans.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The route's data.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
    /// Why the request failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// The `error` member of a failed answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code (`secret_not_found`, `INVALID_TOKEN`, …).
    pub code: String,
    /// What went wrong, for humans. Never a secret value or PIN.
    pub message: String,
    /// More, per code (the field at fault, per-device results, a hint).
    #[serde(skip_serializing_if = "Map::is_empty")]
    #[schema(value_type = Object)]
    pub details: Map<String, Value>,
}

impl<T: Serialize> IntoResponse for Success<T> {
    fn into_response(self) -> Response {
        let data = match serde_json::to_value(&self.data) {
            Ok(data) => data,
            Err(error) => {
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    format!("the answer does not serialise: {error}"),
                )
                .into_response();
            }
        };
        let envelope = Envelope {
            success: true,
            message: Some(self.message),
            data: Some(data),
            error: None,
        };
        (self.status, Json(envelope)).into_response()
    }
}

/// A failed answer: status, code, message and details.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The envelope's `error`.
    pub body: ErrorBody,
}

impl ApiError {
    /// An error without details.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                code: code.to_owned(),
                message: message.into(),
                details: Map::new(),
            },
        }
    }

    /// Adds a detail.
    pub fn detail(mut self, key: &str, value: impl Serialize) -> Self {
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        self.body.details.insert(key.to_owned(), value);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let envelope = Envelope {
            success: false,
            message: None,
            data: None,
            error: Some(self.body),
        };
        (self.status, Json(envelope)).into_response()
    }
}
