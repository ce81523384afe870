//! How each step of an action changes one model's observed state: the loop's only code for it,
//! pure (no IO, no clock, no randomness), so the planner's property test drives the very same
//! transitions the daemon makes. The loop adds what is not state: journal notes, counters, the
//! report, and a failure's backoff delay (`retry_at`).

use super::Update;
use crate::observed::{ActionError, MemoryState, ModelObserved, Phase, Time};
use crate::plan::Action;

/// Applies `update` to `obs` at time `now`. A failure's retry time is `retry_at` (the loop draws
/// it from the model's backoff).
pub fn apply(obs: &mut ModelObserved, update: &Update, now: Time, retry_at: Option<Time>) {
    match update {
        Update::Spawned {
            at,
            pid,
            start_time,
            port,
            log_file,
            run,
            on_demand,
        } => {
            obs.worker.phase = Phase::Starting;
            obs.worker.pid = Some(*pid);
            obs.worker.start_time = *start_time;
            obs.worker.port = Some(*port);
            obs.worker.started_at = Some(*at);
            obs.worker.log_file = Some(log_file.clone());
            obs.worker.run = Some(run.clone());
            obs.worker.crashed = false;
            obs.worker.on_demand = *on_demand;
            obs.memory = Default::default();
            obs.unload_requested = false;
        }
        Update::Ready => obs.worker.phase = Phase::Ready,
        Update::Stopping => obs.worker.phase = Phase::Stopping,
        Update::Stopped { exit, failed } => {
            if let Some(exit) = exit {
                obs.worker.exit_code = Some(exit.code_or_signal());
                obs.worker.exited_at = Some(now);
            }
            // A hung worker stopped during its backoff stays failed until its retry.
            if *failed {
                obs.worker.phase = Phase::Failed;
            } else {
                obs.worker.phase = Phase::Stopped;
                obs.worker.crashed = false;
            }
            obs.worker.pid = None;
            obs.worker.start_time = None;
            obs.worker.on_demand = false;
            obs.memory = Default::default();
            obs.unload_requested = false;
        }
        Update::Memory(state) => {
            obs.memory.state = *state;
            if *state == MemoryState::Unloaded {
                obs.memory.loaded_at = None;
                obs.memory.on_demand = false;
                obs.unload_requested = false;
            }
        }
        Update::Loaded {
            on_demand,
            baseline,
        } => {
            obs.memory.baseline = *baseline;
            obs.memory.state = MemoryState::Loaded;
            obs.memory.loaded_at = Some(now);
            obs.memory.last_activity = Some(now);
            obs.memory.on_demand = *on_demand;
            obs.load_requested = false;
        }
        Update::Measured(footprint) => obs.footprint = Some(*footprint),
        Update::Succeeded(action) => {
            // Stopping a hung worker does not end its failure: the retry still waits.
            if !(matches!(action, Action::Stop) && obs.worker.phase == Phase::Failed) {
                obs.error = None;
                obs.next_retry_at = None;
            }
            if matches!(action, Action::Restart { .. }) {
                obs.worker.restarts += 1;
            }
            if matches!(action, Action::Unload { .. }) {
                obs.unload_requested = false;
            }
        }
        Update::Superseded(action) => {
            if matches!(action, Action::Load) {
                obs.load_requested = false;
            }
        }
        Update::Failed { action, error } => {
            match action {
                Action::Start | Action::Restart { .. } => {
                    obs.worker.phase = Phase::Failed;
                    obs.worker.pid = None;
                    obs.worker.start_time = None;
                    if matches!(action, Action::Restart { .. }) {
                        obs.worker.restarts += 1;
                    }
                }
                Action::Load => obs.load_requested = false,
                Action::Unload { .. } => obs.unload_requested = false,
                Action::Stop => {}
            }
            obs.error = Some(ActionError {
                action: action.verb(),
                message: error.clone(),
            });
            obs.next_retry_at = retry_at;
        }
    }
}

/// The worker's process exited with `code` (hub saw it exit). Unless a job is at work on the model
/// (it stopped the worker, or will see the exit and report), the exit was unexpected: the worker
/// failed and waits for its retry at `retry_at`.
pub fn exited(obs: &mut ModelObserved, code: i32, now: Time, retry_at: Option<Time>) {
    obs.worker.exit_code = Some(code);
    obs.worker.exited_at = Some(now);
    if obs.busy {
        return;
    }
    obs.worker.phase = Phase::Failed;
    obs.worker.pid = None;
    obs.worker.start_time = None;
    obs.worker.crashed = true;
    // A worker started for requests comes back only for new ones.
    obs.worker.on_demand = false;
    obs.memory = Default::default();
    obs.error = Some(ActionError {
        action: "run",
        message: format!("worker exited unexpectedly with code {code}"),
    });
    obs.next_retry_at = retry_at;
}

/// A ready worker failed `failures` health probes in a row and is judged dead while its process
/// lives: it failed, and is restarted (the restart stops the process first) at `retry_at`.
pub fn unhealthy(obs: &mut ModelObserved, failures: u32, retry_at: Option<Time>) {
    obs.worker.phase = Phase::Failed;
    obs.worker.crashed = true;
    obs.worker.exit_code = None;
    obs.memory = Default::default();
    obs.error = Some(ActionError {
        action: "health",
        message: format!("failed {failures} health probes in a row"),
    });
    obs.next_retry_at = retry_at;
}

/// A job has ended: its model may be planned again.
pub fn done(obs: &mut ModelObserved) {
    obs.busy = false;
}
