//! What hub observes about each model: its worker process and its memory. Plain data, owned and
//! changed only by the reconcile loop; the planner and the status view read it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use time::OffsetDateTime;

use crate::config::{DesiredState, ModelName, ModelSpec, RunSpec};

/// Wall-clock time in UTC. The planner takes it as an argument and never reads a clock.
pub type Time = OffsetDateTime;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub models: BTreeMap<ModelName, ModelObserved>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelObserved {
    pub worker: Worker,
    pub memory: Memory,
    /// An action for this model is in flight; the planner leaves the model alone until it ends.
    pub busy: bool,
    /// An imperative call that contradicts hub.yaml, kept until the model's entry changes.
    /// Boxed: rare, and as large as a model's spec, it would double what the planner walks.
    pub override_: Option<Box<Override>>,
    /// An on-demand `load` asked for through the API and not yet carried out.
    pub load_requested: bool,
    /// An API `unload` of weights loaded on demand, not yet carried out.
    pub unload_requested: bool,
    /// Requests through the gateway: in flight now (a model serving one is never evicted or
    /// idle-unloaded), and waiting for the model, since when the oldest has waited. A queue is a
    /// demand: it starts and loads the model (`on_demand` permitting).
    pub requests: Requests,
    /// The last action's error, cleared by the next success.
    pub error: Option<ActionError>,
    /// While set and in the future, the model is backing off after a failure.
    pub next_retry_at: Option<Time>,
    /// The model's footprint as last measured, kept when it unloads or stops (and, through the
    /// state file, across daemon restarts): what its next load will take.
    pub footprint: Option<crate::measure::Footprint>,
}

/// What the gateway last said of a model's requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    pub in_flight: u32,
    pub queued: u32,
    pub queued_since: Option<Time>,
}

impl ModelObserved {
    /// Requests being served now, through the gateway or (as the worker reports) directly.
    pub fn serving(&self) -> u32 {
        self.memory.in_flight.max(self.requests.in_flight)
    }

    /// Whether someone wants the weights loaded: an API `load`, or requests waiting.
    pub fn wants_load(&self) -> bool {
        self.load_requested || self.requests.queued > 0
    }

    /// A model whose worker runs `run` and is ready, holding its weights or not.
    pub fn ready(run: std::sync::Arc<RunSpec>, loaded: bool) -> ModelObserved {
        ModelObserved {
            worker: Worker {
                phase: Phase::Ready,
                port: run.port,
                run: Some(run),
                ..Worker::default()
            },
            memory: Memory {
                state: if loaded {
                    MemoryState::Loaded
                } else {
                    MemoryState::Unloaded
                },
                ..Memory::default()
            },
            ..ModelObserved::default()
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Worker {
    pub phase: Phase,
    pub pid: Option<u32>,
    /// The process's start time in clock ticks after boot; with the pid, its identity.
    pub start_time: Option<u64>,
    pub port: Option<u16>,
    pub started_at: Option<Time>,
    pub restarts: u32,
    pub exit_code: Option<i32>,
    pub exited_at: Option<Time>,
    pub log_file: Option<PathBuf>,
    /// The spec the live worker was started from.
    pub run: Option<std::sync::Arc<RunSpec>>,
    /// The worker died on its own after being ready, as opposed to failing to start.
    pub crashed: bool,
    /// Started because requests asked for a model hub.yaml leaves stopped: stopped again once
    /// idle for its `idle_unload_after`.
    pub on_demand: bool,
}

/// The life of a worker process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Phase {
    #[default]
    Stopped,
    Starting,
    Ready,
    Stopping,
    /// Exited on its own, or failed to start; no process is left.
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Stopped => "stopped",
            Phase::Starting => "starting",
            Phase::Ready => "ready",
            Phase::Stopping => "stopping",
            Phase::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Memory {
    pub state: MemoryState,
    pub loaded_at: Option<Time>,
    pub last_activity: Option<Time>,
    /// Loaded by an on-demand request rather than because hub.yaml pins it: such weights stay
    /// when the model is only `running`, subject to idle unload and group eviction.
    pub on_demand: bool,
    /// Requests the worker is serving now, as its last health answer said. A model serving a
    /// request is never evicted or idle-unloaded.
    pub in_flight: u32,
    /// What the worker's processes held just before this load, measured: an unload has freed
    /// the weights once the worker is back near it.
    pub baseline: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MemoryState {
    #[default]
    Unloaded,
    Loading,
    Loaded,
    Unloading,
}

impl MemoryState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryState::Unloaded => "unloaded",
            MemoryState::Loading => "loading",
            MemoryState::Loaded => "loaded",
            MemoryState::Unloading => "unloading",
        }
    }
}

/// A state set by an imperative call, valid while hub.yaml's entry for the model is `spec`.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub state: DesiredState,
    pub spec: ModelSpec,
    pub at: Time,
    /// The API call that set it, for status (`stop`, `start`, `unload`, `load`).
    pub by: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ActionError {
    pub action: &'static str,
    pub message: String,
}
