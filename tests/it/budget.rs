//! Memory budgets end to end (SPEC section 12): real built-in workers load files of known sizes
//! into a group whose budget holds two of them but not three, and requests through the gateway
//! make the third evict by bytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{TempHub, proc_status_kib, wait_until};

const MIB: u64 = 1 << 20;
/// Each model's weights: large beside the built-in worker's own few MiB, so its measured
/// footprint is mostly the file.
const WEIGHTS: u64 = 160 * MIB;
/// Holds two loaded workers (and a third without weights), never three loaded ones.
const BUDGET: u64 = 400 * MIB;

const HUB: &str = "
log_path: {log_path}
model_starting_port: {starting_port}
groups:
  - {name: g, memory: 400MiB}
models:
  - {name: alpha, model_path: models/big-alpha.bin, state: running, group: g}
  - {name: beta, model_path: models/big-beta.bin, state: running, group: g}
  - {name: gamma, model_path: models/big-gamma.bin, state: running, group: g}
";

/// Resident bytes of a process, read from `/proc` by the test's harness, not through hub.
fn rss(pid: u64) -> u64 {
    proc_status_kib(pid as u32, "VmRSS").map_or(0, |kib| kib * 1024)
}

async fn chat(hub: &TempHub, model: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", hub.url))
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn group(status: &Value) -> Value {
    status["groups"][0].clone()
}

#[tokio::test]
async fn a_third_model_evicts_by_bytes_and_the_group_never_holds_more_than_its_budget() {
    let hub = TempHub::start(HUB).await;
    for name in ["alpha", "beta", "gamma"] {
        // Not zeros: every page is really written when the worker reads it.
        let chunk: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();
        let bytes = chunk.repeat((WEIGHTS / MIB) as usize);
        std::fs::write(hub.dir.path().join(format!("models/big-{name}.bin")), bytes).unwrap();
    }
    let status = hub.converged().await;
    assert_eq!(group(&status)["memory_budget"], BUDGET);
    assert_eq!(group(&status)["memory_used"], 0);

    // A sampler, independent of hub: the resident memory of the group's workers together, and
    // what the status says the group uses, every 20 ms while the test runs.
    let pids: Vec<u64> = status["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["worker"]["pid"].as_u64().unwrap())
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        let url = hub.url.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let (mut max_rss, mut max_used, mut samples) = (0u64, 0u64, 0u32);
            while !done.load(Ordering::Relaxed) {
                max_rss = max_rss.max(pids.iter().map(|pid| rss(*pid)).sum());
                if let Ok(response) = client.get(format!("{url}/hub/status")).send().await
                    && let Ok(status) = response.json::<Value>().await
                {
                    let used = group(&status)["memory_used"].as_u64().unwrap_or(0);
                    max_used = max_used.max(used);
                }
                samples += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (max_rss, max_used, samples)
        })
    };

    for name in ["alpha", "beta"] {
        let (code, body) = chat(&hub, name).await;
        assert_eq!(code, 200, "{name}: {body:#}");
    }
    let status = hub.status().await;
    assert_eq!(group(&status)["loaded"], json!(["alpha", "beta"]));
    // gamma: alpha is the least recently used, and only its bytes make room.
    let (code, body) = chat(&hub, "gamma").await;
    assert_eq!(code, 200, "{body:#}");
    let status = wait_until("gamma loaded and alpha released", || {
        let hub = &hub;
        async move {
            let status = hub.status().await;
            (group(&status)["loaded"] == json!(["beta", "gamma"])).then_some(status)
        }
    })
    .await;
    done.store(true, Ordering::Relaxed);
    let (max_rss, max_used, samples) = sampler.await.unwrap();

    let alpha = hub.get("/hub/models/alpha").await;
    let reasons: Vec<&str> = alpha["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert_eq!(reasons, ["memory"], "evicted for bytes: {alpha:#}");

    for model in status["models"].as_array().unwrap() {
        let name = model["name"].as_str().unwrap();
        let measured = model["memory"]["measured_bytes"].as_u64().unwrap();
        let ratio = measured as f64 / WEIGHTS as f64;
        eprintln!("{name}: measured {measured} bytes for {WEIGHTS} bytes of weights ({ratio:.3}x)");
        assert!(
            (0.8..=1.2).contains(&ratio),
            "{name} measured {measured} bytes, not within 20% of {WEIGHTS}"
        );
        assert_eq!(model["memory"]["bytes_source"], "rss", "{model:#}");
    }
    let used = group(&status)["memory_used"].as_u64().unwrap();
    assert!(used <= BUDGET, "{used} > {BUDGET}");
    eprintln!(
        "{samples} samples: the workers' resident memory peaked at {max_rss} bytes, the status' memory_used at {max_used}; budget {BUDGET}"
    );
    assert!(samples > 10, "the sampler ran: {samples}");
    assert!(max_used <= BUDGET, "status said {max_used} > {BUDGET}");
    assert!(
        max_rss <= BUDGET,
        "the group's workers held {max_rss} bytes at once, more than the budget of {BUDGET}"
    );
    assert!(
        max_rss >= 2 * WEIGHTS,
        "the sampler saw two models loaded: {max_rss}"
    );
}

/// The built-in worker, declared as an engine that reports its own memory: `/stats`'
/// `weights_bytes`, the exact size of the weights it holds.
const REPORTING: &str = "
log_path: {log_path}
model_starting_port: {starting_port}
engines:
  reporting:
    command: ['{hub}', worker, --name, '{name}', --model-path, '{model_path}', --host, '{host}', --port, '{port}']
    load: {path: /load}
    unload: {path: /unload}
    memory: {path: /stats, pointer: /weights_bytes}
models:
  - {name: alpha, model_path: models/m-alpha.bin, state: loaded, engine: reporting}
  - {name: beta, model_path: models/m-beta.bin, state: loaded, memory: 1GiB}
";

#[tokio::test]
async fn an_engine_report_wins_and_footprints_survive_unloads_and_a_daemon_restart() {
    let mut hub = TempHub::start(REPORTING).await;
    for name in ["alpha", "beta"] {
        let bytes: Vec<u8> = (0..8 * MIB).map(|i| (i % 241) as u8).collect();
        std::fs::write(hub.dir.path().join(format!("models/m-{name}.bin")), bytes).unwrap();
    }
    hub.post("/hub/reload", "").await;
    let measured = |status: &Value, name: &str| {
        let model = status["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap()
            .clone();
        model["memory"].clone()
    };
    let status = wait_until("both loaded and measured", || {
        let hub = &hub;
        async move {
            let status = hub.status().await;
            let both = ["alpha", "beta"].iter().all(|name| {
                let memory = measured(&status, name);
                memory["state"] == "loaded" && memory["measured_bytes"].is_u64()
            });
            both.then_some(status)
        }
    })
    .await;
    // alpha's engine says exactly what its weights take.
    let alpha = measured(&status, "alpha");
    assert_eq!(alpha["bytes"], 8 * MIB, "{alpha:#}");
    assert_eq!(alpha["bytes_source"], "engine", "{alpha:#}");
    // beta is measured from /proc, below its 1 GiB estimate, which is what counts.
    let beta = measured(&status, "beta");
    assert_eq!(beta["bytes"], 1u64 << 30, "{beta:#}");
    assert_eq!(beta["bytes_source"], "declared", "{beta:#}");
    let rss = beta["measured_bytes"].as_u64().unwrap();
    assert!(rss > 8 * MIB && rss < 200 * MIB, "{beta:#}");
    // The measurement is an event, with its figure.
    let events = hub.get("/hub/models/alpha").await["events"].clone();
    let event = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["bytes"].is_u64())
        .unwrap_or_else(|| panic!("no measurement event: {events:#}"));
    assert_eq!(event["kind"], "memory");
    assert_eq!(event["bytes_source"], "engine");
    assert_eq!(event["message"], "measured 8 MiB (engine)");
    let metrics = reqwest::get(format!("{}/metrics", hub.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "hub_model_memory_bytes{{model=\"alpha\",source=\"engine\"}} {}",
            8 * MIB
        )),
        "{metrics}"
    );

    // Stopped, alpha keeps what it measured; and so does a new daemon.
    hub.save_config(&REPORTING.replace(
        "state: loaded, engine: reporting",
        "state: stopped, engine: reporting",
    ));
    wait_until("alpha stopped", || {
        let hub = &hub;
        async move { (hub.model("alpha").await["worker"]["phase"] == "stopped").then_some(()) }
    })
    .await;
    assert_eq!(
        hub.model("alpha").await["memory"]["measured_bytes"],
        8 * MIB
    );
    hub.shutdown().await;
    let hub = hub.restart().await;
    hub.converged().await;
    let alpha = hub.model("alpha").await;
    assert_eq!(alpha["memory"]["measured_bytes"], 8 * MIB, "{alpha:#}");
    assert_eq!(alpha["memory"]["bytes_source"], "engine", "{alpha:#}");
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(hub.dir.path().join("logs/state.json")).unwrap(),
    )
    .unwrap();
    assert!(
        state["footprints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["model"] == "alpha" && f["bytes"] == 8 * MIB && f["source"] == "engine"),
        "{state:#}"
    );
}

const DECLARED: &str = "
log_path: {log_path}
model_starting_port: {starting_port}
groups:
  - {name: g, memory: 100MiB}
models:
  - {name: alpha, model_path: models/alpha.txt, state: loaded, group: g, memory: 60MiB}
  - {name: beta, model_path: models/beta.txt, state: running, group: g, memory: 30MiB}
  - {name: gamma, model_path: models/gamma.txt, state: running, group: g, memory: 40MiB}
  - {name: delta, model_path: models/delta.txt, state: running, group: g, memory: 50MiB}
";

#[tokio::test]
async fn diff_and_apply_show_a_loads_bytes_and_evictions_and_a_load_that_never_fits_is_refused() {
    let hub = TempHub::start(DECLARED).await;
    hub.converged().await;
    // delta's 50 MiB never fit beside alpha's pinned 60 MiB in 100 MiB: refused at once.
    let (code, body) = chat(&hub, "delta").await;
    assert_eq!(code, 429, "{body:#}");
    assert_eq!(body["error"]["code"], "group_full", "{body:#}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("memory 100 MiB"),
        "{body:#}"
    );
    // beta loads for a request: 60 + 30 MiB.
    let (code, body) = chat(&hub, "beta").await;
    assert_eq!(code, 200, "{body:#}");

    let edited =
        hub.render(&DECLARED.replace("gamma.txt, state: running", "gamma.txt, state: loaded"));
    std::fs::write(hub.dir.path().join("edited.yaml"), edited).unwrap();
    let out = hub.cli(&["diff", "-f", "edited.yaml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("  ↓ beta  unload (memory: evicted to fit its group's budget)\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  ↑ gamma  load (+40 MiB, evicts beta)\n"),
        "{stdout}"
    );
    let out = hub.cli(&["diff", "-f", "edited.yaml", "-o", "json"]);
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let gamma = plan["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "gamma")
        .unwrap();
    assert_eq!(gamma["bytes"], 40 * MIB, "{plan:#}");
    assert_eq!(gamma["evicts"], json!(["beta"]), "{plan:#}");
    let out = hub.cli(&["apply", "-f", "edited.yaml", "--dry-run"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("model/gamma loaded (+40 MiB, evicts beta) (dry run)\n"),
        "{stdout}"
    );
    let out = hub.cli(&["apply", "-f", "edited.yaml", "--wait"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("model/gamma loaded (+40 MiB, evicts beta)\n"),
        "{stdout}"
    );
    let status = hub.status().await;
    assert_eq!(group(&status)["loaded"], json!(["alpha", "gamma"]));
    assert_eq!(group(&status)["memory_used"], 100 * MIB);
}
