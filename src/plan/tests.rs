//! Planner tests: hub.yaml text and a one-line-per-model observed state in, `hub diff`'s plan
//! lines out, through one `check` helper.

use std::path::Path;
use std::time::Duration;

use expect_test::{Expect, expect};
use time::macros::datetime;

use super::plan;
use crate::config::{self, Desired, DesiredState, Engine, ModelName, RunSpec};
use crate::observed::{MemoryState, ModelObserved, Observed, Override, Phase, Time};
use crate::reconcile::{Update, step};

const NOW: Time = datetime!(2026-11-23 10:00 UTC);

/// Observed state, one model per line: `name phase [memory] [flags]`. Flags: `on_demand`,
/// `busy`, `crashed`, `load_requested`, `unload_requested`, `retry=+5s` (next retry from now),
/// `last=-30s` (last activity before now), `path=X` (the worker runs an older model_path),
/// `override=running`, `measured=100MiB` (its last measured footprint).
fn observed(desired: &Desired, text: &str) -> Observed {
    let mut observed = Observed::default();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut words = line.split_whitespace();
        let name = ModelName::new(words.next().unwrap()).unwrap();
        let mut obs = ModelObserved::default();
        let spec = desired.models.get(&name);
        let mut run = spec
            .map(|s| RunSpec::clone(&s.run))
            .unwrap_or_else(|| RunSpec {
                engine_name: "builtin".into(),
                engine: std::sync::Arc::new(Engine::builtin()),
                model_path: "gone.txt".into(),
                port: None,
                args: vec![],
                env: Default::default(),
            });
        for word in words {
            match word {
                "ready" => obs.worker.phase = Phase::Ready,
                "stopped" => obs.worker.phase = Phase::Stopped,
                "failed" => obs.worker.phase = Phase::Failed,
                "loaded" => obs.memory.state = MemoryState::Loaded,
                "on_demand" => obs.memory.on_demand = true,
                "busy" => obs.busy = true,
                "crashed" => {
                    obs.worker.crashed = true;
                    obs.worker.exit_code = Some(3);
                }
                "load_requested" => obs.load_requested = true,
                // A request through the gateway in flight; a worker started for requests.
                "serving" => obs.requests.in_flight = 1,
                "demand_worker" => obs.worker.on_demand = true,
                "unload_requested" => obs.unload_requested = true,
                _ => {
                    let (key, value) = word.split_once('=').expect("flag=value");
                    let seconds = |v: &str| {
                        Duration::from_secs(v[1..].trim_end_matches('s').parse().unwrap())
                    };
                    match key {
                        "retry" => obs.next_retry_at = Some(NOW + seconds(value)),
                        "last" => obs.memory.last_activity = Some(NOW - seconds(value)),
                        "queued" => {
                            obs.requests.queued = 1;
                            obs.requests.queued_since = Some(NOW - seconds(value));
                        }
                        "path" => run.model_path = value.to_string(),
                        "measured" => {
                            obs.footprint = Some(crate::measure::Footprint {
                                bytes: crate::bytes::parse(value).expect("a size"),
                                source: crate::measure::Source::Rss,
                            })
                        }
                        "override" => {
                            let state = match value {
                                "stopped" => DesiredState::Stopped,
                                "running" => DesiredState::Running,
                                _ => DesiredState::Loaded,
                            };
                            obs.override_ = Some(Box::new(Override {
                                state,
                                spec: spec.expect("override of a known model").clone(),
                                at: NOW,
                                by: "test",
                            }));
                        }
                        _ => panic!("unknown flag {word}"),
                    }
                }
            }
        }
        if obs.worker.phase == Phase::Ready {
            obs.worker.run = Some(std::sync::Arc::new(run));
        }
        observed.models.insert(name, obs);
    }
    observed
}

fn desired(yaml: &str) -> Desired {
    config::parse(yaml, "hub.yaml", Path::new("/")).unwrap_or_else(|e| panic!("{e}"))
}

fn check(yaml: &str, observed_text: &str, expected: Expect) {
    let desired = desired(yaml);
    let observed = observed(&desired, observed_text);
    let plan = plan(&desired, &observed, NOW);
    let lines: Vec<String> = plan.models.iter().map(ToString::to_string).collect();
    expected.assert_eq(&lines.join("\n"));
}

const THREE: &str = "
models:
  - {name: alpha, model_path: a.txt, state: loaded}
  - {name: beta, model_path: b.txt, state: running}
  - {name: gamma, model_path: c.txt}
";

#[test]
fn from_nothing_running_models_start_and_pinned_ones_load() {
    check(
        THREE,
        "",
        expect![[r#"
            + alpha  start, load
            + beta  start
            = gamma  unchanged"#]],
    );
}

#[test]
fn a_converged_machine_needs_nothing() {
    check(
        THREE,
        "alpha ready loaded
         beta ready",
        expect![[r#"
            = alpha  unchanged
            = beta  unchanged
            = gamma  unchanged"#]],
    );
    let desired = desired(THREE);
    assert!(plan(&desired, &super::converged(&desired), NOW).is_noop());
}

#[test]
fn a_changed_spec_restarts_only_that_model_and_reloads_a_pinned_one() {
    check(
        THREE,
        "alpha ready loaded path=old.txt
         beta ready",
        expect![[r#"
            ~ alpha  restart (model_path changed), load
            = beta  unchanged
            = gamma  unchanged"#]],
    );
}

#[test]
fn removed_and_stopped_models_are_stopped() {
    check(
        "models:\n  - {name: beta, model_path: b.txt, state: stopped}\n",
        "beta ready
         orphan ready",
        expect![[r#"
            - beta  stop
            - orphan  stop"#]],
    );
}

#[test]
fn unpinning_frees_the_weights_but_keeps_the_worker() {
    check(
        "models:\n  - {name: alpha, model_path: a.txt, state: running}\n",
        "alpha ready loaded",
        expect!["↓ alpha  unload"],
    );
    check(
        "models:\n  - {name: alpha, model_path: a.txt, state: running}\n",
        "alpha ready loaded on_demand last=-5s",
        expect!["= alpha  unchanged"],
    );
}

#[test]
fn busy_models_wait_and_failed_ones_back_off_then_restart() {
    check(
        THREE,
        "alpha ready busy
         beta failed crashed retry=+5s",
        expect![[r#"
            = alpha  unchanged [in progress]
            = beta  unchanged [backing off until 2026-11-23T10:00:05.000000Z]
            = gamma  unchanged"#]],
    );
    check(
        THREE,
        "alpha ready loaded
         beta failed crashed retry=+0s",
        expect![[r#"
            = alpha  unchanged
            ~ beta  restart (exited with code 3)
            = gamma  unchanged"#]],
    );
}

#[test]
fn idle_on_demand_weights_are_unloaded_after_their_timeout() {
    let yaml =
        "models:\n  - {name: alpha, model_path: a.txt, state: running, idle_unload_after: 60s}\n";
    check(
        yaml,
        "alpha ready loaded on_demand last=-59s",
        expect!["= alpha  unchanged"],
    );
    check(
        yaml,
        "alpha ready loaded on_demand last=-60s",
        expect!["↓ alpha  unload (idle)"],
    );
}

const GROUP: &str = "
models:
  - {name: alpha, model_path: a.txt, state: loaded, group: g}
  - {name: beta, model_path: b.txt, state: running, group: g}
  - {name: gamma, model_path: c.txt, state: running, group: g}
groups:
  - {name: g, max_loaded: 2}
";

#[test]
fn a_load_into_a_full_group_evicts_the_least_recently_used_unpinned_member() {
    check(
        GROUP,
        "alpha ready loaded
         beta ready loaded on_demand last=-10s
         gamma ready load_requested",
        expect![[r#"
            = alpha  unchanged
            ↓ beta  unload (evicted to make room in its group)
            ↑ gamma  load (evicts beta)"#]],
    );
}

#[test]
fn a_load_that_cannot_fit_waits_instead_of_evicting_a_pinned_model() {
    let yaml = "
models:
  - {name: alpha, model_path: a.txt, state: loaded, group: g}
  - {name: beta, model_path: b.txt, state: running, group: g}
groups:
  - {name: g, max_loaded: 1}
";
    check(
        yaml,
        "alpha ready loaded
         beta ready load_requested",
        expect![[r#"
            = alpha  unchanged
            = beta  unchanged [group "g" is full]"#]],
    );
}

#[test]
fn overrides_hold_until_the_entry_changes() {
    check(
        THREE,
        "alpha ready loaded
         beta stopped override=stopped",
        expect![[r#"
            = alpha  unchanged
            = beta  unchanged [override: stopped]
            = gamma  unchanged"#]],
    );
    // beta's entry is edited (a new model_path), so hub.yaml wins again.
    let edited = THREE.replace("b.txt", "b2.txt");
    let desired_before = desired(THREE);
    let observed = observed(
        &desired_before,
        "alpha ready loaded\nbeta stopped override=stopped",
    );
    let plan = plan(&desired(&edited), &observed, NOW);
    let beta = plan.get("beta").unwrap();
    assert_eq!(beta.to_string(), "+ beta  start [clears override]");
}

/// A small deterministic random source (xorshift64*), so the property test needs no crate and
/// a failure names its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A random valid hub.yaml: up to 8 models, up to 2 groups, some on an engine that cannot load
/// or unload (its worker is its weights), no more pinned models in a group than it may hold.
/// A group has a count limit, a memory budget (4 to 9 GiB), or both; every member of a group
/// with a budget declares 1 to 4 GiB, and the pinned ones' declarations fit the budget.
fn random_yaml(rng: &mut Rng) -> String {
    let groups = [("g1", 1 + rng.below(3)), ("g2", 1 + rng.below(2))];
    // 0: max_loaded only, 1: memory only, 2: both.
    let limits = [rng.below(3), rng.below(3)];
    let budgets = [4 + rng.below(6), 4 + rng.below(6)];
    let mut pinned = [0u64; 2];
    let mut pinned_gib = [0u64; 2];
    let mut yaml = String::from("engines:\n  plain:\n    command: [server, '{port}']\nmodels:\n");
    for i in 0..1 + rng.below(8) {
        let group = rng.below(3) as usize;
        let plain = rng.chance(30);
        let mut state = ["stopped", "running", "loaded"][rng.below(3) as usize];
        // Without load/unload a running worker holds its place like a pinned one.
        let holds = state == "loaded" || (plain && state == "running");
        let gib = 1 + rng.below(4);
        let counted = group < 2 && limits[group] != 1;
        let budgeted = group < 2 && limits[group] != 0;
        if group < 2 && holds {
            let full = (counted && pinned[group] == groups[group].1)
                || (budgeted && pinned_gib[group] + gib > budgets[group]);
            if full {
                state = if plain { "stopped" } else { "running" };
            } else {
                pinned[group] += 1;
                pinned_gib[group] += gib;
            }
        }
        let path = if rng.chance(20) { "new" } else { "old" };
        yaml.push_str(&format!(
            "  - {{name: m{i}, model_path: {path}, state: {state}"
        ));
        if plain {
            yaml.push_str(", engine: plain");
        }
        if group < 2 {
            yaml.push_str(&format!(", group: {}", groups[group].0));
        }
        if budgeted {
            yaml.push_str(&format!(", memory: {gib}GiB"));
        }
        yaml.push_str("}\n");
    }
    yaml.push_str("groups:\n");
    for (i, (name, max)) in groups.into_iter().enumerate() {
        let mut keys = Vec::new();
        if limits[i] != 1 {
            keys.push(format!("max_loaded: {max}"));
        }
        if limits[i] != 0 {
            keys.push(format!("memory: {}GiB", budgets[i]));
        }
        yaml.push_str(&format!("  - {{name: {name}, {}}}\n", keys.join(", ")));
    }
    yaml
}

/// A random observed state for `desired`'s models and a few that are no longer in it: ready,
/// stopped or failed workers, loaded weights, requests, overrides, actions in flight (busy) and
/// failures backing off.
fn random_observed(rng: &mut Rng, desired: &Desired) -> Observed {
    let mut text = String::new();
    let names: Vec<String> = desired
        .models
        .keys()
        .map(ToString::to_string)
        .chain((0..rng.below(3)).map(|i| format!("gone{i}")))
        .collect();
    for name in names {
        if rng.chance(30) {
            continue;
        }
        let mut line = name.clone();
        line.push_str(["  ready", "  stopped", "  failed"][rng.below(3) as usize]);
        if line.ends_with("ready") && rng.chance(50) {
            line.push_str(" loaded");
            if rng.chance(50) {
                line.push_str(" on_demand");
            }
            line.push_str(&format!(" last=-{}s", rng.below(100)));
        }
        if line.ends_with("failed") && rng.chance(50) {
            line.push_str(" crashed");
        }
        if rng.chance(20) {
            line.push_str(" path=older");
        }
        // As the API sets them: a load request only for weights not loaded, an unload request
        // only for loaded ones.
        if !line.contains(" loaded") && rng.chance(20) {
            line.push_str(" load_requested");
        } else if line.contains(" loaded") && rng.chance(10) {
            line.push_str(" unload_requested");
        }
        if !name.starts_with("gone") && rng.chance(15) {
            line.push_str([" override=stopped", " override=running"][rng.below(2) as usize]);
        }
        if rng.chance(10) {
            line.push_str(" busy");
        }
        if rng.chance(15) {
            line.push_str(&format!(" retry=+{}s", 1 + rng.below(60)));
        }
        // A measurement from an earlier load: often near the estimate, sometimes well above it.
        if rng.chance(40) {
            line.push_str(&format!(" measured={}MiB", 512 + rng.below(5) * 512));
        }
        text.push_str(&line);
        text.push('\n');
    }
    observed(desired, &text)
}

/// The members of `group` holding weights, and their footprints together (as the planner counts
/// them: the larger of declared and measured).
fn usage(desired: &Desired, observed: &Observed, group: &config::Group) -> (u32, u64) {
    group
        .members
        .iter()
        .filter(|m| holds(desired, observed, m))
        .fold((0, 0), |(count, bytes), m| {
            (count + 1, bytes + bytes_of(desired, observed, m))
        })
}

fn bytes_of(desired: &Desired, observed: &Observed, name: &ModelName) -> u64 {
    let obs = observed.models.get(name).cloned().unwrap_or_default();
    super::footprint(desired.models.get(name), &obs).map_or(0, |f| f.bytes)
}

fn cap(group: &config::Group) -> u32 {
    group.max_loaded.unwrap_or(u32::MAX)
}

fn budget(group: &config::Group) -> u64 {
    group.memory.unwrap_or(u64::MAX)
}

/// Stops members of any group that holds more than its `max_loaded` or its budget, as no state
/// the loop reaches can (the API refuses a start or load into a full group).
fn within_caps(desired: &Desired, observed: &mut Observed) {
    for group in desired.groups.values() {
        let holders: Vec<ModelName> = group
            .members
            .iter()
            .filter(|m| holds(desired, observed, m))
            .cloned()
            .collect();
        let mut kept = (0u32, 0u64);
        for name in &holders {
            let bytes = bytes_of(desired, observed, name);
            if kept.0 < cap(group) && kept.1 + bytes <= budget(group) {
                kept = (kept.0 + 1, kept.1 + bytes);
                continue;
            }
            let obs = observed.models.get_mut(name).unwrap();
            obs.worker.phase = Phase::Stopped;
            obs.worker.run = None;
            obs.memory = Default::default();
            obs.unload_requested = false;
        }
    }
}

/// The updates the executor sends for `action` of `model_plan` when every step succeeds.
fn updates(
    action: &super::Action,
    model_plan: &super::ModelPlan,
    run: Option<&std::sync::Arc<RunSpec>>,
) -> Vec<Update> {
    use super::Action;
    let spawned = || Update::Spawned {
        at: NOW,
        pid: 42,
        start_time: Some(7),
        port: 47850,
        log_file: "m.log".into(),
        run: run.expect("a start has a spec").clone(),
        on_demand: model_plan.on_demand,
    };
    let mut steps = match action {
        Action::Start => vec![spawned(), Update::Ready],
        Action::Restart { .. } => vec![
            Update::Stopping,
            Update::Stopped {
                exit: None,
                failed: false,
            },
            spawned(),
            Update::Ready,
        ],
        Action::Stop => vec![
            Update::Stopping,
            Update::Stopped {
                exit: None,
                failed: super::stops_failed(model_plan),
            },
        ],
        Action::Load => vec![
            Update::Memory(MemoryState::Loading),
            Update::Loaded {
                on_demand: model_plan.target != DesiredState::Loaded,
                baseline: None,
            },
        ],
        Action::Unload { .. } => vec![
            Update::Memory(MemoryState::Unloading),
            Update::Memory(MemoryState::Unloaded),
        ],
    };
    steps.push(Update::Succeeded(action.clone()));
    steps
}

/// Whether the model holds a place in its group (weights loaded, or for an engine without
/// load/unload, a live worker).
fn holds(desired: &Desired, observed: &Observed, name: &ModelName) -> bool {
    let memory_control = desired.models[name].run.engine.has_memory_control();
    observed.models.get(name).is_some_and(|o| {
        if memory_control {
            o.memory.state == MemoryState::Loaded
        } else {
            o.worker.phase == Phase::Ready
        }
    })
}

/// Carries out a plan on a simulated machine as the executor does, through the loop's own
/// transitions (`reconcile::step`): jobs that only free run first, then the rest, one action at
/// a time. Panics if a load (or a start, for an engine without load/unload) lands in a full
/// group.
fn execute(desired: &Desired, observed: &mut Observed, plan: &super::Plan, now: Time, seed: u64) {
    use super::Action;
    let check_room = |observed: &Observed, name: &ModelName| {
        let Some(group) = desired.models.get(name).and_then(|s| s.group.as_deref()) else {
            return;
        };
        let group_ = &desired.groups[group];
        let (loaded, bytes) = usage(desired, observed, group_);
        let cap = cap(group_);
        let own = bytes_of(desired, observed, name);
        assert!(
            loaded < cap && bytes + own <= budget(group_),
            "seed {seed}: {name} ({own} bytes) takes a place in group {group} holding {loaded} of {cap}, {bytes} bytes of {:?}; plan:\n{}",
            group_.memory,
            plan.models
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    };
    let mut jobs: Vec<&super::ModelPlan> = plan.models.iter().collect();
    jobs.sort_by_key(|m| super::wave(&m.actions));
    for model_plan in jobs {
        let name = &model_plan.name;
        let obs = observed.models.entry(name.clone()).or_default();
        // What the loop's pass does before launching.
        if model_plan.override_ == super::OverrideChange::Cleared {
            obs.override_ = None;
        }
        if model_plan.actions.is_empty() {
            continue;
        }
        obs.busy = true;
        let spec = desired.models.get(name);
        for action in &model_plan.actions {
            let takes = match action {
                Action::Load => true,
                Action::Start | Action::Restart { .. } => {
                    spec.is_some_and(|s| !s.run.engine.has_memory_control())
                }
                _ => false,
            };
            let run = spec.map(|s| &s.run);
            for update in updates(action, model_plan, run) {
                if takes && matches!(update, Update::Ready | Update::Loaded { .. }) {
                    check_room(observed, name);
                }
                let obs = observed.models.get_mut(name).unwrap();
                step::apply(obs, &update, now, None);
            }
        }
        step::done(observed.models.get_mut(name).unwrap());
    }
}

/// What hub.yaml (or an override the plan keeps) says each model must be, checked against the
/// converged observed state directly: stopped models run nothing, running ones have a ready
/// worker on their spec, pinned ones also hold their weights (with load/unload) and no group
/// holds more than `max_loaded`.
///
/// The one exception: a model whose group is full of members that cannot make room (pinned, or
/// kept running by an override, on an engine without load/unload) waits, and then its group
/// must indeed be full.
fn check_converged(desired: &Desired, observed: &Observed, last: &super::Plan, seed: u64) {
    let context = || format!("seed {seed}: {observed:#?}");
    let waits_for_room = |name: &ModelName| {
        let Some(super::Wait::GroupFull { group }) =
            last.get(name.as_str()).and_then(|p| p.waiting.as_ref())
        else {
            return false;
        };
        let group = &desired.groups[group.as_str()];
        let (holding, bytes) = usage(desired, observed, group);
        assert!(
            holding == cap(group) || bytes + bytes_of(desired, observed, name) > budget(group),
            "{name} waits for room in a group with room ({holding} holding, {bytes} bytes); {}",
            context()
        );
        true
    };
    for (name, obs) in &observed.models {
        if waits_for_room(name) {
            continue;
        }
        let spec = desired.models.get(name);
        let target = match (spec, &obs.override_) {
            (Some(spec), Some(o)) if o.spec == *spec => o.state,
            (Some(spec), _) => spec.state,
            (None, _) => DesiredState::Stopped,
        };
        let running = obs.worker.phase == Phase::Ready;
        match target {
            DesiredState::Stopped => {
                assert!(!running, "{name} should be stopped; {}", context());
            }
            DesiredState::Running | DesiredState::Loaded => {
                let spec = spec.unwrap();
                assert!(running, "{name} should run; {}", context());
                assert_eq!(
                    obs.worker.run.as_ref(),
                    Some(&spec.run),
                    "{name} runs another spec; {}",
                    context()
                );
                if target == DesiredState::Loaded && spec.run.engine.has_memory_control() {
                    assert_eq!(
                        obs.memory.state,
                        MemoryState::Loaded,
                        "{name} is pinned; {}",
                        context()
                    );
                }
            }
        }
    }
    for (name, spec) in &desired.models {
        if spec.state != DesiredState::Stopped
            && observed
                .models
                .get(name)
                .is_none_or(|o| o.override_.is_none())
            && !waits_for_room(name)
        {
            assert!(
                observed
                    .models
                    .get(name)
                    .is_some_and(|o| o.worker.phase == Phase::Ready),
                "{name} should run; {}",
                context()
            );
        }
    }
    for (group_name, group) in &desired.groups {
        let (holding, bytes) = usage(desired, observed, group);
        assert!(
            holding <= cap(group) && bytes <= budget(group),
            "group {group_name} holds {holding} of {:?}, {bytes} bytes of {:?}; {}",
            group.max_loaded,
            group.memory,
            context()
        );
    }
}

#[test]
fn applying_any_plan_converges_to_hub_yaml_and_never_overfills_a_group() {
    for seed in 1..=3000u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let desired = desired(&random_yaml(&mut rng));
        let mut observed = random_observed(&mut rng, &desired);
        within_caps(&desired, &mut observed);
        // Level-triggered: each round plans from what the last one left. Jobs in flight end
        // (as their Done would) and backoffs run out after the first round; a load waiting for a
        // restart to free its group goes in the round after, so allow a few.
        let mut now = NOW;
        let mut plans = Vec::new();
        for round in 0..5 {
            let next = plan(&desired, &observed, now);
            let waiting = next.models.iter().any(|m| m.waiting.is_some());
            if next.models.iter().all(|m| m.actions.is_empty()) && !waiting {
                break;
            }
            execute(&desired, &mut observed, &next, now, seed);
            plans.push(next);
            if round == 0 {
                for obs in observed.models.values_mut() {
                    step::done(obs);
                    // Workers crash, or hang and are judged dead, through the loop's own
                    // transitions; their retries fall due within the hour.
                    if obs.worker.pid.is_some() && rng.chance(10) {
                        let retry_at = Some(now + Duration::from_secs(5));
                        if rng.chance(50) {
                            step::exited(obs, 137, now, retry_at);
                        } else {
                            step::unhealthy(obs, 3, retry_at);
                        }
                    }
                }
                now += Duration::from_secs(3600);
            }
        }
        let last = plan(&desired, &observed, now);
        let leftover: Vec<String> = last
            .models
            .iter()
            .filter(|m| !m.actions.is_empty())
            .map(ToString::to_string)
            .collect();
        let history: Vec<String> = plans
            .iter()
            .map(|p| {
                p.models
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .collect();
        assert!(
            leftover.is_empty(),
            "seed {seed}: not converged after {} rounds:\n{}\nplans:\n{}",
            plans.len(),
            leftover.join("\n"),
            history.join("\n--\n")
        );
        check_converged(&desired, &observed, &last, seed);
    }
}

#[test]
fn a_model_serving_a_request_is_not_evicted() {
    let desired = desired(GROUP);
    let mut observed = observed(
        &desired,
        "alpha ready loaded
         beta ready loaded on_demand last=-10s
         gamma ready load_requested",
    );
    observed.models.get_mut("beta").unwrap().memory.in_flight = 1;
    let lines: Vec<String> = plan(&desired, &observed, NOW)
        .models
        .iter()
        .map(ToString::to_string)
        .collect();
    expect![[r#"
        = alpha  unchanged
        = beta  unchanged [yields to a waiting model]
        = gamma  unchanged [group "g" is full]"#]]
    .assert_eq(&lines.join("\n"));
}

#[test]
fn without_load_and_unload_a_start_is_the_load_and_unload_is_a_stop() {
    let yaml = "
engines:
  plain: {command: [server, '{port}']}
models:
  - {name: alpha, model_path: a, engine: plain, state: running, group: g}
  - {name: beta, model_path: b, engine: plain, state: stopped, group: g}
groups:
  - {name: g, max_loaded: 1}
";
    // Nothing is loaded or unloaded, only started.
    check(
        yaml,
        "",
        expect![[r#"
        + alpha  start
        = beta  unchanged"#]],
    );
    // beta started by an override while alpha runs: the group is full, so beta waits.
    let desired = desired(yaml);
    let mut observed = observed(&desired, "alpha ready");
    let beta = ModelName::new("beta").unwrap();
    observed.models.entry(beta.clone()).or_default().override_ = Some(Box::new(Override {
        state: DesiredState::Running,
        spec: desired.models[&beta].clone(),
        at: NOW,
        by: "start",
    }));
    let plan = plan(&desired, &observed, NOW);
    assert_eq!(
        plan.get("beta").unwrap().to_string(),
        "= beta  unchanged [group \"g\" is full] [override: running]"
    );
}

const DEMAND: &str = "
idle_unload_after: 60s
models:
  - {name: alpha, model_path: a.txt, state: running, group: g}
  - {name: beta, model_path: b.txt, state: running, group: g}
  - {name: gamma, model_path: c.txt, state: stopped}
  - {name: delta, model_path: d.txt, state: stopped, on_demand: false}
groups:
  - {name: g, max_loaded: 1}
";

#[test]
fn queued_requests_start_and_load_a_stopped_model_unless_on_demand_is_false() {
    check(
        DEMAND,
        "gamma queued=-1s
         delta queued=-1s",
        expect![[r#"
            + alpha  start
            + beta  start
            = delta  unchanged
            + gamma  start, load [on demand]"#]],
    );
}

#[test]
fn a_worker_started_for_requests_stops_once_idle_and_not_while_serving() {
    check(
        DEMAND,
        "gamma ready loaded on_demand demand_worker last=-61s",
        expect![[r#"
            + alpha  start
            + beta  start
            = delta  unchanged
            - gamma  stop (idle) [on demand]"#]],
    );
    check(
        DEMAND,
        "gamma ready loaded on_demand demand_worker last=-61s serving",
        expect![[r#"
            + alpha  start
            + beta  start
            = delta  unchanged
            = gamma  unchanged [on demand]"#]],
    );
}

#[test]
fn the_longest_waiting_model_gets_the_room_first() {
    // Both wait for the one slot: beta's requests came first.
    check(
        DEMAND,
        "alpha ready queued=-2s
         beta ready queued=-5s",
        expect![[r#"
            = alpha  unchanged [group "g" is full]
            ↑ beta  load
            = delta  unchanged
            = gamma  unchanged"#]],
    );
}

#[test]
fn a_loaded_model_keeps_its_room_for_requests_that_queued_before_the_waiting_ones() {
    // alpha holds the slot. Its own requests queued before beta's: it keeps it.
    check(
        DEMAND,
        "alpha ready loaded on_demand queued=-9s last=-1s
         beta ready queued=-5s",
        expect![[r#"
            = alpha  unchanged
            = beta  unchanged [group "g" is full]
            = delta  unchanged
            = gamma  unchanged"#]],
    );
    // Its requests queued after beta's: it gives the room up (first come, first served).
    check(
        DEMAND,
        "alpha ready loaded on_demand queued=-1s last=-1s
         beta ready queued=-5s",
        expect![[r#"
            ↓ alpha  unload (evicted to make room in its group)
            ↑ beta  load (evicts alpha)
            = delta  unchanged
            = gamma  unchanged"#]],
    );
    // Serving when beta asks: it stops taking requests, to be evicted once they end.
    check(
        DEMAND,
        "alpha ready loaded on_demand serving last=-1s
         beta ready queued=-5s",
        expect![[r#"
            = alpha  unchanged [yields to a waiting model]
            = beta  unchanged [group "g" is full]
            = delta  unchanged
            = gamma  unchanged"#]],
    );
}

/// A group with a 10 GiB budget and no count limit: three models, one pinned.
const BUDGET: &str = "
models:
  - {name: alpha, model_path: a.txt, state: running, group: g}
  - {name: beta, model_path: b.txt, state: running, group: g}
  - {name: gamma, model_path: c.txt, state: running, group: g, memory: 5GiB}
  - {name: pinned, model_path: p.txt, state: loaded, group: g, memory: 1GiB}
groups:
  - {name: g, memory: 10GiB}
";

#[test]
fn a_load_that_fits_the_budget_evicts_nobody() {
    check(
        BUDGET,
        "alpha ready loaded on_demand measured=2GiB last=-60s
         beta ready loaded on_demand measured=2GiB last=-30s
         gamma ready load_requested
         pinned ready loaded",
        expect![[r#"
            = alpha  unchanged
            = beta  unchanged
            ↑ gamma  load (+5 GiB)
            = pinned  unchanged"#]],
    );
}

#[test]
fn a_load_past_the_budget_evicts_by_bytes_least_recently_used_first() {
    // 3 + 3 + 1 + 5 = 12 GiB: alpha (used longest ago) goes, and 9 GiB fit.
    check(
        BUDGET,
        "alpha ready loaded on_demand measured=3GiB last=-60s
         beta ready loaded on_demand measured=3GiB last=-30s
         gamma ready load_requested
         pinned ready loaded",
        expect![[r#"
            ↓ alpha  unload (memory: evicted to fit its group's budget)
            = beta  unchanged
            ↑ gamma  load (+5 GiB, evicts alpha)
            = pinned  unchanged"#]],
    );
    // 5 + 4.5 + 1 + 5 = 15.5 GiB: one eviction is not enough, so both go, oldest first.
    check(
        BUDGET,
        "alpha ready loaded on_demand measured=5GiB last=-30s
         beta ready loaded on_demand measured=4.5GiB last=-60s
         gamma ready load_requested
         pinned ready loaded",
        expect![[r#"
            ↓ alpha  unload (memory: evicted to fit its group's budget)
            ↓ beta  unload (memory: evicted to fit its group's budget)
            ↑ gamma  load (+5 GiB, evicts beta, alpha)
            = pinned  unchanged"#]],
    );
}

#[test]
fn the_larger_of_declared_and_measured_counts() {
    // gamma declares 5 GiB but measured 8 GiB last time: 3 + 1 + 8 = 12 GiB, so alpha goes.
    check(
        BUDGET,
        "alpha ready loaded on_demand measured=3GiB last=-60s
         beta ready
         gamma ready load_requested measured=8GiB
         pinned ready loaded",
        expect![[r#"
            ↓ alpha  unload (memory: evicted to fit its group's budget)
            = beta  unchanged
            ↑ gamma  load (+8 GiB, evicts alpha)
            = pinned  unchanged"#]],
    );
    // Measured below its 5 GiB estimate, gamma still counts 5: 3 + 1 + 5 = 9 GiB fit.
    check(
        BUDGET,
        "alpha ready loaded on_demand measured=3GiB last=-60s
         beta ready
         gamma ready load_requested measured=1GiB
         pinned ready loaded",
        expect![[r#"
            = alpha  unchanged
            = beta  unchanged
            ↑ gamma  load (+5 GiB)
            = pinned  unchanged"#]],
    );
}

#[test]
fn a_model_never_measured_counts_as_the_largest_footprint_in_its_group() {
    // beta has no estimate and no measurement yet: it counts as alpha's 6 GiB, so 6 + 1 + 6 > 10.
    check(
        BUDGET,
        "alpha ready loaded on_demand measured=6GiB last=-60s
         beta ready load_requested
         pinned ready loaded",
        expect![[r#"
            ↓ alpha  unload (memory: evicted to fit its group's budget)
            ↑ beta  load (+6 GiB, evicts alpha)
            + gamma  start
            = pinned  unchanged"#]],
    );
}

#[test]
fn a_budget_never_evicts_a_pinned_or_serving_member_nor_for_a_load_that_cannot_fit() {
    // alpha was used longest ago but serves a request: beta goes instead.
    check(
        BUDGET,
        "alpha ready loaded on_demand measured=3GiB last=-60s serving
         beta ready loaded on_demand measured=3GiB last=-30s
         gamma ready load_requested
         pinned ready loaded",
        expect![[r#"
            = alpha  unchanged
            ↓ beta  unload (memory: evicted to fit its group's budget)
            ↑ gamma  load (+5 GiB, evicts beta)
            = pinned  unchanged"#]],
    );
    // pinned holds 8 GiB (measured): gamma's 5 GiB cannot fit even with alpha gone, so alpha
    // keeps its weights.
    check(
        BUDGET,
        "alpha ready loaded on_demand measured=1GiB last=-60s
         beta ready
         gamma ready load_requested
         pinned ready loaded measured=8GiB",
        expect![[r#"
            = alpha  unchanged
            = beta  unchanged
            = gamma  unchanged [group "g" is full]
            = pinned  unchanged"#]],
    );
}

#[test]
fn a_request_is_refused_only_when_pinned_bytes_leave_no_room() {
    let desired = desired(BUDGET);
    let gamma = ModelName::new("gamma").unwrap();
    let fits = observed(&desired, "pinned ready loaded measured=5GiB");
    assert!(super::room_possible(&desired, &fits, "g", &gamma));
    let full = observed(&desired, "pinned ready loaded measured=6GiB");
    assert!(!super::room_possible(&desired, &full, "g", &gamma));
}

#[test]
fn a_budget_and_a_count_apply_together() {
    let yaml = BUDGET.replace(
        "{name: g, memory: 10GiB}",
        "{name: g, memory: 10GiB, max_loaded: 3}",
    );
    // Bytes would fit (1 + 1 + 1 + 5), a fourth member would not: alpha goes as `evicted`.
    check(
        &yaml,
        "alpha ready loaded on_demand measured=1GiB last=-60s
         beta ready loaded on_demand measured=1GiB last=-30s
         gamma ready load_requested
         pinned ready loaded",
        expect![[r#"
            ↓ alpha  unload (evicted to make room in its group)
            = beta  unchanged
            ↑ gamma  load (+5 GiB, evicts alpha)
            = pinned  unchanged"#]],
    );
}
