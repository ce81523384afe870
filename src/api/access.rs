//! Who may call the API, checked before any handler runs.
//!
//! A web browser is the danger: any page it shows can send requests to hub on loopback, and a
//! page whose DNS name is rebound to 127.0.0.1 even counts as hub's own origin to the browser.
//! `POST /hub/apply` can define an engine whose argv is any program, so a write that a page got
//! the browser to send is code execution. Three checks close that door, each enough on its own
//! against today's browsers, together also against older ones:
//!
//! - Host: on a loopback bind, every request (reads too: status and logs are not for other sites)
//!   must be addressed to `localhost`, a loopback IP or an `--allowed-host` name. A rebound name
//!   arrives as `Host: evil.example`. Any port is fine: the port adds nothing against rebinding,
//!   and SSH tunnels and `kubectl port-forward` reach hub on another one. A non-loopback bind
//!   needs HUB_TOKEN, which a page cannot know, and its names (the machine's, a Service's, a
//!   proxy's) cannot be listed ahead, so there the Host is not checked.
//! - Origin: a write that carries `Origin` (browsers send it on every POST) must come from the
//!   origin it is addressed to (`http://` + its Host) or from an `--allowed-host` name.
//! - Preflight: a write must carry `Content-Type: application/yaml` or `application/json`, or the
//!   `X-Hub-Client` header. A browser sends neither to another origin without asking first
//!   (a CORS preflight), and hub's answer to that preflight allows nothing.
//!
//! Then, with HUB_TOKEN set, a write needs `Authorization: Bearer <HUB_TOKEN>`.

use std::sync::Arc;

use axum::http::uri::Authority;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::ApiError;
use super::openai::GatewayError;
use crate::wire::{CLIENT_HEADER, ErrorKind};

/// The shortest HUB_TOKEN hub accepts: a shorter one can be found by brute force over the network.
const MIN_TOKEN_BYTES: usize = 16;

/// How the daemon is reached and what it asks of callers: built once at start, checked on every
/// request.
pub struct Access {
    token: Option<Arc<str>>,
    /// Inference keys (`HUB_API_KEYS`, a keys file): they open the gateway (`/v1`, `/upstream`)
    /// and nothing else. With none and no token the gateway is open (on loopback only).
    api_keys: Vec<Arc<str>>,
    /// Whether the API listens on loopback only; then every request's Host is checked.
    loopback: bool,
    /// Lowercase names (or IPs) under which clients and pages may also reach hub: a proxy's, a
    /// Service's.
    allowed_hosts: Vec<String>,
}

impl Access {
    /// The access rules for an API bound to `host`: refuses a non-loopback bind without a token,
    /// a weak token, and an allowed host that is not a plain name.
    pub fn new(
        token: Option<String>,
        host: &str,
        allowed_hosts: &[String],
    ) -> anyhow::Result<Access> {
        Access::with_keys(token, Vec::new(), host, allowed_hosts)
    }

    /// [`Access::new`] with inference keys for the gateway.
    pub fn with_keys(
        token: Option<String>,
        api_keys: Vec<String>,
        host: &str,
        allowed_hosts: &[String],
    ) -> anyhow::Result<Access> {
        for key in &api_keys {
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
                anyhow::bail!(
                    "an inference key (HUB_API_KEYS or the keys file) must be printable ASCII without spaces: clients send it in an HTTP header"
                );
            }
        }
        let loopback = is_loopback(host);
        if let Some(token) = &token {
            check_token(token)?;
        } else if !loopback {
            anyhow::bail!(
                "refusing to serve the API on non-loopback address {host} without a token: set HUB_TOKEN, or bind 127.0.0.1"
            );
        }
        let allowed_hosts = allowed_hosts
            .iter()
            .map(|name| allowed_host(name))
            .collect::<anyhow::Result<_>>()?;
        Ok(Access {
            token: token.map(Into::into),
            api_keys: api_keys.into_iter().map(Into::into).collect(),
            loopback,
            allowed_hosts,
        })
    }

    /// Checks a request before it reaches a handler: its Host, and for a write its Origin, its
    /// preflight marker and the token.
    // The refusal is the answer itself, built once per refused request: boxing it buys nothing.
    #[allow(clippy::result_large_err)]
    pub(super) fn check(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<(), Response> {
        if is_gateway(path) {
            self.check_host(headers)
                .map_err(IntoResponse::into_response)?;
            return self
                .check_inference(headers)
                .map_err(IntoResponse::into_response);
        }
        self.check_management(method, headers)
            .map_err(IntoResponse::into_response)
    }

    /// On a loopback bind, the request must be addressed to this daemon.
    fn check_host(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.loopback {
            for host in headers.get_all(header::HOST) {
                if !self.is_own_host(host) {
                    return Err(ApiError::forbidden(format!(
                        "refused: this request is addressed to host {}, not to this daemon on loopback (localhost, 127.0.0.1 or [::1]); hub refuses other names so that a web page cannot reach it through DNS rebinding. If you reach hub under another name (a proxy, a Service), start it with --allowed-host NAME or HUB_ALLOWED_HOSTS=NAME",
                        shown(host)
                    )));
                }
            }
        }
        Ok(())
    }

    /// The management API's rule: reads are open; a write needs hub's own origin, the
    /// preflight marker and, with HUB_TOKEN set, the token.
    fn check_management(&self, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
        self.check_host(headers)?;
        if is_read(method) {
            return Ok(());
        }
        for origin in headers.get_all(header::ORIGIN) {
            if !self.is_own_origin(origin, headers.get(header::HOST)) {
                return Err(ApiError::forbidden(format!(
                    "refused: this write comes from the web page at {}, which is not hub's own origin, and hub takes no writes from other sites. Send writes with the hub CLI, curl or a script (they send no Origin); if the page is hub itself behind a proxy, start hub with --allowed-host NAME",
                    shown(origin)
                )));
            }
        }
        if !needs_preflight(headers) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorKind::UnsupportedMediaType,
                "a write must show that it does not come from a web form: send its body as `Content-Type: application/yaml` (or application/json), or add the header `X-Hub-Client: <your tool>`; the hub CLI does both",
            ));
        }
        if let Some(token) = &self.token {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if !given.is_some_and(|given| same(given.as_bytes(), token.as_bytes())) {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    ErrorKind::Unauthorized,
                    "this endpoint needs `Authorization: Bearer <token>` with the daemon's HUB_TOKEN; the CLI sends it when HUB_TOKEN is set",
                ));
            }
        }
        Ok(())
    }

    /// The gateway's rule: OpenAI clients send a key as `Authorization: Bearer` and none of the
    /// markers a management write needs (a multipart upload is a form's content type), so what
    /// keeps a web page out is the Origin (a page's request carries its own), and then the key:
    /// any inference key or the management token, when either is set.
    fn check_inference(&self, headers: &HeaderMap) -> Result<(), GatewayError> {
        for origin in headers.get_all(header::ORIGIN) {
            if !self.is_own_origin(origin, headers.get(header::HOST)) {
                return Err(GatewayError::forbidden(format!(
                    "refused: this request comes from the web page at {}, which is not hub's own origin; if it is hub itself behind a proxy, start hub with --allowed-host NAME",
                    shown(origin)
                )));
            }
        }
        if self.token.is_none() && self.api_keys.is_empty() {
            return Ok(());
        }
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(given) = given else {
            return Err(GatewayError::unauthorized(
                "missing API key: send `Authorization: Bearer <key>` with one of the daemon's HUB_API_KEYS (or its HUB_TOKEN)",
            ));
        };
        // Every key is compared whole, so the time taken does not say which one came closest.
        let matched = self
            .api_keys
            .iter()
            .chain(self.token.as_ref())
            .fold(false, |found, key| {
                same(given.as_bytes(), key.as_bytes()) | found
            });
        if !matched {
            return Err(GatewayError::unauthorized(
                "invalid API key: it is not one of the daemon's HUB_API_KEYS (nor its HUB_TOKEN)",
            ));
        }
        Ok(())
    }

    /// Whether a Host header names this daemon on loopback: `localhost`, a loopback IP, or an
    /// allowed name; with any port.
    fn is_own_host(&self, host: &HeaderValue) -> bool {
        authority(host).is_some_and(|(name, _)| is_loopback(&name) || self.is_allowed(&name))
    }

    /// Whether an Origin header is the origin the request is addressed to (`http://` and its Host:
    /// the page came from this daemon) or an allowed name.
    fn is_own_origin(&self, origin: &HeaderValue, host: Option<&HeaderValue>) -> bool {
        let Some((scheme, name, port)) = origin.to_str().ok().and_then(parse_origin) else {
            return false;
        };
        if self.is_allowed(&name) {
            return true;
        }
        let addressed = host.and_then(authority);
        scheme == "http"
            && addressed.is_some_and(|(host, host_port)| host == name && host_port == port)
    }

    fn is_allowed(&self, name: &str) -> bool {
        self.allowed_hosts.iter().any(|allowed| allowed == name)
    }
}

/// Never shows the token, so that a log line or a panic message cannot leak it.
impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("api_keys", &self.api_keys.len())
            .field("loopback", &self.loopback)
            .field("allowed_hosts", &self.allowed_hosts)
            .finish()
    }
}

/// Checks that a HUB_TOKEN is one worth having: long, and the same bytes every client will send.
pub(super) fn check_token(token: &str) -> anyhow::Result<()> {
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        anyhow::bail!(
            "HUB_TOKEN must be printable ASCII without spaces: clients send it in an HTTP header, which trims spaces and mangles other bytes; use a random one, e.g. `openssl rand -hex 32`"
        );
    }
    if token.len() < MIN_TOKEN_BYTES {
        anyhow::bail!(
            "HUB_TOKEN is too short ({} characters): a token of fewer than {MIN_TOKEN_BYTES} can be found by brute force over the network; use a random one, e.g. `openssl rand -hex 32`",
            token.len()
        );
    }
    Ok(())
}

/// Whether an address is loopback, where an API without a token is safe.
pub fn is_loopback(host: &str) -> bool {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a path is the gateway's: the OpenAI API and the passthrough to one worker.
pub(super) fn is_gateway(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/") || path.starts_with("/upstream/")
}

/// Whether a request only reads. Everything else is a write.
pub(super) fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// `OPTIONS` (a CORS preflight, or a client asking): 204 with `Allow`, and never any
/// `Access-Control-Allow-*` header, so a browser refuses to send another site's write.
///
/// The router knows each path's methods and says them in the `Allow` of its 405 to `OPTIONS`;
/// that answer becomes the 204. An unknown path stays 404.
pub(super) fn options(routed: Response) -> Response {
    if routed.status() != StatusCode::METHOD_NOT_ALLOWED {
        return routed;
    }
    let allow = routed
        .headers()
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .map_or_else(
            || "OPTIONS".to_string(),
            |methods| format!("{methods},OPTIONS"),
        );
    (StatusCode::NO_CONTENT, [(header::ALLOW, allow)]).into_response()
}

/// Whether a browser would have asked before sending this request to another origin: it carries
/// a content type no form or simple request has, or hub's client header.
fn needs_preflight(headers: &HeaderMap) -> bool {
    if headers.contains_key(CLIENT_HEADER) {
        return true;
    }
    let mut types = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(content_type), None) = (types.next(), types.next()) else {
        return false;
    };
    // An allow list, not a deny list of the form types: a browser parses content types its own
    // way, and whatever it might read as text/plain must not pass here.
    let essence = content_type
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    matches!(
        essence.as_deref(),
        Some("application/yaml" | "application/x-yaml" | "text/yaml" | "application/json")
    )
}

/// The lowercase name and the port (80 when absent: hub speaks plain HTTP) of a Host header.
fn authority(value: &HeaderValue) -> Option<(String, u16)> {
    let authority: Authority = value.to_str().ok()?.parse().ok()?;
    if authority.as_str().contains('@') {
        return None;
    }
    Some((
        authority.host().to_ascii_lowercase(),
        authority.port_u16().unwrap_or(80),
    ))
}

/// The scheme, lowercase name and port of an Origin header (`http://localhost:8000`); `None` for
/// `null` and anything that is not an http(s) origin.
fn parse_origin(origin: &str) -> Option<(&'static str, String, u16)> {
    let (scheme, default_port, rest) = if let Some(rest) = origin.strip_prefix("http://") {
        ("http", 80, rest)
    } else if let Some(rest) = origin.strip_prefix("https://") {
        ("https", 443, rest)
    } else {
        return None;
    };
    if rest.contains(['/', '?', '#', '@']) {
        return None;
    }
    let authority: Authority = rest.parse().ok()?;
    Some((
        scheme,
        authority.host().to_ascii_lowercase(),
        authority.port_u16().unwrap_or(default_port),
    ))
}

/// An `--allowed-host` entry: a name or an IP, without a port (any port is allowed).
fn allowed_host(name: &str) -> anyhow::Result<String> {
    let invalid = || {
        anyhow::anyhow!(
            "invalid allowed host {name:?}: give a host name or IP as clients write it in URLs (hub.example.com, 10.0.0.5, [fd00::5]), without scheme or port"
        )
    };
    let authority: Authority = name.parse().map_err(|_| invalid())?;
    if authority.port().is_some() || authority.as_str().contains('@') || authority.host().is_empty()
    {
        return Err(invalid());
    }
    Ok(authority.host().to_ascii_lowercase())
}

/// A header value as it can be shown in a message.
fn shown(value: &HeaderValue) -> String {
    format!("{:?}", String::from_utf8_lossy(value.as_bytes()))
}

/// Compares secrets in time that does not depend on where they differ.
pub(super) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Adds what [`Access::check`] can answer to every operation of the OpenAPI document, so no handler has
/// to repeat it: 403 on every operation (Host, Origin), and on writes 401, 415 and the
/// `X-Hub-Client` header.
pub(super) fn document(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required, ResponseBuilder};

    let envelope = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Envelope")))
                        .build(),
                )
                .build(),
        )
    };
    let openai_error = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("OpenAiError")))
                        .build(),
                )
                .build(),
        )
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let gateway = is_gateway(path);
        let operations = [
            (Method::GET, &mut item.get),
            (Method::HEAD, &mut item.head),
            (Method::POST, &mut item.post),
            (Method::PUT, &mut item.put),
            (Method::PATCH, &mut item.patch),
            (Method::DELETE, &mut item.delete),
        ];
        for (method, operation) in operations {
            let Some(operation) = operation else { continue };
            let responses = &mut operation.responses.responses;
            if gateway {
                responses.insert(
                    "403".to_string(),
                    openai_error("On a loopback bind: the Host is not localhost, a loopback IP or an allowed host; or the request comes from a web page of another origin"),
                );
                responses.insert(
                    "401".to_string(),
                    openai_error("HUB_API_KEYS or HUB_TOKEN is set and the request lacks `Authorization: Bearer` with one of them (`invalid_api_key`)"),
                );
                responses.insert(
                    "413".to_string(),
                    openai_error("The body is over the gateway's limit (`request_too_large`)"),
                );
                operation.security =
                    Some(vec![utoipa::openapi::security::SecurityRequirement::new(
                        "bearer",
                        Vec::<String>::new(),
                    )]);
                continue;
            }
            responses.insert(
                "403".to_string(),
                envelope(if is_read(&method) {
                    "On a loopback bind: the Host is not localhost, a loopback IP or an allowed host"
                } else {
                    "On a loopback bind: the Host is not localhost, a loopback IP or an allowed host; or the request comes from a web page of another origin"
                }),
            );
            if is_read(&method) {
                continue;
            }
            responses.insert(
                "401".to_string(),
                envelope(
                    "HUB_TOKEN is set and the request lacks `Authorization: Bearer <HUB_TOKEN>`",
                ),
            );
            responses.insert(
                "415".to_string(),
                envelope("Neither `Content-Type: application/yaml` (or `application/json`) nor the `X-Hub-Client` header: a web form could have sent it"),
            );
            operation.parameters.get_or_insert_with(Vec::new).push(RefOr::T(
                ParameterBuilder::new()
                    .name("X-Hub-Client")
                    .parameter_in(ParameterIn::Header)
                    .required(Required::False)
                    .description(Some(
                        "Any value, such as the client's name. A write needs this header unless its `Content-Type` is `application/yaml` or `application/json`.",
                    ))
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                    .build(),
            ));
        }
    }
}
