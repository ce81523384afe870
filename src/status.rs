//! The status view: how the loop's state becomes the status document (`wire::Status`, the JSON
//! contract of `GET /hub/status`) after every change, and how a reconcile's report is filled.

use crate::config::Desired;
use crate::observed::{MemoryState, Observed, Phase, Time};
use crate::plan::{self, Plan};
use crate::rfc3339;
// The document's types are wire's; named here too for the loop, which builds and publishes it.
pub use crate::wire::{
    ConfigStatus, Counts, FailedAction, GroupStatus, MemoryPhase, MemoryStatus, ModelStatus,
    OverrideStatus, RejectedEdit, Report, Status, Summary, WorkerPhase, WorkerStatus,
};

/// How the loop fills a reconcile's report (the report itself is wire data).
impl Report {
    /// Records a failure: a model and action already listed get the new error and a count.
    pub fn add_failure(&mut self, model: &str, action: &str, error: String) {
        match self
            .failed
            .iter_mut()
            .find(|f| f.model == model && f.action == action)
        {
            Some(failed) => {
                failed.error = error;
                failed.count += 1;
            }
            None => self.failed.push(FailedAction {
                model: model.to_string(),
                action: action.to_string(),
                error,
                count: 1,
            }),
        }
    }

    /// Records a success in the action's list; a model is listed once however often it acted.
    pub fn add_success(&mut self, model: &str, action: &crate::plan::Action) {
        use crate::plan::Action;
        let list = match action {
            Action::Start => &mut self.started,
            Action::Stop => &mut self.stopped,
            Action::Restart { .. } => &mut self.restarted,
            Action::Load => &mut self.loaded,
            Action::Unload { .. } => &mut self.unloaded,
        };
        if !list.iter().any(|m| m == model) {
            list.push(model.to_string());
        }
    }
}

/// The loop's state that the view is built from.
pub struct Inputs<'a> {
    pub now: Time,
    pub desired: &'a Desired,
    pub observed: &'a Observed,
    pub plan: &'a Plan,
    pub generation: u64,
    pub observed_generation: u64,
    pub config: ConfigStatus,
    pub report: Option<Report>,
    pub warnings: Vec<String>,
}

pub fn build(inputs: Inputs<'_>) -> Status {
    let Inputs {
        now,
        desired,
        observed,
        plan,
        ..
    } = inputs;
    let time = |t: Option<Time>| t.map(rfc3339);
    let mut counts = Counts::default();
    let mut models = Vec::with_capacity(plan.models.len());
    let mut degraded = false;
    for model_plan in &plan.models {
        let name = &model_plan.name;
        let spec = desired.models.get(name);
        let obs = observed.models.get(name).cloned().unwrap_or_default();
        let backing_off = obs.next_retry_at.is_some_and(|t| t > now);
        let phase = match obs.worker.phase {
            Phase::Stopped => WorkerPhase::Stopped,
            Phase::Starting => WorkerPhase::Starting,
            Phase::Ready => WorkerPhase::Ready,
            Phase::Stopping => WorkerPhase::Stopping,
            Phase::Failed if backing_off => WorkerPhase::Backoff,
            Phase::Failed => WorkerPhase::Failed,
        };
        let memory_state = match spec {
            // Without load/unload a model counts as loaded exactly while its worker is ready.
            Some(spec) if !spec.run.engine.has_memory_control() => {
                if obs.worker.phase == Phase::Ready {
                    MemoryState::Loaded
                } else {
                    MemoryState::Unloaded
                }
            }
            _ => obs.memory.state,
        };
        let footprint = plan::footprint(spec, &obs);
        counts.models += usize::from(spec.is_some());
        counts.running += usize::from(obs.worker.phase == Phase::Ready);
        counts.loaded += usize::from(memory_state == MemoryState::Loaded);
        counts.failed += usize::from(obs.worker.phase == Phase::Failed || obs.error.is_some());
        degraded |= obs.error.is_some();
        models.push(ModelStatus {
            name: name.to_string(),
            engine: spec.map_or_else(String::new, |s| s.run.engine_name.clone()),
            model_type: spec.and_then(|s| s.model_type.clone()),
            group: spec.and_then(|s| s.group.clone()),
            desired: spec.map_or("stopped", |s| s.state.as_str()).to_string(),
            worker: WorkerStatus {
                phase,
                pid: obs.worker.pid,
                // The port is kept to restart on, but shown only while a process holds it.
                port: obs.worker.port.filter(|_| obs.worker.pid.is_some()),
                started_at: time(obs.worker.started_at),
                restarts: obs.worker.restarts,
                exit_code: obs.worker.exit_code,
                exited_at: time(obs.worker.exited_at),
                log_file: obs
                    .worker
                    .log_file
                    .as_ref()
                    .map(|p| p.display().to_string()),
                on_demand: obs.worker.on_demand,
            },
            memory: MemoryStatus {
                state: match memory_state {
                    MemoryState::Unloaded => MemoryPhase::Unloaded,
                    MemoryState::Loading => MemoryPhase::Loading,
                    MemoryState::Loaded => MemoryPhase::Loaded,
                    MemoryState::Unloading => MemoryPhase::Unloading,
                },
                loaded_at: time(obs.memory.loaded_at),
                last_activity: time(obs.memory.last_activity),
                unload_at: time(spec.and_then(|s| plan::unload_at(s, &obs))),
                in_flight: obs.serving(),
                queued: obs.requests.queued,
                bytes: footprint.map(|f| f.bytes),
                bytes_source: footprint.map(|f| f.source.as_str().to_string()),
                measured_bytes: obs.footprint.map(|f| f.bytes),
            },
            in_sync: model_plan.in_sync() && obs.error.is_none(),
            override_: obs.override_.as_ref().map(|o| OverrideStatus {
                state: o.state.as_str().to_string(),
                by: o.by.to_string(),
                at: rfc3339(o.at),
            }),
            error: obs
                .error
                .as_ref()
                .map(|e| format!("{} failed: {}", e.action, e.message)),
            next_retry_at: time(obs.next_retry_at.filter(|_| backing_off)),
            on_demand: spec.is_none_or(|s| s.on_demand),
        });
    }
    // `models` is in the plan's order, by name, so a member's status is a binary search away.
    let status_of = |name: &crate::config::ModelName| {
        models
            .binary_search_by(|s| s.name.as_str().cmp(name.as_str()))
            .ok()
            .map(|i| &models[i])
    };
    let groups = desired
        .groups
        .values()
        .map(|group| {
            let members: Vec<&ModelStatus> = group.members.iter().filter_map(status_of).collect();
            GroupStatus {
                name: group.name.clone(),
                max_loaded: group.max_loaded,
                members: group.members.iter().map(ToString::to_string).collect(),
                memory_budget: group.memory,
                memory_used: members
                    .iter()
                    .filter(|s| s.memory.state != MemoryPhase::Unloaded)
                    .filter_map(|s| s.memory.bytes)
                    .sum(),
                loaded: members
                    .iter()
                    .filter(|s| s.memory.state == MemoryPhase::Loaded)
                    .map(|s| s.name.clone())
                    .collect(),
            }
        })
        .collect();
    let all_in_sync = models.iter().all(|m| m.in_sync);
    let summary = if degraded {
        Summary::Degraded
    } else if all_in_sync && inputs.observed_generation == inputs.generation {
        Summary::Converged
    } else {
        Summary::Progressing
    };
    Status {
        timestamp: rfc3339(now),
        generation: inputs.generation,
        observed_generation: inputs.observed_generation,
        summary,
        config: inputs.config,
        counts,
        last_reconcile: inputs.report,
        models,
        groups,
        warnings: inputs.warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::Report;
    use crate::plan::Action;

    #[test]
    fn a_report_lists_each_model_and_failing_action_once() {
        let mut report = Report::default();
        for i in 0..1000 {
            report.add_failure("alpha", "load", format!("attempt {i} failed"));
            report.add_success("beta", &Action::Restart { why: vec![] });
        }
        report.add_failure("alpha", "unload", "busy".into());
        assert_eq!(report.failed.len(), 2);
        assert_eq!(report.failed[0].count, 1000);
        assert_eq!(report.failed[0].error, "attempt 999 failed");
        assert_eq!(report.restarted, ["beta"]);
    }
}
