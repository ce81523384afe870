//! The engine definitions hub ships (`manifests/engines/`, SPEC section 13) run against real
//! servers: each test reads one shipped file, keeps its `engines:` verbatim, points its models at
//! test files, and drives them through a real daemon. llama.cpp's own server runs for real (PyPI's
//! xllamacpp, through `tests/fixtures/llama-server.py`, which takes llama-server's command line);
//! vLLM, the llama.cpp router and mlx-openai-server, which cannot run on a CI machine, are
//! conformance servers (`tests/fixtures/conformance.py`) that implement their documented HTTP
//! contracts and record every call, so the tests assert the exact calls hub made. A fake `docker`
//! (bash) shows that the container engine's `stop_command` runs on every kind of stop.
//! The tests that need Python are ignored; `scripts/test-real` installs what they need.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::support::{TempHub, hub_bin, wait_until};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// A shipped engine file as a test's hub.yaml: its `engines:` (and `groups:`) verbatim, its
/// `models:` as `edit` leaves them.
fn shipped(file: &str, edit: impl FnOnce(&mut Vec<Value>)) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/engines/").to_string() + file;
    let text = std::fs::read_to_string(&path).unwrap();
    let mut doc: Value = serde_yaml::from_str(&text).unwrap();
    edit(doc["models"].as_array_mut().unwrap());
    let body = serde_yaml::to_string(&doc).unwrap();
    format!("log_path: {{log_path}}\nmodel_starting_port: {{starting_port}}\n{body}")
}

/// The shipped model `name` in `models`.
fn model<'a>(models: &'a mut [Value], name: &str) -> &'a mut Value {
    models
        .iter_mut()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no model {name} in the shipped file"))
}

/// A directory of stand-ins put first on the daemon's PATH, and where they record what they saw.
struct Fakes {
    dir: tempfile::TempDir,
}

impl Fakes {
    fn new() -> Fakes {
        let fakes = Fakes {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir(fakes.bin()).unwrap();
        fakes
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn bin(&self) -> PathBuf {
        self.path().join("bin")
    }

    /// PATH for the daemon, and so for its workers and stop commands: the stand-ins first.
    fn path_var(&self) -> String {
        format!(
            "{}:{}",
            self.bin().display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// Writes an executable `bin/<name>`.
    fn script(&self, name: &str, text: &str) {
        let file = self.bin().join(name);
        std::fs::write(&file, text).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// `bin/<command>` runs the conformance server `kind` with the arguments it is given. The
    /// worker's environment is clean, so the wrapper names everything in full.
    fn conformance(&self, command: &str, kind: &str) {
        self.conformance_misbehaving(command, kind, "");
    }

    /// [`Fakes::conformance`], told to misbehave (`--misbehave fail-load`) unless `way` is empty.
    fn conformance_misbehaving(&self, command: &str, kind: &str, way: &str) {
        let misbehave = if way.is_empty() {
            String::new()
        } else {
            format!("--misbehave {way} ")
        };
        self.script(
            command,
            &format!(
                "#!/bin/sh\nexec '{}' '{FIXTURES}/conformance.py' --calls '{}' --root '{}' {misbehave}{kind} \"$@\"\n",
                python(),
                self.calls_file().display(),
                self.path().display(),
            ),
        );
    }

    fn calls_file(&self) -> PathBuf {
        self.path().join("calls.jsonl")
    }

    /// Every call the conformance servers got on `port`, but health probes: "METHOD path body".
    fn calls(&self, port: u64) -> Vec<String> {
        let text = std::fs::read_to_string(self.calls_file()).unwrap_or_default();
        text.lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .filter(|call| call["port"] == port && call["path"] != "/health")
            .map(|call| {
                let text = |key: &str| call[key].as_str().unwrap().replace('"', "");
                format!("{} {} {}", text("method"), text("path"), text("body"))
                    .trim_end()
                    .to_string()
            })
            .collect()
    }

    /// Lines the fake `docker` logged (its argv).
    fn docker_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.path().join("docker.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// A fake `docker`: logs its argv; `run` strips docker's options and runs the image's server
    /// as `server` (argv after the image) in the foreground, as the real client does, noting its
    /// pid by container name; `stop` ends that container, as the real one does.
    fn docker(&self, server: &str) {
        let dir = self.path().display();
        self.script(
            "docker",
            &format!(
                r#"#!/bin/bash
echo "$*" >>'{dir}/docker.log'
case "$1" in
run)
    shift; name=; envs=()
    while [ $# -gt 0 ]; do
        case "$1" in
        --rm) shift ;;
        --name) name=$2; shift 2 ;;
        --gpus|-p) shift 2 ;;
        -e) envs+=("$2"); shift 2 ;;
        *) break ;;
        esac
    done
    shift # the image
    echo $$ >'{dir}/container-'"$name"
    exec env "${{envs[@]}}" {server} "$@" ;;
stop)
    name=${{@: -1}}
    if [ -f '{dir}/container-'"$name" ]; then
        kill -TERM "$(cat '{dir}/container-'"$name")" 2>/dev/null
        rm -f '{dir}/container-'"$name"
    fi ;;
*) exit 1 ;;
esac
"#
            ),
        );
    }
}

/// The venv's python that `scripts/test-real` names (the conformance servers need only its
/// standard library).
fn python() -> String {
    std::env::var("HUB_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("HUB_TEST_PYTHON is not set: run scripts/test-real, which makes a venv and names its python")
    })
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A chat completion through the gateway: its status and answer.
async fn chat(hub: &TempHub, model: &str) -> (u16, Value) {
    let response = client()
        .post(format!("{}/v1/chat/completions", hub.url))
        .json(&chat_body(model))
        .send()
        .await
        .unwrap();
    let code = response.status().as_u16();
    (code, response.json().await.unwrap_or(Value::Null))
}

fn chat_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8})
}

/// The call `chat` makes, as `Fakes::calls` shows it: the body passed through unchanged.
fn chat_call(model: &str) -> String {
    let body = chat_body(model).to_string().replace('"', "");
    format!("POST /v1/chat/completions {body}")
}

/// The model's entry in `/hub/status`, if hub.yaml has it yet.
async fn find(hub: &TempHub, name: &str) -> Option<Value> {
    let status = hub.status().await;
    status["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .cloned()
}

async fn ready(hub: &TempHub, name: &str) -> Value {
    wait_until(&format!("{name} ready"), || async {
        let m = find(hub, name).await?;
        (m["worker"]["phase"] == "ready" && m["in_sync"] == true).then_some(m)
    })
    .await
}

async fn memory(hub: &TempHub, name: &str, state: &str) -> Value {
    wait_until(&format!("{name} {state}"), || async {
        let m = find(hub, name).await?;
        (m["memory"]["state"] == state).then_some(m)
    })
    .await
}

async fn stopped(hub: &TempHub, name: &str) -> Value {
    wait_until(&format!("{name} stopped"), || async {
        let m = find(hub, name).await?;
        (m["worker"]["phase"] == "stopped").then_some(m)
    })
    .await
}

fn port(model: &Value) -> u64 {
    model["worker"]["port"].as_u64().unwrap()
}

fn pid(model: &Value) -> u64 {
    model["worker"]["pid"].as_u64().unwrap()
}

async fn command(hub: &TempHub, name: &str, verb: &str) {
    let (code, body) = hub.post(&format!("/hub/models/{name}/{verb}"), "").await;
    assert_eq!(code, 202, "{verb} {name}: {body}");
}

// ---------------------------------------------------------------------------------------------
// llama.cpp's server, for real

/// `manifests/engines/llama-server.yaml` with llama.cpp's real server: both models serve a tiny
/// random-weight model, with the shipped `args` as they are.
#[tokio::test]
#[ignore = "needs llama.cpp's server (xllamacpp): scripts/test-real installs it"]
async fn llama_server_runs_llama_cpps_real_server_through_hub() {
    let launcher = std::env::var("HUB_TEST_LLAMA_SERVER").unwrap_or_else(|_| {
        panic!("HUB_TEST_LLAMA_SERVER is not set: run scripts/test-real, which installs xllamacpp and its launcher")
    });
    let fakes = Fakes::new();
    std::os::unix::fs::symlink(&launcher, fakes.bin().join("llama-server")).unwrap();
    let gguf = fakes.path().join("tiny-llama.gguf");
    let made = std::process::Command::new(
        std::env::var("HUB_TEST_GGUF_PYTHON").unwrap_or_else(|_| python()),
    )
    .arg(format!("{FIXTURES}/tiny-llama-gguf.py"))
    .arg(&gguf)
    .output()
    .unwrap();
    assert!(made.status.success(), "{made:?}");
    let gguf = gguf.display().to_string();
    let yaml = |ctx: &str| {
        shipped("llama-server.yaml", |models| {
            let qwen = model(models, "qwen-7b");
            qwen["model_path"] = json!(gguf);
            qwen["args"][1] = json!(ctx);
            let embed = model(models, "nomic-embed");
            embed["model_path"] = json!(gguf);
            embed["state"] = json!("running");
        })
    };

    let started = Instant::now();
    let mut hub = TempHub::start_with_env(&yaml("8192"), &[], &[("PATH", &fakes.path_var())]).await;
    let qwen = ready(&hub, "qwen-7b").await;
    let start_to_ready = started.elapsed();
    assert_eq!(qwen["memory"]["state"], "loaded", "{qwen:#}");
    let embed = ready(&hub, "nomic-embed").await;

    // A chat completion and a stream, through the gateway, by model name.
    let asked = Instant::now();
    let (code, answer) = chat(&hub, "qwen-7b").await;
    let first_completion = asked.elapsed();
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["object"], "chat.completion");
    assert!(
        answer["choices"][0]["message"]["content"].is_string(),
        "{answer}"
    );
    assert_eq!(answer["usage"]["completion_tokens"], 8, "{answer}");
    println!(
        "llama.cpp (xllamacpp): daemon start to ready {start_to_ready:?}, first completion through the gateway {first_completion:?}"
    );

    let response = client()
        .post(format!("{}/v1/chat/completions", hub.url))
        .json(
            &json!({"model": "qwen-7b", "messages": [{"role": "user", "content": "hi"}],
                      "max_tokens": 4, "stream": true}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut text = String::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
    // Random weights emit stray bytes, which llama.cpp holds back until they make UTF-8, so the
    // content may come in the final chunk alone.
    assert!(events.len() >= 2, "{text}");
    let last: Value = serde_json::from_str(events[events.len() - 2]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "length", "{text}");

    // The embedding model (--embedding) answers embeddings.
    let response = client()
        .post(format!("{}/v1/embeddings", hub.url))
        .json(&json!({"model": "nomic-embed", "input": "hello"}))
        .send()
        .await
        .unwrap();
    let code = response.status();
    let embedding: Value = response.json().await.unwrap();
    assert_eq!(code, 200, "{embedding}");
    assert_eq!(
        embedding["data"][0]["embedding"].as_array().unwrap().len(),
        64,
        "{embedding}"
    );

    // A spec change restarts that model alone.
    hub.save_config(&yaml("4096"));
    let restarted = wait_until("qwen-7b restarted", || async {
        let m = hub.model("qwen-7b").await;
        (m["worker"]["phase"] == "ready"
            && m["in_sync"] == true
            && m["worker"]["pid"] != qwen["worker"]["pid"])
            .then_some(m)
    })
    .await;
    hub.converged().await;
    assert_eq!(pid(&hub.model("nomic-embed").await), pid(&embed));
    assert_eq!(chat(&hub, "qwen-7b").await.0, 200);

    // Adoption across a daemon SIGKILL: the same process serves on.
    hub.kill_daemon();
    let hub = hub.restart().await;
    let after = hub.converged().await;
    let qwen = ready(&hub, "qwen-7b").await;
    assert_eq!(pid(&qwen), pid(&restarted), "adopted, not restarted");
    assert_eq!(after["last_reconcile"]["started"], json!([]), "{after:#}");
    assert_eq!(chat(&hub, "qwen-7b").await.0, 200);

    // A stop ends it on SIGTERM, well within stop_timeout (30s).
    let stopping = Instant::now();
    command(&hub, "qwen-7b", "stop").await;
    stopped(&hub, "qwen-7b").await;
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(30), "stop took {took:?}");
    assert!(
        !hub.stderr().contains("ignored SIGTERM"),
        "{}",
        hub.stderr()
    );
    println!("llama.cpp (xllamacpp): stop {took:?}");
}

// ---------------------------------------------------------------------------------------------
// Conformance servers

/// `manifests/engines/vllm.yaml`'s `vllm` engine against a vLLM sleep-mode conformance server:
/// start wakes it, unload sleeps it (level 1), a request wakes it again through the gateway.
#[tokio::test]
#[ignore = "needs Python for vLLM's conformance server: scripts/test-real"]
async fn vllm_sleeps_and_wakes_through_hub() {
    let fakes = Fakes::new();
    fakes.conformance("vllm", "vllm");
    let yaml = shipped("vllm.yaml", |models| {
        models.retain(|m| m["name"] == "llama-70b");
    });
    let hub = TempHub::start_with_env(&yaml, &[], &[("PATH", &fakes.path_var())]).await;
    let llama = memory(&hub, "llama-70b", "loaded").await;
    let port = port(&llama);
    assert_eq!(fakes.calls(port), ["POST /wake_up"]);

    let (code, answer) = chat(&hub, "llama-70b").await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["model"], "llama-70b");

    command(&hub, "llama-70b", "unload").await;
    let unloaded = memory(&hub, "llama-70b", "unloaded").await;
    assert_eq!(unloaded["worker"]["phase"], "ready", "the process stays up");
    // Asked directly: a request through the gateway would load it again.
    let sleeping: Value = client()
        .get(format!("http://127.0.0.1:{port}/is_sleeping"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sleeping, json!({"is_sleeping": true}));

    // An imperative unload holds; a load brings it back.
    command(&hub, "llama-70b", "load").await;
    memory(&hub, "llama-70b", "loaded").await;
    let (code, answer) = chat(&hub, "llama-70b").await;
    assert_eq!(code, 200, "{answer}");
    command(&hub, "llama-70b", "stop").await;
    stopped(&hub, "llama-70b").await;
    assert_eq!(
        fakes.calls(port),
        [
            "POST /wake_up".to_string(),
            chat_call("llama-70b"),
            "POST /sleep?level=1".to_string(),
            "GET /is_sleeping".to_string(),
            "POST /wake_up".to_string(),
            chat_call("llama-70b"),
        ]
    );
}

/// A vLLM whose wake-up fails (out of memory, say): the model shows the server's answer as its
/// error, is not counted as loaded, and hub puts it back to sleep (whatever half-woke is freed)
/// and retries the load later, never restarting the process.
#[tokio::test]
#[ignore = "needs Python for vLLM's conformance server: scripts/test-real"]
async fn a_vllm_that_cannot_wake_shows_why_and_is_retried() {
    let fakes = Fakes::new();
    fakes.conformance_misbehaving("vllm", "vllm", "fail-load");
    let yaml = shipped("vllm.yaml", |models| {
        models.retain(|m| m["name"] == "llama-70b");
    });
    let hub = TempHub::start_with_env(&yaml, &[], &[("PATH", &fakes.path_var())]).await;
    let failed = wait_until("llama-70b's load failed twice", || async {
        let m = find(&hub, "llama-70b").await?;
        let port = m["worker"]["port"].as_u64()?;
        let wakes = fakes
            .calls(port)
            .iter()
            .filter(|c| *c == "POST /wake_up")
            .count();
        (m["error"].as_str()?.contains("500") && wakes >= 2).then_some(m)
    })
    .await;
    assert!(
        failed["error"].as_str().unwrap().contains("out of memory"),
        "{failed:#}"
    );
    assert_ne!(failed["memory"]["state"], "loaded", "{failed:#}");
    let calls = fakes.calls(port(&failed));
    assert_eq!(
        calls[..3],
        ["POST /wake_up", "POST /sleep?level=1", "POST /wake_up"]
    );
    assert_eq!(
        hub.model("llama-70b").await["worker"]["pid"],
        failed["worker"]["pid"]
    );
}

/// `manifests/engines/llama-router.yaml` against a llama.cpp router conformance server: each
/// model is a router holding one model, loaded and unloaded by name; requests route by `model`.
#[tokio::test]
#[ignore = "needs Python for the llama.cpp router's conformance server: scripts/test-real"]
async fn llama_router_loads_and_unloads_through_hub() {
    let fakes = Fakes::new();
    fakes.conformance("llama-server", "llama-router");
    // The shipped --models-dir /models, under the fakes' root (as a container would mount it).
    std::fs::create_dir(fakes.path().join("models")).unwrap();
    let yaml = shipped("llama-router.yaml", |models| {
        for m in models.iter() {
            let file = format!("{}.gguf", m["model_path"].as_str().unwrap());
            std::fs::write(fakes.path().join("models").join(file), "").unwrap();
        }
    });
    let hub = TempHub::start_with_env(&yaml, &[], &[("PATH", &fakes.path_var())]).await;
    let llama = memory(&hub, "llama-8b", "loaded").await;
    let mistral = ready(&hub, "mistral-7b").await;
    assert_eq!(mistral["memory"]["state"], "unloaded", "{mistral:#}");
    let (llama_port, mistral_port) = (port(&llama), port(&mistral));
    assert_eq!(
        fakes.calls(llama_port),
        ["POST /models/load {model: llama-8b}"]
    );
    assert_eq!(fakes.calls(mistral_port), Vec::<String>::new());

    let (code, answer) = chat(&hub, "llama-8b").await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["model"], "llama-8b");

    // Unload frees llama-8b's weights in its router; the group's one slot then goes to
    // mistral-7b on its first request.
    command(&hub, "llama-8b", "unload").await;
    memory(&hub, "llama-8b", "unloaded").await;
    let (code, answer) = chat(&hub, "mistral-7b").await;
    assert_eq!(code, 200, "{answer}");
    let models: Value = hub.get("/upstream/mistral-7b/models").await;
    let state = |id: &str| {
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .map(|m| m["status"]["value"].clone())
    };
    assert_eq!(state("mistral-7b"), Some(json!("loaded")), "{models}");

    command(&hub, "mistral-7b", "stop").await;
    stopped(&hub, "mistral-7b").await;
    assert_eq!(
        fakes.calls(llama_port),
        [
            "POST /models/load {model: llama-8b}".to_string(),
            chat_call("llama-8b"),
            "POST /models/unload {model: llama-8b}".to_string(),
        ]
    );
    assert_eq!(
        fakes.calls(mistral_port),
        [
            "POST /models/load {model: mistral-7b}".to_string(),
            chat_call("mistral-7b"),
            "GET /models".to_string(),
        ]
    );
}

/// `manifests/engines/mlx-openai-server.yaml` against an mlx-openai-server conformance server:
/// no load or unload, so a model is loaded exactly while its worker runs, and a request starts a
/// stopped one.
#[tokio::test]
#[ignore = "needs Python for mlx-openai-server's conformance server: scripts/test-real"]
async fn mlx_openai_server_runs_through_hub() {
    let fakes = Fakes::new();
    fakes.conformance("mlx-openai-server", "mlx-openai-server");
    let yaml = shipped("mlx-openai-server.yaml", |_| {});
    let hub = TempHub::start_with_env(&yaml, &[], &[("PATH", &fakes.path_var())]).await;
    let qwen = ready(&hub, "qwen3-8b").await;
    assert_eq!(qwen["memory"]["state"], "loaded", "{qwen:#}");
    assert_eq!(
        hub.model("whisper-turbo").await["worker"]["phase"],
        "stopped"
    );
    let (code, answer) = chat(&hub, "qwen3-8b").await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["model"], "mlx-community/Qwen3-8B-4bit");

    // A transcription for the stopped model starts it (just in time).
    let body = "--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-turbo\r\n\
                --b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\
                Content-Type: audio/wav\r\n\r\nRIFF....WAVE\r\n--b--\r\n";
    let response = client()
        .post(format!("{}/v1/audio/transcriptions", hub.url))
        .header("content-type", "multipart/form-data; boundary=b")
        .body(body)
        .send()
        .await
        .unwrap();
    let code = response.status();
    let text: Value = response.json().await.unwrap();
    assert_eq!(code, 200, "{text}");
    assert_eq!(
        text["text"],
        "transcribed by mlx-community/whisper-large-v3-turbo"
    );
    let whisper = ready(&hub, "whisper-turbo").await;

    command(&hub, "qwen3-8b", "unload").await;
    stopped(&hub, "qwen3-8b").await;
    assert_eq!(fakes.calls(port(&qwen)), [chat_call("qwen3-8b")]);
    let calls = fakes.calls(port(&whisper));
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(
        calls[0].starts_with("POST /v1/audio/transcriptions "),
        "{calls:?}"
    );
}

/// `manifests/engines/vllm.yaml`'s `vllm-docker` engine, with a fake `docker` whose container is
/// the vLLM conformance server: load and unload reach the server in the container.
#[tokio::test]
#[ignore = "needs Python for vLLM's conformance server: scripts/test-real"]
async fn vllm_in_docker_sleeps_wakes_and_is_stopped_by_its_stop_command() {
    let fakes = Fakes::new();
    fakes.docker(&format!(
        "'{}' '{FIXTURES}/conformance.py' --calls '{}' --root '{}' vllm serve",
        python(),
        fakes.calls_file().display(),
        fakes.path().display()
    ));
    let yaml = shipped("vllm.yaml", |models| {
        models.retain(|m| m["name"] == "qwen-coder");
        model(models, "qwen-coder")["state"] = json!("loaded");
    });
    let mut hub = TempHub::start_with_env(&yaml, &[], &[("PATH", &fakes.path_var())]).await;
    let qwen = memory(&hub, "qwen-coder", "loaded").await;
    let (code, answer) = chat(&hub, "qwen-coder").await;
    assert_eq!(code, 200, "{answer}");
    command(&hub, "qwen-coder", "unload").await;
    memory(&hub, "qwen-coder", "unloaded").await;
    hub.shutdown().await;
    assert_eq!(
        fakes.calls(port(&qwen)),
        [
            "POST /wake_up".to_string(),
            chat_call("qwen-coder"),
            "POST /sleep?level=1".to_string(),
        ]
    );
    assert_eq!(
        fakes.docker_log().last().map(String::as_str),
        Some("stop --time 30 hub-qwen-coder")
    );
}

/// The container engine's `stop_command` runs before every stop: an operator's stop, a spec
/// change's restart, a removal from hub.yaml and the daemon's shutdown. The container's server
/// is hub's built-in worker here, so this needs nothing beyond bash.
#[tokio::test]
async fn the_container_engines_stop_command_runs_on_stop_restart_removal_and_shutdown() {
    let fakes = Fakes::new();
    // The image's server: only --model and --port matter to the stand-in.
    fakes.script(
        "vllm-image",
        &format!(
            "#!/bin/bash\nwhile [ $# -gt 0 ]; do case \"$1\" in --model) m=$2; shift 2 ;; --port) p=$2; shift 2 ;; *) shift ;; esac; done\nexec '{}' worker --name container --model-path \"$m\" --host 127.0.0.1 --port \"$p\"\n",
            hub_bin()
        ),
    );
    fakes.docker(&format!("'{}'", fakes.bin().join("vllm-image").display()));
    let yaml = |path: &str, keep: bool| {
        shipped("vllm.yaml", |models| {
            models.retain(|m| m["name"] == "qwen-coder");
            model(models, "qwen-coder")["model_path"] = json!(path);
            if !keep {
                models.clear();
            }
        })
    };
    let mut hub = TempHub::start_with_env(
        &yaml("models/alpha.txt", true),
        &[],
        &[("PATH", &fakes.path_var())],
    )
    .await;
    ready(&hub, "qwen-coder").await;
    let run = "run --rm --name hub-qwen-coder --gpus all";
    let stop = "stop --time 30 hub-qwen-coder";
    let log = |fakes: &Fakes| -> Vec<String> {
        fakes
            .docker_log()
            .into_iter()
            .map(|l| if l.starts_with(run) { "run".into() } else { l })
            .collect()
    };
    assert_eq!(log(&fakes), ["run"]);

    command(&hub, "qwen-coder", "stop").await;
    stopped(&hub, "qwen-coder").await;
    assert_eq!(log(&fakes), ["run", stop]);

    command(&hub, "qwen-coder", "start").await;
    let second = ready(&hub, "qwen-coder").await;
    assert_eq!(log(&fakes), ["run", stop, "run"]);

    hub.save_config(&yaml("models/beta.txt", true));
    wait_until("restarted for the new model_path", || async {
        let m = hub.model("qwen-coder").await;
        (m["worker"]["phase"] == "ready"
            && m["in_sync"] == true
            && m["worker"]["pid"] != second["worker"]["pid"])
            .then_some(())
    })
    .await;
    let restarted = log(&fakes);
    assert_eq!(restarted[..4], ["run", stop, "run", stop]);
    assert!(
        restarted.len() == 5 && restarted[4] == "run",
        "{restarted:?}"
    );

    hub.save_config(&yaml("models/beta.txt", false));
    wait_until("removed", || async {
        let status = hub.status().await;
        status["models"]
            .as_array()
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;
    assert_eq!(log(&fakes)[5..], [stop]);

    hub.save_config(&yaml("models/gamma.txt", true));
    ready(&hub, "qwen-coder").await;
    hub.shutdown().await;
    assert_eq!(log(&fakes)[6..], ["run", stop]);
}
