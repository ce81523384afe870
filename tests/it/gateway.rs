//! The gateway (SPEC section 11) against real daemons and real built-in workers: routing by
//! `model`, just-in-time starts and loads (one for many requests), streaming passthrough and
//! cancellation, idle release, groups that queue instead of thrashing, drains on a spec change,
//! OpenAI-shaped errors and inference keys.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::support::{TempHub, wait_until};

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn chat(model: &str, max_tokens: u32, stream: bool) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}],
           "max_tokens": max_tokens, "stream": stream})
}

async fn post_chat(hub: &TempHub, body: &Value) -> (u16, Value) {
    let response = client()
        .post(format!("{}/v1/chat/completions", hub.url))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The worker's own counters (`GET /stats`), through the gateway's passthrough.
async fn worker_stats(hub: &TempHub, model: &str) -> Value {
    hub.get(&format!("/upstream/{model}/stats")).await
}

/// How many times the daemon started a worker for `model` (its events).
async fn starts(hub: &TempHub, model: &str) -> usize {
    let detail = hub.get(&format!("/hub/models/{model}")).await;
    detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["message"].as_str().unwrap().starts_with("starting"))
        .count()
}

#[tokio::test]
async fn fifty_requests_for_a_cold_model_start_and_load_it_once_and_are_all_answered() {
    let hub = TempHub::start(
        "
log_path: {log_path}
model_starting_port: {starting_port}
models:
  - {name: alpha, model_path: models/alpha.txt, state: stopped, args: [--start-delay, 300ms, --load-delay, 300ms]}
",
    )
    .await;
    hub.converged().await;
    let requests = (0..50).map(|i| {
        let hub = &hub;
        async move { post_chat(hub, &chat("alpha", 2 + i % 3, false)).await }
    });
    let answers = futures_util::future::join_all(requests).await;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body:#}");
        assert_eq!(body["object"], "chat.completion", "{body:#}");
    }
    let stats = worker_stats(&hub, "alpha").await;
    assert_eq!(stats["loads"], 1, "one load for 50 requests: {stats:#}");
    assert_eq!(stats["requests"], 50, "{stats:#}");
    assert_eq!(starts(&hub, "alpha").await, 1, "one start for 50 requests");
    let model = hub.model("alpha").await;
    assert_eq!(model["worker"]["on_demand"], true, "{model:#}");
    assert_eq!(
        model["desired"], "stopped",
        "hub.yaml is not changed: {model:#}"
    );
}

#[tokio::test]
async fn streams_pass_through_as_they_come_and_a_client_that_leaves_cancels_the_worker() {
    let hub = TempHub::start(
        "
log_path: {log_path}
model_starting_port: {starting_port}
models:
  - {name: alpha, model_path: models/alpha.txt, state: loaded, args: [--token-delay, 150ms]}
",
    )
    .await;
    hub.converged().await;
    let begun = Instant::now();
    let response = client()
        .post(format!("{}/v1/chat/completions", hub.url))
        .json(&chat("alpha", 6, true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut stream = response.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    let first_at = begun.elapsed();
    assert!(String::from_utf8_lossy(&first).contains("chat.completion.chunk"));
    let mut rest = Vec::new();
    while let Some(chunk) = stream.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    let done_at = begun.elapsed();
    assert!(String::from_utf8_lossy(&rest).contains("[DONE]"));
    // Six tokens 150 ms apart: a buffering proxy would hand over everything at the end.
    assert!(
        done_at - first_at >= Duration::from_millis(600),
        "the first token came at {first_at:?}, the end at {done_at:?}: buffered"
    );

    // A long stream the client leaves after its first token.
    let response = client()
        .post(format!("{}/v1/chat/completions", hub.url))
        .json(&chat("alpha", 200, true))
        .send()
        .await
        .unwrap();
    let mut stream = response.bytes_stream();
    stream.next().await.unwrap().unwrap();
    assert_eq!(worker_stats(&hub, "alpha").await["in_flight"], 1);
    drop(stream);
    wait_until("the worker sees the client gone", || {
        let hub = &hub;
        async move { (worker_stats(hub, "alpha").await["in_flight"] == 0).then_some(()) }
    })
    .await;
    let models: Value = hub.get("/v1/models").await;
    assert_eq!(models["data"][0]["in_flight"], 0, "{models:#}");
}

#[tokio::test]
async fn a_worker_that_dies_mid_stream_ends_it_with_an_error_event() {
    let hub = TempHub::start(
        "
log_path: {log_path}
model_starting_port: {starting_port}
models:
  - {name: alpha, model_path: models/alpha.txt, state: loaded, args: [--token-delay, 100ms, --crash-after, 2s]}
",
    )
    .await;
    hub.converged().await;
    let response = client()
        .post(format!("{}/v1/chat/completions", hub.url))
        .json(&chat("alpha", 1000, true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(20), response.text())
        .await
        .expect("the stream ends when its worker dies, never hangs")
        .unwrap_or_default();
    assert!(body.contains("event: error"), "{body}");
    assert!(body.contains("upstream_disconnected"), "{body}");
    assert!(!body.contains("[DONE]"), "{body}");
}

#[tokio::test]
async fn a_model_started_for_requests_is_stopped_after_its_idle_time_and_a_pinned_one_stays() {
    let hub = TempHub::start(
        "
log_path: {log_path}
model_starting_port: {starting_port}
idle_unload_after: 1s
models:
  - {name: alpha, model_path: models/alpha.txt, state: loaded}
  - {name: beta, model_path: models/beta.txt, state: stopped}
  - {name: gamma, model_path: models/gamma.txt, state: running, idle_unload_after: 2s}
",
    )
    .await;
    hub.converged().await;
    for model in ["alpha", "beta", "gamma"] {
        let (status, body) = post_chat(&hub, &chat(model, 3, false)).await;
        assert_eq!(status, 200, "{model}: {body:#}");
    }
    assert_eq!(hub.model("beta").await["worker"]["phase"], "ready");
    assert_eq!(hub.model("gamma").await["memory"]["state"], "loaded");
    wait_until("beta's worker stops once idle", || {
        let hub = &hub;
        async move { (hub.model("beta").await["worker"]["phase"] == "stopped").then_some(()) }
    })
    .await;
    wait_until("gamma's on-demand weights unload once idle", || {
        let hub = &hub;
        async move { (hub.model("gamma").await["memory"]["state"] == "unloaded").then_some(()) }
    })
    .await;
    let gamma = hub.model("gamma").await;
    assert_eq!(
        gamma["worker"]["phase"], "ready",
        "a running model's worker stays: {gamma:#}"
    );
    let alpha = hub.model("alpha").await;
    assert_eq!(alpha["memory"]["state"], "loaded", "pinned: {alpha:#}");
    let detail = hub.get("/hub/models/beta").await;
    let reasons: Vec<&Value> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.get("reason"))
        .collect();
    assert_eq!(reasons, [&json!("idle")], "{detail:#}");
    let metrics = client()
        .get(format!("{}/metrics", hub.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "hub_gateway_requests_total{model=\"beta\",code=\"200\"} 1",
        "hub_model_unloads_total{model=\"beta\",reason=\"idle\"} 1",
        "hub_model_unloads_total{model=\"gamma\",reason=\"idle\"} 1",
        "hub_gateway_request_duration_seconds_count{model=\"alpha\"} 1",
        "hub_gateway_queue_wait_seconds_count{model=\"beta\"} 1",
        "hub_model_load_duration_seconds_count{model=\"beta\"} 1",
    ] {
        assert!(metrics.contains(line), "no {line:?} in:\n{metrics}");
    }
    // The status no longer shows the requests that ended.
    assert_eq!(hub.model("alpha").await["memory"]["in_flight"], 0);
}

#[tokio::test]
async fn the_queue_is_bounded() {
    let hub = TempHub::start(
        "
log_path: {log_path}
model_starting_port: {starting_port}
gateway: {max_queued: 2}
models:
  - {name: alpha, model_path: models/alpha.txt, state: stopped, args: [--load-delay, 1s]}
",
    )
    .await;
    hub.converged().await;
    let request = chat("alpha", 2, false);
    let answers = futures_util::future::join_all((0..5).map(|_| post_chat(&hub, &request))).await;
    let mut codes: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
    codes.sort();
    assert_eq!(codes, [200, 200, 429, 429, 429], "{answers:#?}");
    let full = answers.iter().find(|(status, _)| *status == 429).unwrap();
    assert_eq!(full.1["error"]["code"], "queue_full", "{:#}", full.1);
}

#[tokio::test]
async fn a_busy_member_is_not_evicted_the_waiting_request_queues_and_gets_the_room_after() {
    let hub = TempHub::start(
        "
log_path: {log_path}
model_starting_port: {starting_port}
models:
  - {name: alpha, model_path: models/alpha.txt, state: running, group: g, args: [--request-delay, 1500ms]}
  - {name: beta, model_path: models/beta.txt, state: running, group: g}
groups:
  - {name: g, max_loaded: 1}
",
    )
    .await;
    hub.converged().await;
    // alpha: loaded on demand and busy for 1.5 s.
    let slow = {
        let hub = &hub;
        async move { post_chat(hub, &chat("alpha", 2, false)).await }
    };
    let waiting = async {
        wait_until("alpha is loaded and serving", || {
            let hub = &hub;
            async move {
                let stats = worker_stats(hub, "alpha").await;
                (stats["in_flight"] == 1).then_some(())
            }
        })
        .await;
        let asked = Instant::now();
        let request = chat("beta", 2, false);
        let answer = post_chat(&hub, &request);
        let queued = async {
            wait_until("the status shows beta's request queued", || {
                let hub = &hub;
                async move { (hub.model("beta").await["memory"]["queued"] == 1).then_some(()) }
            })
            .await
        };
        let (answer, ()) = tokio::join!(answer, queued);
        (answer, asked.elapsed())
    };
    let ((slow_status, _), ((status, body), waited)) = tokio::join!(slow, waiting);
    assert_eq!(slow_status, 200, "alpha's request was not cut");
    assert_eq!(status, 200, "{body:#}");
    assert!(
        waited >= Duration::from_millis(500),
        "beta waited for alpha's request: {waited:?}"
    );
    let alpha = hub.get("/hub/models/alpha").await;
    let evicted = alpha["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["reason"] == "evicted");
    assert!(evicted, "{alpha:#}");
    let groups = hub.status().await["groups"].clone();
    assert_eq!(groups[0]["loaded"], json!(["beta"]), "{groups:#}");
}

#[tokio::test]
async fn errors_are_openai_shaped_404_429_503_504() {
    let hub = TempHub::start(
        "
log_path: {log_path}
model_starting_port: {starting_port}
gateway: {queue_timeout: 500ms, upstream_timeout: 500ms}
models:
  - {name: alpha, model_path: models/alpha.txt, state: loaded, group: g}
  - {name: slow, model_path: models/alpha.txt, state: loaded, args: [--request-delay, 3s]}
  - {name: beta, model_path: models/beta.txt, state: running, group: g}
  - {name: gamma, model_path: models/gamma.txt, state: stopped, on_demand: false}
  - {name: delta, model_path: models/delta.txt, state: stopped, args: [--load-delay, 3s]}
  - {name: broken, model_path: models/nothing-here.txt, state: stopped}
groups:
  - {name: g, max_loaded: 1}
",
    )
    .await;
    hub.converged().await;
    let cases = [
        ("nosuch", 404, "model_not_found"),
        ("beta", 429, "group_full"),
        ("gamma", 503, "model_unavailable"),
        ("delta", 504, "load_timeout"),
        ("slow", 504, "upstream_timeout"),
    ];
    for (model, code, kind) in cases {
        let (status, body) = post_chat(&hub, &chat(model, 2, false)).await;
        assert_eq!(status, code, "{model}: {body:#}");
        assert_eq!(body["error"]["code"], kind, "{model}: {body:#}");
        assert!(body["error"]["message"].as_str().unwrap().len() > 10);
        assert!(body["error"]["type"].is_string());
    }
    let (_, body) = post_chat(&hub, &chat("gamma", 2, false)).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("on_demand: false"),
        "{body:#}"
    );
    // A load that fails: the model backs off, and requests are told when to come back.
    let mut last = None;
    for _ in 0..2 {
        let response = client()
            .post(format!("{}/v1/chat/completions", hub.url))
            .json(&chat("broken", 2, false))
            .send()
            .await
            .unwrap();
        last = Some((
            response.status().as_u16(),
            response.headers().get("retry-after").cloned(),
            response.json::<Value>().await.unwrap(),
        ));
    }
    let (status, retry_after, body) = last.unwrap();
    assert_eq!(status, 503, "{body:#}");
    assert_eq!(body["error"]["code"], "model_unavailable", "{body:#}");
    assert!(retry_after.is_some(), "{body:#}");
}

#[tokio::test]
async fn request_bodies_are_bounded_and_must_name_a_model() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hub = TempHub::start(
        "
log_path: {log_path}
model_starting_port: {starting_port}
models:
  - {name: alpha, model_path: models/alpha.txt, state: loaded}
",
    )
    .await;
    hub.converged().await;
    let address = hub.url.strip_prefix("http://").unwrap().to_string();
    let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        64 << 20
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("request_too_large"), "{answer}");

    let (status, body) = post_chat(&hub, &json!({"messages": []})).await;
    assert_eq!(status, 400, "{body:#}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn inference_keys_open_the_gateway_and_nothing_else() {
    let token = "management-token-0123456789";
    let hub = TempHub::start_with_env(
        "
log_path: {log_path}
model_starting_port: {starting_port}
models:
  - {name: alpha, model_path: models/alpha.txt, state: loaded}
",
        &[],
        &[("HUB_API_KEYS", "key-one,key-two"), ("HUB_TOKEN", token)],
    )
    .await;
    hub.converged().await;
    let url = format!("{}/v1/chat/completions", hub.url);
    let ask = |key: Option<&str>| {
        let mut request = client().post(&url).json(&chat("alpha", 2, false));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    for key in [None, Some("wrong-key")] {
        let (status, body) = ask(key).await;
        assert_eq!(status, 401, "{key:?}: {body:#}");
        assert_eq!(body["error"]["code"], "invalid_api_key");
    }
    for key in ["key-one", "key-two", token] {
        assert_eq!(ask(Some(key)).await.0, 200, "{key}");
    }
    let models = client()
        .get(format!("{}/v1/models", hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 401, "listing models needs a key too");
    // An inference key is no management token.
    let reload = client()
        .post(format!("{}/hub/reload", hub.url))
        .header("X-Hub-Client", "test")
        .bearer_auth("key-one")
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 401);
    // A web page of another site cannot use the gateway, even with a key it learned.
    let foreign = client()
        .post(&url)
        .header("Origin", "http://evil.example")
        .bearer_auth("key-one")
        .json(&chat("alpha", 2, false))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    let body: Value = foreign.json().await.unwrap();
    assert_eq!(body["error"]["type"], "permission_error", "{body:#}");
    assert!(!hub.stderr().contains("key-one"), "a key was logged");
}

#[tokio::test]
async fn a_spec_change_drains_requests_in_flight_and_new_ones_wait_for_the_new_worker() {
    const BEFORE: &str = "
log_path: {log_path}
model_starting_port: {starting_port}
models:
  - {name: alpha, model_path: models/alpha.txt, state: loaded, args: [--request-delay, 1s]}
";
    let hub = TempHub::start(BEFORE).await;
    hub.converged().await;
    let old_pid = hub.model("alpha").await["worker"]["pid"].clone();
    let first_request = chat("alpha", 2, false);
    let in_flight = post_chat(&hub, &first_request);
    let change_and_ask = async {
        wait_until("alpha serves the first request", || {
            let hub = &hub;
            async move { (worker_stats(hub, "alpha").await["in_flight"] == 1).then_some(()) }
        })
        .await;
        hub.save_config(&BEFORE.replace("1s]", "1s], env: {CHANGED: \"1\"}"));
        wait_until(
            "the restart is planned and alpha stops taking requests",
            || {
                let hub = &hub;
                async move {
                    let models: Value = client()
                        .get(format!("{}/v1/models", hub.url))
                        .send()
                        .await
                        .ok()?
                        .json()
                        .await
                        .ok()?;
                    (models["data"][0]["ready"] == false).then_some(())
                }
            },
        )
        .await;
        post_chat(&hub, &chat("alpha", 2, false)).await
    };
    let ((first, body), (second, second_body)) = tokio::join!(in_flight, change_and_ask);
    assert_eq!(first, 200, "the request in flight finished: {body:#}");
    assert_eq!(
        second, 200,
        "the request during the drain waited: {second_body:#}"
    );
    let model = hub.model("alpha").await;
    assert_ne!(model["worker"]["pid"], old_pid, "restarted: {model:#}");
    assert_eq!(model["worker"]["restarts"], 1, "{model:#}");
    let detail = hub.get("/hub/models/alpha").await;
    assert!(
        detail["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "spec_changed"),
        "{detail:#}"
    );
}

#[tokio::test]
async fn the_gateway_lists_every_model_and_passes_other_paths_to_one_worker() {
    let hub = TempHub::start(
        "
log_path: {log_path}
model_starting_port: {starting_port}
models:
  - {name: alpha, model_path: models/alpha.txt, state: loaded, model_type: lm}
  - {name: beta, model_path: models/beta.txt, state: stopped}
",
    )
    .await;
    hub.converged().await;
    let models: Value = hub.get("/v1/models").await;
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["alpha", "beta"]);
    assert_eq!(models["data"][0]["ready"], true);
    assert_eq!(models["data"][1]["ready"], false);
    assert_eq!(models["data"][1]["phase"], "stopped");
    let stats = worker_stats(&hub, "alpha").await;
    assert_eq!(stats["loaded"], true, "{stats:#}");
    // Any depth of path reaches the worker.
    let listed: Value = hub.get("/upstream/alpha/v1/models").await;
    assert_eq!(listed["data"][0]["id"], "alpha", "{listed:#}");
    let embeddings: Value = client()
        .post(format!("{}/v1/embeddings", hub.url))
        .json(&json!({"model": "alpha", "input": "hello"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(embeddings["object"], "list", "{embeddings:#}");
}
