//! The HTTP API against a running daemon: one error envelope with the right codes everywhere
//! (axum's own rejections included), model detail with events, logs, the event stream, metrics,
//! the dashboard, the OpenAPI document, and the token.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

use crate::cli::Spawned;
use crate::support::{QUICK_ENGINE, TempHub, hub_bin, names, wait_until};

const HUB: &str = "
log_path: {log_path}
model_starting_port: {starting_port}
models:
  - {name: alpha, model_path: models/alpha.txt, state: loaded, group: tier_one}
  - {name: beta, model_path: models/beta.txt, state: running, group: tier_one}
  - {name: gamma, model_path: models/gamma.txt, state: stopped}
groups:
  - {name: tier_one, max_loaded: 1}
";

/// A client as a script would be: it says what it is, so the daemon knows no web form sent its
/// writes (`security.rs` tests the requests that do not).
fn http() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(hub::api::CLIENT_HEADER, "test".parse().unwrap());
    reqwest::Client::builder()
        .no_proxy()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// Sends a request and checks that the answer is the error envelope with `code` and `kind`.
async fn expect_error(request: reqwest::RequestBuilder, code: u16, kind: &str) -> Value {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, code, "{body:#}");
    assert_eq!(
        content_type.as_deref(),
        Some("application/json"),
        "{body:#}"
    );
    assert_eq!(body["error"]["code"], code, "{body:#}");
    assert_eq!(body["error"]["type"], kind, "{body:#}");
    assert!(
        !body["error"]["message"].as_str().unwrap().is_empty(),
        "{body:#}"
    );
    body
}

#[tokio::test]
async fn every_error_is_the_envelope_with_the_right_code() {
    let hub = TempHub::start(HUB).await;
    hub.converged().await;
    let http = http();
    let url = |path: &str| format!("{}{path}", hub.url);

    // axum's own answers: unknown route, wrong method, body over the limit, bad query.
    expect_error(http.get(url("/nope")), 404, "not_found").await;
    let body = expect_error(http.get(url("/hub/apply")), 405, "method_not_allowed").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("method")
    );
    // The server answers from the length alone, before any body, and drops the connection: a
    // raw socket of its own sends just the head.
    let (status, body) = oversized(&hub.url, "/hub/plan").await;
    assert_eq!(status, 413, "{body:#}");
    assert_eq!(body["error"]["type"], "payload_too_large", "{body:#}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("4194304")
    );
    expect_error(
        http.post(url("/hub/plan?reset_overrides=maybe"))
            .body("models: []"),
        400,
        "bad_request",
    )
    .await;

    // Model names: unknown, or not a name at all (never used as a path).
    expect_error(http.get(url("/hub/models/nope")), 404, "not_found").await;
    expect_error(
        http.get(url("/hub/models/..%2F..%2Fetc%2Fpasswd/logs")),
        404,
        "not_found",
    )
    .await;
    expect_error(http.post(url("/hub/models/nope/start")), 404, "not_found").await;
    expect_error(
        http.post(url("/hub/models/alpha/explode")),
        404,
        "not_found",
    )
    .await;
    expect_error(
        http.get(url("/hub/models/alpha/logs?tail=10001")),
        400,
        "bad_request",
    )
    .await;

    // 422 with every problem, 409 on a stale generation, 429 when the group is full.
    let body = expect_error(
        http.post(url("/hub/apply"))
            .body("models:\n  - name: alpha\n    model_path: a.txt\n    state: sleeping\n"),
        422,
        "invalid_config",
    )
    .await;
    let problem = &body["error"]["errors"][0];
    assert_eq!(problem["path"], "models[0].state", "{body:#}");
    assert_eq!(problem["line"], 4, "{body:#}");
    let config = std::fs::read_to_string(hub.config()).unwrap();
    expect_error(
        http.post(url("/hub/apply?expect_generation=99"))
            .body(config),
        409,
        "conflict",
    )
    .await;
    expect_error(http.post(url("/hub/models/beta/load")), 429, "group_full").await;
    assert_eq!(hub.status().await["generation"], 1, "nothing was applied");
}

#[tokio::test]
async fn a_write_after_the_loop_has_ended_is_503() {
    // A worker that ignores SIGTERM keeps the shutdown busy for its stop timeout.
    let hub = TempHub::start(
        r#"
log_path: {log_path}
model_starting_port: {starting_port}
engines:
  stubborn:
    command: ["{hub}", worker, --name, "{name}", --model-path, "{model_path}", --host, "{host}", --port, "{port}", --ignore-sigterm]
    stop_timeout: 2s
models:
  - {name: alpha, model_path: models/alpha.txt, state: running, engine: stubborn}
"#,
    )
    .await;
    hub.converged().await;
    let (code, _) = hub.post("/hub/shutdown", "").await;
    assert_eq!(code, 202);
    let config = std::fs::read_to_string(hub.config()).unwrap();
    expect_error(
        http().post(format!("{}/hub/apply", hub.url)).body(config),
        503,
        "unavailable",
    )
    .await;
}

#[tokio::test]
async fn a_model_shows_its_status_and_recent_events() {
    let hub = TempHub::start(HUB).await;
    hub.converged().await;
    let alpha = hub.get("/hub/models/alpha").await;
    assert_eq!(alpha["name"], "alpha");
    assert_eq!(alpha["worker"]["phase"], "ready");
    let events = alpha["events"].as_array().unwrap();
    let messages: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["message"].as_str().unwrap()))
        .collect();
    assert!(messages.contains(&("phase", "ready")), "{messages:?}");
    assert!(messages.contains(&("memory", "loaded")), "{messages:?}");
    assert!(events.iter().all(|e| e["model"] == "alpha"));

    // Only the last 20 are kept.
    for _ in 0..6 {
        hub.post("/hub/models/gamma/start", "").await;
        wait_until("gamma ready", || async {
            (hub.model("gamma").await["worker"]["phase"] == "ready").then_some(())
        })
        .await;
        hub.post("/hub/models/gamma/stop", "").await;
        wait_until("gamma stopped", || async {
            (hub.model("gamma").await["worker"]["phase"] == "stopped").then_some(())
        })
        .await;
    }
    let gamma = hub.get("/hub/models/gamma").await;
    assert_eq!(gamma["events"].as_array().unwrap().len(), 20, "{gamma:#}");
}

#[tokio::test]
async fn logs_give_the_last_lines_then_what_was_appended() {
    let hub = TempHub::start(HUB).await;
    hub.converged().await;
    let http = http();
    let response = http
        .get(format!("{}/hub/models/alpha/logs?tail=1", hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let offset: u64 = response.headers()["x-log-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let text = response.text().await.unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("worker alpha: listening on"), "{text}");

    // A restart appends to the same log; `since` returns exactly that.
    let out = hub.cli(&["stop-model", "alpha"]);
    assert!(out.status.success(), "{out:?}");
    let out = hub.cli(&["start-model", "alpha"]);
    assert!(out.status.success(), "{out:?}");
    let appended = wait_until("alpha's log grew twice", || async {
        let text = http
            .get(format!("{}/hub/models/alpha/logs?since={offset}", hub.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        (text.matches("listening on").count() == 1).then_some(text)
    })
    .await;
    // Only what came after the offset: the stop, then the new start.
    assert!(appended.starts_with("worker: SIGTERM"), "{appended}");

    // A model without a log yet has an empty one.
    let response = http
        .get(format!("{}/hub/models/gamma/logs", hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "");
}

#[tokio::test]
async fn the_event_stream_carries_state_changes_and_reconcile_reports() {
    let hub = TempHub::start(HUB).await;
    hub.converged().await;
    let response = http()
        .get(format!("{}/hub/events", hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let received = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = received.clone();
    let reader = tokio::spawn(async move {
        let mut stream = response.bytes_stream();
        while let Some(Ok(chunk)) = stream.next().await {
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk));
        }
    });

    let out = hub.cli(&["start-model", "gamma"]);
    assert!(out.status.success(), "{out:?}");
    let text = wait_until("gamma's events and the report", || async {
        let text = received.lock().unwrap().clone();
        (text.contains("event: reconcile") && text.contains("\"started\":[\"gamma\"]"))
            .then_some(text)
    })
    .await;
    reader.abort();
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let gamma: Vec<&str> = events
        .iter()
        .filter(|e| e["model"] == "gamma")
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(gamma.iter().any(|m| m.starts_with("starting")), "{gamma:?}");
    assert!(gamma.contains(&"ready"), "{gamma:?}");
    let report = events.iter().find(|e| e["kind"] == "reconcile").unwrap();
    assert_eq!(report["report"]["started"], serde_json::json!(["gamma"]));
}

/// A rejected edit and then the file in force saved again: no new config, but an event says the
/// rejection is gone (the dashboard's banner waits for events, not polls).
#[tokio::test]
async fn the_event_stream_says_when_a_rejected_edit_is_gone() {
    let hub = TempHub::start(HUB).await;
    hub.converged().await;
    let response = http()
        .get(format!("{}/hub/events", hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let received = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = received.clone();
    let reader = tokio::spawn(async move {
        let mut stream = response.bytes_stream();
        while let Some(Ok(chunk)) = stream.next().await {
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk));
        }
    });
    let good = std::fs::read_to_string(hub.config()).unwrap();
    hub.save_config(&HUB.replace("state: stopped", "state: sleeping"));
    wait_until("the rejection's event", || async {
        received
            .lock()
            .unwrap()
            .contains("rejected an edit")
            .then_some(())
    })
    .await;
    // The file in force, byte for byte (rendered text renders to itself).
    hub.save_config(&good);
    wait_until("the event that it is gone", || async {
        received
            .lock()
            .unwrap()
            .contains("is valid again")
            .then_some(())
    })
    .await;
    reader.abort();
    let status = hub.status().await;
    assert!(status["config"]["rejected"].is_null(), "{status:#}");
    assert_eq!(status["generation"], 1, "nothing new was applied");
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let hub = TempHub::start(HUB).await;
    hub.converged().await;
    let response = http()
        .get(format!("{}/metrics", hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    let mut helped = std::collections::BTreeSet::new();
    let mut typed = std::collections::BTreeSet::new();
    let mut samples = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.insert(rest.split(' ').next().unwrap().to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                ["counter", "gauge", "summary", "histogram"].contains(&kind),
                "{line}"
            );
            typed.insert(name.to_string());
        } else {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
            value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("bad value in {line}"));
            let name = series.split('{').next().unwrap();
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{line}"
            );
            let family = name
                .strip_suffix("_sum")
                .or_else(|| name.strip_suffix("_count"))
                .or_else(|| name.strip_suffix("_bucket"))
                .filter(|f| typed.contains(*f))
                .unwrap_or(name);
            assert!(
                typed.contains(family) && helped.contains(family),
                "{line} has no HELP/TYPE"
            );
            samples.insert(series.to_string(), value.parse::<f64>().unwrap());
        }
    }
    for family in [
        "hub_reconciles_total",
        "hub_reconcile_duration_seconds",
        "hub_actions_total",
        "hub_models",
        "hub_models_memory",
        "hub_worker_restarts_total",
        "hub_config_applied_total",
        "hub_config_rejected_total",
        "hub_worker_crashes_total",
        "hub_health_failures_total",
    ] {
        assert!(typed.contains(family), "{family} missing:\n{text}");
    }
    assert_eq!(samples["hub_models{phase=\"ready\"}"], 2.0, "{text}");
    assert_eq!(samples["hub_models{phase=\"stopped\"}"], 1.0, "{text}");
    assert_eq!(
        samples["hub_models_memory{state=\"loaded\"}"], 1.0,
        "{text}"
    );
    assert_eq!(
        samples["hub_actions_total{action=\"start\",result=\"ok\"}"], 2.0,
        "{text}"
    );
    assert_eq!(samples["hub_worker_restarts_total{model=\"alpha\"}"], 0.0);
    assert!(samples["hub_reconciles_total"] >= 1.0);
}

#[tokio::test]
async fn the_dashboard_is_self_contained_and_can_be_turned_off() {
    let hub = TempHub::start(HUB).await;
    hub.converged().await;
    let response = http().get(format!("{}/hub", hub.url)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    let page = response.text().await.unwrap();
    assert!(page.contains("/hub/events"), "it follows the event stream");
    assert!(page.contains("/hub/status"), "it reads the status");
    for external in ["http://", "https://", "src=", "href=", "@import"] {
        assert!(!page.contains(external), "external asset: {external}");
    }

    hub.save_config(&format!("enable_status_page: false\n{HUB}"));
    wait_until("the page is off", || async {
        let response = http().get(format!("{}/hub", hub.url)).send().await.unwrap();
        (response.status() == 404).then_some(())
    })
    .await;
    expect_error(http().get(format!("{}/hub", hub.url)), 404, "not_found").await;
}

#[tokio::test]
async fn the_served_openapi_document_is_the_committed_one() {
    let hub = TempHub::start(HUB).await;
    let served = hub.get("/openapi.json").await;
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(served, committed);
}

#[tokio::test]
async fn with_a_token_every_write_needs_it_and_reads_do_not() {
    let token = "s3cret-token-0123456789";
    let hub = TempHub::start_with_env(HUB, &[], &[("HUB_TOKEN", token)]).await;
    hub.converged().await;
    let http = http();

    // Every write in the OpenAPI document refuses a missing or wrong token.
    let doc: Value = serde_json::from_str(&hub::api::openapi_json()).unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        if item.get("post").is_none() {
            continue;
        }
        let path = path
            .replace("{name}", "alpha")
            .replace("{verb}", "stop")
            .replace("{model}", "alpha")
            .replace("{*path}", "stats");
        let url = format!("{}{path}", hub.url);
        if path.starts_with("/v1/") || path.starts_with("/upstream/") {
            // The gateway takes the token as a key too, and answers in the OpenAI shape.
            for request in [http.post(&url), http.post(&url).bearer_auth("wrong")] {
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), 401, "{path}");
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"]["code"], "invalid_api_key", "{path}: {body:#}");
            }
            continue;
        }
        expect_error(http.post(&url), 401, "unauthorized").await;
        expect_error(http.post(&url).bearer_auth("wrong"), 401, "unauthorized").await;
    }
    assert_eq!(hub.model("alpha").await["worker"]["phase"], "ready");
    let response = http
        .post(format!("{}/hub/reload", hub.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let response = http
        .get(format!("{}/hub/status", hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // The CLI sends HUB_TOKEN.
    let out = hub.cli_with_env(&["reload"], &[("HUB_TOKEN", token)]);
    assert!(out.status.success(), "{out:?}");
    let out = hub.cli_with_env(&["reload"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HUB_TOKEN"), "{stderr}");
}

#[tokio::test]
async fn serve_refuses_a_non_loopback_address_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hub.yaml"), "log_path: logs\nmodels: []\n").unwrap();
    let mut command = std::process::Command::new(hub_bin());
    command
        .args([
            "serve", "-f", "hub.yaml", "--host", "0.0.0.0", "--port", "0",
        ])
        .env_remove("HUB_TOKEN")
        .current_dir(dir.path());
    let mut serve = Spawned::new(command);
    let status = wait_until("hub serve exits", || {
        let exited = serve.child.try_wait().unwrap();
        async move { exited }
    })
    .await;
    assert!(!status.success());
    let stderr = serve.stderr();
    assert!(
        stderr.contains("refusing to serve the API on non-loopback address 0.0.0.0"),
        "{stderr}"
    );
}

fn parse_time(value: &Value) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(
        value.as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

#[tokio::test]
async fn an_apply_stays_until_the_file_changes_and_reload_returns_to_the_file() {
    let hub = TempHub::start(HUB).await;
    hub.converged().await;
    std::fs::write(
        hub.dir.path().join("other.yaml"),
        hub.render(&HUB.replace("state: stopped", "state: running")),
    )
    .unwrap();
    let out = hub.cli(&["apply", "-f", "other.yaml", "--wait"]);
    assert!(out.status.success(), "{out:?}");
    let applied = hub.status().await;
    assert_eq!(applied["generation"], 2);
    assert_eq!(applied["config"]["source"], "api");

    // Two resyncs later (the test daemons resync every 2 s; a resync pass publishes a status),
    // the file has been re-read twice and the apply still stands.
    let after = parse_time(&applied["timestamp"]) + time::Duration::seconds(5);
    let status = wait_until("two resyncs", || async {
        let status = hub.status().await;
        (parse_time(&status["timestamp"]) >= after).then_some(status)
    })
    .await;
    assert_eq!(status["generation"], 2, "{status:#}");
    assert_eq!(status["config"]["source"], "api");
    assert_eq!(hub.model("gamma").await["worker"]["phase"], "ready");

    // `hub reload` makes the watched file the desired state again.
    let out = hub.cli(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    let status = wait_until("back to the file", || async {
        let status = hub.status().await;
        (status["observed_generation"] == 3 && status["summary"] == "converged").then_some(status)
    })
    .await;
    assert_eq!(status["config"]["source"], "file");
    assert_eq!(names(&status["last_reconcile"]["stopped"]), ["gamma"]);
}

/// Every status an operation answers is in its OpenAPI description: each operation is sent a
/// malformed query string, a body that is not UTF-8, one over the size limit, an unknown model,
/// and then a plain request; every answer's status must be one the document lists for it.
#[tokio::test]
async fn every_status_an_operation_answers_is_documented() {
    let hub = TempHub::start(
        "log_path: {log_path}
model_starting_port: {starting_port}
models:
  - {name: alpha, model_path: models/alpha.txt, state: running}
",
    )
    .await;
    hub.converged().await;
    let doc: Value = hub.get("/openapi.json").await;
    let client = http();
    let mut checked = 0;
    // Shutdown last: its plain request ends the daemon.
    let mut operations: Vec<(String, String, Value)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        // The gateway's answers are mostly its workers' own; tests/it/gateway.rs checks its own.
        if path.starts_with("/v1/") || path.starts_with("/upstream/") {
            continue;
        }
        for (method, operation) in item.as_object().unwrap() {
            operations.push((path.clone(), method.clone(), operation.clone()));
        }
    }
    operations.sort_by_key(|(path, _, _)| path == "/hub/shutdown");
    for (path, method, operation) in operations {
        let documented: Vec<u16> = operation["responses"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.parse().unwrap())
            .collect();
        let concrete = |model: &str| path.replace("{name}", model).replace("{verb}", "stop");
        let mut requests: Vec<(String, Vec<u8>)> = vec![(
            format!(
                "{}?tail=x&since=x&reset_overrides=null&expect_generation=x&keep_workers=x&follow=x&model=x",
                concrete("alpha")
            ),
            Vec::new(),
        )];
        if path.contains("{name}") {
            requests.push((concrete("nosuch"), Vec::new()));
        }
        if operation["requestBody"].is_object() {
            requests.push((concrete("alpha"), vec![0xff, 0xfe, b'\n']));
            // Over the limit: the server answers from the length alone and drops the
            // connection, so this one goes over a raw socket that sends no body.
            let (status, _) = oversized(&hub.url, &concrete("alpha")).await;
            assert!(
                documented.contains(&status),
                "{method} {path} with an oversized body answered {status}, not among {documented:?}"
            );
        }
        requests.push((concrete("alpha"), Vec::new()));
        for (target, body) in requests {
            let url = format!("{}{target}", hub.url);
            let request = match method.as_str() {
                "get" => client.get(&url),
                "post" => client.post(&url).header("X-Hub-Client", "test").body(body),
                other => panic!("unexpected method {other} at {path}"),
            };
            let status = tokio::time::timeout(Duration::from_secs(10), request.send())
                .await
                .unwrap_or_else(|_| panic!("{method} {target}: no answer"))
                .unwrap()
                .status()
                .as_u16();
            assert!(
                documented.contains(&status),
                "{method} {target} answered {status}, not among {documented:?}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 30, "{checked} requests");
}

/// The status and body a POST with a `Content-Length` over the limit gets, its body never sent.
async fn oversized(base: &str, path: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = base.strip_prefix("http://").unwrap();
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nX-Hub-Client: test\r\nContent-Length: {}\r\n\r\n",
        5 * 1024 * 1024
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer))
        .await
        .unwrap_or_else(|_| panic!("POST {path} with an oversized length: no answer"))
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(Value::Null);
    (status, body)
}

/// `GET /ready`'s status code and body.
async fn ready(hub: &TempHub) -> (u16, Value) {
    let response = http()
        .get(format!("{}/ready", hub.url))
        .send()
        .await
        .unwrap();
    let code = response.status().as_u16();
    (code, response.json().await.unwrap())
}

#[tokio::test]
async fn ready_once_converged_since_the_start_and_then_through_failures_and_rejected_edits() {
    let broken = "models:
  - {name: alpha, model_path: models/alpha.txt, engine: quick, state: running, args: [--fail-health]}
";
    let healthy = "models:
  - {name: alpha, model_path: models/alpha.txt, engine: quick, state: running}
";
    let mut hub = TempHub::start(&format!("{QUICK_ENGINE}{broken}")).await;
    wait_until("alpha failed", || async {
        (hub.status().await["summary"] == "degraded").then_some(())
    })
    .await;
    let (code, body) = ready(&hub).await;
    assert_eq!(code, 503, "{body:#}");
    assert_eq!(body["error"]["type"], "unavailable", "{body:#}");

    hub.save_config(&format!("{QUICK_ENGINE}{healthy}"));
    hub.converged().await;
    let (code, body) = ready(&hub).await;
    assert_eq!(code, 200, "{body:#}");
    assert_eq!(body["summary"], "converged");
    assert_eq!(body["config_rejected"], false);

    // Converged once: a later failure shows in the body, not as a pod leaving its Service.
    hub.save_config(&format!("{QUICK_ENGINE}{broken}"));
    wait_until("alpha failed again", || async {
        (hub.status().await["summary"] == "degraded").then_some(())
    })
    .await;
    let (code, body) = ready(&hub).await;
    assert_eq!((code, &body["summary"]), (200, &Value::from("degraded")));

    // Nor does a rejected edit, which changes nothing that runs.
    hub.save_config("models: [");
    wait_until("the edit rejected", || async {
        hub.status().await["config"]["rejected"]
            .is_object()
            .then_some(())
    })
    .await;
    let (code, body) = ready(&hub).await;
    assert_eq!((code, &body["config_rejected"]), (200, &Value::Bool(true)));

    hub.shutdown().await;
}
