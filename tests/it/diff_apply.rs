//! `hub diff` shows exactly what `hub apply` then does: over a deterministic series of random
//! edits (models added and removed, started, stopped, pinned and unpinned, moved between groups,
//! given new weights, group caps changed, a comment-only edit), each step's `hub diff -o json`
//! must equal both the lines `hub apply --wait` prints and the lists of the reconcile's report.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::support::{TempHub, names};

const MODELS: [&str; 5] = ["alpha", "beta", "gamma", "delta", "epsilon"];
const FILES: [&str; 4] = ["alpha", "beta", "gamma", "delta"];
const STATES: [&str; 3] = ["stopped", "running", "loaded"];
const GROUPS: [Option<&str>; 3] = [None, Some("tier_one"), Some("tier_two")];
const STEPS: usize = 24;

#[derive(Clone, PartialEq)]
struct Model {
    file: usize,
    state: usize,
    group: usize,
}

#[derive(Clone, PartialEq)]
struct Config {
    models: [Option<Model>; 5],
    tier_one_max: u32,
    comment: u32,
}

impl Config {
    fn yaml(&self) -> String {
        let mut out = format!(
            "# edit {}\nlog_path: {{log_path}}\nmodel_starting_port: {{starting_port}}\ngroups:\n  - {{name: tier_one, max_loaded: {}}}\n  - {{name: tier_two, max_loaded: 1}}\nmodels:\n",
            self.comment, self.tier_one_max
        );
        for (name, model) in MODELS.iter().zip(&self.models) {
            let Some(m) = model else { continue };
            out.push_str(&format!(
                "  - {{name: {name}, model_path: models/{}.txt, state: {}",
                FILES[m.file], STATES[m.state]
            ));
            if let Some(group) = GROUPS[m.group] {
                out.push_str(&format!(", group: {group}"));
            }
            out.push_str("}\n");
        }
        out
    }

    /// No group may pin more models than it can hold: extra pins become `running`.
    fn fix_caps(&mut self) {
        for (group, cap) in [(1, self.tier_one_max), (2, 1)] {
            let mut pinned = 0;
            for m in self.models.iter_mut().flatten() {
                if m.group == group && STATES[m.state] == "loaded" {
                    pinned += 1;
                    if pinned > cap {
                        m.state = 1;
                    }
                }
            }
        }
    }

    fn names(&self) -> BTreeSet<String> {
        MODELS
            .iter()
            .zip(&self.models)
            .filter(|(_, m)| m.is_some())
            .map(|(n, _)| n.to_string())
            .collect()
    }
}

/// xorshift64: the same edits every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn edit(config: &Config, rng: &mut Rng, step: usize) -> Config {
    let mut next = config.clone();
    next.comment = step as u32;
    // Every seventh step only edits the comment: a new generation where nothing changes.
    if step.is_multiple_of(7) {
        return next;
    }
    for _ in 0..1 + rng.below(3) {
        let i = rng.below(MODELS.len());
        let model = &mut next.models[i];
        match (model.as_mut(), rng.below(6)) {
            (None, _) => {
                *model = Some(Model {
                    file: rng.below(FILES.len()),
                    state: rng.below(STATES.len()),
                    group: rng.below(GROUPS.len()),
                })
            }
            (Some(_), 0) => *model = None,
            (Some(m), 1 | 2) => m.state = (m.state + 1 + rng.below(2)) % STATES.len(),
            (Some(m), 3) => m.file = (m.file + 1 + rng.below(FILES.len() - 1)) % FILES.len(),
            (Some(m), 4) => m.group = (m.group + 1 + rng.below(2)) % GROUPS.len(),
            (Some(_), _) => next.tier_one_max = 3 - next.tier_one_max,
        }
    }
    next.fix_caps();
    next
}

/// The report list each planned action lands in.
fn list_of(action: &str) -> &'static str {
    match action {
        "start" => "started",
        "stop" => "stopped",
        "restart" => "restarted",
        "load" => "loaded",
        "unload" => "unloaded",
        other => panic!("unknown action {other}"),
    }
}

#[tokio::test]
async fn diff_shows_exactly_what_apply_then_does_across_many_edits() {
    let mut config = Config {
        models: [
            Some(Model {
                file: 0,
                state: 2,
                group: 1,
            }),
            Some(Model {
                file: 1,
                state: 1,
                group: 1,
            }),
            Some(Model {
                file: 2,
                state: 0,
                group: 0,
            }),
            None,
            Some(Model {
                file: 3,
                state: 1,
                group: 2,
            }),
        ],
        tier_one_max: 1,
        comment: 0,
    };
    let hub = TempHub::start(&config.yaml()).await;
    hub.converged().await;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut acted = BTreeSet::new();

    for step in 1..=STEPS {
        config = edit(&config, &mut rng, step);
        let yaml = hub.render(&config.yaml());
        std::fs::write(hub.dir.path().join("step.yaml"), &yaml).unwrap();
        let context = format!("step {step}:\n{yaml}");

        let diff = hub.cli(&["diff", "-f", "step.yaml", "-o", "json"]);
        let plan: Value = serde_json::from_slice(&diff.stdout)
            .unwrap_or_else(|e| panic!("{context}{e}: {}", String::from_utf8_lossy(&diff.stderr)));
        assert_eq!(diff.status.code(), Some(1), "{context}the text changed");
        let generation = plan["generation"].as_u64().unwrap();
        let mut planned: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
        for model in plan["models"].as_array().unwrap() {
            let actions = model["actions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect();
            planned.insert(
                model["name"].as_str().unwrap().to_string(),
                (model["result"].as_str().unwrap().to_string(), actions),
            );
        }

        let apply = hub.cli(&[
            "apply",
            "-f",
            "step.yaml",
            "--wait",
            "--expect-generation",
            &generation.to_string(),
        ]);
        let printed = String::from_utf8_lossy(&apply.stdout).to_string();
        assert!(
            apply.status.success(),
            "{context}{printed}{}",
            String::from_utf8_lossy(&apply.stderr)
        );
        let applied: BTreeMap<String, String> = printed
            .lines()
            .map(|l| {
                let (name, result) = l.split_once(' ').unwrap();
                // A load into a group with a budget adds what it takes: `(+7.5 GiB, evicts b)`.
                let result = result.split(" (").next().unwrap();
                (
                    name.strip_prefix("model/").unwrap().to_string(),
                    result.to_string(),
                )
            })
            .collect();
        let diff_results: BTreeMap<String, String> = planned
            .iter()
            .map(|(n, (result, _))| (n.clone(), result.clone()))
            .collect();
        assert_eq!(applied, diff_results, "{context}apply printed:\n{printed}");

        let status = hub.status().await;
        assert_eq!(status["summary"], "converged", "{context}{status:#}");
        let report = &status["last_reconcile"];
        assert_eq!(report["generation"], generation + 1, "{context}{report:#}");
        assert_eq!(
            report["failed"],
            serde_json::json!([]),
            "{context}{report:#}"
        );
        for list in ["started", "stopped", "restarted", "loaded", "unloaded"] {
            let expected: BTreeSet<&str> = planned
                .iter()
                .filter(|(_, (_, actions))| actions.iter().any(|a| list_of(a) == list))
                .map(|(n, _)| n.as_str())
                .collect();
            let reported: BTreeSet<&str> = names(&report[list]).into_iter().collect();
            assert_eq!(reported, expected, "{context}{list}: {report:#}");
            acted.extend(expected.iter().map(|n| format!("{list} {n}")));
        }
        let untouched: BTreeSet<String> = config
            .names()
            .into_iter()
            .filter(|n| planned.get(n).is_none_or(|(_, actions)| actions.is_empty()))
            .collect();
        let unchanged: BTreeSet<String> = names(&report["unchanged"])
            .into_iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(unchanged, untouched, "{context}{report:#}");
    }

    // The edits exercised every kind of action.
    for list in ["started", "stopped", "restarted", "loaded", "unloaded"] {
        assert!(
            acted.iter().any(|a| a.starts_with(list)),
            "no step {list} anything: {acted:?}"
        );
    }
}

/// `hub diff --reset-overrides` and `hub apply --reset-overrides` print the same lines, both
/// saying which override the apply clears: one preview function makes both.
#[tokio::test]
async fn a_reset_previews_and_applies_the_same_lines() {
    let yaml = format!(
        "{}models:
  - {{name: alpha, model_path: models/alpha.txt, engine: quick, state: running}}
  - {{name: beta, model_path: models/beta.txt, engine: quick, state: stopped}}
",
        crate::support::QUICK_ENGINE
    );
    let hub = TempHub::start(&yaml).await;
    hub.converged().await;
    let out = hub.cli(&["start-model", "beta"]);
    assert!(out.status.success(), "{out:?}");
    hub.converged().await;
    let body = std::fs::read_to_string(hub.config()).unwrap();
    let (code, plan) = hub.post("/hub/plan?reset_overrides=true", &body).await;
    assert_eq!(code, 200, "{plan:#}");
    let (code, applied) = hub.post("/hub/apply?reset_overrides=true", &body).await;
    assert_eq!(code, 200, "{applied:#}");
    let lines = |reply: &Value| -> Vec<String> {
        reply["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["line"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(lines(&plan), lines(&applied));
    assert_eq!(lines(&applied)[1], "- beta  stop [clears override]");
}
