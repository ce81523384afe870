//! Built-in workers told to misbehave, against a real daemon: each ends in the state SPEC
//! describes, with the error visible on `/hub/status`.

use serde_json::Value;

use crate::support::{QUICK_ENGINE, TempHub, is_alive, names, wait_until};

async fn start(models: &str) -> TempHub {
    TempHub::start(&format!("{QUICK_ENGINE}{models}")).await
}

#[tokio::test]
async fn a_slow_start_and_a_slow_load_are_seen_as_starting_and_loading() {
    let hub = start(
        "models:
  - {name: alpha, model_path: models/alpha.txt, engine: quick, state: loaded,
     args: [--start-delay, 600ms, --load-delay, 600ms]}
",
    )
    .await;
    wait_until("alpha starting", || async {
        (hub.model("alpha").await["worker"]["phase"] == "starting").then_some(())
    })
    .await;
    wait_until("alpha loading", || async {
        let alpha = hub.model("alpha").await;
        (alpha["worker"]["phase"] == "ready" && alpha["memory"]["state"] == "loading").then_some(())
    })
    .await;
    let status = hub.converged().await;
    let report = &status["last_reconcile"];
    assert_eq!(names(&report["started"]), ["alpha"]);
    assert_eq!(names(&report["loaded"]), ["alpha"]);
}

#[tokio::test]
async fn a_crashing_worker_is_restarted_with_backoff_and_counted() {
    let hub = start(
        "models:
  - {name: alpha, model_path: models/alpha.txt, engine: quick, state: running,
     args: [--crash-after, 300ms, --exit-code, '7']}
",
    )
    .await;
    let alpha = wait_until("alpha backing off after a crash", || async {
        let alpha = hub.model("alpha").await;
        (alpha["worker"]["phase"] == "backoff").then_some(alpha)
    })
    .await;
    assert_eq!(alpha["worker"]["exit_code"], 7);
    assert_eq!(
        alpha["error"],
        "run failed: worker exited unexpectedly with code 7"
    );
    assert!(alpha["next_retry_at"].is_string());
    assert!(alpha["worker"]["pid"].is_null());
    assert_eq!(hub.status().await["summary"], "degraded");
    wait_until("three restarts", || async {
        (hub.model("alpha").await["worker"]["restarts"].as_u64() >= Some(3)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_worker_that_ignores_sigterm_is_killed_with_its_whole_group() {
    let models = "models:
  - {name: alpha, model_path: models/alpha.txt, engine: quick, state: running,
     args: [--ignore-sigterm, --fork-child]}
";
    let hub = start(models).await;
    hub.converged().await;
    let pid = hub.model("alpha").await["worker"]["pid"].as_u64().unwrap() as u32;
    let group = hub.workers();
    assert_eq!(group.len(), 2, "the worker and its child: {group:?}");

    hub.save_config(&format!(
        "{QUICK_ENGINE}{}",
        models.replace("state: running", "state: stopped")
    ));
    let alpha = wait_until("alpha stopped", || async {
        let alpha = hub.model("alpha").await;
        (alpha["worker"]["phase"] == "stopped" && alpha["in_sync"] == true).then_some(alpha)
    })
    .await;
    assert_eq!(alpha["worker"]["exit_code"], 137, "SIGKILLed: {alpha:#}");
    assert!(!is_alive(pid));
    assert_eq!(
        hub.workers(),
        Vec::<u32>::new(),
        "the forked child went too"
    );
    let log = std::fs::read_to_string(hub.dir.path().join("logs/workers/alpha.log")).unwrap();
    assert!(log.contains("ignoring SIGTERM"), "{log}");
}

#[tokio::test]
async fn a_worker_that_never_becomes_healthy_times_out_and_is_gone() {
    let hub = start(
        "models:
  - {name: alpha, model_path: models/alpha.txt, engine: quick, state: running, args: [--fail-health]}
",
    )
    .await;
    let first_pid = wait_until("alpha starting", || async {
        hub.model("alpha").await["worker"]["pid"].as_u64()
    })
    .await as u32;
    let alpha = wait_until("alpha failed", || async {
        let alpha = hub.model("alpha").await;
        alpha["error"].is_string().then_some(alpha)
    })
    .await;
    let error = alpha["error"].as_str().unwrap();
    assert!(
        error.starts_with("start failed: worker not healthy at /health after 2s (see "),
        "{error}"
    );
    assert!(!is_alive(first_pid), "the unhealthy worker was stopped");
    let report: Value = hub.status().await["last_reconcile"].clone();
    assert_eq!(report["failed"][0]["model"], "alpha");
    assert_eq!(report["failed"][0]["action"], "start");
}

#[tokio::test]
async fn idle_weights_are_unloaded_after_the_last_request_and_busy_ones_are_not_evicted() {
    let hub = start(
        "models:
  - {name: alpha, model_path: models/alpha.txt, engine: quick, state: running, group: g,
     idle_unload_after: 1500ms, args: [--request-delay, 2s]}
  - {name: beta, model_path: models/beta.txt, engine: quick, state: running, group: g}
groups:
  - {name: g, max_loaded: 1}
",
    )
    .await;
    hub.converged().await;
    let out = hub.cli(&["load-model", "alpha"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alpha = hub.model("alpha").await;
    assert_eq!(alpha["memory"]["state"], "loaded");
    assert!(alpha["memory"]["unload_at"].is_string());

    // A request that takes 2 s: while it runs, alpha cannot be evicted for beta.
    let port = alpha["worker"]["port"].as_u64().unwrap();
    let request = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
            .json(&serde_json::json!({"messages": [{"role": "user", "content": "hello"}]}))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    wait_until("hub sees alpha serving", || async {
        (hub.model("alpha").await["memory"]["in_flight"] == 1).then_some(())
    })
    .await;
    let (code, body) = hub.post("/hub/models/beta/load", "").await;
    assert_eq!(
        code, 429,
        "alpha is serving, so it must not be evicted: {body}"
    );
    let answer = request.await.unwrap();
    let text = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(text.split(' ').count(), 16, "{answer}");

    // 1.5 s after that request ended, alpha's weights go; the worker stays.
    let alpha = wait_until("alpha idle-unloaded", || async {
        let alpha = hub.model("alpha").await;
        (alpha["memory"]["state"] == "unloaded").then_some(alpha)
    })
    .await;
    assert_eq!(alpha["worker"]["phase"], "ready");
    let status = hub.status().await;
    assert_eq!(names(&status["last_reconcile"]["unloaded"]), ["alpha"]);
    assert_eq!(status["last_reconcile"]["trigger"], "timer");
}
