//! The gateway's side of just-in-time loading: one [`Lane`] per model that requests have asked
//! for, shared by the API (which admits requests through it) and the reconcile loop (which opens
//! and closes it).
//!
//! The loop owns the decisions; a lane only carries them and counts:
//! - The loop sets each lane's [`Route`] after every pass: `Open` (the worker is ready and holds
//!   its weights: admit at once), `Closed` (requests queue: the model is starting, loading,
//!   waiting for room in its group, draining for a restart), or `Refused` (answer at once: backing
//!   off after a failure, a group that can never make room, `on_demand: false`).
//! - A request is admitted only while the route is open, under the lane's lock, so the loop's
//!   "close it if nothing is in flight" ([`Lane::close_if_idle`]) and an admission never race:
//!   a model is never unloaded under a request.
//! - Demand is level-triggered: a lane with queued requests *is* a demand for its model, which the
//!   loop reads at every pass ([`Gateway::sync`]). The gateway only wakes the loop (a
//!   [`Signal`]) when a lane's first request queues, and when its last request ends while the loop
//!   waits for that. So 50 requests for one cold model are one demand, one start, one load.
//!
//! The hot path (an open lane) takes one uncontended mutex per request and its end, and sends the
//! loop nothing.

mod proxy;
pub mod stats;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use crate::clock::Clock;
use crate::config::ModelName;
use crate::observed::Time;

pub use proxy::{Forward, Proxy, ProxyError, hop_by_hop};
pub use stats::Stats;

/// How a lane answers new requests, as the loop last decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Admit: the worker listens on this port and holds the weights.
    Open { port: u16 },
    /// Queue until the loop opens or refuses the lane.
    Closed,
    /// Answer at once with this.
    Refused(Refusal),
}

/// Why requests for a model are refused now: an OpenAI-shaped error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    /// The envelope's `code` string (`model_unavailable`, `group_full`, ...).
    pub code: &'static str,
    pub message: String,
    /// Seconds until a retry could succeed, for `Retry-After`.
    pub retry_after: Option<u64>,
}

/// What a lane asks of the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal(pub ModelName);

/// Every lane, and the channel to the loop.
pub struct Gateway {
    lanes: Mutex<HashMap<ModelName, Arc<Lane>>>,
    signals: mpsc::UnboundedSender<Signal>,
    clock: Clock,
}

/// One model's admissions.
pub struct Lane {
    name: ModelName,
    state: Mutex<LaneState>,
    /// Woken whenever the route changes.
    changed: Notify,
    /// Woken whenever the last request in flight ends.
    idle: Notify,
    pub stats: Stats,
    signals: mpsc::UnboundedSender<Signal>,
    clock: Clock,
}

#[derive(Debug)]
struct LaneState {
    route: Route,
    in_flight: u32,
    queued: u32,
    /// When the oldest request still queued began waiting.
    queued_since: Option<Time>,
    /// When the last request ended.
    last_activity: Option<Time>,
    /// The loop waits for the requests in flight to end (to unload or restart the model).
    wake_when_idle: bool,
    /// Requests in flight when the loop last read the lane, which the status shows.
    published: u32,
    /// When the lane last told the loop that its requests had all ended.
    idle_signalled: Option<std::time::Instant>,
}

/// A lane whose last request ends while the status still shows some in flight tells the loop,
/// so the status does not keep showing them, but at most this often.
const IDLE_SIGNAL_EVERY: Duration = Duration::from_millis(250);

/// What the loop reads of a lane at each pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Demand {
    pub in_flight: u32,
    pub queued: u32,
    pub queued_since: Option<Time>,
    pub last_activity: Option<Time>,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotAdmitted {
    Refused(Refusal),
    /// `max_queued` requests already wait for this model.
    QueueFull {
        max_queued: u32,
    },
    /// The model was not ready within the queue timeout.
    TimedOut {
        waited: Duration,
    },
}

/// A request admitted to a model: counted in flight until dropped.
pub struct Ticket {
    lane: Arc<Lane>,
    pub port: u16,
    /// How long the request queued before it was admitted.
    pub waited: Duration,
}

impl Gateway {
    /// The gateway, and the receiver of its signals for the loop.
    pub fn new(clock: Clock) -> (Gateway, mpsc::UnboundedReceiver<Signal>) {
        let (signals, receiver) = mpsc::unbounded_channel();
        let gateway = Gateway {
            lanes: Mutex::default(),
            signals,
            clock,
        };
        (gateway, receiver)
    }

    /// The model's lane, made (closed) on its first request.
    pub fn lane(&self, name: &ModelName) -> Arc<Lane> {
        let mut lanes = self.lanes.lock().expect("lanes lock");
        if let Some(lane) = lanes.get(name) {
            return lane.clone();
        }
        let lane = Arc::new(Lane {
            name: name.clone(),
            state: Mutex::new(LaneState {
                route: Route::Closed,
                in_flight: 0,
                queued: 0,
                queued_since: None,
                last_activity: None,
                wake_when_idle: false,
                published: 0,
                idle_signalled: None,
            }),
            changed: Notify::new(),
            idle: Notify::new(),
            stats: Stats::default(),
            signals: self.signals.clone(),
            clock: self.clock,
        });
        lanes.insert(name.clone(), lane.clone());
        lane
    }

    /// The lane of a model if requests have asked for it.
    pub fn get(&self, name: &str) -> Option<Arc<Lane>> {
        self.lanes.lock().expect("lanes lock").get(name).cloned()
    }

    /// Every lane, for the loop's pass and for metrics.
    pub fn lanes(&self) -> Vec<Arc<Lane>> {
        let lanes = self.lanes.lock().expect("lanes lock");
        let mut all: Vec<Arc<Lane>> = lanes.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Waits until the model's lane admits the request (asking the loop for the model when it
    /// is not ready), or refuses, or `timeout` passes. `max_queued` bounds the wait list.
    pub async fn admit(
        &self,
        name: &ModelName,
        timeout: Duration,
        max_queued: u32,
    ) -> Result<Ticket, NotAdmitted> {
        let lane = self.lane(name);
        let started = tokio::time::Instant::now();
        let deadline = started + timeout;
        let mut queued = false;
        loop {
            let changed = lane.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = lane.state.lock().expect("lane lock");
                match &state.route {
                    Route::Open { port } => {
                        let port = *port;
                        if queued {
                            state.unqueue();
                            if state.queued == 0 {
                                // The queue is served: let the loop show it gone.
                                let _ = self.signals.send(Signal(name.clone()));
                            }
                        }
                        state.in_flight += 1;
                        drop(state);
                        return Ok(Ticket {
                            lane: lane.clone(),
                            port,
                            waited: started.elapsed(),
                        });
                    }
                    Route::Refused(refusal) => {
                        let refusal = refusal.clone();
                        if queued {
                            state.unqueue();
                        }
                        return Err(NotAdmitted::Refused(refusal));
                    }
                    Route::Closed if !queued => {
                        if state.queued >= max_queued {
                            return Err(NotAdmitted::QueueFull { max_queued });
                        }
                        state.queued += 1;
                        queued = true;
                        if state.queued == 1 {
                            state.queued_since = Some(self.clock.now());
                            // The first to queue tells the loop; the others ride on its demand.
                            let _ = self.signals.send(Signal(name.clone()));
                        }
                    }
                    Route::Closed => {}
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                lane.state.lock().expect("lane lock").unqueue();
                // The loop may be holding a load back for this queue only; let it see it is gone.
                let _ = self.signals.send(Signal(name.clone()));
                return Err(NotAdmitted::TimedOut {
                    waited: started.elapsed(),
                });
            }
        }
    }

    /// What the loop needs of every lane: requests in flight and queued, and activity.
    pub fn demands(&self) -> Vec<(ModelName, Demand)> {
        self.lanes()
            .into_iter()
            .map(|lane| {
                let mut state = lane.state.lock().expect("lane lock");
                state.published = state.in_flight;
                let demand = Demand {
                    in_flight: state.in_flight,
                    queued: state.queued,
                    queued_since: state.queued_since,
                    last_activity: state.last_activity,
                };
                (lane.name.clone(), demand)
            })
            .collect()
    }
}

impl LaneState {
    fn unqueue(&mut self) {
        self.queued = self.queued.saturating_sub(1);
        if self.queued == 0 {
            self.queued_since = None;
        }
    }
}

impl Lane {
    pub fn name(&self) -> &ModelName {
        &self.name
    }

    /// Sets the route (the loop, after a pass); wakes the queue when it changes. With
    /// `wake_when_idle`, the loop waits for the requests in flight to end (a model that yields
    /// its room) and is signalled when they have.
    pub fn set_route(&self, route: Route, wake_when_idle: bool) {
        let mut state = self.state.lock().expect("lane lock");
        if wake_when_idle && state.in_flight > 0 {
            state.wake_when_idle = true;
        }
        if state.route != route {
            state.route = route;
            drop(state);
            self.changed.notify_waiters();
        }
    }

    pub fn route(&self) -> Route {
        self.state.lock().expect("lane lock").route.clone()
    }

    /// Closes the lane if no request is in flight, and says whether it did; otherwise asks for a
    /// signal when the last one ends. The loop unloads or evicts a model only after this said yes.
    pub fn close_if_idle(&self) -> bool {
        let mut state = self.state.lock().expect("lane lock");
        if state.in_flight > 0 {
            state.wake_when_idle = true;
            return false;
        }
        let changed = state.route != Route::Closed;
        state.route = Route::Closed;
        drop(state);
        if changed {
            self.changed.notify_waiters();
        }
        true
    }

    /// Waits until no request is in flight, or `timeout`; returns how many were still in flight
    /// when it gave up (0: drained).
    pub async fn drained(&self, timeout: Duration) -> u32 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            let in_flight = self.state.lock().expect("lane lock").in_flight;
            if in_flight == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.state.lock().expect("lane lock").in_flight;
            }
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.state.lock().expect("lane lock").in_flight
    }

    pub fn queued(&self) -> u32 {
        self.state.lock().expect("lane lock").queued
    }
}

impl Ticket {
    pub fn lane(&self) -> &Arc<Lane> {
        &self.lane
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let lane = &self.lane;
        let mut state = lane.state.lock().expect("lane lock");
        state.in_flight = state.in_flight.saturating_sub(1);
        state.last_activity = Some(lane.clock.now());
        if state.in_flight > 0 {
            return;
        }
        let mut wake = std::mem::take(&mut state.wake_when_idle);
        if state.published > 0
            && state
                .idle_signalled
                .is_none_or(|at| at.elapsed() >= IDLE_SIGNAL_EVERY)
        {
            state.idle_signalled = Some(std::time::Instant::now());
            wake = true;
        }
        drop(state);
        lane.idle.notify_waiters();
        if wake {
            let _ = lane.signals.send(Signal(lane.name.clone()));
        }
    }
}
