//! The whole path: hub.yaml → reconcile → real workers → /hub/status, hub diff, hub apply.

use serde_json::Value;

use crate::support::{TempHub, is_alive, names, pids, wait_until};

const HUB: &str = "
log_path: {log_path}
model_starting_port: {starting_port}
models:
  - {name: alpha, model_path: models/alpha.txt, model_type: lm, state: loaded, group: tier_one}
  - {name: beta, model_path: models/beta.txt, state: running, group: tier_one}
  - {name: gamma, model_path: models/gamma.txt, state: stopped}
  - {name: delta, model_path: models/delta.txt, state: running}
groups:
  - {name: tier_one, max_loaded: 1}
";

fn model<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap()
}

#[tokio::test]
async fn a_save_converges_with_minimal_change_and_diff_matches_apply() {
    let mut hub = TempHub::start(HUB).await;
    let status = hub.converged().await;

    // Real processes on real ports; the pinned model's weights are loaded.
    assert_eq!(status["counts"]["running"], 3, "{status:#}");
    for name in ["alpha", "beta", "delta"] {
        let m = model(&status, name);
        assert_eq!(m["worker"]["phase"], "ready");
        assert!(is_alive(m["worker"]["pid"].as_u64().unwrap() as u32));
        let port = m["worker"]["port"].as_u64().unwrap();
        let health: Value = reqwest::get(format!("http://127.0.0.1:{port}/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(health["loaded"], name == "alpha", "{name}: {health}");
    }
    assert_eq!(model(&status, "alpha")["memory"]["state"], "loaded");
    assert_eq!(model(&status, "gamma")["worker"]["phase"], "stopped");
    assert_eq!(status["groups"][0]["loaded"], serde_json::json!(["alpha"]));
    let before = pids(&status);

    // Save with delta switched from running to stopped: only delta stops.
    hub.save_config(&HUB.replace(
        "models/delta.txt, state: running",
        "models/delta.txt, state: stopped",
    ));
    let status = wait_until("generation 2 converged", || async {
        let status = hub.status().await;
        (status["observed_generation"] == 2 && status["summary"] == "converged").then_some(status)
    })
    .await;
    let report = &status["last_reconcile"];
    assert_eq!(report["trigger"], "config");
    assert_eq!(names(&report["stopped"]), ["delta"]);
    assert_eq!(names(&report["unchanged"]), ["alpha", "beta", "gamma"]);
    for list in ["started", "restarted", "loaded", "unloaded", "failed"] {
        assert_eq!(report[list], serde_json::json!([]), "{list}");
    }
    let delta_pid = before["delta"].unwrap() as u32;
    assert!(
        !is_alive(delta_pid),
        "delta's worker {delta_pid} still runs"
    );
    let after = pids(&status);
    for name in ["alpha", "beta"] {
        assert_eq!(after[name], before[name], "{name} was disturbed");
    }

    // hub diff shows a model_path change as a restart and exits 1; apply does exactly that;
    // then the same diff exits 0.
    let edited = hub.dir.path().join("edited.yaml");
    let edited_text = std::fs::read_to_string(hub.config())
        .unwrap()
        .replace("models/beta.txt", "models/gamma.txt");
    std::fs::write(&edited, edited_text).unwrap();
    let diff = hub.cli(&["diff", "-f", "edited.yaml"]);
    let out = String::from_utf8_lossy(&diff.stdout);
    assert_eq!(diff.status.code(), Some(1), "{out}");
    assert!(
        out.contains("-  - {name: beta, model_path: models/beta.txt"),
        "{out}"
    );
    assert!(
        out.contains("~ beta  restart (model_path changed)"),
        "{out}"
    );
    assert!(out.contains("= alpha  unchanged"), "{out}");

    let apply = hub.cli(&["apply", "-f", "edited.yaml", "--wait"]);
    let out = String::from_utf8_lossy(&apply.stdout);
    assert!(
        apply.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&apply.stderr)
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "model/alpha unchanged",
            "model/beta restarted",
            "model/delta unchanged",
            "model/gamma unchanged",
        ]
    );
    let status = hub.status().await;
    assert_ne!(pids(&status)["beta"], before["beta"]);
    assert_eq!(pids(&status)["alpha"], before["alpha"]);
    assert_eq!(status["config"]["source"], "api");

    let diff = hub.cli(&["diff", "-f", "edited.yaml"]);
    assert_eq!(
        diff.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );

    // A graceful shutdown stops every worker.
    let workers = hub.workers();
    assert_eq!(workers.len(), 2, "alpha and beta: {workers:?}");
    hub.shutdown().await;
    assert_eq!(hub.workers(), Vec::<u32>::new());
}

#[tokio::test]
async fn an_invalid_save_changes_nothing_and_the_next_valid_one_applies() {
    let hub = TempHub::start(HUB).await;
    let before = pids(&hub.converged().await);

    hub.save_config(&HUB.replace("max_loaded: 1", "max_laoded: 1"));
    let status = wait_until("rejected edit", || async {
        let status = hub.status().await;
        (!status["config"]["rejected"].is_null()).then_some(status)
    })
    .await;
    let errors = &status["config"]["rejected"]["errors"];
    let unknown = errors
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "groups[0].max_laoded")
        .unwrap_or_else(|| panic!("{errors:#}"));
    assert_eq!(unknown["line"], 10);
    assert_eq!(
        unknown["message"],
        "unknown key `max_laoded` (did you mean `max_loaded`?)"
    );
    assert_eq!(status["generation"], 1);
    assert_eq!(pids(&status), before);

    hub.save_config(&HUB.replace("state: stopped}", "state: running}"));
    let status = wait_until("generation 2 converged", || async {
        let status = hub.status().await;
        (status["observed_generation"] == 2 && status["summary"] == "converged").then_some(status)
    })
    .await;
    assert!(status["config"]["rejected"].is_null());
    assert_eq!(names(&status["last_reconcile"]["started"]), ["gamma"]);
    for name in ["alpha", "beta", "delta"] {
        assert_eq!(pids(&status)[name], before[name]);
    }
}

#[tokio::test]
async fn a_killed_worker_is_restarted_and_counted() {
    let hub = TempHub::start(HUB).await;
    let status = hub.converged().await;
    let pid = model(&status, "alpha")["worker"]["pid"].as_u64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let alpha = wait_until("alpha restarted and reloaded", || async {
        let alpha = hub.model("alpha").await;
        (alpha["worker"]["restarts"] == 1 && alpha["in_sync"] == true).then_some(alpha)
    })
    .await;
    assert_ne!(alpha["worker"]["pid"], pid);
    assert_eq!(alpha["worker"]["exit_code"], 137);
    assert_eq!(alpha["memory"]["state"], "loaded");
    let status = hub.status().await;
    assert_eq!(names(&status["last_reconcile"]["restarted"]), ["alpha"]);
    assert_eq!(names(&status["last_reconcile"]["loaded"]), ["alpha"]);
}

#[tokio::test]
async fn imperative_calls_take_effect_and_are_kept_as_overrides() {
    let hub = TempHub::start(HUB).await;
    hub.converged().await;

    // beta is running; loading it on demand is not an override, but the group holds one model
    // and alpha is pinned, so there is no room.
    let (code, body) = hub.post("/hub/models/beta/load", "").await;
    assert_eq!(code, 429, "{body}");
    assert_eq!(body["error"]["type"], "group_full");

    // Stopping a running model is an override that the next passes keep.
    let out = hub.cli(&["stop-model", "delta"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let delta = hub.model("delta").await;
    assert_eq!(delta["worker"]["phase"], "stopped");
    assert_eq!(delta["override"]["state"], "stopped");
    assert_eq!(delta["in_sync"], true);

    // load-model of a stopped model starts it (an override) and loads it on demand.
    let out = hub.cli(&["load-model", "gamma"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gamma = hub.model("gamma").await;
    assert_eq!(gamma["worker"]["phase"], "ready");
    assert_eq!(gamma["memory"]["state"], "loaded");
    assert_eq!(gamma["override"]["state"], "running");

    let (code, body) = hub.post("/hub/models/nope/start", "").await;
    assert_eq!(code, 404);
    assert_eq!(body["error"]["code"], 404);

    // hub diff shows the overrides; a new generation of the file keeps them.
    let diff = hub.cli(&["diff", "-f", "hub.yaml"]);
    let out = String::from_utf8_lossy(&diff.stdout);
    assert!(
        out.contains("= delta  unchanged [override: stopped]"),
        "{out}"
    );
    hub.save_config(&format!("{HUB}\n# a comment\n"));
    wait_until("generation 2 converged", || async {
        let status = hub.status().await;
        (status["observed_generation"] == 2 && status["summary"] == "converged").then_some(())
    })
    .await;
    assert_eq!(hub.model("delta").await["worker"]["phase"], "stopped");

    // Editing delta's entry clears its override; --reset-overrides clears gamma's.
    hub.save_config(&format!(
        "{}\n# a comment\n",
        HUB.replace("models/delta.txt", "models/alpha.txt")
    ));
    let delta = wait_until("delta running again", || async {
        let delta = hub.model("delta").await;
        (delta["worker"]["phase"] == "ready" && delta["in_sync"] == true).then_some(delta)
    })
    .await;
    assert!(delta["override"].is_null());
    let apply = hub.cli(&["apply", "-f", "hub.yaml", "--reset-overrides", "--wait"]);
    let out = String::from_utf8_lossy(&apply.stdout);
    assert!(apply.status.success(), "{out}");
    assert!(out.contains("model/gamma stopped"), "{out}");
    let gamma = hub.model("gamma").await;
    assert!(gamma["override"].is_null());
    assert_eq!(gamma["worker"]["phase"], "stopped");
}
