//! The loop's timers, as data: the resync, each model's retry or idle unload, and each ready
//! worker's next health probe. One rule says when the loop wakes: at the earliest timer still
//! ahead. A timer already past has had its wake; waking for it again would spin (the idle timer of
//! a model that is serving stays past until its activity moves it, say).

use tokio::time::Instant;

use super::{Reconciler, Trigger};
use crate::config::ModelName;
use crate::observed::{MemoryState, ModelObserved, Time};
use crate::plan;

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// Re-read hub.yaml even without a file event.
    Resync,
    /// A model's retry or idle unload: the planner decides what falls due, so a pass runs.
    Model,
    /// A ready worker's health probe.
    Probe,
}

impl Reconciler {
    /// Every armed timer, with the instant it falls due.
    fn timers(&self) -> impl Iterator<Item = (Instant, Timer)> + '_ {
        let models = self
            .observed
            .models
            .iter()
            .filter_map(|(name, obs)| self.model_timer(name, obs))
            .map(|at| (self.clock.instant_at(at), Timer::Model));
        let probes = self
            .probing
            .values()
            .filter(|p| !p.in_progress)
            .filter_map(|p| p.next_at)
            .map(|at| (at, Timer::Probe));
        std::iter::once((self.resync_at, Timer::Resync))
            .chain(models)
            .chain(probes)
    }

    /// When the loop must next act without an event: the earliest timer still ahead.
    pub(super) fn next_wake(&self) -> Instant {
        let now = Instant::now();
        self.timers()
            .map(|(at, _)| at)
            .filter(|at| *at > now)
            .min()
            .unwrap_or(self.resync_at)
    }

    /// The loop woke for a timer: a resync and a model's timer each need a pass (which probes
    /// too); probes alone only probe.
    pub(super) fn on_timer(&mut self) {
        let now = Instant::now();
        // One walk over the timers (a wake for a probe is the common case, and the model list
        // may be long).
        let (mut resync, mut model) = (false, false);
        for (_, timer) in self.timers().filter(|(at, _)| *at <= now) {
            resync |= timer == Timer::Resync;
            model |= timer == Timer::Model;
        }
        if resync {
            self.resync_at = now + self.options.resync_every;
            self.reread.notify_one();
        }
        // A retry or idle unload that falls due with the resync is what the pass acts on.
        self.trigger = if resync && !model {
            Trigger::Resync
        } else {
            Trigger::Timer
        };
        if resync || model {
            self.pass();
        } else {
            self.launch_probes();
        }
    }

    /// When a model's retry or idle unload falls due, if it has one. A model at work has none:
    /// its job's end brings the next pass.
    fn model_timer(&self, name: &ModelName, obs: &ModelObserved) -> Option<Time> {
        if obs.busy {
            return None;
        }
        // Without a retry and without anything on demand there is no timer (see
        // `plan::unload_at`): answered without looking the model up in hub.yaml, since this runs
        // for every model on every wake of the loop.
        let on_demand = obs.worker.on_demand
            || (obs.memory.state == MemoryState::Loaded && obs.memory.on_demand);
        if obs.next_retry_at.is_none() && !on_demand {
            return None;
        }
        let unload_at = self
            .desired
            .models
            .get(name)
            .and_then(|spec| plan::unload_at(spec, obs));
        [obs.next_retry_at, unload_at].into_iter().flatten().min()
    }
}
