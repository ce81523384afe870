//! The executor: runs one model's planned actions in order, as a task, reporting each step to
//! the loop as an [`Update`]. Actions on one model are serialized by construction (one task per
//! model); every step has a timeout.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use tokio::sync::mpsc;

use super::Event;
use crate::config::{DEFAULT_HOST, Engine, ModelName, ModelSpec, RunSpec};
use crate::engine::{self, Vars};
use crate::observed::MemoryState;
use crate::plan::Action;
use crate::supervisor::{SpawnRequest, Supervisor};

/// How often a starting worker's health is probed.
const PROBE_EVERY: Duration = Duration::from_millis(25);

/// One step's effect on the observed state.
#[derive(Debug, Clone)]
pub enum Update {
    Spawned {
        pid: u32,
        port: u16,
        log_file: PathBuf,
        run: RunSpec,
    },
    Ready,
    Stopping,
    Stopped,
    Memory(MemoryState),
    Loaded {
        on_demand: bool,
    },
    Succeeded(Action),
    Failed {
        action: Action,
        error: String,
    },
}

/// What every task shares.
pub struct Context {
    pub supervisor: Supervisor,
    pub client: reqwest::Client,
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
    pub running: Option<RunSpec>,
    pub current_port: Option<u16>,
    /// The port to start on, picked by the loop.
    pub port: Option<u16>,
    pub on_demand: bool,
    pub cwd: PathBuf,
    pub log_dir: PathBuf,
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
    for action in job.actions.clone() {
        let result = match &action {
            Action::Stop => stop(&job, &ctx, &send).await,
            Action::Start => start(&mut job, &ctx, &send).await,
            Action::Restart { .. } => match stop(&job, &ctx, &send).await {
                Ok(()) => start(&mut job, &ctx, &send).await,
                Err(e) => Err(e),
            },
            Action::Load => load(&job, &ctx, &send).await,
            Action::Unload { .. } => unload(&job, &ctx, &send).await,
        };
        match result {
            Ok(()) => send(Update::Succeeded(action)),
            Err(error) => {
                send(Update::Failed {
                    action,
                    error: format!("{error:#}"),
                });
                break;
            }
        }
    }
    let _ = ctx.events.send(Event::Done {
        name: job.name.clone(),
    });
}

fn vars<'a>(name: &'a ModelName, run: &'a RunSpec, port: u16, hub: &'a str) -> Vars<'a> {
    Vars {
        name: name.as_str(),
        model_path: &run.model_path,
        port,
        host: DEFAULT_HOST,
        hub,
    }
}

async fn stop(job: &Job, ctx: &Context, send: &impl Fn(Update)) -> anyhow::Result<()> {
    send(Update::Stopping);
    let builtin = RunSpec {
        engine_name: "builtin".into(),
        engine: Arc::new(Engine::builtin()),
        model_path: String::new(),
        port: None,
        args: Vec::new(),
        env: Default::default(),
    };
    let run = job.running.as_ref().unwrap_or(&builtin);
    let stop_command = run.engine.stop_command.as_ref().map(|argv| {
        let vars = vars(&job.name, run, job.current_port.unwrap_or(0), &ctx.hub_exe);
        argv.iter().map(|t| engine::render(t, &vars)).collect()
    });
    ctx.supervisor
        .stop(&job.name, run.engine.stop_timeout, stop_command)
        .await;
    send(Update::Stopped);
    Ok(())
}

async fn start(job: &mut Job, ctx: &Context, send: &impl Fn(Update)) -> anyhow::Result<()> {
    let spec = job.spec.as_ref().context("the model is not in hub.yaml")?;
    let run = spec.run.clone();
    let port = job
        .port
        .ok_or_else(|| anyhow!("no free port from model_starting_port upwards"))?;
    let vars = vars(&job.name, &run, port, &ctx.hub_exe);
    let argv = engine::argv(&run, &vars);
    let env: Vec<(String, String)> = run
        .engine
        .env
        .iter()
        .chain(run.env.iter())
        .map(|(k, v)| (k.clone(), engine::render(v, &vars)))
        .collect();
    let spawned = ctx.supervisor.spawn(SpawnRequest {
        name: &job.name,
        argv,
        env,
        cwd: &job.cwd,
        log_dir: &job.log_dir,
    })?;
    job.running = Some(run.clone());
    job.current_port = Some(port);
    send(Update::Spawned {
        pid: spawned.pid,
        port,
        log_file: spawned.log_file.clone(),
        run: run.clone(),
    });
    let ready = wait_ready(job, ctx, &run.engine, &vars).await;
    if let Err(error) = ready {
        // Never leave a half-started worker behind.
        ctx.supervisor
            .stop(&job.name, run.engine.stop_timeout, None)
            .await;
        return Err(error.context(format!("see {}", spawned.log_file.display())));
    }
    send(Update::Ready);
    Ok(())
}

async fn wait_ready(
    job: &Job,
    ctx: &Context,
    engine: &Engine,
    vars: &Vars<'_>,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + engine.health.start_timeout;
    let exited = ctx.supervisor.wait_exit(&job.name);
    tokio::pin!(exited);
    loop {
        if engine::probe(&ctx.client, engine, vars).await {
            return Ok(());
        }
        tokio::select! {
            exit = &mut exited => {
                let code = exit.map_or(-1, |e| e.code_or_signal());
                bail!("worker exited with code {code} before becoming healthy");
            }
            () = tokio::time::sleep_until(deadline) => {
                bail!(
                    "worker not healthy at {} after {:?}",
                    engine.health.path,
                    engine.health.start_timeout
                );
            }
            () = tokio::time::sleep(PROBE_EVERY) => {}
        }
    }
}

async fn load(job: &Job, ctx: &Context, send: &impl Fn(Update)) -> anyhow::Result<()> {
    let (run, call) = memory_call(job, |e| e.load.as_ref())?;
    let port = job.current_port.context("the worker has no port")?;
    send(Update::Memory(MemoryState::Loading));
    let vars = vars(&job.name, run, port, &ctx.hub_exe);
    match engine::call(&ctx.client, call, &vars).await {
        Ok(()) => {
            send(Update::Loaded {
                on_demand: job.on_demand,
            });
            Ok(())
        }
        Err(e) => {
            send(Update::Memory(MemoryState::Unloaded));
            Err(e)
        }
    }
}

async fn unload(job: &Job, ctx: &Context, send: &impl Fn(Update)) -> anyhow::Result<()> {
    let (run, call) = memory_call(job, |e| e.unload.as_ref())?;
    let port = job.current_port.context("the worker has no port")?;
    send(Update::Memory(MemoryState::Unloading));
    let vars = vars(&job.name, run, port, &ctx.hub_exe);
    match engine::call(&ctx.client, call, &vars).await {
        Ok(()) => {
            send(Update::Memory(MemoryState::Unloaded));
            Ok(())
        }
        Err(e) => {
            // The worker still answers, so assume it still holds the weights.
            send(Update::Memory(MemoryState::Loaded));
            Err(e)
        }
    }
}

fn memory_call(
    job: &Job,
    pick: impl Fn(&Engine) -> Option<&crate::config::HttpCall>,
) -> anyhow::Result<(&RunSpec, &crate::config::HttpCall)> {
    let run = job
        .running
        .as_ref()
        .context("the model has no running worker")?;
    let call = pick(&run.engine).context("the engine cannot load or unload weights")?;
    Ok((run, call))
}
