//! The CLI's HTTP client for the daemon: finds its address, sends the token, turns the error
//! envelope and an unreachable daemon into one clear line.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::Envelope;
use crate::config::{DEFAULT_HOST, DEFAULT_PORT};

pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Client {
    /// The daemon at `--url`/`HUB_URL`, else at the host and port that `config` names, else at
    /// the defaults.
    pub fn new(url: Option<String>, config: &Path) -> Client {
        let base = url.unwrap_or_else(|| address_from_config(config));
        Client {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(Duration::from_secs(2))
                .build()
                .expect("a plain HTTP client always builds"),
            token: std::env::var("HUB_TOKEN").ok().filter(|t| !t.is_empty()),
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: String) -> anyhow::Result<T> {
        self.send(self.http.post(self.url(path)).body(body)).await
    }

    pub async fn post_query<T: DeserializeOwned, Q: Serialize>(
        &self,
        path: &str,
        query: &Q,
        body: String,
    ) -> anyhow::Result<T> {
        self.send(self.http.post(self.url(path)).query(query).body(body))
            .await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        mut request: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_connect() || e.is_timeout() {
                anyhow!(
                    "cannot reach hub at {}: is the daemon running? Start it with `hub serve -f hub.yaml`, or point --url/HUB_URL at it",
                    self.base
                )
            } else {
                anyhow!("request to hub at {} failed: {e}", self.base)
            }
        })?;
        let status = response.status();
        let bytes = response.bytes().await.context("cannot read hub's answer")?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<Envelope>(&bytes) {
                Ok(envelope) => anyhow!("{} ({})", envelope.error.message, status),
                Err(_) => anyhow!("hub answered {status}: {}", String::from_utf8_lossy(&bytes)),
            });
        }
        serde_json::from_slice(&bytes).context("cannot parse hub's answer")
    }
}

/// `http://host:port` from the config's top-level keys, read leniently: a client command should
/// find the daemon even if the file has an unrelated mistake.
fn address_from_config(config: &Path) -> String {
    #[derive(serde::Deserialize, Default)]
    struct Address {
        host: Option<String>,
        port: Option<u16>,
    }
    let address: Address = std::fs::read_to_string(config)
        .ok()
        .and_then(|text| serde_yaml::from_str(&text).ok())
        .unwrap_or_default();
    let host = match address.host.as_deref() {
        None | Some("0.0.0.0") | Some("::") => DEFAULT_HOST.to_string(),
        Some(host) if host.contains(':') => format!("[{host}]"),
        Some(host) => host.to_string(),
    };
    format!("http://{host}:{}", address.port.unwrap_or(DEFAULT_PORT))
}
