//! Health probes of ready workers: when each is due, and what a failed or active answer changes.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Event, Reconciler, Trigger, backoff, note, step};
use crate::config::ModelName;
use crate::engine::Probe;
use crate::events::EventKind;
use crate::observed::{MemoryState, Phase, Time};

/// A ready worker that fails this many health probes in a row is restarted.
pub(super) const HEALTH_FAILURES: u32 = 3;

/// A model holding its weights is measured again with the first probe after this long, so a
/// footprint that grows while it serves (caches, longer contexts) is what the planner counts.
pub(super) const MEASURE_EVERY: Duration = Duration::from_secs(10);

/// When a ready worker is next probed, and how its probes went.
#[derive(Default)]
pub(super) struct Probing {
    pub(super) next_at: Option<Instant>,
    pub(super) in_progress: bool,
    pub(super) failures: u32,
    /// The health URL of the worker with this pid, built once rather than for every probe.
    pub(super) url: Option<(u32, Arc<str>)>,
    /// When its memory was last measured with a probe.
    pub(super) measured_at: Option<Instant>,
}

impl Reconciler {
    /// A footprint measured alongside a probe of the worker with `pid`, kept when it moved by more
    /// than a tenth (and then the planner should look again).
    pub(super) fn on_measured(
        &mut self,
        name: &ModelName,
        pid: u32,
        footprint: crate::measure::Footprint,
        now: Time,
    ) -> bool {
        let Some(obs) = self.observed.models.get_mut(name) else {
            return false;
        };
        if obs.worker.pid != Some(pid) || obs.busy {
            return false;
        }
        // Drift within a tenth keeps the figure (and the state file) as it is.
        let moved = super::report::measured(&self.journal, now, name, obs.footprint, footprint);
        if moved {
            obs.footprint = Some(footprint);
        }
        moved
    }

    /// A health probe's answer. Only a change (activity, or a worker judged unhealthy) needs a
    /// pass; a quiet healthy answer costs nothing more.
    pub(super) fn on_health(&mut self, name: ModelName, pid: u32, probe: Probe, now: Time) -> bool {
        let interval = self
            .observed
            .models
            .get(&name)
            .and_then(|o| o.worker.run.as_ref())
            .map_or(Duration::from_secs(5), |r| r.engine.health.interval);
        let probing = self.probing.entry(name.clone()).or_default();
        probing.in_progress = false;
        probing.next_at = Some(Instant::now() + interval);
        let Some(obs) = self.observed.models.get_mut(&name) else {
            return false;
        };
        if obs.worker.pid != Some(pid) || obs.busy || obs.worker.phase != Phase::Ready {
            return false;
        }
        if probe.healthy {
            probing.failures = 0;
            let Some(activity) = probe.activity else {
                return false;
            };
            let mut memory = obs.memory.clone();
            memory.in_flight = activity.in_flight;
            if let Some(idle) = activity.idle_ms {
                let last = now - Duration::from_millis(idle);
                // Millisecond rounding of the worker's clock must not look like new activity.
                let moved = memory
                    .last_activity
                    .is_none_or(|t| (last - t).whole_milliseconds().abs() > 50);
                if moved && memory.state == MemoryState::Loaded {
                    memory.last_activity = Some(last);
                }
            }
            let changed = memory != obs.memory;
            obs.memory = memory;
            return changed;
        }
        probing.failures += 1;
        tracing::warn!(model = %name, pid, failures = probing.failures, "health probe failed");
        self.journal.count(|m| m.health_failures += 1);
        let message = format!("health probe failed ({} in a row)", probing.failures);
        note(&self.journal, now, Some(&name), EventKind::Health, message);
        if probing.failures < HEALTH_FAILURES {
            return false;
        }
        probing.failures = 0;
        let backoff = backoff(&mut self.backoffs, name, self.options.max_backoff);
        let retry_at = backoff.next().map(|d| now + d);
        step::unhealthy(obs, HEALTH_FAILURES, retry_at);
        self.trigger = Trigger::Health;
        true
    }

    /// Probes every ready worker whose probe is due.
    pub(super) fn launch_probes(&mut self) {
        let now = Instant::now();
        for (name, obs) in &self.observed.models {
            let (Some(pid), Some(port), Some(run)) =
                (obs.worker.pid, obs.worker.port, obs.worker.run.as_ref())
            else {
                continue;
            };
            // Looked up before it is inserted: cloning the name for every ready worker on every
            // wake was a good part of an idle daemon's cost.
            let probing = match self.probing.get_mut(name) {
                Some(probing) => probing,
                None => self.probing.entry(name.clone()).or_default(),
            };
            if obs.busy || obs.worker.phase != Phase::Ready {
                // Not probed while an action runs on it: its next probe is scheduled afresh
                // once it is ready and idle, so no past probe time keeps the loop awake.
                if !probing.in_progress {
                    probing.next_at = None;
                }
                continue;
            }
            let due = *probing
                .next_at
                .get_or_insert(now + run.engine.health.interval);
            if probing.in_progress || due > now {
                continue;
            }
            probing.in_progress = true;
            let url = match &probing.url {
                Some((for_pid, url)) if *for_pid == pid => url.clone(),
                _ => {
                    let hub = &self.executor.hub_exe;
                    let url: Arc<str> =
                        crate::engine::health_url(name.as_str(), run, port, hub).into();
                    probing.url = Some((pid, url.clone()));
                    url
                }
            };
            let probe = self.executor.workers.probe(url);
            // Measured with the probe while it holds weights, at most every `MEASURE_EVERY`.
            let measure = (super::observe::holds_weights(obs)
                && probing
                    .measured_at
                    .is_none_or(|at| now.duration_since(at) >= MEASURE_EVERY))
            .then(|| {
                probing.measured_at = Some(now);
                let hub = &self.executor.hub_exe;
                let target = crate::engine::memory_target(name.as_str(), run, pid, port, hub);
                self.executor.workers.measure(target)
            });
            let events = self.executor.events.clone();
            let name = name.clone();
            tokio::spawn(async move {
                let probe = probe.await;
                let footprint = match measure {
                    Some(measure) => measure.await,
                    None => None,
                };
                let _ = events.send(Event::Health {
                    name,
                    pid,
                    probe,
                    footprint,
                });
            });
        }
    }
}
