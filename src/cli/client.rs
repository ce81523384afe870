//! The CLI's HTTP client for the daemon: finds its address, sends the token, turns the error
//! envelope and an unreachable daemon into one clear line.
//!
//! Every request says it comes from the CLI (`X-Hub-Client: cli`) and a YAML body says it is
//! YAML: the daemon refuses writes that carry neither, because a web page could send those.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{DEFAULT_HOST, DEFAULT_PORT};
use crate::wire::{CLIENT_HEADER, Envelope, OpenAiError};

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
            http: http_client()
                .build()
                .expect("a plain HTTP client always builds"),
            token: std::env::var("HUB_TOKEN").ok().filter(|t| !t.is_empty()),
        }
    }

    /// This client, sending `token` (if any) instead of `HUB_TOKEN`.
    pub fn with_token(mut self, token: Option<String>) -> Client {
        self.token = token;
        self
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: String) -> anyhow::Result<T> {
        self.send(with_body(self.http.post(self.url(path)), body))
            .await
    }

    pub async fn post_query<T: DeserializeOwned, Q: Serialize + ?Sized>(
        &self,
        path: &str,
        query: &Q,
        body: String,
    ) -> anyhow::Result<T> {
        self.send(with_body(self.http.post(self.url(path)).query(query), body))
            .await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The daemon's base URL, `http://127.0.0.1:8000`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A GET whose answer is not JSON (logs): the body and the headers.
    pub async fn get_raw<Q: Serialize + ?Sized>(
        &self,
        path: &str,
        query: &Q,
    ) -> anyhow::Result<(Vec<u8>, reqwest::header::HeaderMap)> {
        let response = self
            .checked(self.http.get(self.url(path)).query(query))
            .await?;
        let headers = response.headers().clone();
        let bytes = response.bytes().await.context("cannot read hub's answer")?;
        Ok((bytes.to_vec(), headers))
    }

    /// A GET whose answer is read as a stream (the event stream). A read that waits longer than
    /// `idle` fails, so a connection that died silently is noticed.
    pub async fn stream<Q: Serialize + ?Sized>(
        &self,
        path: &str,
        query: &Q,
        idle: Duration,
    ) -> anyhow::Result<reqwest::Response> {
        let http = http_client()
            .read_timeout(idle)
            .build()
            .context("cannot build an HTTP client")?;
        self.checked(http.get(self.url(path)).query(query)).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let response = self.checked(request).await?;
        let bytes = response.bytes().await.context("cannot read hub's answer")?;
        serde_json::from_slice(&bytes).context("cannot parse hub's answer")
    }

    /// Sends with the token; an unreachable daemon and an error envelope become one clear line.
    async fn checked(
        &self,
        mut request: reqwest::RequestBuilder,
    ) -> anyhow::Result<reqwest::Response> {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_connect() || e.is_timeout() {
                anyhow!(Unreachable(format!(
                    "cannot reach hub at {}: is the daemon running? Start it with `hub start -f hub.yaml` (or `hub serve` in the foreground), or point --url/HUB_URL at it",
                    self.base
                )))
            } else {
                anyhow!("request to hub at {} failed: {e}", self.base)
            }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let bytes = response.bytes().await.context("cannot read hub's answer")?;
        // hub's envelope, or the gateway's OpenAI-shaped one (`/v1`).
        let message = match serde_json::from_slice::<Envelope>(&bytes) {
            Ok(envelope) => format!("{} ({})", envelope.error.message, status),
            Err(_) => match serde_json::from_slice::<OpenAiError>(&bytes) {
                Ok(error) => format!("{} ({})", error.error.message, status),
                Err(_) => format!("hub answered {status}: {}", String::from_utf8_lossy(&bytes)),
            },
        };
        Err(anyhow!(Refused {
            status: status.as_u16(),
            message
        }))
    }
}

/// The key for the gateway's own reads (`GET /v1/models`): `HUB_TOKEN`, which opens `/v1` too,
/// else the first of `HUB_API_KEYS` (comma separated, as the daemon reads it).
pub fn gateway_key() -> Option<String> {
    let token = std::env::var("HUB_TOKEN").ok().filter(|t| !t.is_empty());
    token.or_else(|| {
        std::env::var("HUB_API_KEYS").ok().and_then(|keys| {
            keys.split(',')
                .map(str::trim)
                .find(|k| !k.is_empty())
                .map(ToString::to_string)
        })
    })
}

/// The daemon answered, with an error status.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub status: u16,
    pub message: String,
}

/// Whether the daemon answered that the request itself is wrong (4xx): asking again will not help.
pub fn is_refused(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<Refused>()
        .is_some_and(|r| (400..500).contains(&r.status))
}

/// The client every request goes through: straight to the daemon, marked as the CLI's.
fn http_client() -> reqwest::ClientBuilder {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        CLIENT_HEADER,
        reqwest::header::HeaderValue::from_static("cli"),
    );
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .default_headers(headers)
}

/// A request with `body`, which is always a hub.yaml when there is one.
fn with_body(request: reqwest::RequestBuilder, body: String) -> reqwest::RequestBuilder {
    if body.is_empty() {
        return request;
    }
    request
        .header(reqwest::header::CONTENT_TYPE, "application/yaml")
        .body(body)
}

/// The daemon did not answer at all (as opposed to answering with an error).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

/// Whether an error means that no daemon answered.
pub fn is_unreachable(error: &anyhow::Error) -> bool {
    error.downcast_ref::<Unreachable>().is_some()
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
