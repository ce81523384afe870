//! The reconcile report: one per episode (from a change until nothing is left to do), and the
//! journal notes.

use std::collections::HashSet;

use tokio::time::Instant;

use super::Reconciler;
use crate::config::ModelName;
use crate::events::EventKind;
use crate::events::{HubEvent, Journal};
use crate::observed::Time;
use crate::rfc3339;
use crate::status::Report;

/// Records an event in the journal.
pub(super) fn note(
    journal: &Journal,
    now: Time,
    model: Option<&ModelName>,
    kind: EventKind,
    message: String,
) {
    journal.record(HubEvent {
        time: rfc3339(now),
        kind: kind.as_str().to_string(),
        model: model.map(ToString::to_string),
        message,
        reason: None,
        report: None,
        bytes: None,
        bytes_source: None,
    });
}

/// The model's weights left memory, and why: an event, and the count `/metrics` shows.
pub(super) fn released(journal: &Journal, now: Time, model: &ModelName, reason: &'static str) {
    journal.count(|m| *m.unloads.entry((model.to_string(), reason)).or_default() += 1);
    journal.record(HubEvent {
        time: rfc3339(now),
        kind: EventKind::Memory.as_str().to_string(),
        model: Some(model.to_string()),
        message: format!("released from memory ({reason})"),
        reason: Some(reason.to_string()),
        report: None,
        bytes: None,
        bytes_source: None,
    });
}

/// A model's footprint was measured: an event when it is new, moved by more than 10%, or comes
/// from another source than the last one, so followers of `/hub/events` see what the planner
/// counts without a stream of near-equal figures.
pub(super) fn measured(
    journal: &Journal,
    now: Time,
    model: &ModelName,
    before: Option<crate::measure::Footprint>,
    footprint: crate::measure::Footprint,
) -> bool {
    let moved = before.is_none_or(|b| {
        b.source != footprint.source || footprint.bytes.abs_diff(b.bytes) * 10 > b.bytes
    });
    if !moved {
        return false;
    }
    journal.record(HubEvent {
        time: rfc3339(now),
        kind: EventKind::Memory.as_str().to_string(),
        model: Some(model.to_string()),
        message: format!(
            "measured {} ({})",
            crate::bytes::format(footprint.bytes),
            footprint.source.as_str()
        ),
        reason: None,
        report: None,
        bytes: Some(footprint.bytes),
        bytes_source: Some(footprint.source.as_str().to_string()),
    });
    true
}

/// What started a reconcile (the report's `trigger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Startup,
    /// The watched file changed.
    Config,
    /// `POST /hub/apply` or a model command.
    Api,
    Resync,
    /// A retry or idle unload fell due.
    Timer,
    WorkerExit,
    Health,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Config => "config",
            Trigger::Api => "api",
            Trigger::Resync => "resync",
            Trigger::Timer => "timer",
            Trigger::WorkerExit => "worker_exit",
            Trigger::Health => "health",
        }
    }
}

impl Reconciler {
    /// Starts a new report. A new generation always gets one; other triggers only when the
    /// previous reconcile has finished.
    pub(super) fn open_episode(&mut self, new_generation: bool) {
        if !new_generation && self.episode.is_some() {
            return;
        }
        self.episode = Some(Instant::now());
        self.report = Some(Report {
            generation: self.generation,
            trigger: self.trigger.as_str().to_string(),
            started_at: rfc3339(self.clock.now()),
            ..Report::default()
        });
    }

    pub(super) fn close_episode(&mut self) {
        let (Some(started), Some(report)) = (self.episode.take(), self.report.as_mut()) else {
            return;
        };
        report.finished_at = Some(rfc3339(self.clock.now()));
        report.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        let touched: HashSet<&str> = [
            &report.started,
            &report.stopped,
            &report.restarted,
            &report.loaded,
            &report.unloaded,
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .chain(report.failed.iter().map(|f| f.model.as_str()))
        .collect();
        report.unchanged = self
            .desired
            .models
            .keys()
            .filter(|name| !touched.contains(name.as_str()))
            .map(ToString::to_string)
            .collect();
        self.observed_generation = report.generation;
        tracing::info!(
            generation = report.generation,
            trigger = %report.trigger,
            duration_ms = %format_args!("{:.1}", report.duration_ms),
            started = ?report.started,
            stopped = ?report.stopped,
            restarted = ?report.restarted,
            loaded = ?report.loaded,
            unloaded = ?report.unloaded,
            failed = report.failed.len(),
            "reconciled"
        );
        let seconds = report.duration_ms / 1000.0;
        self.journal.count(|m| {
            m.reconciles += 1;
            m.reconcile_seconds += seconds;
        });
        self.journal.record(HubEvent {
            time: report.finished_at.clone().unwrap_or_default(),
            bytes: None,
            bytes_source: None,
            kind: EventKind::Reconcile.as_str().to_string(),
            model: None,
            message: format!(
                "generation {} reconciled ({}) in {:.1} ms",
                report.generation, report.trigger, report.duration_ms
            ),
            reason: None,
            report: Some(report.clone()),
        });
    }
}
