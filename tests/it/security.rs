//! The API and the CLI at their edges, on a real daemon: the event stream of an unknown model is
//! a 404, and printing to a closed pipe ends a command quietly.

use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::{TempHub, hub_bin};

const HUB: &str = "
log_path: {log_path}
model_starting_port: {starting_port}
models:
  - {name: alpha, model_path: models/alpha.txt, state: running}
";

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Checks an answer is the envelope with `code` and `kind`, whose message says what to do.
fn assert_envelope(body: &Value, code: u16, kind: &str, says: &str) {
    assert_eq!(body["error"]["code"], code, "{body:#}");
    assert_eq!(body["error"]["type"], kind, "{body:#}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "{body:#}");
}

#[tokio::test]
async fn events_of_an_unknown_model_are_404() {
    let hub = TempHub::start(HUB).await;
    for model in ["nosuch", "..%2Fetc"] {
        let response = http()
            .get(format!("{}/hub/events?model={model}", hub.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{model}");
        let body: Value = response.json().await.unwrap();
        assert_envelope(&body, 404, "not_found", "hub status");
    }
    let response = http()
        .get(format!("{}/hub/events?model=alpha", hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[test]
fn printing_to_a_closed_pipe_ends_quietly() {
    let mut child = Command::new(hub_bin())
        .arg("schema")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before hub writes: `hub schema | true`.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}
