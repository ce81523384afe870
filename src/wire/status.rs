//! The status document: the JSON contract of `GET /hub/status` (SPEC section 3), which the loop
//! publishes and the API and the CLI read. Field names here are a contract. `crate::status`
//! builds it from the loop's state.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::Problem;

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Status {
    pub timestamp: String,
    pub generation: u64,
    pub observed_generation: u64,
    pub summary: Summary,
    pub config: ConfigStatus,
    pub counts: Counts,
    pub last_reconcile: Option<Report>,
    pub models: Vec<ModelStatus>,
    pub groups: Vec<GroupStatus>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Summary {
    /// Every model matches the desired state of the current generation.
    Converged,
    /// Actions are under way or about to start.
    Progressing,
    /// Some model failed and is backing off or waiting.
    Degraded,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConfigStatus {
    pub path: String,
    pub sha256: String,
    pub applied_at: String,
    /// Where the applied desired state came from: `file` (the watched hub.yaml) or `api`.
    pub source: String,
    pub rejected: Option<RejectedEdit>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RejectedEdit {
    pub at: String,
    pub sha256: String,
    #[schema(value_type = Vec<super::ProblemSchema>)]
    pub errors: Vec<Problem>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Counts {
    pub models: usize,
    pub running: usize,
    pub loaded: usize,
    pub failed: usize,
}

/// Everything done to converge one generation, across as many passes as that took.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Report {
    pub generation: u64,
    /// What started this reconcile: `startup`, `config`, `api`, `worker_exit`, `timer`, `resync`.
    pub trigger: String,
    pub started_at: String,
    /// Null while the reconcile is still in progress.
    pub finished_at: Option<String>,
    pub duration_ms: f64,
    pub started: Vec<String>,
    pub stopped: Vec<String>,
    pub restarted: Vec<String>,
    pub loaded: Vec<String>,
    pub unloaded: Vec<String>,
    pub unchanged: Vec<String>,
    pub failed: Vec<FailedAction>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FailedAction {
    pub model: String,
    pub action: String,
    /// The latest error of this action on this model.
    pub error: String,
    /// How often the action failed on this model during this reconcile: one entry per model and
    /// action, however often a retry fails, so the report stays small.
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelStatus {
    pub name: String,
    pub engine: String,
    pub model_type: Option<String>,
    pub group: Option<String>,
    /// hub.yaml's state for the model (`stopped` once removed from it).
    pub desired: String,
    pub worker: WorkerStatus,
    pub memory: MemoryStatus,
    pub in_sync: bool,
    #[serde(rename = "override")]
    pub override_: Option<OverrideStatus>,
    pub error: Option<String>,
    pub next_retry_at: Option<String>,
    /// Whether a request through `/v1` may start or load it (hub.yaml's `on_demand`).
    #[serde(default = "yes")]
    pub on_demand: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerStatus {
    /// `stopped`, `starting`, `ready`, `stopping`, `failed` or `backoff`.
    #[schema(value_type = String)]
    pub phase: WorkerPhase,
    pub pid: Option<u32>,
    pub port: Option<u16>,
    pub started_at: Option<String>,
    pub restarts: u32,
    pub exit_code: Option<i32>,
    pub exited_at: Option<String>,
    pub log_file: Option<String>,
    /// Started for requests, for a model hub.yaml leaves stopped: stopped again once idle.
    #[serde(default)]
    pub on_demand: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemoryStatus {
    /// `unloaded`, `loading`, `loaded` or `unloading`.
    #[schema(value_type = String)]
    pub state: MemoryPhase,
    pub loaded_at: Option<String>,
    pub last_activity: Option<String>,
    pub unload_at: Option<String>,
    /// Requests being served now: through the gateway, or as the worker reports.
    #[serde(default)]
    pub in_flight: u32,
    /// Requests waiting in the gateway for this model to start, load or get room.
    #[serde(default)]
    pub queued: u32,
    /// The model's footprint as the planner counts it against its group's budget: the larger of
    /// hub.yaml's `memory` and the last measurement. Absent when neither exists yet.
    #[serde(default)]
    pub bytes: Option<u64>,
    /// Where `bytes` comes from: `declared` (hub.yaml), `engine` (the engine's own report),
    /// `nvml` (GPU memory of the worker's processes) or `rss` (their resident memory).
    #[serde(default)]
    pub bytes_source: Option<String>,
    /// The last measurement, whichever is larger.
    #[serde(default)]
    pub measured_bytes: Option<u64>,
}

/// A worker's phase as the status shows it: the loop's, and `backoff` for a failed worker that
/// waits out its retry delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerPhase {
    Stopped,
    Starting,
    Ready,
    Stopping,
    Failed,
    Backoff,
}

impl WorkerPhase {
    /// Every phase, in the order `/metrics` lists them.
    pub const ALL: [WorkerPhase; 6] = [
        WorkerPhase::Stopped,
        WorkerPhase::Starting,
        WorkerPhase::Ready,
        WorkerPhase::Stopping,
        WorkerPhase::Failed,
        WorkerPhase::Backoff,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkerPhase::Stopped => "stopped",
            WorkerPhase::Starting => "starting",
            WorkerPhase::Ready => "ready",
            WorkerPhase::Stopping => "stopping",
            WorkerPhase::Failed => "failed",
            WorkerPhase::Backoff => "backoff",
        }
    }
}

/// Where a model's weights are, as the status shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryPhase {
    Unloaded,
    Loading,
    Loaded,
    Unloading,
}

impl MemoryPhase {
    /// Every state, in the order `/metrics` lists them.
    pub const ALL: [MemoryPhase; 4] = [
        MemoryPhase::Unloaded,
        MemoryPhase::Loading,
        MemoryPhase::Loaded,
        MemoryPhase::Unloading,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MemoryPhase::Unloaded => "unloaded",
            MemoryPhase::Loading => "loading",
            MemoryPhase::Loaded => "loaded",
            MemoryPhase::Unloading => "unloading",
        }
    }
}

/// Both print and compare as their JSON word, so `phase == "ready"` reads as the JSON does.
macro_rules! word {
    ($($enum:ty),*) => {$(
        impl fmt::Display for $enum {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $enum {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    )*};
}
word!(WorkerPhase, MemoryPhase);

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OverrideStatus {
    /// The state the imperative call set, in force instead of hub.yaml's.
    pub state: String,
    /// The call that set it: `start`, `stop`, `load` or `unload`.
    pub by: String,
    pub at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupStatus {
    pub name: String,
    /// At most this many members hold weights at once (absent: no count limit).
    pub max_loaded: Option<u32>,
    pub members: Vec<String>,
    pub loaded: Vec<String>,
    /// hub.yaml's `memory` for the group, in bytes (absent: no budget).
    #[serde(default)]
    pub memory_budget: Option<u64>,
    /// The footprints (`memory.bytes`) of the members holding weights now, together.
    #[serde(default)]
    pub memory_used: u64,
}
