//! The validated desired state: types that cannot be wrong once `load` has produced them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::file::{DesiredState, HttpMethod, LogLevel};

/// A model name that matches the slug pattern, so it is safe in URLs and file names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelName(Arc<str>);

impl ModelName {
    pub fn new(name: &str) -> Result<ModelName, String> {
        if is_slug(name) {
            Ok(ModelName(name.into()))
        } else {
            Err(format!(
                "invalid name {name:?}: use 1-63 lowercase letters, digits, '_' or '-', starting with a letter or digit"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ModelName {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        ModelName::new(&value)
    }
}

impl From<ModelName> for String {
    fn from(value: ModelName) -> Self {
        value.0.to_string()
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for ModelName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// True for `^[a-z0-9][a-z0-9_-]{0,62}$`, without a regex engine.
pub fn is_slug(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-')
}

/// Parses `500ms`, `90s`, `15m`, `1h`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let digits = s.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = s.split_at(digits);
    let n: u64 = number.parse().ok()?;
    let millis = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    }?;
    Some(Duration::from_millis(millis))
}

/// Everything hub.yaml asks for, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub settings: Settings,
    pub models: BTreeMap<ModelName, ModelSpec>,
    pub groups: BTreeMap<String, Group>,
}

impl Desired {
    /// This config, sharing with `previous` what did not change: each unchanged model's name and
    /// [`RunSpec`] become the previous config's `Arc`s, so comparing the two configs (and the
    /// workers started from the previous one) is mostly pointer checks. Equal either way.
    pub fn sharing_with(mut self, previous: &Desired) -> Desired {
        let models = std::mem::take(&mut self.models);
        let mut old = previous.models.iter().peekable();
        self.models = models
            .into_iter()
            .map(|(name, mut spec)| {
                while old.peek().is_some_and(|(n, _)| **n < name) {
                    old.next();
                }
                let Some((old_name, old_spec)) = old.peek().filter(|(n, _)| **n == name) else {
                    return (name, spec);
                };
                if spec.run == old_spec.run {
                    spec.run = old_spec.run.clone();
                }
                spec.name = (*old_name).clone();
                ((*old_name).clone(), spec)
            })
            .collect();
        self
    }
}

/// Daemon-wide settings. Changing them at runtime affects only what can change without a restart
/// of the daemon (new workers' ports); the API address and log path are read at start.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub model_starting_port: u16,
    pub log_level: LogLevel,
    pub log_path: PathBuf,
    pub enable_status_page: bool,
    /// The directory hub.yaml lives in: workers run there, so relative model paths work.
    pub config_dir: PathBuf,
    pub gateway: GatewaySettings,
}

/// The gateway's limits (hub.yaml's `gateway:`), with their defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewaySettings {
    pub queue_timeout: Duration,
    pub max_queued: u32,
    pub drain_timeout: Duration,
    pub upstream_timeout: Duration,
}

/// Idle time after which weights loaded on demand, and workers started on demand, are released
/// when neither the model nor hub.yaml's top level says otherwise.
pub const DEFAULT_IDLE_UNLOAD_AFTER: Duration = Duration::from_secs(600);

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            queue_timeout: Duration::from_secs(120),
            max_queued: 256,
            drain_timeout: Duration::from_secs(30),
            upstream_timeout: Duration::from_secs(600),
        }
    }
}

/// One model as the operator wants it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSpec {
    pub name: ModelName,
    pub model_type: Option<String>,
    pub state: DesiredState,
    pub group: Option<String>,
    /// How long weights loaded on demand (or a worker started on demand) stay after the last
    /// request: the model's own `idle_unload_after`, else the top level's, else
    /// [`DEFAULT_IDLE_UNLOAD_AFTER`]. Never unbounded by accident: only `state: loaded` pins.
    pub idle_unload_after: Option<Duration>,
    /// Whether a request may start the worker or load the weights.
    pub on_demand: bool,
    /// The operator's estimate of the model's footprint in bytes (`memory: 7.5GiB`): counted
    /// against its group's budget until measured, and while larger than the measurement. Not
    /// part of [`RunSpec`]: changing it restarts nothing.
    pub memory: Option<u64>,
    /// The part of the spec that a running worker was started from: any change restarts it.
    /// Shared: a worker keeps the `Arc` it was started from, and a new config keeps the previous
    /// one's where the entry did not change ([`Desired::sharing_with`]), so the planner's
    /// comparison of an unchanged model is a pointer check.
    pub run: Arc<RunSpec>,
}

/// What a worker process is started from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSpec {
    pub engine_name: String,
    pub engine: Arc<Engine>,
    pub model_path: String,
    /// A fixed port, or `None` for an auto-assigned one.
    pub port: Option<u16>,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

impl ModelSpec {
    /// A digest of the whole entry: an override recorded in the state file holds after a
    /// daemon restart only while the entry it was made against is unchanged.
    pub fn entry_hash(&self) -> String {
        let json = serde_json::to_vec(self).expect("a model spec is plain data");
        crate::sha256_hex(&json)
    }
}

impl RunSpec {
    /// A digest of everything a worker is started from, recorded in the state file so a later
    /// daemon can tell whether a running worker still matches hub.yaml.
    pub fn spec_hash(&self) -> String {
        let json = serde_json::to_vec(self).expect("a run spec is plain data");
        crate::sha256_hex(&json)
    }

    /// What differs between the spec a worker runs with and `self`, in words for `hub diff`.
    pub fn changes_from(&self, running: &RunSpec) -> Vec<&'static str> {
        let mut changes = Vec::new();
        if std::ptr::eq(self, running) {
            return changes;
        }
        if self.engine_name != running.engine_name {
            changes.push("engine changed");
        } else if !Arc::ptr_eq(&self.engine, &running.engine) && self.engine != running.engine {
            changes.push("engine definition changed");
        }
        if self.model_path != running.model_path {
            changes.push("model_path changed");
        }
        if self.port != running.port {
            changes.push("port changed");
        }
        if self.args != running.args {
            changes.push("args changed");
        }
        if self.env != running.env {
            changes.push("env changed");
        }
        changes
    }
}

/// How to run one kind of model server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Engine {
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub health: Health,
    pub stop_timeout: Duration,
    pub stop_command: Option<Vec<String>>,
    pub load: Option<HttpCall>,
    pub unload: Option<HttpCall>,
    /// Where the engine reports its own memory use, the best source of a model's footprint.
    pub memory: Option<MemoryProbe>,
}

/// An engine's own report of its memory: a `GET` of `path` whose JSON answer holds the bytes in
/// use at `pointer` (RFC 6901), e.g. `/stats` and `/memory/bytes`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryProbe {
    pub path: String,
    pub pointer: String,
}

impl Engine {
    /// The built-in engine, shared: every parse of hub.yaml gets the same `Arc`, so comparing a
    /// running worker's engine with hub.yaml's is a pointer comparison.
    pub fn builtin_shared() -> Arc<Engine> {
        static BUILTIN: std::sync::LazyLock<Arc<Engine>> =
            std::sync::LazyLock::new(|| Arc::new(Engine::builtin()));
        BUILTIN.clone()
    }

    /// The built-in worker: this binary's `hub worker` subcommand.
    pub fn builtin() -> Engine {
        let command = [
            "{hub}",
            "worker",
            "--name",
            "{name}",
            "--model-path",
            "{model_path}",
            "--host",
            "{host}",
            "--port",
            "{port}",
        ];
        Engine {
            command: command.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
            health: Health::default(),
            stop_timeout: Duration::from_secs(10),
            stop_command: None,
            load: Some(HttpCall::post("/load")),
            unload: Some(HttpCall::post("/unload")),
            memory: None,
        }
    }

    /// Whether weights can be loaded and freed while the process stays up. Without this, a model
    /// counts as loaded exactly while its worker is ready.
    pub fn has_memory_control(&self) -> bool {
        self.load.is_some() && self.unload.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    pub path: String,
    pub interval: Duration,
    pub start_timeout: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            path: "/health".to_string(),
            interval: Duration::from_secs(5),
            start_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpCall {
    pub method: HttpMethod,
    pub path: String,
    pub body: Option<String>,
    pub timeout: Duration,
}

impl HttpCall {
    pub fn post(path: &str) -> HttpCall {
        HttpCall {
            method: HttpMethod::Post,
            path: path.to_string(),
            body: None,
            timeout: Duration::from_secs(300),
        }
    }
}

/// A memory group.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: String,
    /// At most this many members hold weights at once, if set.
    pub max_loaded: Option<u32>,
    /// The members holding weights use at most this many bytes together, if set.
    pub memory: Option<u64>,
    /// Member models in name order.
    pub members: Vec<ModelName>,
}

impl Group {
    /// The group's limits in words: `max_loaded 2`, `memory 24 GiB`, or both.
    pub fn limits(&self) -> String {
        let count = self.max_loaded.map(|n| format!("max_loaded {n}"));
        let bytes = self
            .memory
            .map(|b| format!("memory {}", crate::bytes::format(b)));
        [count, bytes]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_reject_the_rest() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        for bad in ["", "s", "10", "1.5s", "10d", "-1s", "99999999999999999999h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn slugs_follow_the_pattern() {
        for good in ["a", "alpha", "tier_one", "m-2", "0x", &"a".repeat(63)] {
            assert!(is_slug(good), "{good}");
        }
        for bad in [
            "",
            "Alpha",
            "-a",
            "_a",
            "a b",
            "a/b",
            "..",
            &"a".repeat(64),
            "é",
        ] {
            assert!(!is_slug(bad), "{bad}");
        }
    }
}
