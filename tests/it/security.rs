//! The API against web pages, weak tokens and slow clients, on a real daemon: a page on another
//! site (or one that rebinds its DNS name to 127.0.0.1) cannot make hub run a command, while the
//! CLI still can; a weak HUB_TOKEN is refused; a client that never finishes its headers is cut
//! off, while the event stream stays open.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::cli::Spawned;
use crate::support::{TempHub, hub_bin, wait_until};

const HUB: &str = "
log_path: {log_path}
model_starting_port: {starting_port}
models:
  - {name: alpha, model_path: models/alpha.txt, state: running}
";

/// A hub.yaml whose engine runs a shell command that creates `marker`: what an attacker's page
/// would post.
fn payload(hub: &TempHub, marker: &Path) -> String {
    hub.render(&format!(
        r#"
log_path: {{log_path}}
model_starting_port: {{starting_port}}
engines:
  pwn:
    command: ["/bin/sh", "-c", "touch '{}'; exec sleep 60"]
models:
  - {{name: alpha, model_path: models/alpha.txt, state: running}}
  - {{name: pwned, engine: pwn, model_path: models/alpha.txt, state: running}}
"#,
        marker.display()
    ))
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Sends `request` as is on a new connection and returns the status and the whole answer.
fn raw(url: &str, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(url.strip_prefix("http://").unwrap()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

/// The JSON body of a raw answer.
fn body_of(answer: &str) -> Value {
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// Checks an answer is the envelope with `code` and `kind`, whose message says what to do.
fn assert_envelope(body: &Value, code: u16, kind: &str, says: &str) {
    assert_eq!(body["error"]["code"], code, "{body:#}");
    assert_eq!(body["error"]["type"], kind, "{body:#}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "{body:#}");
}

#[tokio::test]
async fn a_page_on_another_site_cannot_make_hub_run_a_command() {
    let hub = TempHub::start(HUB).await;
    hub.converged().await;
    let marker = hub.dir.path().join("pwned");
    let body = payload(&hub, &marker);

    // What `fetch(url, {method: "POST", mode: "no-cors", body})` sends: a CORS simple request,
    // which the browser sends without asking first.
    let response = http()
        .post(format!("{}/hub/apply", hub.url))
        .header("origin", "http://evil.example")
        .header("content-type", "text/plain;charset=UTF-8")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let answer: Value = response.json().await.unwrap();
    assert_envelope(&answer, 403, "forbidden", "hub CLI");

    // The same page with the content type it would need: the browser asks first (OPTIONS), and
    // hub's answer allows nothing; were it sent anyway, the Origin still refuses it.
    let response = http()
        .post(format!("{}/hub/apply", hub.url))
        .header("origin", "http://evil.example")
        .header("content-type", "application/yaml")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);

    // DNS rebinding: evil.example now resolves to 127.0.0.1, so to the browser hub *is* the
    // page's origin, and the page may send anything.
    let port = hub.url.rsplit(':').next().unwrap();
    let (status, answer) = raw(
        &hub.url,
        &format!(
            "POST /hub/apply HTTP/1.1\r\nHost: evil.example:{port}\r\nOrigin: http://evil.example:{port}\r\nContent-Type: application/yaml\r\nX-Hub-Client: page\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(status, 403, "{answer}");
    assert_envelope(&body_of(&answer), 403, "forbidden", "--allowed-host");

    // Nothing was applied, nothing ran.
    let status = hub.status().await;
    assert_eq!(status["generation"], 1, "{status:#}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!marker.exists(), "the page's command ran");

    // The same body from the CLI does run: the refusals above are what stopped it.
    std::fs::write(hub.dir.path().join("payload.yaml"), &body).unwrap();
    let out = hub.cli(&["apply", "-f", "payload.yaml"]);
    assert!(out.status.success(), "{out:?}");
    wait_until("the CLI's apply runs its command", || async {
        marker.exists().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_request_addressed_to_another_name_is_refused() {
    let hub = TempHub::start(HUB).await;
    let port = hub.url.rsplit(':').next().unwrap();
    let get = |host: String| {
        raw(
            &hub.url,
            &format!("GET /hub/status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
    };
    // A rebound page reads status and logs no more than it writes.
    let (status, answer) = get(format!("evil.example:{port}"));
    assert_eq!(status, 403, "{answer}");
    assert_envelope(&body_of(&answer), 403, "forbidden", "DNS rebinding");
    // Every loopback spelling of the address works, whatever the port (an SSH tunnel's).
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "[::1]:9000".to_string(),
    ] {
        let (status, answer) = get(host.clone());
        assert_eq!(status, 200, "{host}: {answer}");
    }
}

#[tokio::test]
async fn an_allowed_host_is_served_and_may_send_writes_from_its_pages() {
    let hub = TempHub::start_with_env(HUB, &[], &[("HUB_ALLOWED_HOSTS", "hub.example.com")]).await;
    let port = hub.url.rsplit(':').next().unwrap();
    let (status, answer) = raw(
        &hub.url,
        "GET /hub/status HTTP/1.1\r\nHost: hub.example.com\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = raw(
        &hub.url,
        &format!(
            "POST /hub/reload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: https://hub.example.com\r\nX-Hub-Client: page\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(status, 202, "{answer}");
}

#[tokio::test]
async fn a_write_that_a_form_could_send_is_refused() {
    let hub = TempHub::start(HUB).await;
    hub.converged().await;
    let config = std::fs::read_to_string(hub.config()).unwrap();
    let plan = |content_type: Option<&str>, client: Option<&str>| {
        let mut request = http()
            .post(format!("{}/hub/plan", hub.url))
            .body(config.clone());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(client) = client {
            request = request.header("x-hub-client", client);
        }
        async move {
            let response = request.send().await.unwrap();
            let code = response.status().as_u16();
            (code, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
    ] {
        let (code, body) = plan(content_type, None).await;
        assert_eq!(code, 415, "{content_type:?}: {body:#}");
        assert_envelope(&body, 415, "unsupported_media_type", "X-Hub-Client");
    }
    assert_eq!(plan(Some("application/yaml"), None).await.0, 200);
    assert_eq!(plan(Some("application/json"), None).await.0, 200);
    assert_eq!(plan(Some("text/plain"), Some("curl")).await.0, 200);
    // A bodiless write (reload, a model's verb) needs the header.
    let response = http()
        .post(format!("{}/hub/reload", hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
}

#[tokio::test]
async fn a_preflight_from_another_site_is_allowed_nothing() {
    let hub = TempHub::start(HUB).await;
    for (path, methods) in [("/hub/apply", "POST"), ("/hub/status", "GET,HEAD")] {
        let response = http()
            .request(reqwest::Method::OPTIONS, format!("{}{path}", hub.url))
            .header("origin", "http://evil.example")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type, x-hub-client",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204, "{path}");
        let headers = response.headers();
        assert_eq!(headers["allow"], format!("{methods},OPTIONS"), "{path}");
        assert!(
            !headers
                .keys()
                .any(|name| name.as_str().starts_with("access-control-")),
            "{path}: {headers:?}"
        );
    }
    let response = http()
        .request(reqwest::Method::OPTIONS, format!("{}/nope", hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn the_cli_still_applies_reloads_and_stops_models() {
    let hub = TempHub::start(HUB).await;
    hub.converged().await;
    std::fs::write(
        hub.dir.path().join("other.yaml"),
        hub.render(&HUB.replace(
            "state: running}",
            "state: running}\n  - {name: beta, model_path: models/beta.txt, state: running}",
        )),
    )
    .unwrap();
    let out = hub.cli(&["apply", "-f", "other.yaml", "--wait"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(hub.model("beta").await["worker"]["phase"], "ready");
    let out = hub.cli(&["stop-model", "beta"]);
    assert!(out.status.success(), "{out:?}");
    wait_until("beta stops", || async {
        (hub.model("beta").await["worker"]["phase"] == "stopped").then_some(())
    })
    .await;
    let out = hub.cli(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    wait_until("back to the file", || async {
        let status = hub.status().await;
        (status["generation"] == 3 && status["summary"] == "converged").then_some(())
    })
    .await;
    let out = hub.cli(&["diff", "-f", "other.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[tokio::test]
async fn serve_refuses_a_weak_token() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hub.yaml"), "log_path: logs\nmodels: []\n").unwrap();
    for (host, token) in [("0.0.0.0", "a"), ("127.0.0.1", "a"), ("127.0.0.1", " ")] {
        let mut command = Command::new(hub_bin());
        command
            .args(["serve", "-f", "hub.yaml", "--host", host, "--port", "0"])
            .env("HUB_TOKEN", token)
            .current_dir(dir.path());
        let mut serve = Spawned::new(command);
        let status = serve.exited().await;
        assert!(!status.success(), "{host} {token:?}");
        let stderr = serve.stderr();
        assert!(stderr.contains("HUB_TOKEN"), "{host} {token:?}: {stderr}");
        assert!(
            stderr.contains("brute force") || stderr.contains("printable ASCII"),
            "{host} {token:?}: {stderr}"
        );
        assert!(serve.stdout().is_empty(), "it listened: {}", serve.stdout());
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off_but_a_stream_is_not() {
    let hub = TempHub::start_with(HUB, &["--header-read-timeout", "1s"]).await;
    hub.converged().await;

    // The event stream is a long answer, not slow headers: it outlives the header timeout.
    let response = http()
        .get(format!("{}/hub/events?model=alpha", hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();

    // Half a request line, then nothing: the server hangs up. A read that waits longer than this
    // bound (on the old code: forever) fails the test.
    let address = hub.url.strip_prefix("http://").unwrap().to_string();
    let slow = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(b"GET /hub/sta").unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).map(|_| answer)
    });
    let answer = slow
        .await
        .unwrap()
        .expect("the server closes the connection");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );

    // Well past the timeout, the stream still delivers.
    assert_eq!(hub.post("/hub/models/alpha/stop", "").await.0, 202);
    let text = tokio::time::timeout(crate::support::TIMEOUT, async {
        let mut text = String::new();
        while !text.contains("event: ") {
            match futures_util::StreamExt::next(&mut stream).await {
                Some(Ok(chunk)) => text.push_str(&String::from_utf8_lossy(&chunk)),
                _ => break,
            }
        }
        text
    })
    .await
    .expect("an event on the old stream");
    assert!(text.contains("event: "), "the stream ended: {text}");
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
