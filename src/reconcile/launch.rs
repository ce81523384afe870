//! Launching a model's planned actions as one job, and picking the port a start runs on.

use std::collections::HashSet;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Reconciler, execute};
use crate::config::{DesiredState, ModelSpec};
use crate::plan::{self, Action, ModelPlan};

pub(super) struct InFlight {
    pub(super) task: JoinHandle<()>,
    /// See `plan::wave`.
    pub(super) wave: u8,
    /// The port picked for a start in flight, reserved until the worker reports it.
    pub(super) port: Option<u16>,
    /// The spec the job works towards; a newer, different one cancels it.
    pub(super) spec: Option<ModelSpec>,
    /// Whether the job only loads weights into a running worker (an unload supersedes it).
    pub(super) only_load: bool,
    pub(super) cancel: watch::Sender<bool>,
    /// Why the model's weights leave memory if this job frees them: `idle`, `evicted`,
    /// `requested` or `spec_changed` (metrics, events).
    pub(super) release: Option<&'static str>,
}

/// Why a plan would take a model's weights out of memory. Whether they were in memory is the
/// loop's to judge when the job reports (`observe.rs`), which then says this reason.
fn release_reason(model_plan: &ModelPlan) -> Option<&'static str> {
    model_plan.actions.iter().find_map(|action| match action {
        Action::Unload { why } => Some(why.as_str()),
        Action::Stop => Some(model_plan.release.map_or("requested", |r| r.as_str())),
        Action::Restart { .. } => Some("spec_changed"),
        Action::Start | Action::Load => None,
    })
}

/// The memory at or below which an unloaded worker has freed its weights: back near what it
/// held before the load, within a tenth of the weights or [`FREED_SLACK`], whichever is more
/// (a process's own allocations move by a few MiB, which small weights would not outweigh);
/// where that was not measured, half of what it held loaded. `None` when its footprint was
/// never measured.
fn freed_below(obs: &crate::observed::ModelObserved) -> Option<u64> {
    let held = obs.footprint?.bytes;
    Some(match obs.memory.baseline {
        Some(baseline) if baseline < held => baseline + ((held - baseline) / 10).max(FREED_SLACK),
        _ => held / 2,
    })
}

/// How far above its pre-load memory an unloaded worker may stay and count as freed.
const FREED_SLACK: u64 = 32 << 20;

impl Reconciler {
    pub(super) fn launch(
        &mut self,
        model_plan: &ModelPlan,
        drain: Option<(std::sync::Arc<crate::gateway::Lane>, std::time::Duration)>,
    ) {
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
        let budgeted = spec
            .as_ref()
            .and_then(|s| s.group.as_ref())
            .and_then(|g| self.desired.groups.get(g))
            .is_some_and(|g| g.memory.is_some());
        let obs = self.observed.models.entry(name.clone()).or_default();
        obs.busy = true;
        let release = release_reason(model_plan);
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
            demand_started: model_plan.on_demand,
            drain,
            pid: obs.worker.pid,
            budgeted,
            freed_below: budgeted.then(|| freed_below(obs)).flatten(),
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
                release,
            },
        );
    }

    /// A port for a worker about to start: its fixed port (free, or held by its own worker that
    /// the restart stops first), else the one it had, else the first free one from
    /// `model_starting_port` that no other worker, fixed port or the API holds.
    pub(super) fn pick_port(&self, spec: &ModelSpec) -> Result<u16, String> {
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
}
