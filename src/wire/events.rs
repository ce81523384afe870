//! The event stream's words (`GET /hub/events`, and a model's last events in
//! `GET /hub/models/{name}`): one `HubEvent` per model state change and reconcile report.

use serde::{Deserialize, Serialize};

use super::Report;

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HubEvent {
    pub time: String,
    /// `phase`, `memory`, `action`, `exit`, `health`, `config` or `reconcile`.
    pub kind: String,
    pub model: Option<String>,
    pub message: String,
    /// For a `memory` event in which a model's weights left memory: why (`idle`, `evicted`,
    /// `requested`, `crashed`, `spec_changed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For `reconcile` events: the finished reconcile's report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<Report>,
    /// For a `memory` event of a new measurement (the first after a load, or one that moved by
    /// more than 10%): the model's footprint in bytes, and where it was measured (`engine`,
    /// `nvml`, `rss`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_source: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only this model's events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// The SSE event name of a notice that the client fell behind and `skipped` events were dropped.
pub const LAGGED_EVENT: &str = "lagged";
