//! The reconcile loop: the one owner of the observed state.
//!
//! It receives one closed [`Event`] type (config changed, API request, action progress, worker
//! exit, shutdown) and, after each batch of events and on every timer, runs a pass: compute
//! `plan(desired, observed, now)` from scratch, launch the actions it can, publish a snapshot.
//! It is never told *why* it runs, so every pass is idempotent. Actions run as tasks that report
//! back as events; reads never wait for them.

mod commands;
mod demand;
mod desired;
mod execute;
mod launch;
mod observe;
mod probe;
mod publish;
mod report;
pub mod step;
mod timers;
mod workers;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::config::{Desired, ModelName, Rejection};
use crate::engine::Probe;
use crate::events::Journal;
use crate::gateway::{Gateway, Signal};
use crate::observed::{ModelObserved, Observed, Phase};
use crate::plan::{self, OverrideChange, Plan, Wait};
use crate::retry::Backoff;
use crate::sha256_hex;
use crate::status::{self, RejectedEdit, Report, Status};
use crate::supervisor::Exit;
use crate::wire::{ModelCommandReply as ModelReply, Verb};

pub use crate::clock::Clock;
use desired::Applied;
pub use desired::check_live_ports;
pub use execute::Update;
use launch::InFlight;
use observe::backoff;
use probe::Probing;
use publish::config_status;
use report::{Trigger, note};
pub use workers::{BoxFuture, RealWorkers, Workers};

/// Everything that can make the loop act. Closed: the loop knows every reason it may run.
pub enum Event {
    /// The watched file was read after a change (or a resync or reload found it changed).
    Config(ConfigUpdate),
    /// `POST /hub/apply`: make this the desired state.
    Apply {
        desired: Desired,
        text: String,
        /// What to call the text in errors.
        file: String,
        expect_generation: Option<u64>,
        reset_overrides: bool,
        reply: oneshot::Sender<Result<ApplyReply, CommandError>>,
    },
    /// `POST /hub/models/{name}/{verb}`.
    Model {
        name: ModelName,
        verb: Verb,
        reply: oneshot::Sender<Result<ModelReply, CommandError>>,
    },
    /// An action task's step.
    Progress {
        name: ModelName,
        update: Update,
    },
    /// An action task ended; the model may be planned again.
    Done {
        name: ModelName,
    },
    /// A worker process exited, expectedly or not.
    Exit(Exit),
    /// The gateway: requests for this model began to queue, or its last request ended while the
    /// loop waited for that.
    Requests {
        name: ModelName,
    },
    /// A ready worker's periodic health probe.
    Health {
        name: ModelName,
        pid: u32,
        probe: Probe,
        /// Its memory, measured alongside the probe when a measurement was due.
        footprint: Option<crate::measure::Footprint>,
    },
    Shutdown {
        keep_workers: bool,
    },
}

/// The result of reading the watched file.
pub struct ConfigUpdate {
    pub path: PathBuf,
    pub sha256: String,
    pub text: String,
    pub result: Result<Desired, Rejection>,
}

/// The loop's answer to an apply: the generation now and what it planned (`planned::models`
/// makes the per-model entries of the API's answer from it).
#[derive(Debug, Clone)]
pub struct ApplyReply {
    pub generation: u64,
    pub plan: Plan,
}

/// Why the loop refused a request; the API maps each to its HTTP status.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommandError {
    #[error("unknown model {0:?}")]
    UnknownModel(String),
    #[error("{0}")]
    Conflict(String),
    #[error("group {group:?} is full ({limits}), and no loaded member can be evicted")]
    GroupFull { group: String, limits: String },
    #[error("hub is shutting down")]
    ShuttingDown,
    /// The config conflicts with what runs (a fixed port a live worker holds).
    #[error("{0}")]
    Invalid(Rejection),
}

/// What readers see: the latest published state, never waiting for a pass in flight.
pub struct Snapshot {
    pub status: Status,
    /// `status` serialized once per change, served as is by `GET /hub/status`.
    pub json: Bytes,
    pub desired: Arc<Desired>,
    pub observed: Arc<Observed>,
    pub applied_text: Arc<str>,
    pub generation: u64,
}

/// How the API and the watcher reach the loop.
#[derive(Clone)]
pub struct Handle {
    pub events: mpsc::UnboundedSender<Event>,
    /// What happened: the event stream, recent events per model, counters.
    pub journal: Arc<Journal>,
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    /// Asks the watcher to re-read the file now.
    pub reread: Arc<Notify>,
    /// The loop's clock, so a dry run plans at the time the loop would.
    pub clock: Clock,
    /// The lanes the gateway admits requests through; the loop opens and closes them.
    pub gateway: Arc<Gateway>,
}

impl Handle {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }
}

/// Options for [`start`].
pub struct Options {
    pub config_path: PathBuf,
    pub hub_exe: PathBuf,
    pub resync_every: Duration,
    pub max_concurrent: usize,
    /// Where to record the workers for the next daemon to adopt (`None`: nowhere).
    pub state_path: Option<PathBuf>,
    /// This hub's owner id, written into the state file.
    pub owner: String,
    /// The longest wait between retries of a failing model.
    pub max_backoff: Duration,
}

/// The loop's state. Only [`Reconciler::run`] touches it.
pub struct Reconciler {
    options: Options,
    clock: Clock,
    desired: Arc<Desired>,
    applied: Applied,
    rejected: Option<RejectedEdit>,
    generation: u64,
    observed_generation: u64,
    observed: Observed,
    backoffs: HashMap<ModelName, Backoff>,
    report: Option<Report>,
    episode: Option<Instant>,
    trigger: Trigger,
    in_flight: HashMap<ModelName, InFlight>,
    probing: HashMap<ModelName, Probing>,
    /// When each load in flight began, for the load-time histogram.
    loading_since: HashMap<ModelName, crate::observed::Time>,
    journal: Arc<Journal>,
    gateway: Arc<Gateway>,
    executor: Arc<execute::Context>,
    publish: watch::Sender<Arc<Snapshot>>,
    reread: Arc<Notify>,
    resync_at: Instant,
    warnings: Vec<String>,
    /// The host, port and log_path of the config the daemon started with, which it runs with.
    serving: (String, u16, PathBuf),
    /// Answers to API calls, sent once the pass they caused is published, so a caller that
    /// reads the status next sees its effect.
    replies: Vec<Box<dyn FnOnce() + Send>>,
    /// What the state file last said, so it is written only when that changes.
    recorded: Option<crate::recover::Records>,
}

/// Builds the loop around an already validated desired state. `workers` reach the processes
/// (`exits` carries their exits); `observed` is what recovery adopted, `warnings` what it found
/// wrong. Returns the loop, to be driven by [`Reconciler::run`], its events, and the handle for
/// everyone else.
pub fn start(
    options: Options,
    desired: Desired,
    text: String,
    workers: Arc<dyn Workers>,
    mut exits: mpsc::UnboundedReceiver<Exit>,
    observed: Observed,
    warnings: Vec<String>,
) -> (Reconciler, mpsc::UnboundedReceiver<Event>, Handle) {
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let forward = events_tx.clone();
    tokio::spawn(async move {
        while let Some(exit) = exits.recv().await {
            if forward.send(Event::Exit(exit)).is_err() {
                break;
            }
        }
    });
    let clock = Clock::new();
    let now = clock.now();
    let (gateway, mut signals) = Gateway::new(clock);
    let gateway = Arc::new(gateway);
    let forward = events_tx.clone();
    tokio::spawn(async move {
        while let Some(Signal(name)) = signals.recv().await {
            if forward.send(Event::Requests { name }).is_err() {
                break;
            }
        }
    });
    let desired = Arc::new(desired);
    let settings = desired.settings.clone();
    let executor = Arc::new(execute::Context {
        workers,
        clock,
        hub_exe: options.hub_exe.display().to_string(),
        events: events_tx.clone(),
    });
    let applied = Applied {
        path: options.config_path.display().to_string(),
        sha256: sha256_hex(text.as_bytes()),
        text: text.into(),
        at: now,
        source: "file",
    };
    let reread = Arc::new(Notify::new());
    let status = status::build(status::Inputs {
        now,
        desired: &desired,
        observed: &Observed::default(),
        plan: &plan::plan(&desired, &Observed::default(), now),
        generation: 1,
        observed_generation: 0,
        config: config_status(&applied, None),
        report: None,
        warnings: Vec::new(),
    });
    // What readers see until the first pass publishes.
    let placeholder = Arc::new(Snapshot {
        json: Bytes::from(serde_json::to_vec(&status).expect("status is plain data")),
        status,
        desired: desired.clone(),
        observed: Arc::default(),
        applied_text: applied.text.clone(),
        generation: 1,
    });
    let (publish, snapshot) = watch::channel(placeholder);
    let resync_at = Instant::now() + options.resync_every;
    let journal = Arc::new(Journal::default());
    let reconciler = Reconciler {
        options,
        clock,
        desired,
        applied,
        rejected: None,
        generation: 1,
        observed_generation: 0,
        observed,
        backoffs: HashMap::new(),
        report: None,
        episode: None,
        trigger: Trigger::Startup,
        in_flight: HashMap::new(),
        probing: HashMap::new(),
        loading_since: HashMap::new(),
        journal: journal.clone(),
        gateway: gateway.clone(),
        executor,
        publish,
        reread: reread.clone(),
        resync_at,
        warnings,
        serving: (
            settings.host.clone(),
            settings.port,
            settings.log_path.clone(),
        ),
        replies: Vec::new(),
        recorded: None,
    };
    let handle = Handle {
        events: events_tx,
        journal,
        snapshot,
        reread,
        clock,
        gateway,
    };
    (reconciler, events_rx, handle)
}

impl Reconciler {
    /// Runs until shutdown, then stops every worker unless told to keep them.
    pub async fn run(mut self, mut events: mpsc::UnboundedReceiver<Event>) {
        self.open_episode(true);
        self.pass();
        loop {
            let wake = self.next_wake();
            let event = tokio::select! {
                event = events.recv() => event,
                () = tokio::time::sleep_until(wake) => {
                    self.on_timer();
                    continue;
                }
            };
            let Some(mut event) = event else { break };
            let mut needs_pass = false;
            loop {
                if let Event::Shutdown { keep_workers } = event {
                    self.shutdown(keep_workers).await;
                    return;
                }
                needs_pass |= self.handle(event);
                match events.try_recv() {
                    Ok(next) => event = next,
                    Err(_) => break,
                }
            }
            if needs_pass {
                self.pass();
            }
        }
        self.shutdown(false).await;
    }

    /// Applies one event; returns whether a pass should follow.
    fn handle(&mut self, event: Event) -> bool {
        let now = self.clock.now();
        match event {
            Event::Config(update) => return self.on_config(update, now),
            Event::Apply {
                desired,
                text,
                file,
                expect_generation,
                reset_overrides,
                reply,
            } => {
                let apply = (desired, text, file);
                let result = self.on_apply(apply, expect_generation, reset_overrides, now);
                self.replies.push(Box::new(move || {
                    let _ = reply.send(result);
                }));
            }
            Event::Model { name, verb, reply } => {
                let result = self.on_model_command(&name, verb, now);
                self.replies.push(Box::new(move || {
                    let _ = reply.send(result);
                }));
            }
            Event::Progress { name, update } => self.on_progress(name, update, now),
            Event::Done { name } => {
                self.in_flight.remove(&name);
                if let Some(obs) = self.observed.models.get_mut(&name) {
                    step::done(obs);
                }
            }
            Event::Exit(exit) => self.on_exit(exit, now),
            Event::Health {
                name,
                pid,
                probe,
                footprint,
            } => {
                let measured = footprint.is_some_and(|f| self.on_measured(&name, pid, f, now));
                return self.on_health(name, pid, probe, now) || measured;
            }
            Event::Requests { .. } => {}
            Event::Shutdown { .. } => unreachable!("handled by run"),
        }
        true
    }

    /// One pass: plan from scratch, launch what may run now, publish.
    fn pass(&mut self) {
        self.journal.count(|m| m.passes += 1);
        let now = self.clock.now();
        self.sync_requests();
        let plan = plan::plan(&self.desired, &self.observed, now);
        for model_plan in &plan.models {
            // An API load waiting for room that no eviction can ever make is dropped. Looked at
            // only for such a load: most waiting models have none.
            let drops_load = match &model_plan.waiting {
                Some(Wait::GroupFull { group }) => {
                    let name = &model_plan.name;
                    self.observed
                        .models
                        .get(name)
                        .is_some_and(|o| o.load_requested)
                        && !plan::room_possible(&self.desired, &self.observed, group, name)
                }
                _ => false,
            };
            let Some(obs) = self.observed.models.get_mut(&model_plan.name) else {
                continue;
            };
            if model_plan.override_ == OverrideChange::Cleared {
                obs.override_ = None;
            }
            if drops_load {
                tracing::warn!(model = %model_plan.name, "on-demand load dropped: its group is full of pinned models");
                obs.load_requested = false;
            }
        }
        // Forget models that left hub.yaml once nothing of them is left.
        let desired = &self.desired;
        self.observed.models.retain(|name, obs| {
            desired.models.contains_key(name)
                || obs.busy
                || !matches!(obs.worker.phase, Phase::Stopped)
        });

        // Only the earliest wave with work runs; see `plan::wave`.
        let wave = self
            .in_flight
            .values()
            .map(|f| f.wave)
            .chain(
                plan.models
                    .iter()
                    .filter(|m| !m.actions.is_empty())
                    .map(|m| plan::wave(&m.actions)),
            )
            .min();
        let mut launched = 0;
        for model_plan in plan.models.iter().filter(|m| !m.actions.is_empty()) {
            if self.in_flight.len() >= self.options.max_concurrent {
                break;
            }
            if Some(plan::wave(&model_plan.actions)) != wave {
                continue;
            }
            let demand::Gate::Go { drain } = self.gate(model_plan) else {
                continue;
            };
            if launched == 0 {
                self.open_episode(false);
            }
            self.launch(model_plan, drain);
            launched += 1;
        }
        if self.episode.is_some() && self.in_flight.is_empty() && launched == 0 {
            self.close_episode();
        }
        let live: HashSet<&ModelName> = self
            .observed
            .models
            .iter()
            .filter(|(_, o)| o.worker.phase == Phase::Ready)
            .map(|(n, _)| n)
            .collect();
        self.probing.retain(|name, _| live.contains(name));
        self.launch_probes();
        self.publish(&plan, now);
        self.route_lanes(&plan, now);
        for reply in self.replies.drain(..) {
            reply();
        }
    }

    async fn shutdown(&mut self, keep_workers: bool) {
        // Wait for each aborted job to be gone: one running on another thread could otherwise
        // spawn a worker after the live ones are listed below, and leave it behind.
        for (_, in_flight) in self.in_flight.drain() {
            in_flight.task.abort();
            let _ = in_flight.task.await;
        }
        let workers = &self.executor.workers;
        let live = workers.live();
        if keep_workers {
            tracing::info!("shutting down, leaving {} workers running", live.len());
        } else {
            tracing::info!("shutting down: stopping {} workers", live.len());
            let mut stops = tokio::task::JoinSet::new();
            for name in live {
                // The engine's stop_command runs here as on every other stop: a container worker
                // must not outlive the daemon.
                let (stop_timeout, stop_command) = match self.observed.models.get(&name) {
                    Some(ModelObserved {
                        worker:
                            crate::observed::Worker {
                                run: Some(run),
                                port,
                                ..
                            },
                        ..
                    }) => {
                        let hub = &self.executor.hub_exe;
                        let vars =
                            crate::engine::Vars::of(name.as_str(), run, port.unwrap_or(0), hub);
                        (
                            run.engine.stop_timeout,
                            crate::engine::stop_argv(run, &vars),
                        )
                    }
                    _ => (crate::config::Engine::builtin().stop_timeout, None),
                };
                stops.spawn(workers.stop(&name, stop_timeout, stop_command));
            }
            while stops.join_next().await.is_some() {}
            // Their exits are not read any more: record them here, so the state file written
            // below names no process that is gone.
            for obs in self.observed.models.values_mut() {
                obs.worker.phase = Phase::Stopped;
                obs.worker.pid = None;
                obs.worker.start_time = None;
                obs.memory = Default::default();
            }
        }
        let now = self.clock.now();
        let plan = plan::plan(&self.desired, &self.observed, now);
        self.publish(&plan, now);
    }
}

#[cfg(test)]
mod tests;
