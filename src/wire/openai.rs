//! The gateway's own answers (`/v1/models`, and its errors), in the OpenAI API's shapes so that
//! OpenAI clients read them; everything else on `/v1` is the worker's answer, passed through.

use serde::{Deserialize, Serialize};

/// `GET /v1/models`: every model of hub.yaml, whether it runs or not.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    pub data: Vec<ModelEntry>,
}

/// One model as OpenAI clients list it, plus what hub knows of it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelEntry {
    /// The model's name in hub.yaml: what a request's `model` says.
    pub id: String,
    /// Always `model`.
    pub object: String,
    /// When hub.yaml was applied (Unix seconds): OpenAI's field, which hub has no better value for.
    pub created: i64,
    /// Always `hub`.
    pub owned_by: String,
    pub model_type: Option<String>,
    pub group: Option<String>,
    /// hub.yaml's `state`.
    pub desired: String,
    /// The worker's phase (`stopped`, `starting`, `ready`, ...).
    pub phase: String,
    /// The weights' state (`unloaded`, `loading`, `loaded`, `unloading`).
    pub memory: String,
    /// A request is served now, without waiting for a start or a load.
    pub ready: bool,
    /// A request may start or load the model (hub.yaml's `on_demand`).
    pub on_demand: bool,
    /// Requests being served and waiting now.
    pub in_flight: u32,
    pub queued: u32,
}

/// An error answer of the gateway: `{"error": {"message", "type", "param", "code"}}`, as the
/// OpenAI API sends and its clients parse (their `NotFoundError` and such read `code`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OpenAiError {
    pub error: OpenAiErrorBody,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OpenAiErrorBody {
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `permission_error`, `rate_limit_error`,
    /// `service_unavailable_error`, `timeout_error` or `upstream_error`.
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    /// `model_not_found`, `invalid_api_key`, `group_full`, `queue_full`, `model_unavailable`,
    /// `load_timeout`, `upstream_timeout`, `upstream_error`, `request_too_large`, ...
    pub code: String,
}
