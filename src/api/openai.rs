//! The gateway's endpoints: the OpenAI API on the hub's own port, routed by each request's
//! `model` to that model's worker, which is started and loaded first when it must be
//! (`gateway::Gateway::admit` waits for that), and `/upstream/{model}/{*path}` for anything else a
//! worker serves. Answers pass through unbuffered (`gateway::Proxy`); the gateway's own errors
//! are OpenAI-shaped, so OpenAI clients raise the right exception.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Instant;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::config::ModelName;
use crate::gateway::{Forward, NotAdmitted, ProxyError, Refusal};
use crate::wire::{ModelEntry, ModelList, OpenAiError, OpenAiErrorBody};

/// The largest request body the gateway takes: a long chat, a batch of embeddings, an audio
/// file (OpenAI's own limit for audio is 25 MB).
pub const MAX_REQUEST_BYTES: u64 = 32 << 20;

/// Marks an answer that is the worker's own, so the front door passes it on untouched.
#[derive(Debug, Clone, Copy)]
pub(super) struct Proxied;

/// An error answer of the gateway's own, in the OpenAI shape.
#[derive(Debug)]
pub struct GatewayError {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl GatewayError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: String) -> Self {
        GatewayError {
            status,
            kind,
            code,
            message,
            retry_after: None,
        }
    }

    pub(super) fn forbidden(message: String) -> Self {
        GatewayError::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "forbidden",
            message,
        )
    }

    pub(super) fn unauthorized(message: &str) -> Self {
        GatewayError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_api_key",
            message.to_string(),
        )
    }

    fn bad_request(message: String) -> Self {
        GatewayError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            message,
        )
    }

    fn unknown_model(model: &str) -> Self {
        GatewayError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!(
                "the model \"{model}\" does not exist: GET /v1/models lists the models of hub.yaml"
            ),
        )
    }

    pub(super) fn too_large() -> Self {
        GatewayError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!("request body too large: the gateway takes at most {MAX_REQUEST_BYTES} bytes"),
        )
    }

    fn refused(refusal: Refusal) -> Self {
        let status =
            StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let kind = match status {
            StatusCode::NOT_FOUND => "invalid_request_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            _ => "service_unavailable_error",
        };
        GatewayError {
            status,
            kind,
            code: refusal.code,
            message: refusal.message,
            retry_after: refusal.retry_after,
        }
    }

    fn not_admitted(model: &ModelName, why: NotAdmitted) -> Self {
        match why {
            NotAdmitted::Refused(refusal) => GatewayError::refused(refusal),
            NotAdmitted::QueueFull { max_queued } => GatewayError {
                retry_after: Some(1),
                ..GatewayError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "queue_full",
                    format!(
                        "{max_queued} requests already wait for model \"{model}\" (hub.yaml's gateway.max_queued); try again shortly"
                    ),
                )
            },
            NotAdmitted::TimedOut { waited } => GatewayError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout_error",
                "load_timeout",
                format!(
                    "model \"{model}\" was not ready after {:.1}s (hub.yaml's gateway.queue_timeout): it is starting, loading or waiting for room in its group; `hub status {model}` shows why",
                    waited.as_secs_f64()
                ),
            ),
        }
    }

    fn upstream(model: &ModelName, error: ProxyError) -> Self {
        match error {
            ProxyError::Timeout(after) => GatewayError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout_error",
                "upstream_timeout",
                format!(
                    "model \"{model}\"'s worker did not answer within {after:?} (hub.yaml's gateway.upstream_timeout)"
                ),
            ),
            ProxyError::Unreachable(why) => GatewayError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "upstream_error",
                format!("model \"{model}\"'s worker could not be reached: {why}"),
            ),
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let body = OpenAiError {
            error: OpenAiErrorBody {
                message: self.message,
                kind: self.kind.to_string(),
                param: None,
                code: self.code.to_string(),
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Every model of hub.yaml, in the OpenAI list shape, with its phase, its memory, and whether a
/// request would be served at once or wait for a start or load.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "gateway",
    responses(
        (status = 200, description = "The models a request may name", body = ModelList),
        (status = 401, description = "A missing or wrong API key", body = OpenAiError),
    )
)]
pub(super) async fn list_models(State(state): State<AppState>) -> Json<ModelList> {
    let snapshot = state.hub.snapshot();
    let statuses: HashMap<&str, &crate::wire::ModelStatus> = snapshot
        .status
        .models
        .iter()
        .map(|m| (m.name.as_str(), m))
        .collect();
    let created = time::OffsetDateTime::parse(
        &snapshot.status.config.applied_at,
        &time::format_description::well_known::Rfc3339,
    )
    .map_or(0, |t| t.unix_timestamp());
    let data = snapshot
        .desired
        .models
        .values()
        .map(|spec| {
            let status = statuses.get(spec.name.as_str());
            let lane = state.hub.gateway.get(spec.name.as_str());
            // A lane says it live; a model no request has asked for yet, its status.
            let open = lane
                .as_ref()
                .map(|l| matches!(l.route(), crate::gateway::Route::Open { .. }));
            let phase = status.map_or("stopped".to_string(), |s| s.worker.phase.to_string());
            let memory = status.map_or("unloaded".to_string(), |s| s.memory.state.to_string());
            let ready = open.unwrap_or(phase == "ready" && memory == "loaded");
            ModelEntry {
                id: spec.name.to_string(),
                object: "model".to_string(),
                created,
                owned_by: "hub".to_string(),
                model_type: spec.model_type.clone(),
                group: spec.group.clone(),
                desired: spec.state.as_str().to_string(),
                phase,
                memory,
                ready,
                on_demand: spec.on_demand,
                in_flight: lane.as_ref().map_or(0, |l| l.in_flight()),
                queued: lane.as_ref().map_or(0, |l| l.queued()),
            }
        })
        .collect();
    Json(ModelList {
        object: "list".to_string(),
        data,
    })
}

/// Chat completions (streaming too), routed by `model`.
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "gateway",
    request_body(content = Object, content_type = "application/json", description = "An OpenAI chat completion request; `model` names a model of hub.yaml"),
    responses(
        (status = 200, description = "The worker's answer, passed through (server-sent events when `stream` is true)", body = Object),
        (status = 404, description = "`model_not_found`", body = OpenAiError),
        (status = 429, description = "`group_full` (its group can never make room) or `queue_full`", body = OpenAiError),
        (status = 503, description = "`model_unavailable`: backing off after a failure (with `Retry-After`), `on_demand: false`, or stopped by an operator", body = OpenAiError),
        (status = 504, description = "`load_timeout` or `upstream_timeout`", body = OpenAiError),
    )
)]
pub(super) async fn chat_completions(State(state): State<AppState>, request: Request) -> Response {
    forward_body(&state, request, Named::Json).await
}

/// Text completions, routed by `model`.
#[utoipa::path(
    post,
    path = "/v1/completions",
    tag = "gateway",
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 200, description = "The worker's answer, passed through", body = Object),
        (status = 404, description = "`model_not_found`", body = OpenAiError),
    )
)]
pub(super) async fn completions(State(state): State<AppState>, request: Request) -> Response {
    forward_body(&state, request, Named::Json).await
}

/// Embeddings, routed by `model`.
#[utoipa::path(
    post,
    path = "/v1/embeddings",
    tag = "gateway",
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 200, description = "The worker's answer, passed through", body = Object),
        (status = 404, description = "`model_not_found`", body = OpenAiError),
    )
)]
pub(super) async fn embeddings(State(state): State<AppState>, request: Request) -> Response {
    forward_body(&state, request, Named::Json).await
}

/// The Responses API, routed by `model`.
#[utoipa::path(
    post,
    path = "/v1/responses",
    tag = "gateway",
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 200, description = "The worker's answer, passed through", body = Object),
        (status = 404, description = "`model_not_found`", body = OpenAiError),
    )
)]
pub(super) async fn responses(State(state): State<AppState>, request: Request) -> Response {
    forward_body(&state, request, Named::Json).await
}

/// Transcriptions: a multipart form whose `model` field names the model.
#[utoipa::path(
    post,
    path = "/v1/audio/transcriptions",
    tag = "gateway",
    request_body(content = Object, content_type = "multipart/form-data", description = "`file` and `model`, as OpenAI's"),
    responses(
        (status = 200, description = "The worker's answer, passed through", body = Object),
        (status = 404, description = "`model_not_found`", body = OpenAiError),
    )
)]
pub(super) async fn transcriptions(State(state): State<AppState>, request: Request) -> Response {
    forward_body(&state, request, Named::Multipart).await
}

/// Anything else one model's worker serves (`/props`, `/metrics`, `/tokenize`, ...), passed
/// straight to it as `/{path}`; the model is started and loaded first like any request's.
#[utoipa::path(
    method(get, post, put, delete),
    path = "/upstream/{model}/{*path}",
    tag = "gateway",
    params(
        ("model" = String, Path, description = "A model of hub.yaml"),
        ("path" = String, Path, description = "The path on the worker, without its leading `/`"),
    ),
    responses(
        (status = 200, description = "The worker's answer, passed through", body = Object),
        (status = 404, description = "`model_not_found`", body = OpenAiError),
    )
)]
pub(super) async fn upstream(
    State(state): State<AppState>,
    Path((model, path)): Path<(String, String)>,
    request: Request,
) -> Response {
    let arrived = Instant::now();
    let (parts, body) = request.into_parts();
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(error) => return error.into_response(),
    };
    let mut path_and_query = format!("/{path}");
    if let Some(query) = parts.uri.query() {
        path_and_query.push('?');
        path_and_query.push_str(query);
    }
    let forward = Forward {
        method: parts.method,
        path_and_query,
        headers: parts.headers,
        body,
    };
    forward_to(&state, &model, forward, arrived).await
}

/// Where a request names its model.
enum Named {
    /// The JSON body's `model`.
    Json,
    /// The multipart form's `model` field.
    Multipart,
}

async fn forward_body(state: &AppState, request: Request, named: Named) -> Response {
    let arrived = Instant::now();
    let (parts, body) = request.into_parts();
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(error) => return error.into_response(),
    };
    let model = match named {
        Named::Json => model_in_json(&body),
        Named::Multipart => model_in_form(&parts.headers, &body),
    };
    let model = match model {
        Ok(model) => model,
        Err(error) => return error.into_response(),
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string());
    let forward = Forward {
        method: parts.method,
        path_and_query,
        headers: parts.headers,
        body,
    };
    forward_to(state, &model, forward, arrived).await
}

async fn read_body(body: Body) -> Result<Bytes, GatewayError> {
    axum::body::to_bytes(body, MAX_REQUEST_BYTES as usize)
        .await
        .map_err(|_| GatewayError::too_large())
}

/// Admits the request to its model (waiting for a start or load if need be) and forwards it.
async fn forward_to(state: &AppState, model: &str, forward: Forward, arrived: Instant) -> Response {
    let snapshot = state.hub.snapshot();
    let Some(name) = ModelName::new(model)
        .ok()
        .filter(|name| snapshot.desired.models.contains_key(name))
    else {
        return GatewayError::unknown_model(model).into_response();
    };
    let settings = snapshot.desired.settings.gateway.clone();
    drop(snapshot);
    let gateway = &state.hub.gateway;
    let ticket = match gateway
        .admit(&name, settings.queue_timeout, settings.max_queued)
        .await
    {
        Ok(ticket) => ticket,
        Err(why) => {
            let error = GatewayError::not_admitted(&name, why);
            if let Some(lane) = gateway.get(name.as_str()) {
                lane.stats.answered(error.status.as_u16());
            }
            return error.into_response();
        }
    };
    let lane = ticket.lane().clone();
    lane.stats.waited(ticket.waited);
    let port = ticket.port;
    match state
        .proxy
        .send(port, forward, ticket, arrived, settings.upstream_timeout)
        .await
    {
        Ok(mut response) => {
            lane.stats.answered(response.status().as_u16());
            response.extensions_mut().insert(Proxied);
            response
        }
        Err(error) => {
            let error = GatewayError::upstream(&name, error);
            lane.stats.answered(error.status.as_u16());
            error.into_response()
        }
    }
}

/// The `model` a JSON request names.
fn model_in_json(body: &[u8]) -> Result<String, GatewayError> {
    #[derive(serde::Deserialize)]
    struct Named<'a> {
        #[serde(borrow)]
        model: Option<Cow<'a, str>>,
    }
    let named: Named = serde_json::from_slice(body).map_err(|e| {
        GatewayError::bad_request(format!("the request body is not a JSON object: {e}"))
    })?;
    named
        .model
        .map(Cow::into_owned)
        .ok_or_else(|| GatewayError::bad_request("the request names no `model`".to_string()))
}

/// The `model` field of a multipart form.
fn model_in_form(headers: &HeaderMap, body: &[u8]) -> Result<String, GatewayError> {
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"))
        .and_then(|v| {
            v.split(';')
                .filter_map(|p| p.trim().split_once('='))
                .find(|(k, _)| k.eq_ignore_ascii_case("boundary"))
                .map(|(_, b)| b.trim_matches('"').to_string())
        })
        .ok_or_else(|| {
            GatewayError::bad_request(
                "expected a multipart/form-data body with a boundary".to_string(),
            )
        })?;
    form_field(body, &boundary, "model")
        .ok_or_else(|| GatewayError::bad_request("the form has no `model` field".to_string()))
}

/// The value of a multipart form's text field `name`.
fn form_field(body: &[u8], boundary: &str, name: &str) -> Option<String> {
    let delimiter = format!("--{boundary}");
    let wanted = format!("name=\"{name}\"");
    let mut rest = body;
    while let Some(at) = find(rest, delimiter.as_bytes()) {
        rest = &rest[at + delimiter.len()..];
        let end = find(rest, b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&rest[..end]).to_ascii_lowercase();
        let content = &rest[end + 4..];
        let is_field = head.lines().any(|line| {
            line.starts_with("content-disposition:") && line.split(';').any(|p| p.trim() == wanted)
        });
        if is_field {
            let stop = find(content, format!("\r\n{delimiter}").as_bytes())?;
            return Some(String::from_utf8_lossy(&content[..stop]).trim().to_string());
        }
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_is_read_from_json_and_from_a_form() {
        assert_eq!(
            model_in_json(br#"{"messages":[],"model":"alpha","stream":true}"#).unwrap(),
            "alpha"
        );
        assert_eq!(
            model_in_json(br#"{"messages":[]}"#).unwrap_err().code,
            "invalid_request"
        );
        assert_eq!(
            model_in_json(b"not json").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );

        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\x00\x01model\r\n--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper\r\n--XyZ--\r\n";
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("multipart/form-data; boundary=XyZ"),
        );
        assert_eq!(model_in_form(&headers, body).unwrap(), "whisper");
        assert!(form_field(body, "XyZ", "language").is_none());
    }
}
