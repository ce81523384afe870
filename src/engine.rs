//! Engines at run time: rendering argv and request templates, and the HTTP calls hub makes to a
//! worker (readiness probe, load, unload). Only this module speaks HTTP to workers.

use std::time::Duration;

use anyhow::{Context, bail};

use crate::config::{HttpCall, HttpMethod, RunSpec};

/// The values substituted into `{name}`, `{model_path}`, `{port}`, `{host}` and `{hub}`.
#[derive(Debug, Clone)]
pub struct Vars<'a> {
    pub name: &'a str,
    pub model_path: &'a str,
    pub port: u16,
    pub host: &'a str,
    pub hub: &'a str,
}

impl<'a> Vars<'a> {
    /// The values for model `name`'s worker started from `run` on `port` (on loopback).
    pub fn of(name: &'a str, run: &'a RunSpec, port: u16, hub: &'a str) -> Vars<'a> {
        Vars {
            name,
            model_path: &run.model_path,
            port,
            host: crate::config::DEFAULT_HOST,
            hub,
        }
    }
}

/// Substitutes placeholders in one template string. Unknown `{...}` text is left as it is, so
/// JSON bodies with braces pass through.
pub fn render(template: &str, vars: &Vars) -> String {
    template
        .replace("{name}", vars.name)
        .replace("{model_path}", vars.model_path)
        .replace("{port}", &vars.port.to_string())
        .replace("{host}", vars.host)
        .replace("{hub}", vars.hub)
}

/// The worker's full argv: the engine's command, then the model's extra `args`.
pub fn argv(run: &RunSpec, vars: &Vars) -> Vec<String> {
    run.engine
        .command
        .iter()
        .chain(run.args.iter())
        .map(|t| render(t, vars))
        .collect()
}

/// The engine's `stop_command`, rendered, if it has one: run before every stop of the worker.
pub fn stop_argv(run: &RunSpec, vars: &Vars) -> Option<Vec<String>> {
    let argv = run.engine.stop_command.as_ref()?;
    Some(argv.iter().map(|t| render(t, vars)).collect())
}

/// An HTTP client for loopback calls to workers: no proxy, short connect timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .expect("a plain HTTP client always builds")
}

/// The URL of a path on the worker, placeholders rendered.
pub fn url(vars: &Vars, path: &str) -> String {
    format!("http://{}:{}{}", vars.host, vars.port, render(path, vars))
}

/// The URL of the worker's health check: the one place it is built, for the start's readiness
/// probes, the periodic probes and adoption at startup.
pub fn health_url(name: &str, run: &RunSpec, port: u16, hub: &str) -> String {
    url(&Vars::of(name, run, port, hub), &run.engine.health.path)
}

/// What to measure of the worker with `pid`: its process tree, and the engine's own memory
/// report (URL and JSON pointer) if the engine has one. The one place it is built, for a load
/// job and for the periodic measurements.
pub fn memory_target(
    name: &str,
    run: &RunSpec,
    pid: u32,
    port: u16,
    hub: &str,
) -> crate::measure::Target {
    let engine = run.engine.memory.as_ref().map(|probe| {
        let vars = Vars::of(name, run, port, hub);
        (url(&vars, &probe.path), probe.pointer.clone())
    });
    crate::measure::Target { pid, engine }
}

/// What one readiness probe found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Probe {
    pub healthy: bool,
    /// What the worker said of its use, if it says (the built-in worker does).
    pub activity: Option<Activity>,
}

/// The optional activity protocol: a health answer that is a JSON object with `in_flight` (requests
/// being served now) and `idle_ms` (time since the last request ended; absent if none yet) lets hub
/// unload idle models and avoid evicting busy ones. Any engine may implement it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Activity {
    pub in_flight: u32,
    pub idle_ms: Option<u64>,
}

/// One readiness probe of `url`: healthy when it answers 2xx.
pub async fn probe(client: &reqwest::Client, url: &str) -> Probe {
    let request = client.get(url).timeout(Duration::from_secs(2));
    let Ok(response) = request.send().await else {
        return Probe::default();
    };
    if !response.status().is_success() {
        return Probe::default();
    }
    /// Only the activity fields, read without building a JSON tree (any other body is healthy
    /// without activity).
    #[derive(serde::Deserialize)]
    struct Body {
        in_flight: Option<serde_json::Value>,
        idle_ms: Option<serde_json::Value>,
    }
    let bytes = response.bytes().await.unwrap_or_default();
    // An object only (serde would also read a struct from an array).
    let object = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let body = object
        .then(|| serde_json::from_slice::<Body>(&bytes).ok())
        .flatten();
    let activity = body.and_then(|body| {
        let in_flight = body
            .in_flight
            .as_ref()
            .and_then(serde_json::Value::as_u64)?;
        Some(Activity {
            in_flight: in_flight.min(u64::from(u32::MAX)) as u32,
            idle_ms: body.idle_ms.as_ref().and_then(serde_json::Value::as_u64),
        })
    });
    Probe {
        healthy: true,
        activity,
    }
}

/// A load or unload request, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: HttpMethod,
    pub url: String,
    pub body: Option<String>,
    pub timeout: Duration,
}

impl Request {
    /// Renders an engine's load or unload call for one worker.
    pub fn new(call: &HttpCall, vars: &Vars) -> Request {
        Request {
            method: call.method,
            url: url(vars, &call.path),
            body: call.body.as_ref().map(|b| render(b, vars)),
            timeout: call.timeout,
        }
    }
}

/// Sends a load or unload request and checks its answer.
pub async fn send(client: &reqwest::Client, request: &Request) -> anyhow::Result<()> {
    let method = match request.method {
        HttpMethod::Get => reqwest::Method::GET,
        HttpMethod::Post => reqwest::Method::POST,
        HttpMethod::Put => reqwest::Method::PUT,
        HttpMethod::Delete => reqwest::Method::DELETE,
    };
    let mut builder = client
        .request(method, &request.url)
        .timeout(request.timeout);
    if let Some(body) = &request.body {
        builder = builder
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone());
    }
    let what = format!("{} {}", request.method.as_str(), request.url);
    let response = builder
        .send()
        .await
        .with_context(|| format!("{what} failed"))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let body: String = body.chars().take(300).collect();
        bail!("{what} answered {status}: {body}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Engine;
    use std::sync::Arc;

    #[test]
    fn builtin_argv_renders_every_placeholder_and_appends_args() {
        let run = RunSpec {
            engine_name: "builtin".into(),
            engine: Arc::new(Engine::builtin()),
            model_path: "models/alpha.txt".into(),
            port: None,
            args: vec!["--crash-after".into(), "5s".into()],
            env: Default::default(),
        };
        let vars = Vars {
            name: "alpha",
            model_path: "models/alpha.txt",
            port: 47850,
            host: "127.0.0.1",
            hub: "/usr/bin/hub",
        };
        assert_eq!(
            argv(&run, &vars).join(" "),
            "/usr/bin/hub worker --name alpha --model-path models/alpha.txt --host 127.0.0.1 --port 47850 --crash-after 5s"
        );
    }

    #[test]
    fn json_braces_survive_rendering() {
        let vars = Vars {
            name: "a",
            model_path: "p",
            port: 1,
            host: "h",
            hub: "x",
        };
        assert_eq!(render(r#"{"model": "{name}"}"#, &vars), r#"{"model": "a"}"#);
    }

    /// Every engine in `manifests/engines/`, rendered for each of its models on port 47850:
    /// argv, environment, and the load and unload requests hub would send.
    #[test]
    fn example_engines_render_their_commands_and_requests() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/engines");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let mut out = String::new();
        for file in files {
            let (_, desired) = crate::config::load(&file).unwrap_or_else(|e| panic!("{e}"));
            out.push_str(&format!(
                "# {}\n",
                file.file_name().unwrap().to_string_lossy()
            ));
            for (name, spec) in &desired.models {
                let vars = Vars {
                    name: name.as_str(),
                    model_path: &spec.run.model_path,
                    port: 47850,
                    host: "127.0.0.1",
                    hub: "/usr/bin/hub",
                };
                out.push_str(&format!("{name}: {}\n", argv(&spec.run, &vars).join(" ")));
                for (key, value) in &spec.run.engine.env {
                    out.push_str(&format!("  env {key}={}\n", render(value, &vars)));
                }
                out.push_str(&format!(
                    "  health {}\n",
                    url(&vars, &spec.run.engine.health.path)
                ));
                for (verb, call) in [
                    ("load", &spec.run.engine.load),
                    ("unload", &spec.run.engine.unload),
                ] {
                    if let Some(call) = call {
                        let request = Request::new(call, &vars);
                        let line = format!(
                            "  {verb} {} {} {}",
                            request.method.as_str(),
                            request.url,
                            request.body.unwrap_or_default()
                        );
                        out.push_str(line.trim_end());
                        out.push('\n');
                    }
                }
                if let Some(stop) = &spec.run.engine.stop_command {
                    let argv: Vec<String> = stop.iter().map(|t| render(t, &vars)).collect();
                    out.push_str(&format!("  stop_command {}\n", argv.join(" ")));
                }
            }
        }
        expect_test::expect![[r##"
            # llama-router.yaml
            llama-8b: llama-server --models-dir /models --models-max 1 --no-models-autoload --host 127.0.0.1 --port 47850
              health http://127.0.0.1:47850/health
              load POST http://127.0.0.1:47850/models/load {"model": "llama-8b"}
              unload POST http://127.0.0.1:47850/models/unload {"model": "llama-8b"}
            mistral-7b: llama-server --models-dir /models --models-max 1 --no-models-autoload --host 127.0.0.1 --port 47850
              health http://127.0.0.1:47850/health
              load POST http://127.0.0.1:47850/models/load {"model": "mistral-7b"}
              unload POST http://127.0.0.1:47850/models/unload {"model": "mistral-7b"}
            # llama-server.yaml
            nomic-embed: llama-server --model /models/nomic-embed-text-v1.5.Q8_0.gguf --host 127.0.0.1 --port 47850 --embedding
              health http://127.0.0.1:47850/health
            qwen-7b: llama-server --model /models/qwen2.5-7b-instruct-q4_k_m.gguf --host 127.0.0.1 --port 47850 --ctx-size 8192 --n-gpu-layers 99
              health http://127.0.0.1:47850/health
            # mlx-openai-server.yaml
            qwen3-8b: mlx-openai-server launch --model-path mlx-community/Qwen3-8B-4bit --host 127.0.0.1 --port 47850 --model-type lm
              health http://127.0.0.1:47850/health
            whisper-turbo: mlx-openai-server launch --model-path mlx-community/whisper-large-v3-turbo --host 127.0.0.1 --port 47850 --model-type whisper
              health http://127.0.0.1:47850/health
            # vllm.yaml
            llama-70b: vllm serve meta-llama/Llama-3.1-70B-Instruct --served-model-name llama-70b --host 127.0.0.1 --port 47850 --enable-sleep-mode --tensor-parallel-size 2 --max-model-len 32768
              env VLLM_SERVER_DEV_MODE=1
              health http://127.0.0.1:47850/health
              load POST http://127.0.0.1:47850/wake_up
              unload POST http://127.0.0.1:47850/sleep?level=1
            qwen-coder: docker run --rm --name hub-qwen-coder --gpus all -p 47850:47850 -e VLLM_SERVER_DEV_MODE=1 vllm/vllm-openai:latest --model Qwen/Qwen2.5-Coder-32B-Instruct --served-model-name qwen-coder --port 47850 --enable-sleep-mode
              health http://127.0.0.1:47850/health
              load POST http://127.0.0.1:47850/wake_up
              unload POST http://127.0.0.1:47850/sleep?level=1
              stop_command docker stop --time 30 hub-qwen-coder
        "##]].assert_eq(&out);
    }
}
