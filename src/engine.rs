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
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let activity = body
        .get("in_flight")
        .and_then(serde_json::Value::as_u64)
        .map(|in_flight| Activity {
            in_flight: in_flight.min(u64::from(u32::MAX)) as u32,
            idle_ms: body.get("idle_ms").and_then(serde_json::Value::as_u64),
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
}
