//! The reconcile loop: the one owner of the observed state.
//!
//! It receives one closed [`Event`] type (config changed, API request, action progress, worker
//! exit, shutdown) and, after each batch of events and on every timer, runs a pass: compute
//! `plan(desired, observed, now)` from scratch, launch the actions it can, publish a snapshot.
//! It is never told *why* it runs, so every pass is idempotent. Actions run as tasks that report
//! back as events; reads never wait for them.

mod execute;
pub mod step;
mod workers;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{Desired, DesiredState, ModelName, ModelSpec, Rejection};
use crate::engine::Probe;
use crate::events::{HubEvent, Journal};
use crate::observed::{ActionError, MemoryState, ModelObserved, Observed, Override, Phase, Time};
use crate::plan::{self, Action, ModelPlan, OverrideChange, Plan, Wait};
use crate::retry::Backoff;
use crate::status::{self, ConfigStatus, RejectedEdit, Report, Status};
use crate::supervisor::Exit;
use crate::wire::{ModelCommandReply as ModelReply, Verb};
use crate::{rfc3339, sha256_hex};

pub use execute::Update;
pub use workers::{BoxFuture, RealWorkers, Workers};

/// A worker that crashes after running at least this long starts its backoff afresh.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// A ready worker that fails this many health probes in a row is restarted.
const HEALTH_FAILURES: u32 = 3;
/// A rejected edit shows at most this many problems in the status.
const MAX_SHOWN_PROBLEMS: usize = 100;
/// The warning shown while hub.yaml's host, port or log_path differ from the running daemon's.
const SETTINGS_WARNING: &str =
    "host, port or log_path changed: they take effect when hub serve restarts";

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
        name: String,
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
    /// A ready worker's periodic health probe.
    Health {
        name: ModelName,
        pid: u32,
        probe: Probe,
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
    #[error(
        "group {group:?} is full: max_loaded {max_loaded}, and no loaded member can be evicted"
    )]
    GroupFull { group: String, max_loaded: u32 },
    #[error("hub is shutting down")]
    ShuttingDown,
    /// The config conflicts with what runs (a fixed port a live worker holds).
    #[error("{0}")]
    Invalid(Rejection),
}

/// A fixed port in `desired` that another model's live worker holds on an auto-assigned port and
/// keeps (its entry gives it no fixed port, and it stays wanted): such a config can never start
/// the model, so it is refused like an invalid one, at `text`'s line for the port.
pub fn check_live_ports(
    desired: &Desired,
    observed: &Observed,
    text: &str,
    file: &str,
) -> Result<(), Rejection> {
    for spec in desired.models.values() {
        let Some(port) = spec.run.port else { continue };
        let holder = observed.models.iter().find(|(name, obs)| {
            **name != spec.name
                && obs.worker.pid.is_some()
                && obs.worker.port == Some(port)
                && desired.models.get(*name).is_some_and(|other| {
                    other.run.port.is_none()
                        && (other.state != DesiredState::Stopped
                            || obs.override_.as_ref().is_some_and(|o| {
                                o.spec == *other && o.state != DesiredState::Stopped
                            }))
                })
        });
        if let Some((holder, _)) = holder {
            let holder = holder.as_str();
            let index = crate::config::model_index(text, spec.name.as_str()).unwrap_or(0);
            return Err(crate::config::rejection_at(
                text,
                file,
                &format!("/models/{index}/port"),
                format!(
                    "port {port} is held by model {holder:?}'s running worker (auto-assigned); pick another port, or give {holder:?} a fixed port"
                ),
            ));
        }
    }
    Ok(())
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
}

impl Handle {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }
}

/// Wall-clock time derived from tokio's clock, so tests with paused time control both.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    instant: Instant,
    wall: Time,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            instant: Instant::now(),
            wall: time::OffsetDateTime::now_utc(),
        }
    }

    pub fn now(&self) -> Time {
        self.wall + (Instant::now() - self.instant)
    }

    pub fn instant_at(&self, at: Time) -> Instant {
        let offset = at - self.wall;
        if offset.is_negative() {
            self.instant
        } else {
            self.instant + offset.unsigned_abs()
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
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

/// The applied config's identity.
struct Applied {
    path: String,
    sha256: String,
    text: Arc<str>,
    at: Time,
    source: &'static str,
}

struct InFlight {
    task: JoinHandle<()>,
    /// See `plan::wave`.
    wave: u8,
    /// The port picked for a start in flight, reserved until the worker reports it.
    port: Option<u16>,
    /// The spec the job works towards; a newer, different one cancels it.
    spec: Option<ModelSpec>,
    /// Whether the job only loads weights into a running worker (an unload supersedes it).
    only_load: bool,
    cancel: watch::Sender<bool>,
}

/// When a ready worker is next probed, and how its probes went.
#[derive(Default)]
struct Probing {
    next_at: Option<Instant>,
    in_progress: bool,
    failures: u32,
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
    trigger: &'static str,
    in_flight: HashMap<ModelName, InFlight>,
    probing: HashMap<ModelName, Probing>,
    journal: Arc<Journal>,
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
    recorded: Option<(
        Vec<crate::statefile::Record>,
        Vec<crate::statefile::OverrideRecord>,
    )>,
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
        trigger: "startup",
        in_flight: HashMap::new(),
        probing: HashMap::new(),
        journal: journal.clone(),
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
    };
    (reconciler, events_rx, handle)
}

/// A model's retry delays.
fn backoff(
    backoffs: &mut HashMap<ModelName, Backoff>,
    name: ModelName,
    max: Duration,
) -> &mut Backoff {
    backoffs
        .entry(name)
        .or_insert_with(|| Backoff::new(crate::retry::MIN_DELAY, max))
}

/// Records an event in the journal.
fn note(journal: &Journal, now: Time, model: Option<&ModelName>, kind: &str, message: String) {
    journal.record(HubEvent {
        time: rfc3339(now),
        kind: kind.to_string(),
        model: model.map(ToString::to_string),
        message,
        report: None,
    });
}

fn config_status(applied: &Applied, rejected: Option<RejectedEdit>) -> ConfigStatus {
    ConfigStatus {
        path: applied.path.clone(),
        sha256: applied.sha256.clone(),
        applied_at: rfc3339(applied.at),
        source: applied.source.to_string(),
        rejected,
    }
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

    /// A timer fired: a resync, a retry or idle unload falling due, or health probes.
    fn on_timer(&mut self) {
        let now = self.clock.now();
        let resync = Instant::now() >= self.resync_at;
        if resync {
            self.resync_at = Instant::now() + self.options.resync_every;
            self.reread.notify_one();
            self.trigger = "resync";
        } else {
            self.trigger = "timer";
        }
        let due = self
            .observed
            .models
            .iter()
            .filter_map(|(name, obs)| self.model_timer(name, obs))
            .any(|at| at <= now);
        if resync || due {
            self.pass();
        } else {
            self.launch_probes();
        }
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
            Event::Health { name, pid, probe } => return self.on_health(name, pid, probe, now),
            Event::Shutdown { .. } => unreachable!("handled by run"),
        }
        true
    }

    /// A health probe's answer. Only a change (activity, or a worker judged unhealthy) needs a
    /// pass; a quiet healthy answer costs nothing more.
    fn on_health(&mut self, name: ModelName, pid: u32, probe: Probe, now: Time) -> bool {
        let interval = self
            .observed
            .models
            .get(&name)
            .and_then(|o| o.worker.run.as_ref())
            .map_or(Duration::from_secs(5), |r| r.engine.health.interval);
        let probing = self.probing.entry(name.clone()).or_default();
        probing.in_progress = false;
        probing.next_at = Some(Instant::now() + interval);
        let Some(obs) = self.observed.models.get_mut(&name) else {
            return false;
        };
        if obs.worker.pid != Some(pid) || obs.busy || obs.worker.phase != Phase::Ready {
            return false;
        }
        if probe.healthy {
            probing.failures = 0;
            let Some(activity) = probe.activity else {
                return false;
            };
            let mut memory = obs.memory.clone();
            memory.in_flight = activity.in_flight;
            if let Some(idle) = activity.idle_ms {
                let last = now - Duration::from_millis(idle);
                // Millisecond rounding of the worker's clock must not look like new activity.
                let moved = memory
                    .last_activity
                    .is_none_or(|t| (last - t).whole_milliseconds().abs() > 50);
                if moved && memory.state == MemoryState::Loaded {
                    memory.last_activity = Some(last);
                }
            }
            let changed = memory != obs.memory;
            obs.memory = memory;
            return changed;
        }
        probing.failures += 1;
        tracing::warn!(model = %name, pid, failures = probing.failures, "health probe failed");
        self.journal.count(|m| m.health_failures += 1);
        let message = format!("health probe failed ({} in a row)", probing.failures);
        note(&self.journal, now, Some(&name), "health", message);
        if probing.failures < HEALTH_FAILURES {
            return false;
        }
        probing.failures = 0;
        // Judged dead while its process lives: restart it (the restart stops the process first).
        obs.worker.phase = Phase::Failed;
        obs.worker.crashed = true;
        obs.worker.exit_code = None;
        obs.memory = Default::default();
        obs.error = Some(ActionError {
            action: "health",
            message: format!("failed {HEALTH_FAILURES} health probes in a row"),
        });
        let backoff = backoff(&mut self.backoffs, name, self.options.max_backoff);
        obs.next_retry_at = backoff.next().map(|d| now + d);
        self.trigger = "health";
        true
    }

    /// Probes every ready worker whose probe is due.
    fn launch_probes(&mut self) {
        let now = Instant::now();
        for (name, obs) in &self.observed.models {
            let (Some(pid), Some(port), Some(run)) =
                (obs.worker.pid, obs.worker.port, obs.worker.run.as_ref())
            else {
                continue;
            };
            let probing = self.probing.entry(name.clone()).or_default();
            if obs.busy || obs.worker.phase != Phase::Ready {
                // Not probed while an action runs on it: its next probe is scheduled afresh
                // once it is ready and idle, so no past probe time keeps the loop awake.
                if !probing.in_progress {
                    probing.next_at = None;
                }
                continue;
            }
            let due = *probing
                .next_at
                .get_or_insert(now + run.engine.health.interval);
            if probing.in_progress || due > now {
                continue;
            }
            probing.in_progress = true;
            let vars = crate::engine::Vars::of(name.as_str(), run, port, &self.executor.hub_exe);
            let probe = self
                .executor
                .workers
                .probe(crate::engine::url(&vars, &run.engine.health.path));
            let events = self.executor.events.clone();
            let name = name.clone();
            tokio::spawn(async move {
                let probe = probe.await;
                let _ = events.send(Event::Health { name, pid, probe });
            });
        }
    }

    /// The watched file, read. Returns whether anything changed.
    fn on_config(&mut self, mut update: ConfigUpdate, now: Time) -> bool {
        if let Ok(desired) = &update.result
            && let Err(rejection) = check_live_ports(
                desired,
                &self.observed,
                &update.text,
                &update.path.display().to_string(),
            )
        {
            update.result = Err(rejection);
        }
        match update.result {
            Ok(desired) => {
                let was_rejected = self.rejected.take().is_some();
                if update.sha256 == self.applied.sha256 {
                    // The file says what is in force (an apply of the same bytes included).
                    let was_api = std::mem::replace(&mut self.applied.source, "file") != "file";
                    return was_rejected || was_api;
                }
                tracing::info!(path = %update.path.display(), sha256 = %update.sha256, "applying changed config");
                self.journal.count(|m| m.config_applied += 1);
                let message = format!(
                    "applied {} ({})",
                    update.path.display(),
                    &update.sha256[..12]
                );
                note(&self.journal, now, None, "config", message);
                self.applied = Applied {
                    path: update.path.display().to_string(),
                    sha256: update.sha256,
                    text: update.text.into(),
                    at: now,
                    source: "file",
                };
                self.trigger = "config";
                self.set_desired(desired, false);
                true
            }
            Err(rejection) => {
                if self
                    .rejected
                    .as_ref()
                    .is_some_and(|r| r.sha256 == update.sha256)
                {
                    return false;
                }
                // The log and the status show the first problems; `hub validate` lists them all.
                let total = rejection.problems.len();
                let mut shown = rejection;
                if total > MAX_SHOWN_PROBLEMS {
                    shown.problems.truncate(MAX_SHOWN_PROBLEMS);
                    shown.problems.push(crate::config::Problem {
                        path: String::new(),
                        line: None,
                        column: None,
                        message: format!(
                            "and {} more problems: `hub validate` lists them all",
                            total - MAX_SHOWN_PROBLEMS
                        ),
                        at_key: false,
                        pointer: String::new(),
                    });
                }
                tracing::error!(
                    "rejected an edit of {} ({total} problems); the last good config stays in force:\n{shown}",
                    update.path.display(),
                );
                self.journal.count(|m| m.config_rejected += 1);
                let message = format!("rejected an edit: {total} problems");
                note(&self.journal, now, None, "config", message);
                let errors = shown.problems;
                self.rejected = Some(RejectedEdit {
                    at: rfc3339(now),
                    sha256: update.sha256,
                    errors,
                });
                true
            }
        }
    }

    fn on_apply(
        &mut self,
        (desired, text, file): (Desired, String, String),
        expect_generation: Option<u64>,
        reset_overrides: bool,
        now: Time,
    ) -> Result<ApplyReply, CommandError> {
        if let Some(expected) = expect_generation
            && expected != self.generation
        {
            return Err(CommandError::Conflict(format!(
                "the desired state is at generation {}, not {expected}: it changed since your diff; run `hub diff` again",
                self.generation
            )));
        }
        check_live_ports(&desired, &self.observed, &text, &file).map_err(CommandError::Invalid)?;
        let plan = plan::preview(&desired, &self.observed, reset_overrides, now);
        let sha256 = sha256_hex(text.as_bytes());
        if sha256 != self.applied.sha256 || reset_overrides {
            self.applied = Applied {
                path: self.applied.path.clone(),
                sha256,
                text: text.into(),
                at: now,
                source: "api",
            };
            self.trigger = "api";
            self.set_desired(desired, reset_overrides);
        }
        Ok(ApplyReply {
            generation: self.generation,
            plan,
        })
    }

    fn set_desired(&mut self, desired: Desired, reset_overrides: bool) {
        // Shown while the desired host, port or log_path differ from what the daemon runs with.
        let (host, port, log_path) = &self.serving;
        let differs = desired.settings.host != *host
            || desired.settings.port != *port
            || desired.settings.log_path != *log_path;
        self.warnings.retain(|w| w != SETTINGS_WARNING);
        if differs {
            tracing::warn!("{SETTINGS_WARNING}");
            self.warnings.push(SETTINGS_WARNING.to_string());
        }
        self.generation += 1;
        let old = std::mem::replace(&mut self.desired, Arc::new(desired));
        // A changed entry supersedes its model's wait for a retry; other models keep theirs.
        for (name, obs) in &mut self.observed.models {
            if old.models.get(name) != self.desired.models.get(name) {
                obs.next_retry_at = None;
                self.backoffs.remove(name);
            }
            if reset_overrides {
                obs.override_ = None;
            }
        }
        // A job in flight is moot once its model is no longer wanted or would run from another
        // RunSpec; a change of `state` alone lets it finish (the next pass loads or unloads).
        for (name, in_flight) in &self.in_flight {
            let Some(working) = &in_flight.spec else {
                continue;
            };
            let wanted = self.desired.models.get(name).filter(|spec| {
                let target = match self
                    .observed
                    .models
                    .get(name)
                    .and_then(|o| o.override_.as_ref())
                {
                    Some(o) if o.spec == **spec => o.state,
                    _ => spec.state,
                };
                target != DesiredState::Stopped
            });
            if wanted.is_none_or(|wanted| wanted.run != working.run) {
                let _ = in_flight.cancel.send(true);
            }
        }
        self.open_episode(true);
    }

    fn on_model_command(
        &mut self,
        name: &str,
        verb: Verb,
        now: Time,
    ) -> Result<ModelReply, CommandError> {
        let spec = ModelName::new(name)
            .ok()
            .and_then(|n| self.desired.models.get(&n))
            .cloned()
            .ok_or_else(|| CommandError::UnknownModel(name.to_string()))?;
        let name = spec.name.clone();
        let memory_control = spec.run.engine.has_memory_control();
        let obs = self.observed.models.entry(name.clone()).or_default();
        let before = obs.clone();
        let target = match &obs.override_ {
            Some(o) if o.spec == spec => o.state,
            _ => spec.state,
        };
        let set = |obs: &mut ModelObserved, state: DesiredState| {
            obs.override_ = (state != spec.state).then(|| Override {
                state,
                spec: spec.clone(),
                at: now,
                by: verb.as_str(),
            });
        };
        let loaded = obs.memory.state == MemoryState::Loaded;
        match (verb, target) {
            (Verb::Stop, DesiredState::Stopped) => {}
            (Verb::Stop, _) => {
                set(obs, DesiredState::Stopped);
                obs.load_requested = false;
            }
            (Verb::Start, DesiredState::Stopped) => set(obs, DesiredState::Running),
            (Verb::Start, _) => {}
            (Verb::Load, DesiredState::Stopped) => {
                set(obs, DesiredState::Running);
                obs.load_requested = memory_control;
            }
            (Verb::Load, DesiredState::Running) => {
                obs.load_requested = memory_control && !loaded;
                obs.unload_requested = false;
            }
            (Verb::Load, DesiredState::Loaded) => {}
            (Verb::Unload, DesiredState::Stopped) => {}
            (Verb::Unload, _) if !memory_control => set(obs, DesiredState::Stopped),
            (Verb::Unload, DesiredState::Loaded) => set(obs, DesiredState::Running),
            (Verb::Unload, DesiredState::Running) => {
                obs.load_requested = false;
                obs.unload_requested = loaded;
            }
        }
        if obs.override_.is_some() || obs.load_requested {
            // A fresh imperative call is not held back by an earlier failure's backoff.
            obs.next_retry_at = None;
        }
        // A stop supersedes any start or load in flight; an unload, a load in flight.
        if let Some(job) = self.in_flight.get(&name)
            && (verb == Verb::Stop || (verb == Verb::Unload && job.only_load))
        {
            let _ = job.cancel.send(true);
        }
        let plan = plan::plan(&self.desired, &self.observed, now);
        let model_plan = plan.get(name.as_str()).cloned();
        if let Some(ModelPlan {
            waiting: Some(Wait::GroupFull { group }),
            ..
        }) = &model_plan
            && matches!(verb, Verb::Load | Verb::Start)
        {
            let max_loaded = self.desired.groups.get(group).map_or(0, |g| g.max_loaded);
            self.observed.models.insert(name, before);
            return Err(CommandError::GroupFull {
                group: group.clone(),
                max_loaded,
            });
        }
        self.trigger = "api";
        let obs = &self.observed.models[&name];
        Ok(ModelReply {
            model: name.to_string(),
            action: verb.as_str().to_string(),
            override_: obs.override_.as_ref().map(|o| o.state.as_str().to_string()),
            plan: model_plan.map(|p| p.to_string()).unwrap_or_default(),
        })
    }

    fn on_progress(&mut self, name: ModelName, update: Update, now: Time) {
        // What is not state: the journal, counters, the report, the backoff's delay.
        let mut retry_at = None;
        match &update {
            Update::Spawned { pid, port, .. } => {
                let message = format!("starting: pid {pid}, port {port}");
                note(&self.journal, now, Some(&name), "phase", message);
            }
            Update::Ready => note(&self.journal, now, Some(&name), "phase", "ready".into()),
            Update::Stopping => note(&self.journal, now, Some(&name), "phase", "stopping".into()),
            Update::Stopped { exit, .. } => {
                let message = match exit {
                    Some(exit) => format!("stopped: exit code {}", exit.code_or_signal()),
                    None => "stopped".to_string(),
                };
                note(&self.journal, now, Some(&name), "phase", message);
            }
            Update::Memory(state) => {
                note(
                    &self.journal,
                    now,
                    Some(&name),
                    "memory",
                    state.as_str().into(),
                );
            }
            Update::Loaded { on_demand } => {
                let message = if *on_demand {
                    "loaded on demand"
                } else {
                    "loaded"
                };
                note(&self.journal, now, Some(&name), "memory", message.into());
            }
            Update::Succeeded(action) => {
                self.journal
                    .count(|m| *m.actions.entry((action.verb(), "ok")).or_default() += 1);
                if let Some(report) = &mut self.report {
                    report.add_success(name.as_str(), action);
                }
            }
            Update::Superseded(action) => {
                tracing::info!(model = %name, action = action.verb(), "superseded by a newer desired state");
                self.journal
                    .count(|m| *m.actions.entry((action.verb(), "superseded")).or_default() += 1);
                let message = format!("{} superseded by a newer desired state", action.verb());
                note(&self.journal, now, Some(&name), "action", message);
            }
            Update::Failed { action, error } => {
                tracing::warn!(model = %name, action = action.verb(), "{error}");
                self.journal
                    .count(|m| *m.actions.entry((action.verb(), "failed")).or_default() += 1);
                let message = format!("{} failed: {error}", action.verb());
                note(&self.journal, now, Some(&name), "action", message);
                let delay =
                    backoff(&mut self.backoffs, name.clone(), self.options.max_backoff).next();
                retry_at = delay.map(|d| now + d);
                if let Some(report) = &mut self.report {
                    report.add_failure(name.as_str(), action.verb(), error.clone());
                }
            }
        }
        let obs = self.observed.models.entry(name).or_default();
        step::apply(obs, &update, now, retry_at);
    }

    fn on_exit(&mut self, exit: Exit, now: Time) {
        let Some(obs) = self.observed.models.get_mut(&exit.name) else {
            return;
        };
        if obs.worker.pid != Some(exit.pid) {
            return;
        }
        obs.worker.exit_code = Some(exit.info.code_or_signal());
        obs.worker.exited_at = Some(now);
        if obs.busy {
            // The action in flight stopped it, or will see the exit and report.
            return;
        }
        let uptime = obs.worker.started_at.map(|t| now - t);
        tracing::warn!(model = %exit.name, pid = exit.pid, code = ?exit.info.code, signal = ?exit.info.signal, "worker exited unexpectedly");
        obs.worker.phase = Phase::Failed;
        obs.worker.pid = None;
        obs.worker.start_time = None;
        obs.worker.crashed = true;
        obs.memory = Default::default();
        self.journal.count(|m| m.crashes += 1);
        let message = format!(
            "exited unexpectedly with code {}",
            exit.info.code_or_signal()
        );
        note(&self.journal, now, Some(&exit.name), "exit", message);
        obs.error = Some(ActionError {
            action: "run",
            message: format!(
                "worker exited unexpectedly with code {}",
                exit.info.code_or_signal()
            ),
        });
        let backoff = backoff(
            &mut self.backoffs,
            exit.name.clone(),
            self.options.max_backoff,
        );
        if uptime.is_some_and(|u| u >= STABLE_AFTER) {
            backoff.reset();
        }
        obs.next_retry_at = backoff.next().map(|d| now + d);
        self.trigger = "worker_exit";
    }

    /// Starts a new report. A new generation always gets one; other triggers only when the
    /// previous reconcile has finished.
    fn open_episode(&mut self, new_generation: bool) {
        if !new_generation && self.episode.is_some() {
            return;
        }
        self.episode = Some(Instant::now());
        self.report = Some(Report {
            generation: self.generation,
            trigger: self.trigger.to_string(),
            started_at: rfc3339(self.clock.now()),
            ..Report::default()
        });
    }

    fn close_episode(&mut self) {
        let (Some(started), Some(report)) = (self.episode.take(), self.report.as_mut()) else {
            return;
        };
        report.finished_at = Some(rfc3339(self.clock.now()));
        report.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        let touched: HashSet<&str> = [
            &report.started,
            &report.stopped,
            &report.restarted,
            &report.loaded,
            &report.unloaded,
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .chain(report.failed.iter().map(|f| f.model.as_str()))
        .collect();
        report.unchanged = self
            .desired
            .models
            .keys()
            .filter(|name| !touched.contains(name.as_str()))
            .map(ToString::to_string)
            .collect();
        self.observed_generation = report.generation;
        tracing::info!(
            generation = report.generation,
            trigger = %report.trigger,
            duration_ms = %format_args!("{:.1}", report.duration_ms),
            started = ?report.started,
            stopped = ?report.stopped,
            restarted = ?report.restarted,
            loaded = ?report.loaded,
            unloaded = ?report.unloaded,
            failed = report.failed.len(),
            "reconciled"
        );
        let seconds = report.duration_ms / 1000.0;
        self.journal.count(|m| {
            m.reconciles += 1;
            m.reconcile_seconds += seconds;
        });
        self.journal.record(HubEvent {
            time: report.finished_at.clone().unwrap_or_default(),
            kind: "reconcile".to_string(),
            model: None,
            message: format!(
                "generation {} reconciled ({}) in {:.1} ms",
                report.generation, report.trigger, report.duration_ms
            ),
            report: Some(report.clone()),
        });
    }

    /// One pass: plan from scratch, launch what may run now, publish.
    fn pass(&mut self) {
        self.journal.count(|m| m.passes += 1);
        let now = self.clock.now();
        let plan = plan::plan(&self.desired, &self.observed, now);
        for model_plan in &plan.models {
            let Some(obs) = self.observed.models.get_mut(&model_plan.name) else {
                continue;
            };
            if model_plan.override_ == OverrideChange::Cleared {
                obs.override_ = None;
            }
            if matches!(model_plan.waiting, Some(Wait::GroupFull { .. })) && obs.load_requested {
                tracing::warn!(model = %model_plan.name, "on-demand load dropped: its group is full");
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
            if launched == 0 {
                self.open_episode(false);
            }
            self.launch(model_plan);
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
        for reply in self.replies.drain(..) {
            reply();
        }
    }

    fn launch(&mut self, model_plan: &ModelPlan) {
        let name = model_plan.name.clone();
        let spec: Option<ModelSpec> = self.desired.models.get(&name).cloned();
        let starts = model_plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::Start | Action::Restart { .. }));
        let port = match &spec {
            Some(spec) if starts => Some(self.pick_port(spec)),
            _ => None,
        };
        let obs = self.observed.models.entry(name.clone()).or_default();
        obs.busy = true;
        let (cancel, cancelled) = watch::channel(false);
        let job = execute::Job {
            name: name.clone(),
            actions: model_plan.actions.clone(),
            spec,
            running: obs.worker.run.clone(),
            current_port: obs.worker.port,
            port: port.clone(),
            on_demand: model_plan.target != DesiredState::Loaded,
            cwd: self.desired.settings.config_dir.clone(),
            log_dir: self.desired.settings.log_path.clone(),
            cancel: cancelled,
            stops_failed: plan::stops_failed(model_plan),
        };
        let spec = job.spec.clone();
        let task = tokio::spawn(execute::run(job, self.executor.clone()));
        self.in_flight.insert(
            name,
            InFlight {
                task,
                wave: plan::wave(&model_plan.actions),
                port: port.and_then(Result::ok),
                spec,
                only_load: model_plan.actions == [Action::Load],
                cancel,
            },
        );
    }

    /// A port for a worker about to start: its fixed port (free, or held by its own worker that
    /// the restart stops first), else the one it had, else the first free one from
    /// `model_starting_port` that no other worker, fixed port or the API holds.
    fn pick_port(&self, spec: &ModelSpec) -> Result<u16, String> {
        let own = self
            .observed
            .models
            .get(&spec.name)
            .filter(|o| o.worker.pid.is_some())
            .and_then(|o| o.worker.port);
        if let Some(port) = spec.run.port {
            if own == Some(port) || crate::supervisor::port_is_free(port) {
                return Ok(port);
            }
            return Err(format!(
                "port {port} is in use by another process; free it or change `port` in hub.yaml"
            ));
        }
        let live_ports = self
            .observed
            .models
            .iter()
            .filter(|(n, o)| **n != spec.name && o.worker.pid.is_some())
            .filter_map(|(_, o)| o.worker.port);
        let fixed_ports = self
            .desired
            .models
            .values()
            .filter(|s| s.name != spec.name)
            .filter_map(|s| s.run.port);
        let reserved = self.in_flight.values().filter_map(|f| f.port);
        let taken: HashSet<u16> = live_ports
            .chain(fixed_ports)
            .chain(reserved)
            .chain([self.desired.settings.port])
            .collect();
        let previous = self
            .observed
            .models
            .get(&spec.name)
            .and_then(|o| o.worker.port);
        // Held by its own worker, which the restart stops first: it stays on its port.
        if let Some(port) = own.filter(|p| !taken.contains(p)) {
            return Ok(port);
        }
        let start = self.desired.settings.model_starting_port;
        crate::supervisor::pick_port(previous, start, &taken)
            .ok_or_else(|| format!("no free port from model_starting_port {start} upwards"))
    }

    fn publish(&mut self, plan: &Plan, now: Time) {
        // First, so a failure to record shows in this very status.
        self.record_workers();
        let status = status::build(status::Inputs {
            now,
            desired: &self.desired,
            observed: &self.observed,
            plan,
            generation: self.generation,
            observed_generation: self.observed_generation,
            config: config_status(&self.applied, self.rejected.clone()),
            report: self.report.clone(),
            warnings: self.warnings.clone(),
        });
        let json = Bytes::from(serde_json::to_vec(&status).expect("status is plain data"));
        self.publish.send_replace(Arc::new(Snapshot {
            status,
            json,
            desired: self.desired.clone(),
            observed: Arc::new(self.observed.clone()),
            applied_text: self.applied.text.clone(),
            generation: self.generation,
        }));
    }

    /// Writes the state file when the set of workers (or what is known of them) changed.
    fn record_workers(&mut self) {
        let Some(path) = &self.options.state_path else {
            return;
        };
        let records = crate::recover::records(&self.observed, &self.executor.hub_exe);
        if self.recorded.as_ref() == Some(&records) {
            return;
        }
        let state = crate::statefile::StateFile {
            version: crate::statefile::VERSION,
            owner: self.options.owner.clone(),
            workers: records.0.clone(),
            overrides: records.1.clone(),
        };
        // A failure shows in the status until a write succeeds (a full disk, say). The marks on
        // the workers still let the next daemon find them; only adoption (instead of a restart)
        // is at stake.
        const PREFIX: &str = "cannot write the state file";
        let failed = |w: &String| w.starts_with(PREFIX);
        match crate::statefile::write(path, &state) {
            Ok(()) => {
                self.recorded = Some(records);
                self.warnings.retain(|w| !failed(w));
            }
            Err(e) => {
                let warning = format!(
                    "{PREFIX} {}: {e}; a daemon restart would restart the workers instead of adopting them",
                    path.display()
                );
                if !self.warnings.contains(&warning) {
                    tracing::warn!("{warning}");
                    self.warnings.retain(|w| !failed(w));
                    self.warnings.push(warning);
                }
            }
        }
    }

    /// When a model's retry or idle unload falls due, if it has one.
    fn model_timer(&self, name: &ModelName, obs: &ModelObserved) -> Option<Time> {
        if obs.busy {
            return None;
        }
        let unload_at = self
            .desired
            .models
            .get(name)
            .and_then(|spec| plan::unload_at(spec, obs));
        [obs.next_retry_at, unload_at].into_iter().flatten().min()
    }

    /// The next time the loop must act without an event: the resync, a retry or idle unload,
    /// or a health probe.
    fn next_wake(&self) -> Instant {
        // Only future times: one already past has had its pass, and waking for it again would
        // spin (an idle timer of a model that is serving, say).
        let now = self.clock.now();
        let timers = self
            .observed
            .models
            .iter()
            .filter_map(|(name, obs)| self.model_timer(name, obs))
            .filter(|at| *at > now)
            .map(|at| self.clock.instant_at(at));
        let probes = self
            .probing
            .values()
            .filter(|p| !p.in_progress)
            .filter_map(|p| p.next_at)
            .filter(|at| *at > Instant::now());
        timers.chain(probes).fold(self.resync_at, Instant::min)
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
