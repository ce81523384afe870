//! `GET /hub/events`: Server-Sent Events, one per model state change and reconcile report, from
//! the journal's broadcast. A client that falls behind skips what it missed (and is told how
//! many) instead of being cut off; the stream ends when the daemon shuts down.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use futures_util::stream::{self, StreamExt};
use tokio::sync::broadcast::{self, error::RecvError};

use super::{ApiError, AppState, Envelope};
use crate::config::ModelName;
use crate::wire::{EventsQuery, HubEvent, LAGGED_EVENT as LAGGED};

/// Every model state change and reconcile report as it happens, as Server-Sent Events: the
/// event name is the kind (`phase`, `memory`, `action`, `exit`, `health`, `config`, `reconcile`),
/// the data one JSON `HubEvent`. A client that falls behind gets a `lagged` event with the
/// number of events it missed. Comments keep an idle stream alive. A `model` that is neither in
/// the desired state nor observed is 404, not a stream that stays silent forever.
#[utoipa::path(
    get,
    path = "/hub/events",
    tag = "read",
    params(EventsQuery),
    responses(
        (status = 200, description = "An endless stream of events", body = HubEvent, content_type = "text/event-stream"),
        (status = 404, description = "`model` names no model hub knows", body = Envelope),
        (status = 503, description = "The daemon is shutting down", body = Envelope),
    )
)]
pub(super) async fn events(
    State(state): State<AppState>,
    Query(query): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    if !state.loop_alive() {
        return Err(ApiError::shutting_down());
    }
    if let Some(model) = &query.model {
        let snapshot = state.hub.snapshot();
        let known = ModelName::new(model).is_ok_and(|name| {
            snapshot.desired.models.contains_key(&name)
                || snapshot.observed.models.contains_key(&name)
        });
        if !known {
            return Err(ApiError::unknown_model(model));
        }
    }
    let receiver = state.hub.journal.subscribe();
    let loop_events = state.hub.events.clone();
    let model = query.model;
    let stream = stream::unfold(receiver, next)
        .filter_map(move |item| {
            let keep = match (&item, &model) {
                (Item::Event(event), Some(model)) => event.model.as_deref() == Some(model),
                _ => true,
            };
            std::future::ready(keep.then(|| Ok(to_sse(item))))
        })
        // Ends with the loop, so a graceful shutdown does not wait for watchers to leave.
        .take_until(async move { loop_events.closed().await });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

pub(super) enum Item {
    Event(Arc<HubEvent>),
    Lagged(u64),
}

pub(super) async fn next(
    mut receiver: broadcast::Receiver<Arc<HubEvent>>,
) -> Option<(Item, broadcast::Receiver<Arc<HubEvent>>)> {
    match receiver.recv().await {
        Ok(event) => Some((Item::Event(event), receiver)),
        Err(RecvError::Lagged(skipped)) => Some((Item::Lagged(skipped), receiver)),
        Err(RecvError::Closed) => None,
    }
}

fn to_sse(item: Item) -> SseEvent {
    match item {
        Item::Event(event) => SseEvent::default()
            .event(event.kind.as_str())
            .data(serde_json::to_string(&*event).unwrap_or_default()),
        Item::Lagged(skipped) => SseEvent::default()
            .event(LAGGED)
            .data(serde_json::json!({ "skipped": skipped }).to_string()),
    }
}
