//! The answers of the probes: `GET /health` (liveness) and `GET /ready` (readiness).

use serde::{Deserialize, Serialize};

use super::Summary;

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Ready {
    /// `ready`.
    pub status: String,
    /// The current summary (`converged`, `progressing`, `degraded`): readiness does not follow
    /// it after the first convergence.
    pub summary: Summary,
    pub generation: u64,
    pub observed_generation: u64,
    /// Whether the last edit of hub.yaml was rejected (the last good one still applies).
    pub config_rejected: bool,
}
