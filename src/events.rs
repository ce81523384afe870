//! What happened, for people and tools: every model state change and reconcile report as an
//! event (streamed by `GET /hub/events`, the last few per model kept for `GET /hub/models/{name}`),
//! and the counters `GET /metrics` shows. The loop writes; the API reads; no lock is held across
//! an await.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

pub use crate::wire::HubEvent;

/// How many events are kept per model.
pub const RECENT: usize = 20;

/// What an event is about: its `kind` on the wire, and the SSE event name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A worker's phase changed (starting, ready, stopping, stopped).
    Phase,
    /// Its weights' memory state changed.
    Memory,
    /// An action failed or was superseded.
    Action,
    /// A worker exited unexpectedly.
    Exit,
    /// A health probe failed.
    Health,
    /// hub.yaml was applied or an edit rejected.
    Config,
    /// A reconcile finished (with its report).
    Reconcile,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Phase => "phase",
            EventKind::Memory => "memory",
            EventKind::Action => "action",
            EventKind::Exit => "exit",
            EventKind::Health => "health",
            EventKind::Config => "config",
            EventKind::Reconcile => "reconcile",
        }
    }
}

/// Counters since the daemon started.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub reconciles: u64,
    /// Passes of the loop (plan, launch, publish), however few or many a reconcile takes.
    pub passes: u64,
    /// Periodic re-reads of hub.yaml that have finished (each read and compared).
    pub resyncs: u64,
    pub reconcile_seconds: f64,
    /// `(action, result)` → count; result is `ok`, `failed` or `superseded`.
    pub actions: BTreeMap<(&'static str, &'static str), u64>,
    pub config_applied: u64,
    pub config_rejected: u64,
    pub health_failures: u64,
    pub crashes: u64,
    /// `(model, reason)` → how often its weights left memory for that reason.
    pub unloads: BTreeMap<(String, &'static str), u64>,
    /// Per model: how long its loads took (the engine's load call, or a start for an engine
    /// without one).
    pub load_seconds: BTreeMap<String, crate::gateway::stats::Histogram>,
}

/// The event stream, recent events per model, and the counters.
pub struct Journal {
    sender: broadcast::Sender<Arc<HubEvent>>,
    recent: Mutex<HashMap<String, VecDeque<HubEvent>>>,
    metrics: Mutex<Metrics>,
}

impl Default for Journal {
    fn default() -> Self {
        Journal {
            sender: broadcast::channel(1024).0,
            recent: Mutex::default(),
            metrics: Mutex::default(),
        }
    }
}

impl Journal {
    pub fn record(&self, event: HubEvent) {
        if let Some(model) = &event.model {
            let mut recent = self.recent.lock().expect("journal lock");
            let events = recent.entry(model.clone()).or_default();
            if events.len() == RECENT {
                events.pop_front();
            }
            events.push_back(event.clone());
        }
        // Nobody listening is fine.
        let _ = self.sender.send(Arc::new(event));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<HubEvent>> {
        self.sender.subscribe()
    }

    /// The model's last [`RECENT`] events, oldest first.
    pub fn recent(&self, model: &str) -> Vec<HubEvent> {
        let recent = self.recent.lock().expect("journal lock");
        recent
            .get(model)
            .map(|e| e.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn count(&self, update: impl FnOnce(&mut Metrics)) {
        update(&mut self.metrics.lock().expect("journal lock"));
    }

    pub fn metrics(&self) -> Metrics {
        self.metrics.lock().expect("journal lock").clone()
    }
}
