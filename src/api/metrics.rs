//! `GET /metrics`: Prometheus text exposition (format 0.0.4), written by hand from the journal's
//! counters and the latest status. Every family has `# HELP` and `# TYPE`; gauges over a fixed
//! set of labels (phases, memory states) list every label, zeros included.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::events::Metrics;
use crate::wire::{MemoryPhase, Status, WorkerPhase};

/// Every action and result `hub_actions_total` counts.
const ACTIONS: [&str; 5] = ["start", "stop", "restart", "load", "unload"];
const RESULTS: [&str; 3] = ["ok", "failed", "superseded"];

/// The daemon's metrics in Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "read",
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain"))
)]
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    let text = render(&state.hub.journal.metrics(), &state.hub.snapshot().status);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Renders the counters and the status as Prometheus text.
pub fn render(metrics: &Metrics, status: &Status) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (series, value) in samples {
            let _ = writeln!(out, "{series} {value}");
        }
    };
    let plain = |name: &str, value: String| vec![(name.to_string(), value)];

    family(
        "hub_reconciles_total",
        "counter",
        "Reconciles completed: each converges one generation, across as many passes as it takes.",
        plain("hub_reconciles_total", metrics.reconciles.to_string()),
    );
    family(
        "hub_reconcile_passes_total",
        "counter",
        "Passes of the reconcile loop: plan, launch what may run, publish the status.",
        plain("hub_reconcile_passes_total", metrics.passes.to_string()),
    );
    family(
        "hub_resyncs_total",
        "counter",
        "Periodic re-reads of hub.yaml (catching lost file events) that have finished.",
        plain("hub_resyncs_total", metrics.resyncs.to_string()),
    );
    family(
        "hub_reconcile_duration_seconds",
        "summary",
        "Time from a reconcile's start to its end.",
        vec![
            (
                "hub_reconcile_duration_seconds_sum".to_string(),
                float(metrics.reconcile_seconds),
            ),
            (
                "hub_reconcile_duration_seconds_count".to_string(),
                metrics.reconciles.to_string(),
            ),
        ],
    );
    let mut actions = Vec::new();
    for action in ACTIONS {
        for result in RESULTS {
            let count = metrics.actions.get(&(action, result)).copied().unwrap_or(0);
            actions.push((
                format!("hub_actions_total{{action=\"{action}\",result=\"{result}\"}}"),
                count.to_string(),
            ));
        }
    }
    // Any action or result this list does not know yet still shows.
    for ((action, result), count) in &metrics.actions {
        if !ACTIONS.contains(action) || !RESULTS.contains(result) {
            actions.push((
                format!(
                    "hub_actions_total{{action=\"{}\",result=\"{}\"}}",
                    escape(action),
                    escape(result)
                ),
                count.to_string(),
            ));
        }
    }
    family(
        "hub_actions_total",
        "counter",
        "Actions on workers by kind and result (ok, failed, superseded by a newer desired state).",
        actions,
    );
    family(
        "hub_models",
        "gauge",
        "Models by worker phase.",
        WorkerPhase::ALL
            .iter()
            .map(|phase| {
                let n = status
                    .models
                    .iter()
                    .filter(|m| m.worker.phase == *phase)
                    .count();
                (format!("hub_models{{phase=\"{phase}\"}}"), n.to_string())
            })
            .collect(),
    );
    family(
        "hub_models_memory",
        "gauge",
        "Models by memory state.",
        MemoryPhase::ALL
            .iter()
            .map(|state| {
                let n = status
                    .models
                    .iter()
                    .filter(|m| m.memory.state == *state)
                    .count();
                (
                    format!("hub_models_memory{{state=\"{state}\"}}"),
                    n.to_string(),
                )
            })
            .collect(),
    );
    family(
        "hub_worker_restarts_total",
        "counter",
        "Restarts of each model's worker after it exited unexpectedly.",
        status
            .models
            .iter()
            .map(|m| {
                (
                    format!("hub_worker_restarts_total{{model=\"{}\"}}", escape(&m.name)),
                    m.worker.restarts.to_string(),
                )
            })
            .collect(),
    );
    family(
        "hub_worker_crashes_total",
        "counter",
        "Worker processes that exited without being asked to.",
        plain("hub_worker_crashes_total", metrics.crashes.to_string()),
    );
    family(
        "hub_health_failures_total",
        "counter",
        "Failed health probes of ready workers.",
        plain(
            "hub_health_failures_total",
            metrics.health_failures.to_string(),
        ),
    );
    family(
        "hub_config_applied_total",
        "counter",
        "Edits of the watched hub.yaml that were valid and applied.",
        plain(
            "hub_config_applied_total",
            metrics.config_applied.to_string(),
        ),
    );
    family(
        "hub_config_rejected_total",
        "counter",
        "Edits of the watched hub.yaml that were invalid and changed nothing.",
        plain(
            "hub_config_rejected_total",
            metrics.config_rejected.to_string(),
        ),
    );
    family(
        "hub_generation",
        "gauge",
        "The desired state's generation.",
        plain("hub_generation", status.generation.to_string()),
    );
    family(
        "hub_observed_generation",
        "gauge",
        "The last generation a reconcile completed.",
        plain(
            "hub_observed_generation",
            status.observed_generation.to_string(),
        ),
    );
    family(
        "hub_converged",
        "gauge",
        "1 when every model matches the desired state, else 0.",
        plain(
            "hub_converged",
            u8::from(status.summary == crate::status::Summary::Converged).to_string(),
        ),
    );
    out
}

/// A float as Prometheus reads it.
fn float(value: f64) -> String {
    if value.is_finite() {
        format!("{value}")
    } else {
        "NaN".to_string()
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
