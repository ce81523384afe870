//! The planner: a pure function from desired and observed state (and the time) to the actions
//! that converge them. No IO, no clock, no async: `hub diff` prints exactly what `hub apply` runs.
//!
//! Each model is planned on its own, then memory groups are checked as a whole: a load that would
//! take its group past `max_loaded` or past its memory budget evicts the least recently used
//! members that are idle and not pinned, or waits. A member's bytes are its [`footprint`]: the
//! larger of hub.yaml's estimate and the last measurement.

use std::collections::HashMap;
use std::fmt;

use crate::config::{Desired, DesiredState, ModelName, ModelSpec};
use crate::measure::{Footprint, Source};
use crate::observed::{MemoryState, ModelObserved, Observed, Phase, Time};
use crate::wire::Outcome;

/// What to do to every model hub knows of (in hub.yaml, or still running from before).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub models: Vec<ModelPlan>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelPlan {
    pub name: ModelName,
    /// The state being converged to: hub.yaml's, or an override's.
    pub target: DesiredState,
    /// Run in order, one at a time. Empty when the model is in sync or must wait.
    pub actions: Vec<Action>,
    /// Why the model is left alone although it is not in sync.
    pub waiting: Option<Wait>,
    pub override_: OverrideChange,
    /// hub.yaml leaves the model stopped, and it runs (or is started) for requests: waiting ones,
    /// or recent ones while its idle time lasts.
    pub on_demand: bool,
    /// Why the model's weights leave memory in this plan, where its actions alone do not say
    /// (a stop because it is idle, or evicted).
    pub release: Option<UnloadReason>,
    /// Stop admitting new requests: a member of a full group, serving now, that the next
    /// eviction will pick once its requests end, so that a model waiting for room gets it.
    pub yields: bool,
    /// What the plan's load takes and whom it evicts, where there is something to say. Boxed:
    /// rare, and the planner writes a plan for every model.
    pub load: Option<Box<LoadNote>>,
}

/// What a load (or, for an engine without load/unload, a start) into a group takes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadNote {
    /// In a group with a memory budget, the bytes it counts for: the model's [`footprint`], or
    /// an estimate.
    pub bytes: Option<u64>,
    /// The members of its group evicted in this plan to make room for it.
    pub evicts: Vec<ModelName>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Restart { why: Vec<String> },
    Load,
    Unload { why: UnloadReason },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnloadReason {
    /// hub.yaml no longer pins the model (`loaded` → `running`), or an API unload.
    Unpinned,
    /// Idle for longer than `idle_unload_after`.
    Idle,
    /// Evicted to make room in its group.
    Evicted,
    /// Asked for through the API.
    Requested,
    /// Evicted because its group's memory budget could not hold a load otherwise.
    Memory,
}

impl UnloadReason {
    /// Why the weights left memory, as metrics, events and status say it.
    pub fn as_str(self) -> &'static str {
        match self {
            UnloadReason::Unpinned | UnloadReason::Requested => "requested",
            UnloadReason::Idle => "idle",
            UnloadReason::Evicted => "evicted",
            UnloadReason::Memory => "memory",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// An action for this model is in flight.
    Busy,
    /// Backing off after a failure until this time.
    Backoff(Time),
    /// Its group is full of models that cannot be evicted.
    GroupFull { group: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverrideChange {
    None,
    /// An imperative call's state stays in force.
    Kept,
    /// hub.yaml's entry changed since the override was set, so hub.yaml wins again.
    Cleared,
}

impl Action {
    /// What the action does to a model, as the report and `hub apply` say it.
    pub fn outcome(&self) -> Outcome {
        match self {
            Action::Start => Outcome::Started,
            Action::Stop => Outcome::Stopped,
            Action::Restart { .. } => Outcome::Restarted,
            Action::Load => Outcome::Loaded,
            Action::Unload { .. } => Outcome::Unloaded,
        }
    }

    pub fn verb(&self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart { .. } => "restart",
            Action::Load => "load",
            Action::Unload { .. } => "unload",
        }
    }

    /// `hub diff`'s marker for the action.
    pub fn symbol(&self) -> &'static str {
        match self {
            Action::Start => "+",
            Action::Stop => "-",
            Action::Restart { .. } => "~",
            Action::Load => "↑",
            Action::Unload { .. } => "↓",
        }
    }

    /// Stops and unloads only free ports and memory, so they run before anything that takes them
    /// (a restart frees and then takes).
    pub fn frees_resources(&self) -> bool {
        matches!(self, Action::Stop | Action::Unload { .. })
    }

    fn detail(&self) -> Option<String> {
        match self {
            Action::Restart { why } => Some(why.join(", ")),
            Action::Unload { why } => match why {
                UnloadReason::Unpinned => None,
                UnloadReason::Idle => Some("idle".to_string()),
                UnloadReason::Evicted => Some("evicted to make room in its group".to_string()),
                UnloadReason::Requested => Some("requested".to_string()),
                UnloadReason::Memory => {
                    Some("memory: evicted to fit its group's budget".to_string())
                }
            },
            _ => None,
        }
    }
}

impl ModelPlan {
    /// The most telling of what the plan's actions do (`hub apply`'s word for the model).
    pub fn outcome(&self) -> Outcome {
        Outcome::most_telling(self.actions.iter().map(Action::outcome))
    }

    pub fn is_noop(&self) -> bool {
        self.actions.is_empty() && self.override_ != OverrideChange::Cleared
    }

    /// Whether the model needs nothing and waits for nothing.
    pub fn in_sync(&self) -> bool {
        self.actions.is_empty() && self.waiting.is_none()
    }

    /// The action that brings the weights into memory: the load, else the start (or restart) of
    /// an engine that loads by starting.
    fn taking_action(&self) -> Option<usize> {
        let load = self.actions.iter().position(|a| *a == Action::Load);
        load.or_else(|| {
            self.actions
                .iter()
                .position(|a| matches!(a, Action::Start | Action::Restart { .. }))
        })
    }

    /// `+7.5 GiB, evicts small`: what the load takes and whom it pushes out, for `hub diff`.
    fn memory_note(&self) -> Option<String> {
        crate::bytes::load_note(self.bytes(), self.evicts().iter().map(ModelName::as_str))
    }

    /// The bytes its load counts for, in a group with a budget.
    pub fn bytes(&self) -> Option<u64> {
        self.load.as_ref().and_then(|l| l.bytes)
    }

    /// The members its load evicts.
    pub fn evicts(&self) -> &[ModelName] {
        self.load.as_ref().map_or(&[], |l| &l.evicts)
    }
}

impl Plan {
    /// Whether applying it would do anything at all.
    pub fn is_noop(&self) -> bool {
        self.models.iter().all(ModelPlan::is_noop)
    }

    pub fn get(&self, name: &str) -> Option<&ModelPlan> {
        self.models
            .binary_search_by(|m| m.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.models[i])
    }
}

impl fmt::Display for ModelPlan {
    /// One line per model: `+ alpha  start, load`, `~ beta  restart (model_path changed)`,
    /// `= gamma  unchanged`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let symbol = self.actions.first().map_or("=", Action::symbol);
        write!(f, "{symbol} {}", self.name)?;
        if self.actions.is_empty() {
            f.write_str("  unchanged")?;
        } else {
            let takes = self.taking_action();
            let steps: Vec<String> = self
                .actions
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let step = match (a, a.detail(), self.release) {
                        (_, Some(detail), _) => format!("{} ({detail})", a.verb()),
                        (Action::Stop, None, Some(why)) => format!("stop ({})", why.as_str()),
                        _ => a.verb().to_string(),
                    };
                    match self.memory_note().filter(|_| takes == Some(i)) {
                        Some(note) => format!("{step} ({note})"),
                        None => step,
                    }
                })
                .collect();
            write!(f, "  {}", steps.join(", "))?;
        }
        match &self.waiting {
            None => {}
            Some(Wait::Busy) => f.write_str(" [in progress]")?,
            Some(Wait::Backoff(until)) => {
                write!(f, " [backing off until {}]", crate::rfc3339(*until))?
            }
            Some(Wait::GroupFull { group }) => write!(f, " [group {group:?} is full]")?,
        }
        if self.on_demand {
            f.write_str(" [on demand]")?;
        }
        if self.yields {
            f.write_str(" [yields to a waiting model]")?;
        }
        match self.override_ {
            OverrideChange::None => {}
            OverrideChange::Kept => write!(f, " [override: {}]", self.target.as_str())?,
            OverrideChange::Cleared => f.write_str(" [clears override]")?,
        }
        Ok(())
    }
}

/// Computes what converges `observed` to `desired` at time `now`.
pub fn plan(desired: &Desired, observed: &Observed, now: Time) -> Plan {
    static IDLE: std::sync::LazyLock<ModelObserved> = std::sync::LazyLock::new(Default::default);
    // Both maps are sorted by name, so one merging pass visits every model without a lookup.
    let capacity = desired.models.len().max(observed.models.len());
    let mut models: Vec<ModelPlan> = Vec::with_capacity(capacity);
    let mut seen: Vec<(Option<&ModelSpec>, &ModelObserved)> = Vec::with_capacity(capacity);
    let mut wanted = desired.models.iter().peekable();
    let mut running = observed.models.iter().peekable();
    loop {
        use std::cmp::Ordering;
        let order = match (wanted.peek(), running.peek()) {
            (None, None) => break,
            // Names shared between configs (see `Desired::sharing_with`) compare by address,
            // without reading the strings.
            (Some((d, _)), Some((o, _))) if std::ptr::eq(d.as_str(), o.as_str()) => Ordering::Equal,
            (Some((d, _)), Some((o, _))) => d.cmp(o),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
        };
        let (name, spec, obs) = match order {
            Ordering::Equal => {
                let ((name, spec), (_, obs)) = (wanted.next().unwrap(), running.next().unwrap());
                (name, Some(spec), obs)
            }
            Ordering::Less => {
                let (name, spec) = wanted.next().unwrap();
                (name, Some(spec), &*IDLE)
            }
            Ordering::Greater => {
                let (name, obs) = running.next().unwrap();
                (name, None, obs)
            }
        };
        models.push(plan_model(name, spec, obs, now));
        seen.push((spec, obs));
    }
    if !desired.groups.is_empty() {
        // Members by group in one flat list (a counting sort), so a thousand groups cost a
        // handful of allocations, not a thousand.
        // Group names are short and looked up once per model: a multiplicative hash instead of
        // SipHash (the names come from hub.yaml, not from requests), and the last group found
        // is tried first, as neighbours in name order often share a group.
        let ordinal: HashMap<&str, u32, BuildFast> = desired
            .groups
            .keys()
            .enumerate()
            .map(|(i, name)| (name.as_str(), i as u32))
            .collect();
        let mut last: Option<(&str, u32)> = None;
        let group_of: Vec<u32> = seen
            .iter()
            .map(|(spec, _)| {
                let Some(name) = spec.and_then(|s| s.group.as_deref()) else {
                    return NO_GROUP;
                };
                match last {
                    Some((last_name, ordinal)) if last_name == name => ordinal,
                    _ => {
                        let found = ordinal.get(name).copied().unwrap_or(NO_GROUP);
                        last = Some((name, found));
                        found
                    }
                }
            })
            .collect();
        let mut starts = vec![0usize; ordinal.len() + 1];
        for &group in group_of.iter().filter(|g| **g != NO_GROUP) {
            starts[group as usize + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut next = starts.clone();
        let mut flat = vec![0usize; starts[ordinal.len()]];
        for (index, &group) in group_of.iter().enumerate() {
            if group != NO_GROUP {
                let group = group as usize;
                flat[next[group]] = index;
                next[group] += 1;
            }
        }
        for (i, group) in desired.groups.values().enumerate() {
            enforce_group_cap(group, &flat[starts[i]..starts[i + 1]], &seen, &mut models);
        }
    }
    Plan { models }
}

/// A model in no group, in the planner's list of each model's group.
const NO_GROUP: u32 = u32::MAX;

/// FxHash's multiply-rotate: a few cycles for a short name, where SipHash took a tenth of the
/// planner's time at 10,000 models.
#[derive(Default, Clone, Copy)]
struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type BuildFast = std::hash::BuildHasherDefault<FastHasher>;

fn plan_model(
    name: &ModelName,
    spec: Option<&ModelSpec>,
    obs: &ModelObserved,
    now: Time,
) -> ModelPlan {
    let (target, override_) = match (spec, &obs.override_) {
        (Some(spec), Some(o)) if o.spec == *spec => (o.state, OverrideChange::Kept),
        (Some(spec), Some(_)) => (spec.state, OverrideChange::Cleared),
        (Some(spec), None) => (spec.state, OverrideChange::None),
        (None, Some(_)) => (DesiredState::Stopped, OverrideChange::Cleared),
        (None, None) => (DesiredState::Stopped, OverrideChange::None),
    };
    let mut plan = ModelPlan {
        name: name.clone(),
        target,
        actions: Vec::new(),
        waiting: None,
        override_,
        on_demand: false,
        release: None,
        yields: false,
        load: None,
    };
    let phase = obs.worker.phase;
    // A model hub.yaml leaves stopped (and no operator stopped) runs while requests want it:
    // started for a queue, kept while its worker serves or its idle time lasts.
    plan.on_demand = target == DesiredState::Stopped
        && override_ != OverrideChange::Kept
        && spec.is_some_and(|s| s.on_demand)
        && (obs.requests.queued > 0
            || (obs.worker.on_demand && matches!(phase, Phase::Starting | Phase::Ready)));
    if obs.busy {
        plan.waiting = Some(Wait::Busy);
        return plan;
    }
    let effective = if plan.on_demand {
        DesiredState::Running
    } else {
        target
    };
    if plan.on_demand
        && let Some(spec) = spec
        && phase == Phase::Ready
        && is_idle(spec, obs, now)
    {
        plan.actions.push(Action::Stop);
        plan.release = Some(UnloadReason::Idle);
        return plan;
    }
    let Some(spec) = spec.filter(|_| effective != DesiredState::Stopped) else {
        if matches!(phase, Phase::Ready | Phase::Failed) {
            plan.actions.push(Action::Stop);
        }
        return plan;
    };

    let mut fresh = false;
    match phase {
        Phase::Ready => {
            let running = obs.worker.run.as_ref();
            let changes = running.map_or_else(Vec::new, |run| spec.run.changes_from(run));
            if !changes.is_empty() {
                plan.actions.push(Action::Restart {
                    why: changes.into_iter().map(String::from).collect(),
                });
                fresh = true;
            }
        }
        Phase::Failed | Phase::Stopped | Phase::Starting | Phase::Stopping => {
            if let Some(until) = obs.next_retry_at.filter(|t| *t > now) {
                // A worker judged dead while its process lives (hung) goes now, freeing its port
                // and memory; it comes back when the backoff ends.
                if phase == Phase::Failed && obs.worker.pid.is_some() {
                    plan.actions.push(Action::Stop);
                }
                plan.waiting = Some(Wait::Backoff(until));
                return plan;
            }
            plan.actions.push(if obs.worker.crashed {
                let why = match obs.worker.exit_code {
                    Some(code) => format!("exited with code {code}"),
                    None => "exited".to_string(),
                };
                Action::Restart { why: vec![why] }
            } else {
                Action::Start
            });
            fresh = true;
        }
    }

    if !spec.run.engine.has_memory_control() {
        return plan;
    }
    // A load or unload that failed waits out its backoff like a start does (a spec change, which
    // restarts the worker, clears the backoff).
    if !fresh && let Some(until) = obs.next_retry_at.filter(|t| *t > now) {
        plan.waiting = Some(Wait::Backoff(until));
        return plan;
    }
    let loaded = !fresh && obs.memory.state == MemoryState::Loaded;
    match effective {
        DesiredState::Loaded if !loaded => plan.actions.push(Action::Load),
        // Weights held for a pin that is gone are freed, unless someone asked for them.
        DesiredState::Running if loaded && !obs.memory.on_demand && !obs.wants_load() => {
            plan.actions.push(Action::Unload {
                why: UnloadReason::Unpinned,
            });
        }
        DesiredState::Running if loaded && obs.unload_requested => {
            plan.actions.push(Action::Unload {
                why: UnloadReason::Requested,
            });
        }
        DesiredState::Running if loaded && is_idle(spec, obs, now) => {
            plan.actions.push(Action::Unload {
                why: UnloadReason::Idle,
            });
        }
        DesiredState::Running if !loaded && obs.wants_load() => plan.actions.push(Action::Load),
        _ => {}
    }
    plan
}

/// When the idle timer of weights loaded on demand, or of a worker started on demand, fires, if
/// the model has one: its `idle_unload_after` after its last request ended (or after the load or
/// the start, before any request).
pub fn unload_at(spec: &ModelSpec, obs: &ModelObserved) -> Option<Time> {
    let idle = spec.idle_unload_after?;
    let weights = obs.memory.state == MemoryState::Loaded && obs.memory.on_demand;
    let worker = obs.worker.on_demand
        && obs.worker.phase == Phase::Ready
        && spec.state == DesiredState::Stopped;
    if !(weights || worker) {
        return None;
    }
    let since = [
        obs.memory.last_activity,
        obs.memory.loaded_at,
        obs.worker.started_at,
    ]
    .into_iter()
    .flatten()
    .max()?;
    Some(since + idle)
}

fn is_idle(spec: &ModelSpec, obs: &ModelObserved, now: Time) -> bool {
    obs.serving() == 0
        && obs.requests.queued == 0
        && unload_at(spec, obs).is_some_and(|at| at <= now)
}

/// Whether the plan only stops a worker that is still wanted: one judged dead while its process
/// lives (hung), stopped at once to free its port and memory and started again when its backoff
/// ends. The only plan that stops a model its target wants running.
pub fn stops_failed(plan: &ModelPlan) -> bool {
    plan.target != DesiredState::Stopped && plan.actions == [Action::Stop]
}

/// Which wave a job runs in: jobs that only free (stops, unloads) first, then the rest, once
/// the first wave has ended. So a load never lands in a group before the eviction that makes
/// room for it.
pub fn wave(actions: &[Action]) -> u8 {
    u8::from(!actions.iter().all(Action::frees_resources))
}

/// What a model counts for in its group's budget: the larger of hub.yaml's estimate and the last
/// measurement, with where that figure comes from. `None` when there is neither.
pub fn footprint(spec: Option<&ModelSpec>, obs: &ModelObserved) -> Option<Footprint> {
    let declared = spec.and_then(|s| s.memory).map(|bytes| Footprint {
        bytes,
        source: Source::Declared,
    });
    match (declared, obs.footprint) {
        (Some(declared), Some(measured)) if measured.bytes > declared.bytes => Some(measured),
        (Some(declared), _) => Some(declared),
        (None, measured) => measured,
    }
}

/// Keeps a group within `max_loaded` and its memory budget after the per-model plans: holds back
/// the loads that could not fit even with every evictable member gone, then evicts the least
/// recently used members that are idle and not pinned until the rest fit. A member whose engine
/// cannot load and unload holds its weights exactly while its worker runs, so for it a start is
/// the load. A member never measured and without an estimate counts as the largest footprint
/// known in its group.
fn enforce_group_cap(
    group: &crate::config::Group,
    indices: &[usize],
    seen: &[(Option<&ModelSpec>, &ModelObserved)],
    plans: &mut [ModelPlan],
) {
    struct Member<'a> {
        index: usize,
        obs: &'a ModelObserved,
        memory_control: bool,
        bytes: u64,
    }
    impl Member<'_> {
        fn holds_now(&self) -> bool {
            if self.memory_control {
                matches!(
                    self.obs.memory.state,
                    MemoryState::Loaded | MemoryState::Loading
                )
            } else {
                matches!(self.obs.worker.phase, Phase::Ready | Phase::Starting)
            }
        }

        fn takes(&self, action: &Action) -> bool {
            match action {
                Action::Load => true,
                Action::Start | Action::Restart { .. } => !self.memory_control,
                _ => false,
            }
        }

        /// Holds weights now or will once the plans so far have run. A restarting member still
        /// counts: its weights go only when its job runs, which may be after another's load.
        fn will_hold(&self, plan: &ModelPlan) -> bool {
            plan.actions.iter().any(|a| self.takes(a))
                || (self.holds_now() && !plan.actions.iter().any(Action::frees_resources))
        }
    }

    /// Members holding weights, and their bytes together.
    #[derive(Clone, Copy, Default)]
    struct Usage {
        count: usize,
        bytes: u64,
    }
    impl Usage {
        /// With one more member holding `bytes`.
        fn plus(self, bytes: u64) -> Usage {
            Usage {
                count: self.count + 1,
                bytes: self.bytes.saturating_add(bytes),
            }
        }
    }
    let cap = group.max_loaded.map_or(usize::MAX, |n| n as usize);
    let budget = group.memory.unwrap_or(u64::MAX);
    let fits = |usage: Usage| usage.count <= cap && usage.bytes <= budget;

    // A member's bytes: its footprint, or never measured nor declared, the largest in its group.
    // Without a budget no byte is counted, and no footprint is looked at.
    let footprint_of = |index: usize| {
        let (spec, obs) = seen[index];
        footprint(spec, obs).map(|f| f.bytes)
    };
    let estimate = match group.memory {
        Some(_) => indices
            .iter()
            .filter_map(|&i| footprint_of(i))
            .max()
            .unwrap_or(0),
        None => 0,
    };
    let member = |index: usize| {
        let (spec, obs) = seen[index];
        Some(Member {
            index,
            obs,
            memory_control: spec?.run.engine.has_memory_control(),
            bytes: match group.memory {
                Some(_) => footprint_of(index).unwrap_or(estimate),
                None => 0,
            },
        })
    };
    // The common case, checked without allocating: the group fits with every planned load.
    let mut planned = Usage::default();
    for m in indices.iter().filter_map(|&index| member(index)) {
        let plan = &mut plans[m.index];
        if group.memory.is_some()
            && plan.bytes().is_none()
            && plan.actions.iter().any(|a| m.takes(a))
        {
            plan.load.get_or_insert_default().bytes = Some(m.bytes);
        }
        if m.will_hold(plan) {
            planned = planned.plus(m.bytes);
        }
    }
    if fits(planned) {
        return;
    }
    let members: Vec<Member> = indices.iter().filter_map(|&index| member(index)).collect();
    let usage = |plans: &[ModelPlan], gone: &dyn Fn(&Member) -> bool| {
        members
            .iter()
            .filter(|m| m.will_hold(&plans[m.index]) && !gone(m))
            .fold(Usage::default(), |u, m| u.plus(m.bytes))
    };

    // Requests queue for the members about to take room; the oldest of them came first. A
    // member whose own requests queued later yields to it (first come, first served), one whose
    // requests queued earlier keeps its weights for them.
    let oldest_waiting = members
        .iter()
        .filter(|m| plans[m.index].actions.iter().any(|a| m.takes(a)))
        .filter_map(|m| m.obs.requests.queued_since)
        .min();
    let queued_behind = |m: &Member| match (m.obs.requests.queued_since, oldest_waiting) {
        (None, _) => true,
        (Some(own), Some(oldest)) => own > oldest,
        (Some(_), None) => false,
    };
    // Could give its room up: holds weights that neither hub.yaml pins nor an operator's load
    // asked for, not about to (re)load, not busy, and no request of its own queued first.
    let releasable = |m: &Member, plan: &ModelPlan| {
        let holds = if m.memory_control {
            m.obs.memory.state == MemoryState::Loaded
        } else {
            plan.on_demand && m.obs.worker.phase == Phase::Ready
        };
        holds
            && !m.obs.busy
            && !m.obs.load_requested
            && plan.target != DesiredState::Loaded
            && plan.actions.is_empty()
            && queued_behind(m)
    };
    let last_used = |m: &Member| {
        (
            m.obs
                .memory
                .last_activity
                .or(m.obs.memory.loaded_at)
                .or(m.obs.worker.started_at),
            m.index,
        )
    };
    let mut evictable: Vec<&Member> = members
        .iter()
        .filter(|m| m.obs.serving() == 0 && releasable(m, &plans[m.index]))
        .collect();
    evictable.sort_by_key(|m| last_used(m));
    let is_evictable = |m: &Member| evictable.iter().any(|e| e.index == m.index);

    // First decide which loads (and, for engines without load/unload, starts) go ahead: in
    // order (pinned, then asked for through the API, then the longest waiting), each that fits
    // beside what stays (every member holding weights but the evictable ones) and the loads
    // before it. The rest wait, so nothing is evicted for a load that still could not happen.
    let mut waiting: Vec<&Member> = members
        .iter()
        .filter(|m| plans[m.index].actions.iter().any(|a| m.takes(a)))
        .collect();
    waiting.sort_by_key(|m| {
        (
            plans[m.index].target != DesiredState::Loaded,
            m.obs.requests.queued_since.is_some(),
            m.obs.requests.queued_since,
            m.index,
        )
    });
    // A member restarting in place (an engine without load/unload) holds its room either way.
    let is_new = |m: &Member| !m.holds_now() && waiting.iter().any(|w| w.index == m.index);
    let mut admitted = usage(plans, &|m| is_evictable(m) || is_new(m));
    let mut held_back = 0;
    for member in &waiting {
        let with = if member.holds_now() {
            admitted
        } else {
            admitted.plus(member.bytes)
        };
        if fits(with) {
            admitted = with;
            continue;
        }
        let plan = &mut plans[member.index];
        plan.actions.retain(|a| !member.takes(a));
        plan.waiting = Some(Wait::GroupFull {
            group: group.name.clone(),
        });
        plan.load = None;
        held_back += 1;
    }

    // Then evict the idle ones, least recently used first, until the loads left fit. An eviction
    // the count alone would need is `evicted`; one only the bytes need is `memory`.
    let mut now_using = usage(plans, &|_| false);
    let mut evicted: Vec<ModelName> = Vec::new();
    for member in &evictable {
        if fits(now_using) {
            break;
        }
        let why = if now_using.count > cap {
            UnloadReason::Evicted
        } else {
            UnloadReason::Memory
        };
        let plan = &mut plans[member.index];
        plan.actions.push(if member.memory_control {
            Action::Unload { why }
        } else {
            Action::Stop
        });
        plan.release = Some(why);
        now_using.count -= 1;
        now_using.bytes = now_using.bytes.saturating_sub(member.bytes);
        evicted.push(plan.name.clone());
    }
    if !evicted.is_empty() {
        for member in &members {
            let plan = &mut plans[member.index];
            if plan.actions.iter().any(|a| member.takes(a)) {
                plan.load.get_or_insert_default().evicts = evicted.clone();
            }
        }
    }

    // Loads held back while members that could give room up are serving: the least recently
    // used of those stop admitting, so their requests end and the next pass evicts them.
    let mut busy: Vec<&Member> = members
        .iter()
        .filter(|m| m.obs.serving() > 0 && releasable(m, &plans[m.index]))
        .collect();
    busy.sort_by_key(|m| last_used(m));
    for member in busy.into_iter().take(held_back) {
        plans[member.index].yields = true;
    }
}

/// Whether a load of `model` into `group` could ever find room: the members that always hold
/// weights (pinned by hub.yaml, or `running` on an engine without load/unload) leave a place
/// under `max_loaded` and, with the model's own footprint, stay within the memory budget. When
/// they cannot, a request waiting for room would wait forever, and is refused at once instead.
pub fn room_possible(
    desired: &Desired,
    observed: &Observed,
    group: &str,
    model: &ModelName,
) -> bool {
    let Some(group) = desired.groups.get(group) else {
        return true;
    };
    let bytes_of = |name: &ModelName| {
        let obs = observed.models.get(name);
        let spec = desired.models.get(name);
        obs.map_or_else(
            || spec.and_then(|s| s.memory),
            |obs| footprint(spec, obs).map(|f| f.bytes),
        )
        .unwrap_or(0)
    };
    let (count, bytes) = group
        .members
        .iter()
        .filter(|name| *name != model)
        .filter(|name| {
            desired.models.get(*name).is_some_and(|spec| {
                spec.state == DesiredState::Loaded
                    || (spec.state == DesiredState::Running
                        && !spec.run.engine.has_memory_control())
            })
        })
        .fold((0usize, 0u64), |(count, bytes), name| {
            (count + 1, bytes.saturating_add(bytes_of(name)))
        });
    count < group.max_loaded.map_or(usize::MAX, |n| n as usize)
        && bytes.saturating_add(bytes_of(model)) <= group.memory.unwrap_or(u64::MAX)
}

/// What applying `desired` would do now: the plan `hub diff` (through `POST /hub/plan`) prints
/// and the loop's apply reports, made by this one function so they cannot differ. With
/// `reset_overrides` (`hub apply --reset-overrides`) every override is dropped first, and the
/// models that had one are marked as clearing it.
pub fn preview(desired: &Desired, observed: &Observed, reset_overrides: bool, now: Time) -> Plan {
    if !reset_overrides || observed.models.values().all(|o| o.override_.is_none()) {
        return plan(desired, observed, now);
    }
    let mut without = observed.clone();
    for obs in without.models.values_mut() {
        obs.override_ = None;
    }
    let mut preview = plan(desired, &without, now);
    for model in &mut preview.models {
        if observed
            .models
            .get(&model.name)
            .is_some_and(|o| o.override_.is_some())
        {
            model.override_ = OverrideChange::Cleared;
        }
    }
    preview
}

/// The observed state as it would be once `desired` has converged: what `hub diff --against`
/// plans against, and what tests use as a settled machine.
pub fn converged(desired: &Desired) -> Observed {
    let mut observed = Observed::default();
    for (name, spec) in &desired.models {
        if spec.state == DesiredState::Stopped {
            continue;
        }
        let loaded = spec.state == DesiredState::Loaded && spec.run.engine.has_memory_control();
        let obs = ModelObserved::ready(spec.run.clone(), loaded);
        observed.models.insert(name.clone(), obs);
    }
    observed
}

#[cfg(test)]
mod tests;
