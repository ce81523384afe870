//! The one error envelope every endpoint uses: `{"error": {"type", "message", "code"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::config::{Problem, Rejection};
use crate::reconcile::CommandError;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    pub code: u16,
    /// For an invalid config: every problem, with line and column.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Problem>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub errors: Vec<Problem>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            message: message.into(),
            errors: Vec::new(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            kind: "invalid_config",
            message: format!(
                "the config has {} problem(s):\n{rejection}",
                rejection.problems.len()
            ),
            errors: rejection.problems,
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(error: CommandError) -> ApiError {
        let (status, kind) = match &error {
            CommandError::UnknownModel(_) => (StatusCode::NOT_FOUND, "not_found"),
            CommandError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            CommandError::GroupFull { .. } => (StatusCode::TOO_MANY_REQUESTS, "group_full"),
            CommandError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        };
        ApiError::new(status, kind, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Envelope {
            error: ErrorBody {
                kind: self.kind.to_string(),
                message: self.message,
                code: self.status.as_u16(),
                errors: self.errors,
            },
        };
        (self.status, Json(body)).into_response()
    }
}
