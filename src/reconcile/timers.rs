//! The loop's timers: a resync, each model's retry or idle unload, and health probes; one rule
//! for when the loop next wakes.

use tokio::time::Instant;

use super::Reconciler;
use crate::config::ModelName;
use crate::observed::{ModelObserved, Time};
use crate::plan::{self};

impl Reconciler {
    /// A timer fired: a resync, a retry or idle unload falling due, or health probes.
    pub(super) fn on_timer(&mut self) {
        let now = self.clock.now();
        let resync = Instant::now() >= self.resync_at;
        if resync {
            self.resync_at = Instant::now() + self.options.resync_every;
            self.reread.notify_one();
            self.trigger = "resync";
        } else {
            self.trigger = "timer";
        }
        let due = self
            .observed
            .models
            .iter()
            .filter_map(|(name, obs)| self.model_timer(name, obs))
            .any(|at| at <= now);
        if resync || due {
            self.pass();
        } else {
            self.launch_probes();
        }
    }

    /// When a model's retry or idle unload falls due, if it has one.
    pub(super) fn model_timer(&self, name: &ModelName, obs: &ModelObserved) -> Option<Time> {
        if obs.busy {
            return None;
        }
        let unload_at = self
            .desired
            .models
            .get(name)
            .and_then(|spec| plan::unload_at(spec, obs));
        [obs.next_retry_at, unload_at].into_iter().flatten().min()
    }

    /// The next time the loop must act without an event: the resync, a retry or idle unload,
    /// or a health probe.
    pub(super) fn next_wake(&self) -> Instant {
        // Only future times: one already past has had its pass, and waking for it again would
        // spin (an idle timer of a model that is serving, say).
        let now = self.clock.now();
        let timers = self
            .observed
            .models
            .iter()
            .filter_map(|(name, obs)| self.model_timer(name, obs))
            .filter(|at| *at > now)
            .map(|at| self.clock.instant_at(at));
        let probes = self
            .probing
            .values()
            .filter(|p| !p.in_progress)
            .filter_map(|p| p.next_at)
            .filter(|at| *at > Instant::now());
        timers.chain(probes).fold(self.resync_at, Instant::min)
    }
}
