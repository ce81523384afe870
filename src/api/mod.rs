//! The HTTP API (axum). It only reads published snapshots and the journal, and sends events to
//! the loop; it never touches processes or the observed state itself.
//!
//! Every route is declared once, with its OpenAPI description, through utoipa-axum's
//! `OpenApiRouter`: the router that serves and the document at `GET /openapi.json` (committed as
//! `docs/openapi.json`) come from the same list, so they cannot drift apart.

mod config;
mod dashboard;
mod error;
mod events;
mod logs;
mod metrics;
mod models;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use config::{
    AppliedModel, ApplyResponse, PlanReply, PlannedModel, ShutdownReply, planned_models, text_diff,
};
pub use error::{ApiError, Envelope, ErrorBody, ProblemSchema};
pub use events::LAGGED as LAGGED_EVENT;
pub use logs::{LOG_OFFSET_HEADER, MAX_TAIL};
pub use metrics::render as render_metrics;
pub use models::{ModelCommandReply, ModelDetail};

use crate::config::MAX_FILE_BYTES;
use crate::reconcile::Handle;

#[derive(Clone)]
struct AppState {
    hub: Handle,
    token: Option<Arc<str>>,
    /// `GET /openapi.json`'s body, rendered once.
    openapi: Arc<str>,
}

impl AppState {
    /// Whether the reconcile loop still runs; once it ends nothing can change any more.
    fn loop_alive(&self) -> bool {
        !self.hub.events.is_closed()
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hub",
        description = "The HTTP API of hub, a declarative reconciler for a machine that serves AI models. Reads are open; with HUB_TOKEN set every write needs `Authorization: Bearer <HUB_TOKEN>`. Every error is `{\"error\": {\"type\", \"message\", \"code\"}}`."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "read", description = "Status, events, logs and metrics; never wait for a reconcile"),
        (name = "write", description = "Change the desired state or act on models; need the token when HUB_TOKEN is set")
    )
)]
struct ApiDoc;

/// Declares the bearer scheme that write operations name.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Every route, with its OpenAPI description.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(status))
        .routes(routes!(dashboard::dashboard))
        .routes(routes!(models::model_detail))
        .routes(routes!(logs::logs))
        .routes(routes!(events::events))
        .routes(routes!(metrics::metrics))
        .routes(routes!(serve_openapi))
        .routes(routes!(config::plan))
        .routes(routes!(config::apply))
        .routes(routes!(config::reload))
        .routes(routes!(config::shutdown))
        .routes(routes!(models::model_command))
}

/// The OpenAPI document of every route, as `GET /openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

/// [`openapi`] as the pretty JSON that is served and committed as `docs/openapi.json`.
pub fn openapi_json() -> String {
    openapi()
        .to_pretty_json()
        .expect("the OpenAPI document is plain data")
        + "\n"
}

/// The router. `token`, when set, is required as `Authorization: Bearer` on every write.
pub fn router(hub: Handle, token: Option<String>) -> Router {
    let (router, _) = routes().split_for_parts();
    let state = AppState {
        hub,
        token: token.map(Into::into),
        openapi: openapi_json().into(),
    };
    router
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_FILE_BYTES as usize))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(middleware::from_fn(error::envelope_errors))
        .with_state(state)
}

/// Whether an address is loopback, where an API without a token is safe.
pub fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether a request only reads. Everything else is a write and needs the token.
fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token
        && !is_read(request.method())
    {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|given| same(given.as_bytes(), token.as_bytes())) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this endpoint needs `Authorization: Bearer <token>` with the daemon's HUB_TOKEN; the CLI sends it when HUB_TOKEN is set",
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// Compares secrets in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint: /openapi.json lists them")
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// Liveness: 200 while the reconcile loop runs, 503 once it has ended.
#[utoipa::path(
    get,
    path = "/health",
    tag = "read",
    responses(
        (status = 200, description = "The daemon and its reconcile loop run", body = Health),
        (status = 503, description = "The daemon is shutting down", body = Envelope),
    )
)]
async fn health(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    if !state.loop_alive() {
        return Err(ApiError::shutting_down());
    }
    Ok(Json(Health {
        status: "ok".to_string(),
    }))
}

/// The status snapshot: every model's worker and memory, the last reconcile, the config.
/// Never waits for a reconcile in flight.
#[utoipa::path(
    get,
    path = "/hub/status",
    tag = "read",
    responses((status = 200, description = "The latest published status", body = crate::status::Status))
)]
async fn status(State(state): State<AppState>) -> Response {
    let snapshot = state.hub.snapshot();
    (
        [(header::CONTENT_TYPE, "application/json")],
        snapshot.json.clone(),
    )
        .into_response()
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "read",
    responses((status = 200, description = "The OpenAPI document of this API", body = Object))
)]
async fn serve_openapi(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.to_string(),
    )
        .into_response()
}
