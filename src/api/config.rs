//! The desired state through the API: `POST /hub/plan` (the server-side dry run that `hub diff`
//! shows), `POST /hub/apply`, `POST /hub/reload` and `POST /hub/shutdown`.
//!
//! Plan and apply run the same planner over the same inputs: the loop's latest observed state,
//! with the overrides `reset_overrides` would drop already dropped.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use tokio::sync::oneshot;

use super::{ApiError, AppState, Envelope};
use crate::reconcile::Event;
use crate::wire::{
    Accepted, AppliedModel, ApplyQuery, ApplyResponse, PlanQuery, PlanReply, ShutdownQuery,
    ShutdownReply,
};
use crate::{config, plan, planned};

/// Parses and validates a request body on the blocking pool, at most two at a time: never on
/// the async threads, which must keep answering reads and `/health` (and carry the reconcile
/// loop) while a large or hostile body is checked. Gives the body back.
async fn parse(
    body: String,
    file: &str,
    base_dir: &std::path::Path,
) -> Result<(config::Desired, String), ApiError> {
    static PARSING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
    let _permit = PARSING
        .acquire()
        .await
        .map_err(|_| ApiError::shutting_down())?;
    let (file, base_dir) = (file.to_string(), base_dir.to_path_buf());
    let parsed = tokio::task::spawn_blocking(move || {
        let result = config::parse(&body, &file, &base_dir);
        (result, body)
    })
    .await
    .map_err(|e| ApiError::internal(format!("the config check failed: {e}")))?;
    let (result, body) = parsed;
    Ok((result?, body))
}

/// A server-side dry run: what `POST /hub/apply` with this body would do now, and the diff of
/// the applied config against it. Changes nothing.
#[utoipa::path(
    post,
    path = "/hub/plan",
    tag = "write",
    params(PlanQuery),
    request_body(content = String, description = "A hub.yaml", content_type = "application/yaml"),
    responses(
        (status = 200, description = "The plan", body = PlanReply),
        (status = 413, description = "The body is over the size limit", body = Envelope),
        (status = 422, description = "The config is invalid; `errors` lists every problem", body = Envelope),
    ),
    security(("bearer" = []))
)]
pub(super) async fn plan(
    State(state): State<AppState>,
    Query(query): Query<PlanQuery>,
    body: String,
) -> Result<Json<PlanReply>, ApiError> {
    let snapshot = state.hub.snapshot();
    let file = query.file.unwrap_or_else(|| "request body".to_string());
    let (desired, body) = parse(body, &file, &snapshot.desired.settings.config_dir).await?;
    crate::reconcile::check_live_ports(&desired, &snapshot.observed, &body, &file)?;
    let now = state.hub.clock.now();
    let plan = plan::preview(&desired, &snapshot.observed, query.reset_overrides, now);
    let diff = planned::text_diff(
        &snapshot.applied_text,
        &body,
        &format!("applied (generation {})", snapshot.generation),
        &file,
    );
    Ok(Json(planned::reply(snapshot.generation, &plan, diff)))
}

/// Makes the body the desired state. Answers once the first reconcile pass for it has been
/// published; `GET /hub/status` shows its progress (`observed_generation`, `last_reconcile`).
#[utoipa::path(
    post,
    path = "/hub/apply",
    tag = "write",
    params(ApplyQuery),
    request_body(content = String, description = "A hub.yaml", content_type = "application/yaml"),
    responses(
        (status = 200, description = "Applied", body = ApplyResponse),
        (status = 409, description = "The desired state is no longer at `expect_generation`", body = Envelope),
        (status = 413, description = "The body is over the size limit", body = Envelope),
        (status = 422, description = "The config is invalid; `errors` lists every problem", body = Envelope),
        (status = 503, description = "The daemon is shutting down", body = Envelope),
    ),
    security(("bearer" = []))
)]
pub(super) async fn apply(
    State(state): State<AppState>,
    Query(query): Query<ApplyQuery>,
    body: String,
) -> Result<Json<ApplyResponse>, ApiError> {
    let snapshot = state.hub.snapshot();
    let file = query.file.unwrap_or_else(|| "request body".to_string());
    let (desired, body) = parse(body, &file, &snapshot.desired.settings.config_dir).await?;
    let before = snapshot.generation;
    let (reply, answer) = oneshot::channel();
    send(
        &state,
        Event::Apply {
            desired,
            text: body,
            file,
            expect_generation: query.expect_generation,
            reset_overrides: query.reset_overrides,
            reply,
        },
    )?;
    let reply = answer.await.map_err(|_| ApiError::shutting_down())??;
    let models = planned::models(&reply.plan)
        .into_iter()
        .map(AppliedModel::from)
        .collect();
    Ok(Json(ApplyResponse {
        changed: reply.generation != before,
        generation: reply.generation,
        models,
    }))
}

/// Re-reads the watched hub.yaml now and makes it the desired state: a valid file that differs
/// from what is applied (a later `hub apply`, or an edit whose event was lost) is applied, an
/// invalid one is shown as rejected.
#[utoipa::path(
    post,
    path = "/hub/reload",
    tag = "write",
    responses(
        (status = 202, description = "The file was read and handed to the reconcile loop", body = Accepted),
        (status = 503, description = "The daemon is shutting down", body = Envelope),
    ),
    security(("bearer" = []))
)]
pub(super) async fn reload(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    if !state.loop_alive() {
        return Err(ApiError::shutting_down());
    }
    // The applied config's path is always the watched file's (an apply keeps it).
    let path = std::path::PathBuf::from(&state.hub.snapshot().status.config.path);
    let update = crate::watch::read(&path).await;
    send(&state, Event::Config(update))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            status: "reloading".to_string(),
        }),
    ))
}

/// Stops the daemon: its workers first, unless `keep_workers`.
#[utoipa::path(
    post,
    path = "/hub/shutdown",
    tag = "write",
    params(ShutdownQuery),
    responses(
        (status = 202, description = "The daemon is stopping", body = ShutdownReply),
        (status = 503, description = "The daemon is already shutting down", body = Envelope),
    ),
    security(("bearer" = []))
)]
pub(super) async fn shutdown(
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
        Json(ShutdownReply {
            status: "shutting down".to_string(),
            pid: std::process::id(),
        }),
    ))
}

pub(super) fn send(state: &AppState, event: Event) -> Result<(), ApiError> {
    state
        .hub
        .events
        .send(event)
        .map_err(|_| ApiError::shutting_down())
}
