//! One model: `GET /hub/models/{name}` (its status and recent events) and the imperative calls
//! `POST /hub/models/{name}/{verb}`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use tokio::sync::oneshot;

use super::config::send;
use super::{ApiError, AppState, Envelope};
use crate::config::ModelName;
use crate::reconcile::Event;
use crate::wire::{ModelCommandReply, ModelDetail, ModelStatus, Verb};

/// A name from a URL, parsed before it is used for anything (a lookup, a file path), with the
/// model's status.
pub(super) fn known_model(
    state: &AppState,
    name: &str,
) -> Result<(ModelName, ModelStatus), ApiError> {
    let name = ModelName::new(name).map_err(|_| {
        ApiError::not_found(format!(
            "unknown model {name:?}: model names are lowercase letters, digits, `-` and `_`"
        ))
    })?;
    let status = state
        .hub
        .snapshot()
        .status
        .models
        .iter()
        .find(|m| m.name == name.as_str())
        .cloned()
        .ok_or_else(|| ApiError::unknown_model(name.as_str()))?;
    Ok((name, status))
}

/// One model's status and its last 20 events.
#[utoipa::path(
    get,
    path = "/hub/models/{name}",
    tag = "read",
    params(("name" = String, Path, description = "The model's name")),
    responses(
        (status = 200, description = "The model", body = ModelDetail),
        (status = 404, description = "No such model", body = Envelope),
    )
)]
pub(super) async fn model_detail(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ModelDetail>, ApiError> {
    let (name, status) = known_model(&state, &name)?;
    Ok(Json(ModelDetail {
        events: state.hub.journal.recent(name.as_str()),
        status,
    }))
}

/// An imperative call: `start`, `stop`, `load` or `unload` (also spelled `start-model` etc.).
/// Calls that contradict hub.yaml are kept as the model's override until its entry changes.
#[utoipa::path(
    post,
    path = "/hub/models/{name}/{verb}",
    tag = "write",
    params(
        ("name" = String, Path, description = "The model's name"),
        ("verb" = String, Path, description = "`start`, `stop`, `load` or `unload` (or `start-model`, `stop-model`, `load-model`, `unload-model`)"),
    ),
    responses(
        (status = 202, description = "Accepted; the model gets there in the background", body = ModelCommandReply),
        (status = 404, description = "No such model, or no such verb", body = Envelope),
        (status = 409, description = "The call conflicts with the model's state", body = Envelope),
        (status = 429, description = "The model's group is full and no member can be evicted", body = Envelope),
        (status = 503, description = "The daemon is shutting down", body = Envelope),
    ),
    security(("bearer" = []))
)]
pub(super) async fn model_command(
    State(state): State<AppState>,
    Path((name, verb)): Path<(String, String)>,
) -> Result<(StatusCode, Json<ModelCommandReply>), ApiError> {
    let name = ModelName::new(&name).map_err(|_| ApiError::unknown_model(&name))?;
    let verb = Verb::parse(&verb).ok_or_else(|| {
        ApiError::not_found(format!(
            "unknown action {verb:?}: use start, stop, load or unload"
        ))
    })?;
    let (reply, answer) = oneshot::channel();
    send(&state, Event::Model { name, verb, reply })?;
    let reply = answer.await.map_err(|_| ApiError::shutting_down())??;
    Ok((StatusCode::ACCEPTED, Json(reply)))
}
