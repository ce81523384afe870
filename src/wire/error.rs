//! The one error envelope every endpoint answers with: `{"error": {"type", "message", "code"}}`.
//! `api::ApiError` produces it; the CLI reads it back into one line.

use serde::{Deserialize, Serialize};

use crate::config::Problem;

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Envelope {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable, machine-readable kind: `not_found`, `conflict`, `invalid_config`, `group_full`,
    /// `unavailable`, `unauthorized`, `forbidden`, `unsupported_media_type`, `bad_request`,
    /// `method_not_allowed`, `payload_too_large`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: ErrorKind,
    /// What went wrong and what to do, for people.
    pub message: String,
    /// The HTTP status code, repeated.
    pub code: u16,
    /// For an invalid config: every problem, with line and column.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<ProblemSchema>)]
    pub errors: Vec<Problem>,
}

/// The envelope's `type`: a stable, machine-readable kind of error, one per HTTP status hub
/// answers with (two for 422 and 429, where hub's own reason is more telling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    /// 422 for a config that fails validation.
    InvalidConfig,
    /// 422 for anything else.
    Unprocessable,
    /// 429 for a group with no room and no member to evict.
    GroupFull,
    /// 429 for anything else.
    TooManyRequests,
    Internal,
    Unavailable,
    /// Any other status, and what a kind this client does not know yet reads as.
    #[serde(other)]
    Error,
}

/// The schema of one config problem, as `config::Problem` serializes (the config module owns
/// the type; this mirrors its wire form for the OpenAPI document).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub struct ProblemSchema {
    /// Where in the document, as `models[2].group`; empty for the whole file.
    pub path: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}
