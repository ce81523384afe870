//! `GET /hub`: the operator's page, one self-contained HTML file (no external assets, no build
//! step). Served while hub.yaml's `enable_status_page` is true.
//!
//! It is live from `/hub/events` (each event re-reads `/hub/status`; it reconnects with backoff and
//! greys out what it shows while the daemon is unreachable), and it writes: Start / Stop / Load /
//! Unload per model and Reload. Its writes send `X-Hub-Client` (see `access.rs`); as a page of
//! hub's own origin it may, without a preflight, and its `Origin` is the one its request is
//! addressed to. With HUB_TOKEN set, a write answered 401 asks for the token once and keeps it in
//! the tab's sessionStorage. Tested in a real Chromium: `tests/dashboard/`.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, Envelope};

const PAGE: &str = include_str!("dashboard.html");

/// The status page, for people: every model, its phase and memory, the last reconcile.
#[utoipa::path(
    get,
    path = "/hub",
    tag = "read",
    responses(
        (status = 200, description = "The HTML dashboard", body = String, content_type = "text/html"),
        (status = 404, description = "`enable_status_page` is false in hub.yaml", body = Envelope),
    )
)]
pub(super) async fn dashboard(State(state): State<AppState>) -> Result<Response, ApiError> {
    if !state.hub.snapshot().desired.settings.enable_status_page {
        return Err(ApiError::not_found(
            "the status page is off: set `enable_status_page: true` in hub.yaml, or read /hub/status",
        ));
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
        .into_response())
}
