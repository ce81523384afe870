//! `GET /metrics`: Prometheus text exposition (format 0.0.4), written by hand from the journal's
//! counters and the latest status. Every family has `# HELP` and `# TYPE`; gauges over a fixed
//! set of labels (phases, memory states) list every label, zeros included.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::events::Metrics;
use crate::gateway::stats::{Figures, Histogram};
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
    let lanes: Vec<(String, Figures)> = state
        .hub
        .gateway
        .lanes()
        .iter()
        .map(|lane| (lane.name().to_string(), lane.stats.figures()))
        .collect();
    let text = render(
        &state.hub.journal.metrics(),
        &state.hub.snapshot().status,
        &lanes,
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Renders the counters, the status and the gateway's per-model figures (`lanes`: model name and
/// its lane's figures) as Prometheus text.
pub fn render(metrics: &Metrics, status: &Status, lanes: &[(String, Figures)]) -> String {
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
    family(
        "hub_model_memory_bytes",
        "gauge",
        "Each model's footprint as the planner counts it (the larger of hub.yaml's memory and the last measurement), by where it comes from: declared, engine, nvml or rss.",
        status
            .models
            .iter()
            .filter_map(|m| {
                let bytes = m.memory.bytes?;
                let source = m.memory.bytes_source.as_deref().unwrap_or("");
                Some((
                    format!(
                        "hub_model_memory_bytes{{model=\"{}\",source=\"{}\"}}",
                        escape(&m.name),
                        escape(source)
                    ),
                    bytes.to_string(),
                ))
            })
            .collect(),
    );
    family(
        "hub_group_memory_budget_bytes",
        "gauge",
        "Each memory group's budget (hub.yaml's memory), for groups that set one.",
        status
            .groups
            .iter()
            .filter_map(|g| {
                Some((
                    format!(
                        "hub_group_memory_budget_bytes{{group=\"{}\"}}",
                        escape(&g.name)
                    ),
                    g.memory_budget?.to_string(),
                ))
            })
            .collect(),
    );
    family(
        "hub_group_memory_used_bytes",
        "gauge",
        "The footprints of each group's members holding weights now, together.",
        status
            .groups
            .iter()
            .map(|g| {
                (
                    format!(
                        "hub_group_memory_used_bytes{{group=\"{}\"}}",
                        escape(&g.name)
                    ),
                    g.memory_used.to_string(),
                )
            })
            .collect(),
    );
    family(
        "hub_gateway_requests_total",
        "counter",
        "Requests the gateway answered, by model and HTTP status (hub's own refusals included).",
        lanes
            .iter()
            .flat_map(|(model, figures)| {
                figures.requests.iter().map(move |(code, n)| {
                    (
                        format!(
                            "hub_gateway_requests_total{{model=\"{}\",code=\"{code}\"}}",
                            escape(model)
                        ),
                        n.to_string(),
                    )
                })
            })
            .collect(),
    );
    family(
        "hub_gateway_request_duration_seconds",
        "histogram",
        "Time from a gateway request's arrival to the end of its answer's body.",
        lanes
            .iter()
            .flat_map(|(model, f)| {
                histogram("hub_gateway_request_duration_seconds", model, &f.latency)
            })
            .collect(),
    );
    family(
        "hub_gateway_queue_wait_seconds",
        "histogram",
        "How long admitted gateway requests waited for their model (a start, a load, room in its group).",
        lanes
            .iter()
            .flat_map(|(model, f)| {
                histogram("hub_gateway_queue_wait_seconds", model, &f.queue_wait)
            })
            .collect(),
    );
    family(
        "hub_model_load_duration_seconds",
        "histogram",
        "How long each model's loads took (the engine's load call, or a start for an engine without one).",
        metrics
            .load_seconds
            .iter()
            .flat_map(|(model, h)| histogram("hub_model_load_duration_seconds", model, h))
            .collect(),
    );
    family(
        "hub_model_unloads_total",
        "counter",
        "Times each model's weights left memory, by reason (idle, evicted, requested, crashed, spec_changed, memory).",
        metrics
            .unloads
            .iter()
            .map(|((model, reason), n)| {
                (
                    format!(
                        "hub_model_unloads_total{{model=\"{}\",reason=\"{}\"}}",
                        escape(model),
                        escape(reason)
                    ),
                    n.to_string(),
                )
            })
            .collect(),
    );
    out
}

/// One model's histogram series: `_bucket` per bound (cumulative, then `+Inf`), `_sum`, `_count`.
fn histogram(name: &str, model: &str, h: &Histogram) -> Vec<(String, String)> {
    let model = escape(model);
    let mut samples: Vec<(String, String)> = h
        .cumulative()
        .map(|(le, n)| {
            (
                format!("{name}_bucket{{model=\"{model}\",le=\"{le}\"}}"),
                n.to_string(),
            )
        })
        .collect();
    samples.push((format!("{name}_sum{{model=\"{model}\"}}"), float(h.sum)));
    samples.push((
        format!("{name}_count{{model=\"{model}\"}}"),
        h.count.to_string(),
    ));
    samples
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use expect_test::expect;

    use super::*;

    /// The gateway's and the loads' families for one model with a quote in its name (which no
    /// valid name has, but a label value must survive anything).
    #[test]
    fn gateway_and_load_families_have_a_model_label() {
        let status: Status = serde_json::from_value(serde_json::json!({
            "timestamp": "2026-11-23T10:00:00Z", "generation": 1, "observed_generation": 1,
            "summary": "converged",
            "config": {"path": "hub.yaml", "sha256": "", "applied_at": "", "source": "file",
                       "rejected": null},
            "counts": {"models": 0, "running": 0, "loaded": 0, "failed": 0},
            "last_reconcile": null, "models": [], "groups": [], "warnings": []
        }))
        .unwrap();
        let mut metrics = Metrics::default();
        metrics.unloads.insert(("alpha".to_string(), "idle"), 2);
        metrics.unloads.insert(("be\"ta".to_string(), "evicted"), 1);
        let mut load = Histogram::default();
        load.observe(Duration::from_millis(1500));
        metrics.load_seconds.insert("alpha".to_string(), load);
        let mut figures = Figures::default();
        figures.requests.insert(200, 3);
        figures.requests.insert(503, 1);
        figures.latency.observe(Duration::from_millis(20));
        figures.latency.observe(Duration::from_secs(2));
        figures.queue_wait.observe(Duration::from_millis(1));
        let text = render(&metrics, &status, &[("alpha".to_string(), figures)]);
        let ours: String = text
            .lines()
            .filter(|l| l.contains("hub_gateway_") || l.contains("hub_model_"))
            // Every bucket but the first, a middle one and +Inf: the rest follow the same rule.
            .filter(|l| {
                !l.contains("le=")
                    || ["\"0.005\"", "\"2.5\"", "+Inf"]
                        .iter()
                        .any(|b| l.contains(b))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        expect![[r##"
            # HELP hub_model_memory_bytes Each model's footprint as the planner counts it (the larger of hub.yaml's memory and the last measurement), by where it comes from: declared, engine, nvml or rss.
            # TYPE hub_model_memory_bytes gauge
            # HELP hub_gateway_requests_total Requests the gateway answered, by model and HTTP status (hub's own refusals included).
            # TYPE hub_gateway_requests_total counter
            hub_gateway_requests_total{model="alpha",code="200"} 3
            hub_gateway_requests_total{model="alpha",code="503"} 1
            # HELP hub_gateway_request_duration_seconds Time from a gateway request's arrival to the end of its answer's body.
            # TYPE hub_gateway_request_duration_seconds histogram
            hub_gateway_request_duration_seconds_bucket{model="alpha",le="0.005"} 0
            hub_gateway_request_duration_seconds_bucket{model="alpha",le="2.5"} 2
            hub_gateway_request_duration_seconds_bucket{model="alpha",le="+Inf"} 2
            hub_gateway_request_duration_seconds_sum{model="alpha"} 2.02
            hub_gateway_request_duration_seconds_count{model="alpha"} 2
            # HELP hub_gateway_queue_wait_seconds How long admitted gateway requests waited for their model (a start, a load, room in its group).
            # TYPE hub_gateway_queue_wait_seconds histogram
            hub_gateway_queue_wait_seconds_bucket{model="alpha",le="0.005"} 1
            hub_gateway_queue_wait_seconds_bucket{model="alpha",le="2.5"} 1
            hub_gateway_queue_wait_seconds_bucket{model="alpha",le="+Inf"} 1
            hub_gateway_queue_wait_seconds_sum{model="alpha"} 0.001
            hub_gateway_queue_wait_seconds_count{model="alpha"} 1
            # HELP hub_model_load_duration_seconds How long each model's loads took (the engine's load call, or a start for an engine without one).
            # TYPE hub_model_load_duration_seconds histogram
            hub_model_load_duration_seconds_bucket{model="alpha",le="0.005"} 0
            hub_model_load_duration_seconds_bucket{model="alpha",le="2.5"} 1
            hub_model_load_duration_seconds_bucket{model="alpha",le="+Inf"} 1
            hub_model_load_duration_seconds_sum{model="alpha"} 1.5
            hub_model_load_duration_seconds_count{model="alpha"} 1
            # HELP hub_model_unloads_total Times each model's weights left memory, by reason (idle, evicted, requested, crashed, spec_changed, memory).
            # TYPE hub_model_unloads_total counter
            hub_model_unloads_total{model="alpha",reason="idle"} 2
            hub_model_unloads_total{model="be\"ta",reason="evicted"} 1
        "##]].assert_eq(&ours);
    }
}
