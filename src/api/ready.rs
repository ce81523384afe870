//! `GET /ready`: readiness for a Kubernetes probe or a load balancer, as an HTTP status.
//!
//! `/health` is liveness (the loop runs) and `/hub/status` always answers 200 with its
//! `summary` in the body, which a probe cannot read. Ready means: the loop runs and this daemon
//! has converged its desired state at least once since it started (every model started, adopted
//! or loaded as hub.yaml says). It then stays ready while the loop runs, through later edits and
//! failures: those show in `/hub/status`, `/metrics` (`hub_converged`) and this answer's body.
//!
//! Why not "converged right now": a ConfigMap edit reaches every node within a minute, so an
//! edit that reloads one model (minutes for a large one), or one model failing on every node,
//! would take every pod out of its Service at once, although all the other models still serve;
//! and a rejected edit changes nothing that runs (SPEC section 5), so it must not either. What
//! readiness does gate is a pod that has not yet brought its models up after a (re)start: a
//! DaemonSet rollout moves to the next node only once the previous one is ready.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::extract::State;
use tokio::sync::watch;

use super::{ApiError, AppState, Envelope};
use crate::reconcile::Snapshot;
use crate::wire::{Ready, Summary};

/// Whether the daemon has converged once since it started; set by a task that follows the
/// published snapshots, so a convergence between two probes is not missed.
#[derive(Clone, Default)]
pub(super) struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Follows `snapshots` until one is converged (when called inside a tokio runtime; the
    /// handler also checks the latest snapshot itself).
    pub(super) fn follow(snapshots: watch::Receiver<Arc<Snapshot>>) -> Readiness {
        let readiness = Readiness::default();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let flag = readiness.0.clone();
            let mut snapshots = snapshots;
            runtime.spawn(async move {
                loop {
                    if snapshots.borrow_and_update().status.summary == Summary::Converged {
                        flag.store(true, Ordering::Relaxed);
                        return;
                    }
                    if snapshots.changed().await.is_err() {
                        return;
                    }
                }
            });
        }
        readiness
    }

    fn converged_once(&self, latest: &Snapshot) -> bool {
        if latest.status.summary == Summary::Converged {
            self.0.store(true, Ordering::Relaxed);
        }
        self.0.load(Ordering::Relaxed)
    }
}

/// Readiness: 200 once the daemon has converged its desired state since it started, and for as
/// long as its loop runs; 503 before that and while shutting down.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "read",
    responses(
        (status = 200, description = "The daemon has converged its desired state since it started, and its loop runs", body = Ready),
        (status = 503, description = "Not converged yet since the start, or shutting down", body = Envelope),
    )
)]
pub(super) async fn ready(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    if !state.loop_alive() {
        return Err(ApiError::shutting_down());
    }
    let snapshot = state.hub.snapshot();
    let status = &snapshot.status;
    if !state.readiness.converged_once(&snapshot) {
        let in_sync = status.models.iter().filter(|m| m.in_sync).count();
        let summary = serde_json::to_value(status.summary).unwrap_or_default();
        return Err(ApiError::unavailable(format!(
            "not ready: the desired state has not converged since the start ({} of {} models in \
             sync, summary {}); `hub status` shows why",
            in_sync,
            status.models.len(),
            summary.as_str().unwrap_or("?"),
        )));
    }
    Ok(Json(Ready {
        status: "ready".to_string(),
        summary: status.summary,
        generation: status.generation,
        observed_generation: status.observed_generation,
        config_rejected: status.config.rejected.is_some(),
    }))
}
