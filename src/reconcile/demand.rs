//! The loop's side of the gateway: it reads the lanes' requests into the observed state before
//! each plan, closes a lane before an action takes its model away, and after each pass tells
//! every lane how to answer (open to the worker's port, queue, or refuse).

use super::Reconciler;
use crate::config::{DesiredState, ModelName, ModelSpec};
use crate::gateway::{Lane, Refusal, Route};
use crate::observed::{MemoryState, ModelObserved, Phase, Requests, Time};
use crate::plan::{self, Action, ModelPlan, OverrideChange, Plan, Wait};

impl Reconciler {
    /// Copies what the gateway knows of each requested model into the observed state: requests
    /// in flight and queued, and the end of the last one (its activity).
    pub(super) fn sync_requests(&mut self) {
        for (name, demand) in self.gateway.demands() {
            let requests = Requests {
                in_flight: demand.in_flight,
                queued: demand.queued,
                queued_since: demand.queued_since,
            };
            if !self.desired.models.contains_key(&name) && !self.observed.models.contains_key(&name)
            {
                continue;
            }
            let obs = self.observed.models.entry(name).or_default();
            obs.requests = requests;
            if demand.last_activity > obs.memory.last_activity {
                obs.memory.last_activity = demand.last_activity;
            }
        }
    }

    /// Whether `model_plan` may be launched now as far as the gateway is concerned, closing the
    /// model's lane first when its actions take the worker or its weights away. An unload or an
    /// idle or evicting stop goes only once no request is in flight (checked and closed under the
    /// lane's lock, so no request slips in); a restart or an operator's stop closes the lane and
    /// drains in its job.
    pub(super) fn gate(&self, model_plan: &ModelPlan) -> Gate {
        let Some(lane) = self.gateway.get(model_plan.name.as_str()) else {
            return Gate::Go { drain: None };
        };
        let Some(first) = model_plan.actions.iter().find(|a| disrupts(a)) else {
            return Gate::Go { drain: None };
        };
        let waits_for_idle = matches!(first, Action::Unload { .. })
            || (matches!(first, Action::Stop) && model_plan.release.is_some());
        if waits_for_idle {
            return if lane.close_if_idle() {
                Gate::Go { drain: None }
            } else {
                Gate::Wait
            };
        }
        // New requests queue; the job drains those in flight.
        lane.set_route(Route::Closed, true);
        let timeout = self.desired.settings.gateway.drain_timeout;
        Gate::Go {
            drain: Some((lane, timeout)),
        }
    }

    /// Tells every lane how to answer now that this pass is done.
    pub(super) fn route_lanes(&self, plan: &Plan, now: Time) {
        static NONE: std::sync::LazyLock<ModelObserved> =
            std::sync::LazyLock::new(Default::default);
        for lane in self.gateway.lanes() {
            let name = lane.name().clone();
            let model_plan = plan.get(name.as_str());
            let route = match self.desired.models.get(&name) {
                None => Route::Refused(Refusal {
                    status: 404,
                    code: "model_not_found",
                    message: format!("model \"{name}\" is not in hub.yaml any more"),
                    retry_after: None,
                }),
                Some(spec) => {
                    let obs = self.observed.models.get(&name).unwrap_or(&NONE);
                    route(
                        &name,
                        spec,
                        obs,
                        model_plan,
                        (&self.desired, &self.observed),
                        now,
                    )
                }
            };
            // A model that must give up its worker or weights waits for its requests to end.
            let wake_when_idle = model_plan.is_some_and(takes_away);
            lane.set_route(route, wake_when_idle);
        }
    }
}

/// What [`Reconciler::gate`] decided.
pub(super) enum Gate {
    Go {
        drain: Option<(std::sync::Arc<Lane>, std::time::Duration)>,
    },
    /// Requests are in flight; the lane signals when they end.
    Wait,
}

/// Whether the plan takes the model's worker or weights away (or has it yield its room), so its
/// lane must not admit new requests.
fn takes_away(model_plan: &ModelPlan) -> bool {
    model_plan.yields || model_plan.actions.iter().any(disrupts)
}

/// Whether an action takes a model's worker or weights away from the requests it serves.
fn disrupts(action: &Action) -> bool {
    action.frees_resources() || matches!(action, Action::Restart { .. })
}

/// How a model's lane answers, from its spec, what is observed and its plan.
fn route(
    name: &ModelName,
    spec: &ModelSpec,
    obs: &ModelObserved,
    model_plan: Option<&ModelPlan>,
    world: (&crate::config::Desired, &crate::observed::Observed),
    now: Time,
) -> Route {
    let memory_control = spec.run.engine.has_memory_control();
    let servable = obs.worker.phase == Phase::Ready
        && !obs.busy
        && (!memory_control || obs.memory.state == MemoryState::Loaded);
    let taken_away = model_plan.is_some_and(takes_away);
    if servable
        && !taken_away
        && let Some(port) = obs.worker.port
    {
        return Route::Open { port };
    }
    if let Some(refusal) = refusal(name, spec, obs, model_plan, world, now) {
        return Route::Refused(refusal);
    }
    Route::Closed
}

/// Why requests for a model that is not ready cannot wait for it, if they cannot.
fn refusal(
    name: &ModelName,
    spec: &ModelSpec,
    obs: &ModelObserved,
    model_plan: Option<&ModelPlan>,
    (desired, observed): (&crate::config::Desired, &crate::observed::Observed),
    now: Time,
) -> Option<Refusal> {
    let unavailable = |message: String, retry_after: Option<u64>| Refusal {
        status: 503,
        code: "model_unavailable",
        message,
        retry_after,
    };
    let target = model_plan.map_or(spec.state, |p| p.target);
    let overridden = model_plan.is_some_and(|p| p.override_ == OverrideChange::Kept);
    if target == DesiredState::Stopped && overridden {
        return Some(unavailable(
            format!(
                "model \"{name}\" was stopped by an operator; `hub start-model {name}` starts it again"
            ),
            None,
        ));
    }
    let memory_control = spec.run.engine.has_memory_control();
    let would_load = target == DesiredState::Loaded
        || obs.load_requested
        || obs.busy
        || !memory_control
        || obs.memory.state == MemoryState::Loaded;
    if !spec.on_demand && (target == DesiredState::Stopped || !would_load) {
        return Some(unavailable(
            format!(
                "model \"{name}\" is not ready and has `on_demand: false`, so requests do not start or load it; set its `state` in hub.yaml or run `hub load-model {name}`"
            ),
            None,
        ));
    }
    if let Some(until) = obs.next_retry_at.filter(|t| *t > now) {
        let seconds = (until - now).whole_seconds().max(0) as u64 + 1;
        let why = obs.error.as_ref().map_or_else(String::new, |e| {
            format!(": {} failed: {}", e.action, e.message)
        });
        return Some(unavailable(
            format!("model \"{name}\" is backing off after a failure{why}; retrying in {seconds}s"),
            Some(seconds),
        ));
    }
    if let Some(ModelPlan {
        waiting: Some(Wait::GroupFull { group }),
        ..
    }) = model_plan
        && !plan::room_possible(desired, observed, group, name)
    {
        let limits = desired
            .groups
            .get(group)
            .map_or_else(String::new, |g| g.limits());
        return Some(Refusal {
            status: 429,
            code: "group_full",
            message: format!(
                "group {group:?} is full ({limits}), and every loaded member is pinned by hub.yaml, so none can make room for \"{name}\""
            ),
            retry_after: None,
        });
    }
    None
}
