//! The executor: runs one model's planned actions in order, as a task, reporting each step to
//! the loop as an [`Update`]. Actions on one model are serialized by construction (one task per
//! model); every step has a timeout; a newer desired state cancels a start or load in flight.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use tokio::sync::{mpsc, watch};

use super::Event;
use super::workers::Workers;
use crate::config::{Engine, HttpCall, ModelName, ModelSpec, RunSpec};
use crate::engine::{self, Request, Vars};
use crate::measure::{Footprint, Target};
use crate::observed::{MemoryState, Time};
use crate::plan::Action;
use crate::supervisor::{ExitInfo, SpawnRequest};

/// A starting worker is probed every [`PROBE_QUICK`] for its first [`QUICK_FOR`], then at twice
/// the last pause each time up to [`PROBE_MAX`]: a quick worker (the built-in one is healthy about
/// 3 ms after its spawn) is seen ready within a millisecond of it, and a refused connection costs
/// microseconds; a slow one (weights to read) costs a probe every 100 ms.
const PROBE_QUICK: Duration = Duration::from_millis(1);
const QUICK_FOR: Duration = Duration::from_millis(10);
const PROBE_MAX: Duration = Duration::from_millis(100);
/// How long a process may take to die after SIGKILL before the stop is reported as failed.
const KILL_GRACE: Duration = Duration::from_secs(10);
/// How long an unload in a group with a memory budget waits for its worker's memory to be
/// measured gone before the next load goes ahead anyway (with a warning), and how often it looks.
pub const FREED_TIMEOUT: Duration = Duration::from_secs(30);
const FREED_POLL: Duration = Duration::from_millis(50);

/// One step's effect on the observed state.
#[derive(Debug, Clone)]
pub enum Update {
    Spawned {
        /// When the process was spawned (its uptime counts from here, not from when the loop
        /// took the news in).
        at: Time,
        pid: u32,
        start_time: Option<u64>,
        port: u16,
        log_file: PathBuf,
        run: Arc<RunSpec>,
        /// Started for requests, for a model hub.yaml leaves stopped.
        on_demand: bool,
    },
    Ready,
    Stopping,
    /// The worker is gone: how it exited, if hub saw it exit, and whether it was stopped
    /// because it failed (judged hung), so that it stays failed until its retry.
    Stopped {
        exit: Option<ExitInfo>,
        failed: bool,
    },
    Memory(MemoryState),
    Loaded {
        on_demand: bool,
        /// The worker's processes just before the load, as measured in a group with a budget.
        baseline: Option<u64>,
    },
    /// The model's footprint, measured: after each load, after the start of an engine that
    /// loads by starting, or on the probe's schedule while it holds its weights.
    Measured(Footprint),
    Succeeded(Action),
    Failed {
        action: Action,
        error: String,
    },
    /// A newer desired state made the rest of the job moot; not a failure.
    Superseded(Action),
}

/// What every task shares.
pub struct Context {
    pub workers: Arc<dyn Workers>,
    pub clock: super::Clock,
    pub hub_exe: String,
    pub events: mpsc::UnboundedSender<Event>,
}

/// One model's work for one pass.
pub struct Job {
    pub name: ModelName,
    pub actions: Vec<Action>,
    /// hub.yaml's spec; `None` when the model was removed (only `Stop` is planned then).
    pub spec: Option<ModelSpec>,
    /// The spec the live worker was started from, for stopping it.
    pub running: Option<Arc<RunSpec>>,
    pub current_port: Option<u16>,
    /// The port to start on, or why there is none, as the loop picked it.
    pub port: Option<Result<u16, String>>,
    pub on_demand: bool,
    pub cwd: PathBuf,
    pub log_dir: PathBuf,
    /// Becomes true when a newer desired state supersedes this job.
    pub cancel: watch::Receiver<bool>,
    /// The job stops a worker that failed (see [`crate::plan::stops_failed`]).
    pub stops_failed: bool,
    /// The worker it starts runs for requests (`ModelPlan::on_demand`).
    pub demand_started: bool,
    /// Before a stop: the model's gateway lane (already closed to new requests), whose requests
    /// in flight may finish for up to this long.
    pub drain: Option<(Arc<crate::gateway::Lane>, Duration)>,
    /// The live worker's pid (its process group), for measuring its memory.
    pub pid: Option<u32>,
    /// The model is in a group with a memory budget (its load measures the worker first).
    pub budgeted: bool,
    /// In a group with a memory budget: an unload ends only once the worker's memory is measured
    /// at or below this many bytes (or after [`FREED_TIMEOUT`]), so the next load into the group
    /// never finds the last one's weights still resident.
    pub freed_below: Option<u64>,
}

/// Why a step did not complete.
enum StepError {
    Failed(anyhow::Error),
    Superseded,
}

impl From<anyhow::Error> for StepError {
    fn from(error: anyhow::Error) -> Self {
        StepError::Failed(error)
    }
}

pub async fn run(mut job: Job, ctx: Arc<Context>) {
    let name = job.name.clone();
    let events = ctx.events.clone();
    let send = move |update: Update| {
        let _ = events.send(Event::Progress {
            name: name.clone(),
            update,
        });
    };
    if let Some((lane, timeout)) = job.drain.take() {
        let left = lane.drained(timeout).await;
        if left > 0 {
            tracing::warn!(model = %job.name, "{left} requests still in flight after the drain timeout of {timeout:?}: stopping anyway");
        }
    }
    for action in job.actions.clone() {
        let result = match &action {
            Action::Stop => stop(&job, &ctx, &send).await,
            Action::Start => start(&mut job, &ctx, &send).await,
            Action::Restart { .. } => match stop(&job, &ctx, &send).await {
                Ok(()) => start(&mut job, &ctx, &send).await,
                Err(e) => Err(e),
            },
            Action::Load => load(&mut job, &ctx, &send).await,
            Action::Unload { .. } => unload(&job, &ctx, &send).await,
        };
        match result {
            Ok(()) => send(Update::Succeeded(action)),
            Err(StepError::Failed(error)) => {
                send(Update::Failed {
                    action,
                    error: format!("{error:#}"),
                });
                break;
            }
            Err(StepError::Superseded) => {
                send(Update::Superseded(action));
                break;
            }
        }
    }
    let _ = ctx.events.send(Event::Done {
        name: job.name.clone(),
    });
}

fn vars<'a>(name: &'a ModelName, run: &'a RunSpec, port: u16, hub: &'a str) -> Vars<'a> {
    Vars::of(name.as_str(), run, port, hub)
}

/// Resolves when the job is superseded; never if the loop is gone.
async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    if cancel.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn stop(job: &Job, ctx: &Context, send: &impl Fn(Update)) -> Result<(), StepError> {
    send(Update::Stopping);
    let engine = job
        .running
        .as_ref()
        .map_or_else(|| Arc::new(Engine::builtin()), |r| r.engine.clone());
    let stop_command = job.running.as_ref().and_then(|run| {
        let vars = vars(&job.name, run, job.current_port.unwrap_or(0), &ctx.hub_exe);
        engine::stop_argv(run, &vars)
    });
    // stop_command, SIGTERM and SIGKILL each get their time; past that the process is stuck
    // in the kernel and we say so rather than wait forever.
    let bound = engine.stop_timeout * 2 + KILL_GRACE;
    let stopped = ctx
        .workers
        .stop(&job.name, engine.stop_timeout, stop_command);
    let Ok(exit) = tokio::time::timeout(bound, stopped).await else {
        return Err(anyhow!("the worker did not exit within {bound:?}, even after SIGKILL").into());
    };
    send(Update::Stopped {
        exit,
        failed: job.stops_failed,
    });
    Ok(())
}

async fn start(job: &mut Job, ctx: &Context, send: &impl Fn(Update)) -> Result<(), StepError> {
    let spec = job.spec.as_ref().context("the model is not in hub.yaml")?;
    let run = spec.run.clone();
    let port = match job.port.clone() {
        Some(Ok(port)) => port,
        Some(Err(why)) => return Err(anyhow!(why).into()),
        None => return Err(anyhow!("no port was picked for the worker").into()),
    };
    let vars = vars(&job.name, &run, port, &ctx.hub_exe);
    let argv = engine::argv(&run, &vars);
    let env: Vec<(String, String)> = run
        .engine
        .env
        .iter()
        .chain(run.env.iter())
        .map(|(k, v)| (k.clone(), engine::render(v, &vars)))
        .collect();
    let spawned = ctx.workers.spawn(SpawnRequest {
        name: &job.name,
        argv,
        env,
        cwd: &job.cwd,
        log_dir: &job.log_dir,
    })?;
    job.running = Some(run.clone());
    job.current_port = Some(port);
    job.pid = Some(spawned.pid);
    send(Update::Spawned {
        at: ctx.clock.now(),
        pid: spawned.pid,
        start_time: spawned.start_time,
        port,
        log_file: spawned.log_file.clone(),
        run: run.clone(),
        on_demand: job.demand_started,
    });
    let url = engine::health_url(job.name.as_str(), &run, port, &ctx.hub_exe);
    let stop_command = engine::stop_argv(&run, &vars);
    let ready = wait_ready(job, ctx, &run.engine, url).await;
    if let Err(error) = ready {
        // Never leave a half-started worker behind.
        let exit = ctx
            .workers
            .stop(&job.name, run.engine.stop_timeout, stop_command)
            .await;
        return Err(match error {
            StepError::Failed(e) => {
                StepError::Failed(anyhow!("{e:#} (see {})", spawned.log_file.display()))
            }
            StepError::Superseded => {
                send(Update::Stopped {
                    exit,
                    failed: false,
                });
                StepError::Superseded
            }
        });
    }
    send(Update::Ready);
    // An engine without load/unload holds its weights once it is ready: that is its load.
    if !run.engine.has_memory_control()
        && let Some(target) = target(job, ctx)
        && let Some(footprint) = ctx.workers.measure(target).await
    {
        send(Update::Measured(footprint));
    }
    Ok(())
}

async fn wait_ready(
    job: &mut Job,
    ctx: &Context,
    engine: &Engine,
    url: String,
) -> Result<(), StepError> {
    let url: Arc<str> = url.into();
    let started = tokio::time::Instant::now();
    let deadline = started + engine.health.start_timeout;
    let exited = ctx.workers.wait_exit(&job.name);
    tokio::pin!(exited);
    let mut pause = PROBE_QUICK;
    loop {
        let probe = ctx.workers.probe(url.clone());
        tokio::select! {
            biased;
            () = cancelled(&mut job.cancel) => return Err(StepError::Superseded),
            exit = &mut exited => {
                let code = exit.map_or(-1, |e| e.code_or_signal());
                return Err(anyhow!("worker exited with code {code} before becoming healthy").into());
            }
            () = tokio::time::sleep_until(deadline) => {
                return Err(anyhow!(
                    "worker not healthy at {} after {:?}",
                    engine.health.path,
                    engine.health.start_timeout
                )
                .into());
            }
            probe = probe => {
                if probe.healthy {
                    return Ok(());
                }
            }
        }
        tokio::select! {
            () = cancelled(&mut job.cancel) => return Err(StepError::Superseded),
            () = tokio::time::sleep(pause) => {}
        }
        if started.elapsed() >= QUICK_FOR {
            pause = (pause * 2).min(PROBE_MAX);
        }
    }
}

async fn load(job: &mut Job, ctx: &Context, send: &impl Fn(Update)) -> Result<(), StepError> {
    let request = memory_request(job, ctx, |e| e.load.as_ref())?;
    let target = target(job, ctx);
    // What the worker holds without weights: only an unload in a group with a budget needs it
    // (to tell when its memory is gone), so only there does a load wait for it.
    let baseline = match target.as_ref().filter(|_| job.budgeted) {
        Some(target) => ctx.workers.measure(target.clone()).await.map(|f| f.bytes),
        None => None,
    };
    send(Update::Memory(MemoryState::Loading));
    let call = ctx.workers.call(request);
    let result = tokio::select! {
        biased;
        () = cancelled(&mut job.cancel) => Err(StepError::Superseded),
        result = call => result.map_err(StepError::Failed),
    };
    match result {
        Ok(()) => {
            send(Update::Loaded {
                on_demand: job.on_demand,
                baseline,
            });
            // Measured once the model serves: requests need not wait for the figure (an
            // engine's report may take up to its timeout), and the job holds the model busy, so
            // nothing plans on it before the figure is in.
            if let Some(target) = target
                && let Some(footprint) = ctx.workers.measure(target).await
            {
                send(Update::Measured(footprint));
            }
            Ok(())
        }
        Err(e) => {
            // A cancelled or failed load may have left weights half in memory; ask the worker to
            // free them so memory state is known, then report unloaded.
            if let Ok(unload) = memory_request(job, ctx, |e| e.unload.as_ref()) {
                let _ = ctx.workers.call(unload).await;
            }
            send(Update::Memory(MemoryState::Unloaded));
            Err(e)
        }
    }
}

async fn unload(job: &Job, ctx: &Context, send: &impl Fn(Update)) -> Result<(), StepError> {
    let request = memory_request(job, ctx, |e| e.unload.as_ref())?;
    send(Update::Memory(MemoryState::Unloading));
    match ctx.workers.call(request).await {
        Ok(()) => {
            if let (Some(below), Some(target)) = (job.freed_below, target(job, ctx)) {
                wait_freed(&job.name, ctx, target, below).await;
            }
            send(Update::Memory(MemoryState::Unloaded));
            Ok(())
        }
        Err(e) => {
            // The worker still answers, so assume it still holds the weights.
            send(Update::Memory(MemoryState::Loaded));
            Err(e.into())
        }
    }
}

/// Waits until the worker's memory is measured at or below `below` bytes, for at most
/// [`FREED_TIMEOUT`]: past that, it says so and lets the next load go ahead.
async fn wait_freed(name: &ModelName, ctx: &Context, target: Target, below: u64) {
    let deadline = tokio::time::Instant::now() + FREED_TIMEOUT;
    loop {
        // Freed, or nothing left to measure (the process is gone).
        let Some(held) = ctx.workers.measure(target.clone()).await else {
            return;
        };
        if held.bytes <= below {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                model = %name,
                "its worker still holds {} ({}) {FREED_TIMEOUT:?} after the unload, more than the {} expected: the next load goes ahead anyway",
                crate::bytes::format(held.bytes),
                held.source.as_str(),
                crate::bytes::format(below),
            );
            return;
        }
        tokio::time::sleep(FREED_POLL).await;
    }
}

/// What to measure for the job's worker: its process group, and its engine's own report if the
/// engine has one.
fn target(job: &Job, ctx: &Context) -> Option<Target> {
    let (Some(pid), Some(run), Some(port)) = (job.pid, &job.running, job.current_port) else {
        return None;
    };
    Some(engine::memory_target(
        job.name.as_str(),
        run,
        pid,
        port,
        &ctx.hub_exe,
    ))
}

fn memory_request(
    job: &Job,
    ctx: &Context,
    pick: impl Fn(&Engine) -> Option<&HttpCall>,
) -> anyhow::Result<Request> {
    let run = job
        .running
        .as_ref()
        .context("the model has no running worker")?;
    let call = pick(&run.engine).context("the engine cannot load or unload weights")?;
    let port = job.current_port.context("the worker has no port")?;
    let vars = vars(&job.name, run, port, &ctx.hub_exe);
    Ok(Request::new(call, &vars))
}
