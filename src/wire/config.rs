//! The desired state through the API: the queries and answers of `POST /hub/plan` (what
//! `hub diff` shows), `POST /hub/apply`, `POST /hub/reload` and `POST /hub/shutdown`.

use serde::{Deserialize, Serialize};

use super::Outcome;

// The queries are the CLI's requests too: a flag left false and an absent value are not sent.

#[derive(Debug, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PlanQuery {
    /// A name for the file, shown in the diff header and in config errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Plan as `hub apply --reset-overrides` would: without any override.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset_overrides: bool,
}

/// The answer to `POST /hub/plan`: what applying the body would do, and the config text diff.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlanReply {
    /// The generation of the desired state the plan was made against (for
    /// `hub apply --expect-generation`).
    pub generation: u64,
    /// Unified diff of the applied config against the body; empty when they are equal.
    pub diff: String,
    /// Whether applying would change anything: the text, any model, or any override.
    pub changed: bool,
    pub models: Vec<PlannedModel>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlannedModel {
    pub name: String,
    /// `hub diff`'s line for the model: `+ alpha  start, load`, `= beta  unchanged`.
    pub line: String,
    /// The actions in the order they would run: `start`, `stop`, `restart`, `load`, `unload`.
    pub actions: Vec<String>,
    /// The verb `hub apply` prints: `started`, `stopped`, `restarted`, `loaded`, `unloaded` or
    /// `unchanged`.
    #[schema(value_type = String)]
    pub result: Outcome,
    /// Whether applying drops an override an imperative call set on the model.
    #[serde(default)]
    pub clears_override: bool,
    /// The bytes its load takes (its footprint, or an estimate in a group with a budget), where
    /// the plan loads it and they are known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// The members of its group that its load evicts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evicts: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ApplyQuery {
    /// Refuse with 409 unless the desired state is still at this generation (from `hub diff`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect_generation: Option<u64>,
    /// Drop every override set by imperative calls, so hub.yaml is followed exactly.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset_overrides: bool,
    /// A name for the file, shown in config errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// The answer to `POST /hub/apply`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApplyResponse {
    /// The desired state's generation now.
    pub generation: u64,
    /// Whether the apply made a new generation (false when the body is what is applied and no
    /// override was reset).
    pub changed: bool,
    /// What the loop planned for each model when it took the new desired state.
    pub models: Vec<AppliedModel>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AppliedModel {
    pub name: String,
    /// `hub diff`'s line for the model.
    pub line: String,
    /// The verb `hub apply` prints.
    #[schema(value_type = String)]
    pub result: Outcome,
    /// The bytes its load takes, where the plan loads it and they are known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// The members of its group that its load evicts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evicts: Vec<String>,
}

/// An apply's entry is its plan's, less what only a dry run shows.
impl From<PlannedModel> for AppliedModel {
    fn from(planned: PlannedModel) -> AppliedModel {
        AppliedModel {
            name: planned.name,
            line: planned.line,
            result: planned.result,
            bytes: planned.bytes,
            evicts: planned.evicts,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Accepted {
    /// What the daemon is doing now.
    pub status: String,
}

#[derive(Debug, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ShutdownQuery {
    /// Leave the workers running for the next `hub serve` to adopt.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_workers: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShutdownReply {
    /// `shutting down`.
    pub status: String,
    /// The daemon's process id, to wait for its exit (`hub stop` does).
    pub pid: u32,
}
