//! The shape of hub.yaml as written by operators: serde types that also generate the JSON Schema.
//!
//! These types only describe syntax. Nothing here is trusted until `load` has checked it against
//! the schema and the semantic rules and turned it into a [`super::Desired`].

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The defaults of hub.yaml's top-level settings.
pub const DEFAULT_HOST: &str = "127.0.0.1";
pub const DEFAULT_PORT: u16 = 8000;
pub const DEFAULT_MODEL_STARTING_PORT: u16 = 47850;

/// A name for models, groups and engines: a lowercase slug that is also safe in a file name.
pub const SLUG_PATTERN: &str = r"^[a-z0-9][a-z0-9_-]{0,62}$";
/// A duration such as `500ms`, `90s`, `15m` or `1h`.
pub const DURATION_PATTERN: &str = r"^[0-9]+(ms|s|m|h)$";
/// An HTTP request path: from `/`, with no spaces or control characters, which a URL parser
/// would drop or refuse (a CR LF in it could even start a header).
pub const HTTP_PATH_PATTERN: &str = r"^/[^\x00-\x20\x7F]*$";
/// A JSON pointer (RFC 6901): empty for the whole document, else `/` before each step, with `~`
/// only as the escapes `~0` (`~`) and `~1` (`/`).
pub const JSON_POINTER_PATTERN: &str = r"^(/([^~]|~[01])*)?$";

/// The desired state of one machine: which model servers exist, which run, which keep weights loaded.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "hub.yaml")]
pub struct HubFile {
    /// API bind address. A non-loopback address needs HUB_TOKEN. Default `127.0.0.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// API port. Default 8000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// First port for auto-assigned worker ports; busy ports are skipped. Default 47850.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024))]
    pub model_starting_port: Option<u16>,
    /// Daemon log level. Default `info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<LogLevel>,
    /// Directory for the daemon log, the state file, and `workers/<model>.log` per worker.
    /// Created if missing. Default: a per-user state directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<String>,
    /// Serve the HTML dashboard at `GET /hub`. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_status_page: Option<bool>,
    /// How long weights loaded on demand, and workers started on demand, stay after their last
    /// request, for models that do not set their own `idle_unload_after`; `10m` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub idle_unload_after: Option<String>,
    /// The OpenAI-compatible endpoint on the hub's port (`/v1`): its queue and timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayFile>,
    /// Named engine definitions, in addition to the built-in `builtin`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub engines: BTreeMap<String, EngineFile>,
    /// The models this machine knows about.
    pub models: Vec<ModelFile>,
    /// Memory groups: the models of a group loaded at once are at most `max_loaded` in number and
    /// fit in its `memory` budget together.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupFile>,
}

/// Daemon log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// What an operator wants for one model.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    /// Registered only: no worker process.
    Stopped,
    /// Worker process kept up; weights loaded on demand.
    Running,
    /// Worker up and weights loaded; pinned, never idle-unloaded or evicted.
    Loaded,
}

impl DesiredState {
    pub fn as_str(self) -> &'static str {
        match self {
            DesiredState::Stopped => "stopped",
            DesiredState::Running => "running",
            DesiredState::Loaded => "loaded",
        }
    }
}

/// One model server.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// Unique slug: lowercase letters, digits, `_` and `-`, at most 63 characters.
    #[schemars(pattern(SLUG_PATTERN))]
    pub name: String,
    /// Passed to the engine as `{model_path}`.
    #[schemars(length(min = 1))]
    pub model_path: String,
    /// Free label shown in status (lm, embeddings, whisper, image...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_type: Option<String>,
    /// Engine name. Default `builtin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(SLUG_PATTERN))]
    pub engine: Option<String>,
    /// Desired state. Default `stopped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<DesiredState>,
    /// The seed's spelling of `state: running`; must agree with `state` when both are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<bool>,
    /// Fixed worker port; otherwise auto-assigned from `model_starting_port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024))]
    pub port: Option<u16>,
    /// Memory group name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(SLUG_PATTERN))]
    pub group: Option<String>,
    /// Estimate of the memory the model holds once loaded (`7.5GiB`, `512MiB`, `8GB`): counted
    /// against its group's `memory` budget until hub has measured it, and whenever it is larger
    /// than the measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::bytes::PATTERN))]
    pub memory: Option<String>,
    /// Weights loaded on demand (a request, `hub load-model`) and a worker a request started are
    /// released after this much idle time (`90s`, `15m`); default: the top-level
    /// `idle_unload_after`, else `10m`. `state: loaded` pins a model instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub idle_unload_after: Option<String>,
    /// Whether a request through `/v1` may start this model's worker or load its weights
    /// (default true). With `false` such a request is answered 503 until hub.yaml or an operator
    /// makes the model ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_demand: Option<bool>,
    /// Extra argv entries appended to the engine's command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Extra environment for the worker.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// The gateway's limits. Every key is optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    /// How long a request may wait for its model to be started, loaded, or given room in its
    /// group before it is answered 504 (default `2m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub queue_timeout: Option<String>,
    /// How many requests may wait per model; one more is answered 429 (default 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_queued: Option<u32>,
    /// How long a restart or stop waits for the model's requests in flight to finish before it
    /// goes ahead (default `30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub drain_timeout: Option<String>,
    /// How long a worker may take to start answering a request (its response headers) before
    /// hub answers 504 (default `10m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub upstream_timeout: Option<String>,
}

/// A memory group: models that share memory, so only so many of them are loaded at once. Give
/// `max_loaded`, `memory`, or both.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("anyOf" = [{"required": ["max_loaded"]}, {"required": ["memory"]}]))]
pub struct GroupFile {
    /// Unique slug.
    #[schemars(pattern(SLUG_PATTERN))]
    pub name: String,
    /// At most this many of the group's models are loaded at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4294967295u32))]
    pub max_loaded: Option<u32>,
    /// Memory budget (`24GiB`, `80GB`): the group's loaded models together stay within it, each
    /// counted at the larger of its declared `memory` and its last measured footprint. A load
    /// that would not fit first unloads idle members that are not pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::bytes::PATTERN))]
    pub memory: Option<String>,
}

/// How to run, probe, stop, load and unload one kind of model server.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EngineFile {
    /// Argv template; placeholders `{name}`, `{model_path}`, `{port}`, `{host}`, and `{hub}` (this
    /// binary). No shell is involved.
    #[schemars(length(min = 1))]
    pub command: Vec<String>,
    /// Environment for every worker of this engine.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Readiness probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthFile>,
    /// Time between SIGTERM and SIGKILL of the worker's process group. Default `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub stop_timeout: Option<String>,
    /// Argv template run before SIGTERM, for workers that live in a container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_command: Option<Vec<String>>,
    /// HTTP request that loads weights while the process stays up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<HttpCallFile>,
    /// HTTP request that frees weights while the process stays up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unload: Option<HttpCallFile>,
    /// Where the engine reports its own memory use, the best measure of a model's footprint;
    /// otherwise hub measures the worker's GPU memory (NVML) or resident memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryProbeFile>,
}

/// An engine's report of its memory use: a `GET` of `path` whose JSON answer holds the bytes in
/// use at `pointer`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryProbeFile {
    /// HTTP path to `GET`, starting with `/` (`/stats`).
    #[schemars(pattern(HTTP_PATH_PATTERN))]
    pub path: String,
    /// JSON pointer (RFC 6901) to the number of bytes in the answer (`/memory/used_bytes`);
    /// empty when the whole answer is the number.
    #[schemars(pattern(JSON_POINTER_PATTERN))]
    pub pointer: String,
}

/// A worker's readiness probe.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthFile {
    /// HTTP path answered with 2xx when ready. Default `/health`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(HTTP_PATH_PATTERN))]
    pub path: Option<String>,
    /// Time between probes of a running worker. Default `5s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub interval: Option<String>,
    /// How long a starting worker may take to become healthy. Default `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub start_timeout: Option<String>,
}

/// An HTTP request to a worker.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpCallFile {
    /// HTTP method. Default `POST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HttpMethod>,
    /// Request path, starting with `/`; placeholders as in `command`.
    #[schemars(pattern(HTTP_PATH_PATTERN))]
    pub path: String,
    /// Request body (JSON text); placeholders as in `command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// How long the request may take. Default `300s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Post,
    Put,
    Delete,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Delete => "DELETE",
        }
    }
}
