//! An operator's command on one model (`POST /hub/models/{name}/{verb}`): the override it sets
//! or clears, refused when the model's group is full.

use super::{CommandError, ModelReply, Reconciler, Trigger};
use crate::config::{DesiredState, ModelName};
use crate::observed::{MemoryState, ModelObserved, Override, Time};
use crate::plan::{self, ModelPlan, Wait};
use crate::wire::Verb;

impl Reconciler {
    pub(super) fn on_model_command(
        &mut self,
        name: &ModelName,
        verb: Verb,
        now: Time,
    ) -> Result<ModelReply, CommandError> {
        let spec = self
            .desired
            .models
            .get(name)
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
            obs.override_ = (state != spec.state).then(|| {
                Box::new(Override {
                    state,
                    spec: spec.clone(),
                    at: now,
                    by: verb.as_str(),
                })
            });
        };
        let loaded = obs.memory.state == MemoryState::Loaded;
        match (verb, target) {
            // A worker that runs for requests stops now; the next request starts it again.
            (Verb::Stop, DesiredState::Stopped) => {
                obs.worker.on_demand = false;
                obs.load_requested = false;
            }
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
            (Verb::Unload, DesiredState::Stopped) if memory_control && obs.worker.on_demand => {
                obs.load_requested = false;
                obs.unload_requested = loaded;
            }
            (Verb::Unload, DesiredState::Stopped) => obs.worker.on_demand = false,
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
            let limits = self
                .desired
                .groups
                .get(group)
                .map_or_else(String::new, |g| g.limits());
            self.observed.models.insert(name, before);
            return Err(CommandError::GroupFull {
                group: group.clone(),
                limits,
            });
        }
        self.trigger = Trigger::Api;
        let obs = &self.observed.models[&name];
        Ok(ModelReply {
            model: name.to_string(),
            action: verb.as_str().to_string(),
            override_: obs.override_.as_ref().map(|o| o.state.as_str().to_string()),
            plan: model_plan.map(|p| p.to_string()).unwrap_or_default(),
        })
    }
}
