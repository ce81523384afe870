//! The status view: the JSON contract of `GET /hub/status` (SPEC section 3), built from the loop's
//! state after every change and read by the API and the CLI. Field names here are a contract.

use serde::{Deserialize, Serialize};

use crate::config::{Desired, Problem};
use crate::observed::{MemoryState, Observed, Phase, Time};
use crate::plan::{self, Plan};
use crate::rfc3339;

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Status {
    pub timestamp: String,
    pub generation: u64,
    pub observed_generation: u64,
    pub summary: Summary,
    pub config: ConfigStatus,
    pub counts: Counts,
    pub last_reconcile: Option<Report>,
    pub models: Vec<ModelStatus>,
    pub groups: Vec<GroupStatus>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Summary {
    /// Every model matches the desired state of the current generation.
    Converged,
    /// Actions are under way or about to start.
    Progressing,
    /// Some model failed and is backing off or waiting.
    Degraded,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConfigStatus {
    pub path: String,
    pub sha256: String,
    pub applied_at: String,
    /// Where the applied desired state came from: `file` (the watched hub.yaml) or `api`.
    pub source: String,
    pub rejected: Option<RejectedEdit>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RejectedEdit {
    pub at: String,
    pub sha256: String,
    #[schema(value_type = Vec<crate::api::ProblemSchema>)]
    pub errors: Vec<Problem>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Counts {
    pub models: usize,
    pub running: usize,
    pub loaded: usize,
    pub failed: usize,
}

/// Everything done to converge one generation, across as many passes as that took.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Report {
    pub generation: u64,
    /// What started this reconcile: `startup`, `config`, `api`, `worker_exit`, `timer`, `resync`.
    pub trigger: String,
    pub started_at: String,
    /// Null while the reconcile is still in progress.
    pub finished_at: Option<String>,
    pub duration_ms: f64,
    pub started: Vec<String>,
    pub stopped: Vec<String>,
    pub restarted: Vec<String>,
    pub loaded: Vec<String>,
    pub unloaded: Vec<String>,
    pub unchanged: Vec<String>,
    pub failed: Vec<FailedAction>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FailedAction {
    pub model: String,
    pub action: String,
    /// The latest error of this action on this model.
    pub error: String,
    /// How often the action failed on this model during this reconcile: one entry per model and
    /// action, however often a retry fails, so the report stays small.
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

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

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelStatus {
    pub name: String,
    pub engine: String,
    pub model_type: Option<String>,
    pub group: Option<String>,
    /// hub.yaml's state for the model (`stopped` once removed from it).
    pub desired: String,
    pub worker: WorkerStatus,
    pub memory: MemoryStatus,
    pub in_sync: bool,
    #[serde(rename = "override")]
    pub override_: Option<OverrideStatus>,
    pub error: Option<String>,
    pub next_retry_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerStatus {
    /// `stopped`, `starting`, `ready`, `stopping`, `failed` or `backoff`.
    pub phase: String,
    pub pid: Option<u32>,
    pub port: Option<u16>,
    pub started_at: Option<String>,
    pub restarts: u32,
    pub exit_code: Option<i32>,
    pub exited_at: Option<String>,
    pub log_file: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemoryStatus {
    /// `unloaded`, `loading`, `loaded` or `unloading`.
    pub state: String,
    pub loaded_at: Option<String>,
    pub last_activity: Option<String>,
    pub unload_at: Option<String>,
    /// Requests the worker is serving now, if its engine reports activity.
    #[serde(default)]
    pub in_flight: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OverrideStatus {
    /// The state the imperative call set, in force instead of hub.yaml's.
    pub state: String,
    /// The call that set it: `start`, `stop`, `load` or `unload`.
    pub by: String,
    pub at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupStatus {
    pub name: String,
    pub max_loaded: u32,
    pub members: Vec<String>,
    pub loaded: Vec<String>,
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
            Phase::Failed if backing_off => "backoff",
            phase => phase.as_str(),
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
                phase: phase.to_string(),
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
            },
            memory: MemoryStatus {
                state: memory_state.as_str().to_string(),
                loaded_at: time(obs.memory.loaded_at),
                last_activity: time(obs.memory.last_activity),
                unload_at: time(spec.and_then(|s| plan::unload_at(s, &obs))),
                in_flight: obs.memory.in_flight,
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
        });
    }
    let groups = desired
        .groups
        .values()
        .map(|group| GroupStatus {
            name: group.name.clone(),
            max_loaded: group.max_loaded,
            members: group.members.iter().map(ToString::to_string).collect(),
            loaded: group
                .members
                .iter()
                .filter(|m| {
                    models
                        .iter()
                        .find(|s| s.name == m.as_str())
                        .is_some_and(|s| s.memory.state == "loaded")
                })
                .map(ToString::to_string)
                .collect(),
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
