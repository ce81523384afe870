//! The HTTP API (axum). It only reads published snapshots and the journal, and sends events to
//! the loop; it never touches processes or the observed state itself.
//!
//! Every route is declared once, with its OpenAPI description, through utoipa-axum's
//! `OpenApiRouter`: the router that serves and the document at `GET /openapi.json` (committed as
//! `docs/openapi.json`) come from the same list, so they cannot drift apart.

mod access;
mod config;
mod dashboard;
mod error;
mod events;
mod front;
mod logs;
mod metrics;
mod models;
mod openai;
mod ready;
mod server;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Named here too for the tests and benches, which mark their requests as a program's.
pub use crate::wire::CLIENT_HEADER;
pub use access::{Access, is_loopback};
pub use error::ApiError;
pub use front::App;
pub use metrics::render as render_metrics;
pub use server::{DEFAULT_HEADER_READ_TIMEOUT, serve, serve_on_own_thread};

use crate::config::MAX_FILE_BYTES;
use crate::reconcile::Handle;
use crate::wire::{Envelope, Health};

/// What handlers share, behind one `Arc`: axum clones the state for every request that extracts
/// it, and one reference count is cheaper than the handle's half dozen.
#[derive(Clone)]
struct AppState(Arc<Shared>);

struct Shared {
    hub: Handle,
    /// `GET /openapi.json`'s body, rendered once.
    openapi: Arc<str>,
    /// Whether the daemon has converged since it started (`GET /ready`).
    readiness: ready::Readiness,
    /// The gateway's HTTP client to workers.
    proxy: crate::gateway::Proxy,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl Shared {
    /// Whether the reconcile loop still runs; once it ends nothing can change any more.
    fn loop_alive(&self) -> bool {
        !self.hub.events.is_closed()
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hub",
        description = "The HTTP API of hub, a declarative reconciler for a machine that serves AI models. Reads are open; with HUB_TOKEN set every write needs `Authorization: Bearer <HUB_TOKEN>`. So that no web page can drive it: on a loopback bind every request must be addressed to localhost, a loopback IP or an allowed host (403); a write that carries an `Origin` must come from hub's own origin (403) and must carry `Content-Type: application/yaml` or `application/json`, or an `X-Hub-Client` header (415); `OPTIONS` answers 204 with `Allow` and no CORS headers. Every error is `{\"error\": {\"type\", \"message\", \"code\"}}`."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "read", description = "Status, events, logs and metrics; never wait for a reconcile"),
        (name = "write", description = "Change the desired state or act on models; need the token when HUB_TOKEN is set"),
        (name = "gateway", description = "The OpenAI API, routed by `model` to that model's worker, which is started and loaded just in time; with HUB_API_KEYS or HUB_TOKEN set, needs `Authorization: Bearer` with one of the keys or the token. Errors are OpenAI-shaped: `{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`")
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
        .routes(routes!(ready::ready))
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
        .routes(routes!(openai::list_models))
        .routes(routes!(openai::chat_completions))
        .routes(routes!(openai::completions))
        .routes(routes!(openai::embeddings))
        .routes(routes!(openai::responses))
        .routes(routes!(openai::transcriptions))
        .routes(routes!(openai::upstream))
}

/// The OpenAPI document of every route, as `GET /openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = routes().split_for_parts().1;
    access::document(&mut doc);
    document_extractors(&mut doc);
    doc
}

/// Adds what axum's extractors can answer before a handler runs, so no handler has to repeat
/// it: 400 where a query string is read (a malformed value) or a text body (not UTF-8), 413 where
/// a body is read (over the size limit).
fn document_extractors(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
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
    for item in doc.paths.paths.values_mut() {
        let operations = [&mut item.get, &mut item.post, &mut item.head];
        for operation in operations.into_iter().flatten() {
            let has_query =
                operation.parameters.iter().flatten().any(
                    |p| matches!(p, RefOr::T(p) if matches!(p.parameter_in, ParameterIn::Query)),
                );
            let has_body = operation.request_body.is_some();
            let responses = &mut operation.responses.responses;
            if has_query || has_body {
                responses.entry("400".to_string()).or_insert_with(|| {
                    envelope("A query parameter is malformed, or the body is not UTF-8 text")
                });
            }
            if has_body {
                responses
                    .entry("413".to_string())
                    .or_insert_with(|| envelope("The body is over the size limit"));
            }
        }
    }
}

/// [`openapi`] as the pretty JSON that is served and committed as `docs/openapi.json`.
pub fn openapi_json() -> String {
    openapi()
        .to_pretty_json()
        .expect("the OpenAPI document is plain data")
        + "\n"
}

/// The API: every route behind the front door (`front.rs`: Host, Origin, preflight and token
/// checks, oversized bodies, the error envelope), which sees each request before routing and the
/// router's finished answer, such as the 405 to `OPTIONS` that names the path's methods in
/// `Allow`.
pub fn router(hub: Handle, access: Access) -> App {
    let (router, _) = routes().split_for_parts();
    let state = AppState(Arc::new(Shared {
        hub: hub.clone(),
        openapi: openapi_json().into(),
        readiness: ready::Readiness::follow(hub.snapshot.clone()),
        proxy: crate::gateway::Proxy::new(),
    }));
    let router = router
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_FILE_BYTES as usize))
        .with_state(state);
    App {
        access: Arc::new(access),
        hub,
        router,
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint: /openapi.json lists them")
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
    responses((status = 200, description = "The latest published status", body = crate::wire::Status))
)]
async fn status(State(state): State<AppState>) -> Response {
    status_response(&state.hub)
}

/// The answer to `GET /hub/status`, which the front door gives without routing (`front.rs`):
/// the JSON serialized once when the snapshot was published, by reference.
fn status_response(hub: &Handle) -> Response {
    let json = hub.snapshot.borrow().json.clone();
    ([(header::CONTENT_TYPE, "application/json")], json).into_response()
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
