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
    pub kind: String,
    /// What went wrong and what to do, for people.
    pub message: String,
    /// The HTTP status code, repeated.
    pub code: u16,
    /// For an invalid config: every problem, with line and column.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<ProblemSchema>)]
    pub errors: Vec<Problem>,
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
