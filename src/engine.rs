//! Engines at run time: rendering argv and request templates, and the HTTP calls hub makes to a
//! worker (readiness probe, load, unload). Only this module speaks HTTP to workers.

use std::time::Duration;

use anyhow::{Context, bail};

use crate::config::{Engine, HttpCall, HttpMethod, RunSpec};

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

fn url(vars: &Vars, path: &str) -> String {
    format!("http://{}:{}{}", vars.host, vars.port, render(path, vars))
}

/// One readiness probe: true when the health path answers 2xx.
pub async fn probe(client: &reqwest::Client, engine: &Engine, vars: &Vars<'_>) -> bool {
    let request = client
        .get(url(vars, &engine.health.path))
        .timeout(Duration::from_secs(2));
    matches!(request.send().await, Ok(r) if r.status().is_success())
}

/// Sends a load or unload request and checks its answer.
pub async fn call(
    client: &reqwest::Client,
    call: &HttpCall,
    vars: &Vars<'_>,
) -> anyhow::Result<()> {
    let method = match call.method {
        HttpMethod::Get => reqwest::Method::GET,
        HttpMethod::Post => reqwest::Method::POST,
        HttpMethod::Put => reqwest::Method::PUT,
        HttpMethod::Delete => reqwest::Method::DELETE,
    };
    let mut request = client
        .request(method, url(vars, &call.path))
        .timeout(call.timeout);
    if let Some(body) = &call.body {
        request = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(render(body, vars));
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("{} {} failed", call.method_str(), call.path))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let body: String = body.chars().take(300).collect();
        bail!(
            "{} {} answered {status}: {body}",
            call.method_str(),
            call.path
        );
    }
    Ok(())
}

impl HttpCall {
    fn method_str(&self) -> &'static str {
        match self.method {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Delete => "DELETE",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
