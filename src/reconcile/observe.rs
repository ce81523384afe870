//! What workers report: a job's steps (applied through [`super::step`]) and unexpected exits,
//! with what is not state (journal notes, counters, the report, the backoff's delay).

use std::collections::HashMap;
use std::time::Duration;

use super::{Reconciler, Trigger, Update, note, report, step};
use crate::config::ModelName;
use crate::events::EventKind;
use crate::observed::Time;
use crate::retry::Backoff;
use crate::supervisor::Exit;

/// A worker that crashes after running at least this long starts its backoff afresh.
pub(super) const STABLE_AFTER: Duration = Duration::from_secs(10);

/// A model's retry delays.
pub(super) fn backoff(
    backoffs: &mut HashMap<ModelName, Backoff>,
    name: ModelName,
    max: Duration,
) -> &mut Backoff {
    backoffs
        .entry(name)
        .or_insert_with(|| Backoff::new(crate::retry::MIN_DELAY, max))
}

/// Whether the model's weights are in memory: loaded, or (an engine without load/unload) its
/// worker ready.
pub(super) fn holds_weights(obs: &crate::observed::ModelObserved) -> bool {
    let memory_control = obs
        .worker
        .run
        .as_ref()
        .is_some_and(|r| r.engine.has_memory_control());
    if memory_control {
        obs.memory.state == crate::observed::MemoryState::Loaded
    } else {
        obs.worker.phase == crate::observed::Phase::Ready
    }
}

impl Reconciler {
    pub(super) fn on_progress(&mut self, name: ModelName, update: Update, now: Time) {
        // What is not state: the journal, counters, the report, the backoff's delay.
        let mut retry_at = None;
        match &update {
            Update::Spawned { pid, port, .. } => {
                let message = format!("starting: pid {pid}, port {port}");
                note(&self.journal, now, Some(&name), EventKind::Phase, message);
            }
            Update::Ready => note(
                &self.journal,
                now,
                Some(&name),
                EventKind::Phase,
                "ready".into(),
            ),
            Update::Stopping => note(
                &self.journal,
                now,
                Some(&name),
                EventKind::Phase,
                "stopping".into(),
            ),
            Update::Stopped { exit, .. } => {
                let message = match exit {
                    Some(exit) => format!("stopped: exit code {}", exit.code_or_signal()),
                    None => "stopped".to_string(),
                };
                note(&self.journal, now, Some(&name), EventKind::Phase, message);
            }
            Update::Memory(state) => {
                note(
                    &self.journal,
                    now,
                    Some(&name),
                    EventKind::Memory,
                    state.as_str().into(),
                );
            }
            Update::Measured(footprint) => {
                let before = self.observed.models.get(&name).and_then(|o| o.footprint);
                report::measured(&self.journal, now, &name, before, *footprint);
            }
            Update::Loaded { on_demand, .. } => {
                let message = if *on_demand {
                    "loaded on demand"
                } else {
                    "loaded"
                };
                note(
                    &self.journal,
                    now,
                    Some(&name),
                    EventKind::Memory,
                    message.into(),
                );
            }
            Update::Succeeded(action) => {
                self.journal
                    .count(|m| *m.actions.entry((action.verb(), "ok")).or_default() += 1);
                if let Some(report) = &mut self.report {
                    report.add_success(name.as_str(), action);
                }
            }
            Update::Superseded(action) => {
                tracing::info!(model = %name, action = action.verb(), "superseded by a newer desired state");
                self.journal
                    .count(|m| *m.actions.entry((action.verb(), "superseded")).or_default() += 1);
                let message = format!("{} superseded by a newer desired state", action.verb());
                note(&self.journal, now, Some(&name), EventKind::Action, message);
            }
            Update::Failed { action, error } => {
                tracing::warn!(model = %name, action = action.verb(), "{error}");
                self.journal
                    .count(|m| *m.actions.entry((action.verb(), "failed")).or_default() += 1);
                let message = format!("{} failed: {error}", action.verb());
                note(&self.journal, now, Some(&name), EventKind::Action, message);
                let delay =
                    backoff(&mut self.backoffs, name.clone(), self.options.max_backoff).next();
                retry_at = delay.map(|d| now + d);
                if let Some(report) = &mut self.report {
                    report.add_failure(name.as_str(), action.verb(), error.clone());
                }
            }
        }
        let obs = self.observed.models.entry(name.clone()).or_default();
        let held = holds_weights(obs);
        if matches!(
            update,
            Update::Memory(crate::observed::MemoryState::Loading)
        ) {
            self.loading_since.insert(name.clone(), now);
        }
        step::apply(obs, &update, now, retry_at);
        if held && !holds_weights(obs) {
            let reason = self.in_flight.get(&name).and_then(|f| f.release);
            report::released(&self.journal, now, &name, reason.unwrap_or("requested"));
        }
        let started_loading = match &update {
            Update::Loaded { .. } => self.loading_since.remove(&name),
            // An engine without load/unload loads by starting.
            Update::Ready
                if !obs
                    .worker
                    .run
                    .as_ref()
                    .is_some_and(|r| r.engine.has_memory_control()) =>
            {
                obs.worker.started_at
            }
            _ => None,
        };
        if let Some(since) = started_loading {
            let took = (now - since).try_into().unwrap_or_default();
            self.journal.count(|m| {
                m.load_seconds
                    .entry(name.to_string())
                    .or_default()
                    .observe(took)
            });
        }
    }

    pub(super) fn on_exit(&mut self, exit: Exit, now: Time) {
        let Some(obs) = self.observed.models.get_mut(&exit.name) else {
            return;
        };
        if obs.worker.pid != Some(exit.pid) {
            return;
        }
        let code = exit.info.code_or_signal();
        if obs.busy {
            // The action in flight stopped it, or will see the exit and report.
            step::exited(obs, code, now, None);
            return;
        }
        tracing::warn!(model = %exit.name, pid = exit.pid, code = ?exit.info.code, signal = ?exit.info.signal, "worker exited unexpectedly");
        self.journal.count(|m| m.crashes += 1);
        let message = format!("exited unexpectedly with code {code}");
        note(
            &self.journal,
            now,
            Some(&exit.name),
            EventKind::Exit,
            message,
        );
        let backoff = backoff(
            &mut self.backoffs,
            exit.name.clone(),
            self.options.max_backoff,
        );
        // A worker that ran a while before it crashed starts its backoff afresh.
        let uptime = obs.worker.started_at.map(|t| now - t);
        if uptime.is_some_and(|u| u >= STABLE_AFTER) {
            backoff.reset();
        }
        let retry_at = backoff.next().map(|d| now + d);
        let held = holds_weights(obs);
        step::exited(obs, code, now, retry_at);
        if held {
            report::released(&self.journal, now, &exit.name, "crashed");
        }
        self.trigger = Trigger::WorkerExit;
    }
}
