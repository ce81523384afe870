//! One model through the API: `GET /hub/models/{name}` (its status and last events) and the
//! answer to an imperative call, `POST /hub/models/{name}/{verb}`.

use serde::{Deserialize, Serialize};

use super::{HubEvent, ModelStatus};

/// A model's status with its last events, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelDetail {
    #[serde(flatten)]
    pub status: ModelStatus,
    /// The model's last 20 events (phase changes, actions, exits, health), oldest first.
    pub events: Vec<HubEvent>,
}

// The loop makes it and the API passes it on as it is.
/// The answer to an imperative call.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelCommandReply {
    pub model: String,
    /// `start`, `stop`, `load` or `unload`.
    pub action: String,
    /// The override now in force for the model, if any: the state hub keeps it in until its
    /// hub.yaml entry changes.
    #[serde(rename = "override")]
    pub override_: Option<String>,
    /// What the next pass will do for it, as `hub diff` prints it.
    pub plan: String,
}
