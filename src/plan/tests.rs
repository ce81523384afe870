//! Planner tests: hub.yaml text and a one-line-per-model observed state in, `hub diff`'s plan
//! lines out, through one `check` helper.

use std::path::Path;
use std::time::Duration;

use expect_test::{Expect, expect};
use time::macros::datetime;

use super::plan;
use crate::config::{self, Desired, DesiredState, Engine, ModelName, RunSpec};
use crate::observed::{MemoryState, ModelObserved, Observed, Override, Phase, Time};

const NOW: Time = datetime!(2026-11-23 10:00 UTC);

/// Observed state, one model per line: `name phase [memory] [flags]`. Flags: `on_demand`,
/// `busy`, `crashed`, `load_requested`, `unload_requested`, `retry=+5s` (next retry from now),
/// `last=-30s` (last activity before now), `path=X` (the worker runs an older model_path),
/// `override=running`.
fn observed(desired: &Desired, text: &str) -> Observed {
    let mut observed = Observed::default();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut words = line.split_whitespace();
        let name = ModelName::new(words.next().unwrap()).unwrap();
        let mut obs = ModelObserved::default();
        let spec = desired.models.get(&name);
        let mut run = spec.map(|s| s.run.clone()).unwrap_or_else(|| RunSpec {
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
                "unload_requested" => obs.unload_requested = true,
                _ => {
                    let (key, value) = word.split_once('=').expect("flag=value");
                    let seconds = |v: &str| {
                        Duration::from_secs(v[1..].trim_end_matches('s').parse().unwrap())
                    };
                    match key {
                        "retry" => obs.next_retry_at = Some(NOW + seconds(value)),
                        "last" => obs.memory.last_activity = Some(NOW - seconds(value)),
                        "path" => run.model_path = value.to_string(),
                        "override" => {
                            let state = match value {
                                "stopped" => DesiredState::Stopped,
                                "running" => DesiredState::Running,
                                _ => DesiredState::Loaded,
                            };
                            obs.override_ = Some(Override {
                                state,
                                spec: spec.expect("override of a known model").clone(),
                                at: NOW,
                                by: "test",
                            });
                        }
                        _ => panic!("unknown flag {word}"),
                    }
                }
            }
        }
        if obs.worker.phase == Phase::Ready {
            obs.worker.run = Some(run);
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
            = beta  unchanged [backing off until 2026-11-23T10:00:05Z]
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
            ↑ gamma  load"#]],
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
