//! The one error envelope every endpoint uses (`wire::Envelope`): `{"error": {"type", "message", "code"}}`.
//!
//! Handlers return [`ApiError`]. Everything else that can answer with an error (axum's own
//! rejections: a body over the limit, a bad query string, a wrong method, an unknown route) is
//! rewritten into the same envelope by [`envelope`], so a client never sees plain text.

use crate::config::{Problem, Rejection};
use crate::reconcile::CommandError;
use crate::wire::{Envelope, ErrorBody, ErrorKind};
use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: ErrorKind,
    pub message: String,
    pub errors: Vec<Problem>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            message: message.into(),
            errors: Vec::new(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, ErrorKind::NotFound, message)
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorKind::BadRequest, message)
    }

    /// The request may not be made this way (a foreign Host or Origin); the message says how.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, ErrorKind::Forbidden, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Internal,
            message,
        )
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Unavailable,
            message,
        )
    }

    /// The loop has ended (or is ending): nothing can be changed any more.
    pub fn shutting_down() -> ApiError {
        ApiError::unavailable(
            "hub is shutting down; start it again with `hub serve` or `hub start`",
        )
    }

    pub fn unknown_model(name: &str) -> ApiError {
        ApiError::not_found(format!(
            "unknown model {name:?}: `hub status` lists the models"
        ))
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            kind: ErrorKind::InvalidConfig,
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
        match error {
            CommandError::UnknownModel(name) => return ApiError::unknown_model(&name),
            CommandError::Invalid(rejection) => return rejection.into(),
            _ => {}
        }
        let (status, kind) = match &error {
            CommandError::UnknownModel(_) | CommandError::Invalid(_) => {
                unreachable!("answered above")
            }
            CommandError::Conflict(_) => (StatusCode::CONFLICT, ErrorKind::Conflict),
            CommandError::GroupFull { .. } => (StatusCode::TOO_MANY_REQUESTS, ErrorKind::GroupFull),
            CommandError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, ErrorKind::Unavailable),
        };
        ApiError::new(status, kind, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Envelope {
            error: ErrorBody {
                kind: self.kind,
                message: self.message,
                code: self.status.as_u16(),
                errors: self.errors,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// The envelope's `type` for a status code that axum or a layer produced on its own.
fn kind_of(status: StatusCode) -> ErrorKind {
    match status {
        StatusCode::BAD_REQUEST => ErrorKind::BadRequest,
        StatusCode::UNAUTHORIZED => ErrorKind::Unauthorized,
        StatusCode::FORBIDDEN => ErrorKind::Forbidden,
        StatusCode::NOT_FOUND => ErrorKind::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorKind::MethodNotAllowed,
        StatusCode::CONFLICT => ErrorKind::Conflict,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorKind::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorKind::UnsupportedMediaType,
        StatusCode::UNPROCESSABLE_ENTITY => ErrorKind::Unprocessable,
        StatusCode::TOO_MANY_REQUESTS => ErrorKind::TooManyRequests,
        StatusCode::SERVICE_UNAVAILABLE => ErrorKind::Unavailable,
        s if s.is_server_error() => ErrorKind::Internal,
        _ => ErrorKind::Error,
    }
}

/// The message for an error axum produced, which is often empty (405) or terse.
fn message_of(status: StatusCode, text: &str) -> String {
    match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            "method not allowed on this endpoint: /openapi.json lists each endpoint's methods"
                .to_string()
        }
        StatusCode::PAYLOAD_TOO_LARGE => format!(
            "request body too large: the limit is {} bytes",
            crate::config::MAX_FILE_BYTES
        ),
        _ if text.trim().is_empty() => status.canonical_reason().unwrap_or("error").to_lowercase(),
        _ => text.trim().to_string(),
    }
}

/// Any error answer that is not already JSON becomes the envelope; every other answer passes
/// untouched (and without a look at its headers: this runs on every request).
pub(super) async fn envelope(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let mut rewritten = rewrite(status, &text).into_response();
    // Keep what the original said about the answer (`Allow` on a 405), not its body's type.
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rewritten
}

/// The envelope for an error that axum or hub's front door produced on its own, with `text`,
/// the plain body it came with, if any.
pub(super) fn rewrite(status: StatusCode, text: &str) -> ApiError {
    ApiError::new(status, kind_of(status), message_of(status, text))
}
