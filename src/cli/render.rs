//! How the CLI prints things, as pure functions from API values to text: the status table, the
//! diff and plan, apply's result lines, events. Kept apart from IO so that golden tests render
//! them from fixed values.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::wire::{
    HubEvent, ModelList, ModelStatus, Outcome, PlanReply, PlannedModel, Report, Status, WorkerPhase,
};

/// ANSI colours, only when asked for (stdout is a terminal and `NO_COLOR` is unset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paint(pub bool);

impl Paint {
    fn paint(self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

/// The status as a plain text table, with the rejected edit and errors under it.
pub fn status_table(status: &Status, now: OffsetDateTime) -> String {
    let mut out = format!(
        "generation {} (observed {}), {:?}: {} models, {} running, {} loaded, {} failed\n",
        status.generation,
        status.observed_generation,
        status.summary,
        status.counts.models,
        status.counts.running,
        status.counts.loaded,
        status.counts.failed,
    )
    .to_lowercase();
    if let Some(rejected) = &status.config.rejected {
        out.push_str(&format!(
            "last edit of {} was rejected at {}:\n",
            status.config.path, rejected.at
        ));
        for error in &rejected.errors {
            let at = match (error.line, error.column) {
                (Some(l), Some(c)) => format!("{l}:{c}: "),
                _ => String::new(),
            };
            out.push_str(&format!("  {at}{}: {}\n", error.path, error.message));
        }
    }
    let header = [
        "NAME",
        "DESIRED",
        "PHASE",
        "MEMORY",
        "IN-FLIGHT",
        "QUEUED",
        "PID",
        "PORT",
        "UPTIME",
        "RESTARTS",
        "GROUP",
        "IN-SYNC",
        "BYTES",
    ];
    let rows: Vec<[String; 13]> = status.models.iter().map(|m| row(m, now)).collect();
    out.push_str(&table(&header, &rows));
    // The groups of the models shown (all of them, unless models were named).
    let shown = |group: &&crate::wire::GroupStatus| {
        status
            .models
            .iter()
            .any(|m| m.group.as_deref() == Some(group.name.as_str()))
    };
    for group in status.groups.iter().filter(shown) {
        let mut limits = Vec::new();
        if let Some(max) = group.max_loaded {
            limits.push(format!("{} of {max} loaded", group.loaded.len()));
        } else {
            limits.push(format!("{} loaded", group.loaded.len()));
        }
        if let Some(budget) = group.memory_budget {
            limits.push(format!(
                "{} of {} memory",
                compact_bytes(group.memory_used),
                compact_bytes(budget)
            ));
        }
        out.push_str(&format!("group {}: {}\n", group.name, limits.join(", ")));
    }
    for model in &status.models {
        if let Some(error) = &model.error {
            let retry = model
                .next_retry_at
                .as_ref()
                .map(|at| format!(" (next retry at {at})"))
                .unwrap_or_default();
            out.push_str(&format!("{}: {error}{retry}\n", model.name));
        }
    }
    for warning in &status.warnings {
        out.push_str(&format!("warning: {warning}\n"));
    }
    out
}

/// `hub models`: what a client of the gateway can ask for, and whether it would wait.
pub fn models_table(list: &ModelList) -> String {
    let header = [
        "MODEL",
        "TYPE",
        "GROUP",
        "DESIRED",
        "PHASE",
        "MEMORY",
        "READY",
        "ON-DEMAND",
        "IN-FLIGHT",
        "QUEUED",
    ];
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
    let rows: Vec<[String; 10]> = list
        .data
        .iter()
        .map(|m| {
            [
                m.id.clone(),
                m.model_type.clone().unwrap_or_else(|| "-".to_string()),
                m.group.clone().unwrap_or_else(|| "-".to_string()),
                m.desired.clone(),
                m.phase.clone(),
                m.memory.clone(),
                yes_no(m.ready),
                yes_no(m.on_demand),
                m.in_flight.to_string(),
                m.queued.to_string(),
            ]
        })
        .collect();
    table(&header, &rows)
}

/// Left-aligned columns two spaces apart, trailing spaces trimmed.
fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// A size without spaces, so a table's columns stay one word each: `138MiB`.
fn compact_bytes(bytes: u64) -> String {
    crate::bytes::format(bytes).replace(' ', "")
}

fn row(m: &ModelStatus, now: OffsetDateTime) -> [String; 13] {
    let dash = || "-".to_string();
    let uptime = m
        .worker
        .started_at
        .as_deref()
        .filter(|_| m.worker.phase == WorkerPhase::Ready)
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        .map_or_else(dash, |t| human_duration((now - t).whole_seconds()));
    let mut desired = match &m.override_ {
        Some(o) => format!("{} (override: {})", m.desired, o.state),
        None => m.desired.clone(),
    };
    // A worker that requests started, for a model hub.yaml leaves stopped: not drift.
    if m.worker.on_demand {
        desired.push_str(" (on demand)");
    }
    [
        m.name.clone(),
        desired,
        m.worker.phase.to_string(),
        m.memory.state.to_string(),
        m.memory.in_flight.to_string(),
        m.memory.queued.to_string(),
        m.worker.pid.map_or_else(dash, |p| p.to_string()),
        m.worker.port.map_or_else(dash, |p| p.to_string()),
        uptime,
        m.worker.restarts.to_string(),
        m.group.clone().unwrap_or_else(dash),
        if m.in_sync { "yes" } else { "no" }.to_string(),
        // Last, so scripts reading the columns before it by position keep working.
        m.memory
            .bytes
            .map_or_else(dash, |b| match m.memory.bytes_source.as_deref() {
                Some(source) => format!("{}({source})", compact_bytes(b)),
                None => compact_bytes(b),
            }),
    ]
}

/// `42s`, `3m5s`, `2h10m`, `4d3h`.
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

/// `hub diff`'s text: the coloured unified diff of the config, then one line per model.
pub fn diff_text(reply: &PlanReply, offline: bool, paint: Paint) -> String {
    let mut out = String::new();
    for line in reply.diff.lines() {
        let code = if line.starts_with("+++") || line.starts_with("---") {
            Some("1")
        } else {
            match line.as_bytes().first() {
                Some(b'+') => Some("32"),
                Some(b'-') => Some("31"),
                Some(b'@') => Some("36"),
                _ => None,
            }
        };
        match code {
            Some(code) => out.push_str(&paint.paint(code, line)),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    if !reply.diff.is_empty() {
        out.push('\n');
    }
    if offline {
        out.push_str("Plan (as if the old file had converged):\n");
    } else {
        out.push_str(&format!(
            "Plan (against desired generation {}):\n",
            reply.generation
        ));
    }
    for model in &reply.models {
        out.push_str("  ");
        out.push_str(&plan_line(model, paint));
        out.push('\n');
    }
    if !reply.changed {
        out.push_str("No changes.\n");
    }
    out
}

/// One model's plan line, coloured by what happens to it.
fn plan_line(model: &PlannedModel, paint: Paint) -> String {
    let code = match model.line.split(' ').next() {
        Some("+") => "32",
        Some("-") => "31",
        Some("~") => "33",
        Some("↑") => "36",
        Some("↓") => "35",
        _ if model.clears_override => "33",
        _ => return model.line.clone(),
    };
    paint.paint(code, &model.line)
}

/// `hub apply`'s line for a model: `model/NAME started`.
pub fn apply_line(name: &str, result: Outcome) -> String {
    format!("model/{name} {}", result.as_str())
}

/// [`apply_line`] with what the model's load takes and evicts where the plan says:
/// `model/big loaded (+7.5 GiB, evicts small)`.
pub fn planned_line(name: &str, bytes: Option<u64>, evicts: &[String], result: Outcome) -> String {
    let line = apply_line(name, result);
    match crate::bytes::load_note(bytes, evicts.iter().map(String::as_str)) {
        Some(note) => format!("{line} ({note})"),
        None => line,
    }
}

/// The most telling thing a reconcile did to a model, as `hub apply` prints it.
pub fn result_of(name: &str, report: Option<&Report>) -> Outcome {
    let Some(report) = report else {
        return Outcome::Unchanged;
    };
    let has = |list: &Vec<String>| list.iter().any(|n| n == name);
    let failed = report.failed.iter().any(|f| f.model == name);
    let outcomes = [
        (failed, Outcome::Failed),
        (has(&report.restarted), Outcome::Restarted),
        (has(&report.started), Outcome::Started),
        (has(&report.stopped), Outcome::Stopped),
        (has(&report.loaded), Outcome::Loaded),
        (has(&report.unloaded), Outcome::Unloaded),
    ];
    Outcome::most_telling(outcomes.into_iter().filter(|(is, _)| *is).map(|(_, o)| o))
}

/// One line per event, as `hub watch` prints them: `10:00:00.123Z  phase      alpha  ready`.
pub fn event_line(event: &HubEvent) -> String {
    let time = event
        .time
        .split_once('T')
        .map_or(event.time.as_str(), |(_, t)| t);
    let mut message = event.message.clone();
    if let Some(report) = &event.report {
        let summary = report_summary(report);
        if !summary.is_empty() {
            message.push_str(": ");
            message.push_str(&summary);
        }
    }
    format!(
        "{time:<13}  {:<9}  {:<12}  {message}",
        event.kind,
        event.model.as_deref().unwrap_or("-")
    )
    .trim_end()
    .to_string()
}

/// `started alpha; stopped gamma, delta; failed beta (load)`.
pub fn report_summary(report: &Report) -> String {
    let mut parts = Vec::new();
    for (verb, list) in [
        ("started", &report.started),
        ("stopped", &report.stopped),
        ("restarted", &report.restarted),
        ("loaded", &report.loaded),
        ("unloaded", &report.unloaded),
    ] {
        if !list.is_empty() {
            parts.push(format!("{verb} {}", list.join(", ")));
        }
    }
    if !report.failed.is_empty() {
        let failed: Vec<String> = report
            .failed
            .iter()
            .map(|f| match f.count {
                0 | 1 => format!("{} ({}: {})", f.model, f.action, f.error),
                n => format!("{} ({}, {n} times: {})", f.model, f.action, f.error),
            })
            .collect();
        parts.push(format!("failed {}", failed.join(", ")));
    }
    parts.join("; ")
}

/// A model's recent events under a heading, as `hub status MODEL` prints them.
pub fn model_events(name: &str, events: &[HubEvent]) -> String {
    let mut out = format!("\nEvents of {name} (oldest first):\n");
    if events.is_empty() {
        out.push_str("  none yet\n");
    }
    for event in events {
        out.push_str("  ");
        out.push_str(&event_line(event));
        out.push('\n');
    }
    out
}
