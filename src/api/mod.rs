//! The HTTP API (axum). It only reads published snapshots and sends events to the loop; it never
//! touches processes or the observed state itself.

mod error;

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use error::{ApiError, Envelope, ErrorBody};

use crate::config::{self, MAX_FILE_BYTES};
use crate::plan;
use crate::reconcile::{ApplyReply, Event, Handle, ModelReply, Verb};
use crate::status::ModelStatus;

#[derive(Clone)]
struct AppState {
    hub: Handle,
    token: Option<Arc<str>>,
}

/// The router. `token`, when set, is required as `Authorization: Bearer` on every write.
pub fn router(hub: Handle, token: Option<String>) -> Router {
    let state = AppState {
        hub,
        token: token.map(Into::into),
    };
    let writes = Router::new()
        .route("/hub/plan", post(plan_handler))
        .route("/hub/apply", post(apply))
        .route("/hub/reload", post(reload))
        .route("/hub/shutdown", post(shutdown))
        .route("/hub/models/{name}/{verb}", post(model_command))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/health", get(health))
        .route("/hub/status", get(status))
        .route("/hub/models/{name}", get(model_status))
        .merge(writes)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_FILE_BYTES as usize))
        .with_state(state)
}

/// Whether an address is loopback, where an API without a token is safe.
pub fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_ref()) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this endpoint needs `Authorization: Bearer <HUB_TOKEN>`",
            )
            .into_response();
        }
    }
    next.run(request).await
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn status(State(state): State<AppState>) -> Response {
    let snapshot = state.hub.snapshot();
    (
        [(header::CONTENT_TYPE, "application/json")],
        snapshot.json.clone(),
    )
        .into_response()
}

async fn model_status(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ModelStatus>, ApiError> {
    let snapshot = state.hub.snapshot();
    snapshot
        .status
        .models
        .iter()
        .find(|m| m.name == name)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("unknown model {name:?}")))
}

#[derive(Debug, Default, Deserialize)]
struct PlanQuery {
    /// A name for the file in the diff header.
    file: Option<String>,
}

/// The answer to `POST /hub/plan`: what applying the body would do, and the config text diff.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanReply {
    /// The generation of the desired state the plan was made against.
    pub generation: u64,
    /// Unified diff of the applied config against the body; empty when they are equal.
    pub diff: String,
    /// Whether applying would change anything: the text or any model.
    pub changed: bool,
    pub models: Vec<PlannedModel>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlannedModel {
    pub name: String,
    /// `hub diff`'s line for the model.
    pub line: String,
    pub actions: Vec<String>,
    /// The verb `hub apply` prints.
    pub result: String,
}

async fn plan_handler(
    State(state): State<AppState>,
    Query(query): Query<PlanQuery>,
    body: String,
) -> Result<Json<PlanReply>, ApiError> {
    let snapshot = state.hub.snapshot();
    let file = query.file.unwrap_or_else(|| "request body".to_string());
    let desired = config::parse(&body, &file, &snapshot.desired.settings.config_dir)?;
    let now = time::OffsetDateTime::now_utc();
    let plan = plan::plan(&desired, &snapshot.observed, now);
    let diff = text_diff(
        &snapshot.applied_text,
        &body,
        &format!("applied (generation {})", snapshot.generation),
        &file,
    );
    Ok(Json(PlanReply {
        generation: snapshot.generation,
        changed: !diff.is_empty() || !plan.is_noop(),
        diff,
        models: planned_models(&plan),
    }))
}

pub fn planned_models(plan: &plan::Plan) -> Vec<PlannedModel> {
    plan.models
        .iter()
        .map(|m| PlannedModel {
            name: m.name.to_string(),
            line: m.to_string(),
            actions: m.actions.iter().map(|a| a.verb().to_string()).collect(),
            result: crate::reconcile::result_verb(m).to_string(),
        })
        .collect()
}

/// A unified diff of two config texts, empty when they are equal.
pub fn text_diff(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    if old == new {
        return String::new();
    }
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_name, new_name)
        .to_string()
}

#[derive(Debug, Default, Deserialize)]
struct ApplyQuery {
    expect_generation: Option<u64>,
    #[serde(default)]
    reset_overrides: bool,
    file: Option<String>,
}

async fn apply(
    State(state): State<AppState>,
    Query(query): Query<ApplyQuery>,
    body: String,
) -> Result<Json<ApplyReply>, ApiError> {
    let snapshot = state.hub.snapshot();
    let file = query.file.unwrap_or_else(|| "request body".to_string());
    let desired = config::parse(&body, &file, &snapshot.desired.settings.config_dir)?;
    let (reply, answer) = oneshot::channel();
    send(
        &state,
        Event::Apply {
            desired,
            text: body,
            expect_generation: query.expect_generation,
            reset_overrides: query.reset_overrides,
            reply,
        },
    )?;
    let result = answer.await.map_err(|_| shutting_down())?;
    Ok(Json(result?))
}

async fn reload(State(state): State<AppState>) -> impl IntoResponse {
    state.hub.reread.notify_one();
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"status": "reloading"})),
    )
}

#[derive(Debug, Default, Deserialize)]
struct ShutdownQuery {
    #[serde(default)]
    keep_workers: bool,
}

async fn shutdown(
    State(state): State<AppState>,
    Query(query): Query<ShutdownQuery>,
) -> Result<impl IntoResponse, ApiError> {
    send(
        &state,
        Event::Shutdown {
            keep_workers: query.keep_workers,
        },
    )?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"status": "shutting down"})),
    ))
}

async fn model_command(
    State(state): State<AppState>,
    Path((name, verb)): Path<(String, String)>,
) -> Result<(StatusCode, Json<ModelReply>), ApiError> {
    if !config::is_slug(&name) {
        return Err(ApiError::not_found(format!("unknown model {name:?}")));
    }
    let verb = Verb::parse(&verb).ok_or_else(|| {
        ApiError::not_found(format!(
            "unknown action {verb:?}: use start, stop, load or unload"
        ))
    })?;
    let (reply, answer) = oneshot::channel();
    send(&state, Event::Model { name, verb, reply })?;
    let result = answer.await.map_err(|_| shutting_down())?;
    Ok((StatusCode::ACCEPTED, Json(result?)))
}

fn send(state: &AppState, event: Event) -> Result<(), ApiError> {
    state.hub.events.send(event).map_err(|_| shutting_down())
}

fn shutting_down() -> ApiError {
    ApiError::unavailable("hub is shutting down")
}
