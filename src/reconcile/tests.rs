//! The loop's timing, tested with tokio's paused clock and [`FakeWorkers`]: start timeouts,
//! backoff growth and reset, supersession, idle unload, bounded stops, stops before starts and the
//! concurrency bound. Everything else about the loop is tested against real workers in
//! `tests/it`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::{BoxFuture, ConfigUpdate, Event, Handle, Options, Workers};
use crate::config::{self, ModelName};
use crate::engine::{Activity, Probe, Request};
use crate::status::ModelStatus;
use crate::supervisor::{Exit, ExitInfo, SpawnRequest, Spawned};
use crate::wire::Verb;

/// How a fake model behaves; changeable while the test runs.
#[derive(Debug, Clone, Default)]
struct Behaviour {
    /// Healthy this long after spawn; `None` never.
    healthy_after: Option<Duration>,
    load_takes: Duration,
    /// `stop` never finishes (a process stuck in the kernel).
    stuck: bool,
    /// Every load fails (a missing or unreadable model file).
    load_fails: bool,
    /// What its weights take in memory, as `measure` reports it (on top of [`FAKE_BASELINE`]).
    bytes: u64,
    /// Its weights stay resident this long after an unload (a slow allocator, a GPU driver).
    frees_after: Duration,
}

/// What a fake worker holds without weights.
const FAKE_BASELINE: u64 = 10 << 20;

struct Proc {
    pid: u32,
    port: u16,
    spawned: Instant,
    exited: watch::Sender<Option<ExitInfo>>,
    /// Its weights' bytes, resident until this time (`None`: resident until unloaded).
    weights: Option<(u64, Option<Instant>)>,
}

#[derive(Default)]
struct State {
    next_pid: u32,
    procs: HashMap<ModelName, Proc>,
    behaviour: HashMap<String, Behaviour>,
    /// What happened, with the virtual time since the test began: `(seconds, "spawn alpha")`.
    log: Vec<(f64, String)>,
    idle_ms: HashMap<String, u64>,
}

/// Workers that exist only as entries in a table, driven by virtual time.
struct FakeWorkers {
    state: Arc<Mutex<State>>,
    exits: mpsc::UnboundedSender<Exit>,
    epoch: Instant,
}

impl Behaviour {
    /// Answers health at once; does nothing else unusual.
    fn healthy() -> Behaviour {
        Behaviour {
            healthy_after: Some(Duration::ZERO),
            ..Behaviour::default()
        }
    }
}

impl FakeWorkers {
    fn behave(&self, model: &str, behaviour: Behaviour) {
        let mut state = self.state.lock().unwrap();
        state.behaviour.insert(model.to_string(), behaviour);
    }

    fn record(&self, state: &mut State, what: String) {
        state.log.push((self.epoch.elapsed().as_secs_f64(), what));
    }

    fn log(&self) -> Vec<(f64, String)> {
        self.state.lock().unwrap().log.clone()
    }

    /// When `what` happened (`spawn alpha` also matches `spawn alpha on 47850`).
    fn times(&self, what: &str) -> Vec<f64> {
        self.log()
            .into_iter()
            .filter(|(_, w)| w == what || w.starts_with(&format!("{what} on ")))
            .map(|(t, _)| t)
            .collect()
    }

    /// The ports `name`'s workers were spawned on, in order.
    fn ports(&self, name: &str) -> Vec<u16> {
        let prefix = format!("spawn {name} on ");
        self.log()
            .into_iter()
            .filter_map(|(_, w)| w.strip_prefix(&prefix)?.parse().ok())
            .collect()
    }

    /// The log without the ports.
    fn actions(&self) -> Vec<String> {
        self.log()
            .into_iter()
            .map(|(_, w)| match w.split_once(" on ") {
                Some((what, _)) => what.to_string(),
                None => w,
            })
            .collect()
    }

    fn live(&self) -> usize {
        self.state.lock().unwrap().procs.len()
    }

    /// Every loaded fake worker's weights take `bytes` more.
    fn grow(&self, bytes: u64) {
        let mut state = self.state.lock().unwrap();
        for (weights, _) in state.procs.values_mut().filter_map(|p| p.weights.as_mut()) {
            *weights += bytes;
        }
    }

    /// The bytes resident in every fake worker now, as `measure` would find them.
    fn resident(&self) -> u64 {
        let state = self.state.lock().unwrap();
        state.procs.values().map(Proc::resident).sum()
    }

    /// The worker dies on its own.
    fn crash(&self, name: &str) {
        let mut state = self.state.lock().unwrap();
        let name = ModelName::new(name).unwrap();
        let proc = state.procs.remove(&name).expect("a live worker to crash");
        let info = ExitInfo {
            code: Some(3),
            signal: None,
        };
        proc.exited.send_replace(Some(info));
        let _ = self.exits.send(Exit {
            name,
            pid: proc.pid,
            info,
        });
    }

    fn model_at(state: &State, url: &str) -> Option<(ModelName, Instant)> {
        state
            .procs
            .iter()
            .find(|(_, p)| url.contains(&format!(":{}/", p.port)))
            .map(|(n, p)| (n.clone(), p.spawned))
    }
}

impl Proc {
    fn resident(&self) -> u64 {
        let weights = match self.weights {
            Some((bytes, None)) => bytes,
            Some((bytes, Some(until))) if Instant::now() < until => bytes,
            _ => 0,
        };
        FAKE_BASELINE + weights
    }
}

impl Workers for FakeWorkers {
    fn spawn(&self, request: SpawnRequest<'_>) -> anyhow::Result<Spawned> {
        let mut state = self.state.lock().unwrap();
        state.next_pid += 1;
        let pid = 1000 + state.next_pid;
        let port: u16 = request.argv.last().unwrap().parse().unwrap();
        let (exited, _) = watch::channel(None);
        state.procs.insert(
            request.name.clone(),
            Proc {
                pid,
                port,
                spawned: Instant::now(),
                exited,
                weights: None,
            },
        );
        self.record(&mut state, format!("spawn {} on {port}", request.name));
        Ok(Spawned {
            pid,
            start_time: Some(u64::from(pid)),
            log_file: PathBuf::from(format!("{}.log", request.name)),
        })
    }

    fn wait_exit(&self, name: &ModelName) -> BoxFuture<'static, Option<ExitInfo>> {
        let receiver = {
            let state = self.state.lock().unwrap();
            state.procs.get(name).map(|p| p.exited.subscribe())
        };
        Box::pin(async move {
            let mut receiver = receiver?;
            *receiver.wait_for(Option::is_some).await.ok()?
        })
    }

    fn stop(
        &self,
        name: &ModelName,
        _stop_timeout: Duration,
        _stop_command: Option<Vec<String>>,
    ) -> BoxFuture<'static, Option<ExitInfo>> {
        let mut state = self.state.lock().unwrap();
        let stuck = state.behaviour.get(name.as_str()).is_some_and(|b| b.stuck);
        if stuck {
            return Box::pin(std::future::pending());
        }
        let proc = state.procs.remove(name);
        if proc.is_some() {
            self.record(&mut state, format!("stop {name}"));
        }
        let info = proc.map(|p| {
            let info = ExitInfo {
                code: None,
                signal: Some(15),
            };
            p.exited.send_replace(Some(info));
            let _ = self.exits.send(Exit {
                name: name.clone(),
                pid: p.pid,
                info,
            });
            info
        });
        Box::pin(async move { info })
    }

    fn live(&self) -> Vec<ModelName> {
        self.state.lock().unwrap().procs.keys().cloned().collect()
    }

    fn probe(&self, url: std::sync::Arc<str>) -> BoxFuture<'static, Probe> {
        let state = self.state.lock().unwrap();
        let probe = match Self::model_at(&state, &url) {
            Some((name, spawned)) => {
                let behaviour = state
                    .behaviour
                    .get(name.as_str())
                    .cloned()
                    .unwrap_or_default();
                let healthy = behaviour
                    .healthy_after
                    .is_some_and(|after| spawned.elapsed() >= after);
                Probe {
                    healthy,
                    activity: Some(Activity {
                        in_flight: 0,
                        idle_ms: state.idle_ms.get(name.as_str()).copied(),
                    }),
                }
            }
            None => Probe::default(),
        };
        Box::pin(async move { probe })
    }

    fn call(&self, request: Request) -> BoxFuture<'static, anyhow::Result<()>> {
        let mut state = self.state.lock().unwrap();
        let Some((name, _)) = Self::model_at(&state, &request.url) else {
            return Box::pin(async { anyhow::bail!("connection refused") });
        };
        let verb = if request.url.ends_with("/load") {
            "load"
        } else {
            "unload"
        };
        self.record(&mut state, format!("{verb} {name}"));
        let behaviour = state
            .behaviour
            .get(name.as_str())
            .cloned()
            .unwrap_or_default();
        let (takes, fails) = match verb {
            "load" => (behaviour.load_takes, behaviour.load_fails),
            _ => (Duration::ZERO, false),
        };
        if verb == "unload"
            && let Some(proc) = state.procs.get_mut(&name)
            && let Some((bytes, _)) = proc.weights
        {
            proc.weights = Some((bytes, Some(Instant::now() + behaviour.frees_after)));
        }
        let state = Arc::downgrade(&self.state);
        Box::pin(async move {
            tokio::time::sleep(takes).await;
            if fails {
                anyhow::bail!("cannot read a: No such file or directory");
            }
            if verb == "load"
                && let Some(state) = state.upgrade()
                && let Some(proc) = state.lock().unwrap().procs.get_mut(&name)
            {
                proc.weights = Some((behaviour.bytes, None));
            }
            drop(state);
            Ok(())
        })
    }

    fn measure(
        &self,
        target: crate::measure::Target,
    ) -> BoxFuture<'static, Option<crate::measure::Footprint>> {
        let state = self.state.lock().unwrap();
        let footprint =
            state
                .procs
                .values()
                .find(|p| p.pid == target.pid)
                .map(|p| crate::measure::Footprint {
                    bytes: p.resident(),
                    source: crate::measure::Source::Rss,
                });
        Box::pin(async move { footprint })
    }
}

const ENGINE: &str = "
engines:
  fake:
    command: [fake, '{port}']
    health: {interval: 1s, start_timeout: 2s}
    stop_timeout: 1s
    load: {path: /load}
    unload: {path: /unload}
";

/// A loop over fake workers, its handle, and the fakes.
async fn start_fake(yaml: &str) -> (Handle, Arc<FakeWorkers>) {
    let (exits_tx, exits_rx) = mpsc::unbounded_channel();
    let fake = Arc::new(FakeWorkers {
        state: Arc::default(),
        exits: exits_tx,
        epoch: Instant::now(),
    });
    let text = format!("{ENGINE}{yaml}");
    let desired = parse(&text);
    let options = Options {
        config_path: PathBuf::from("/hub.yaml"),
        hub_exe: PathBuf::from("hub"),
        resync_every: Duration::from_secs(3600),
        max_concurrent: 8,
        state_path: None,
        owner: "test".into(),
        max_backoff: crate::retry::MAX_DELAY,
    };
    let (reconciler, events, handle) = super::start(
        options,
        desired,
        text,
        fake.clone(),
        exits_rx,
        Default::default(),
        Vec::new(),
    );
    tokio::spawn(reconciler.run(events));
    (handle, fake)
}

fn parse(text: &str) -> config::Desired {
    config::parse(text, "hub.yaml", std::path::Path::new("/tmp")).unwrap_or_else(|e| panic!("{e}"))
}

/// Sends a new config as the watcher would.
fn save(handle: &Handle, yaml: &str) {
    let text = format!("{ENGINE}{yaml}");
    let update = ConfigUpdate {
        path: PathBuf::from("/hub.yaml"),
        sha256: crate::sha256_hex(text.as_bytes()),
        result: Ok(parse(&text)),
        text,
    };
    handle.events.send(Event::Config(update)).unwrap();
}

fn model(handle: &Handle, name: &str) -> ModelStatus {
    let snapshot = handle.snapshot();
    snapshot
        .status
        .models
        .iter()
        .find(|m| m.name == name)
        .cloned()
        .unwrap()
}

/// Advances virtual time in small steps until `check` holds; panics after `limit`.
/// Waits (in paused time) for `name`'s worker to be ready.
async fn ready(handle: &Handle, name: &str, limit: Duration) {
    until(&format!("{name} ready"), limit, || {
        model(handle, name).worker.phase == "ready"
    })
    .await;
}

async fn until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_never_becomes_healthy_times_out_is_stopped_and_backs_off() {
    let (handle, fake) =
        start_fake("models:\n  - {name: alpha, model_path: a, engine: fake, state: running}\n")
            .await;
    until("a failed start", Duration::from_secs(10), || {
        model(&handle, "alpha").error.is_some()
    })
    .await;
    let alpha = model(&handle, "alpha");
    assert_eq!(alpha.worker.phase, "backoff");
    assert_eq!(
        alpha.error.as_deref(),
        Some("start failed: worker not healthy at /health after 2s (see alpha.log)")
    );
    assert!(alpha.next_retry_at.is_some());
    assert_eq!(fake.live(), 0, "the unhealthy worker was stopped");
    let spawns = fake.times("spawn alpha");
    let stops = fake.times("stop alpha");
    assert_eq!(spawns.len(), 1);
    assert!(
        (stops[0] - spawns[0] - 2.0).abs() < 0.1,
        "{spawns:?} {stops:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_exponentially_and_reset_after_a_stable_run() {
    let (handle, fake) =
        start_fake("models:\n  - {name: alpha, model_path: a, engine: fake, state: running}\n")
            .await;
    until("five attempts", Duration::from_secs(120), || {
        fake.times("spawn alpha").len() >= 5
    })
    .await;
    // Each attempt waits 2 s for health; the pauses between attempts are the backoff delays,
    // 0.5 s doubling, each with up to 100% jitter.
    let spawns = fake.times("spawn alpha");
    let stops = fake.times("stop alpha");
    for (i, base) in [0.5, 1.0, 2.0, 4.0].iter().enumerate() {
        let pause = spawns[i + 1] - stops[i];
        assert!(
            pause >= base - 0.05 && pause <= base * 2.0 + 0.1,
            "pause {i} was {pause:.2}s, expected {base}..{}s",
            base * 2.0
        );
    }

    // Now it starts; after running a while it crashes, and the first retry is quick again.
    fake.behave("alpha", Behaviour::healthy());
    ready(&handle, "alpha", Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    let before = fake.times("spawn alpha").len();
    fake.crash("alpha");
    let crashed_at = fake.epoch.elapsed().as_secs_f64();
    until("alpha restarted", Duration::from_secs(10), || {
        fake.times("spawn alpha").len() > before
    })
    .await;
    let pause = fake.times("spawn alpha")[before] - crashed_at;
    assert!(
        (0.45..=1.1).contains(&pause),
        "pause after a stable run was {pause:.2}s"
    );
    until("alpha ready again", Duration::from_secs(10), || {
        let alpha = model(&handle, "alpha");
        alpha.worker.phase == "ready" && alpha.worker.restarts == 1
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_crash_loop_backs_off_instead_of_spinning() {
    let (handle, fake) =
        start_fake("models:\n  - {name: alpha, model_path: a, engine: fake, state: running}\n")
            .await;
    fake.behave("alpha", Behaviour::healthy());
    for _ in 0..6 {
        ready(&handle, "alpha", Duration::from_secs(120)).await;
        fake.crash("alpha");
        until("alpha crashed", Duration::from_secs(1), || {
            model(&handle, "alpha").worker.phase == "backoff"
        })
        .await;
    }
    // Six crashes within seconds of starting: the delay has grown past 8 s.
    let alpha = model(&handle, "alpha");
    assert_eq!(alpha.worker.restarts, 5);
    let next = time::OffsetDateTime::parse(
        alpha.next_retry_at.as_deref().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let now = time::OffsetDateTime::parse(
        &handle.snapshot().status.timestamp,
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(
        (next - now).whole_seconds() >= 8,
        "next retry in {}",
        next - now
    );
}

#[tokio::test(start_paused = true)]
async fn a_newer_desired_state_supersedes_a_slow_start() {
    let models = "models:\n  - {name: alpha, model_path: old, engine: fake, state: running}\n";
    let (handle, fake) = start_fake(models).await;
    fake.behave(
        "alpha",
        Behaviour {
            healthy_after: Some(Duration::from_millis(1500)),
            ..Behaviour::default()
        },
    );
    until("alpha starting", Duration::from_secs(1), || {
        model(&handle, "alpha").worker.phase == "starting"
    })
    .await;
    save(
        &handle,
        &models.replace("model_path: old", "model_path: new"),
    );
    until(
        "alpha ready on the new spec",
        Duration::from_secs(5),
        || {
            let snapshot = handle.snapshot();
            snapshot.status.summary == crate::status::Summary::Converged && snapshot.generation == 2
        },
    )
    .await;
    assert_eq!(fake.actions(), ["spawn alpha", "stop alpha", "spawn alpha"]);
    let stop = fake.times("stop alpha")[0];
    assert!(
        stop < 1.0,
        "the old start was cancelled at once, not after it finished: {stop}"
    );
    let report = handle.snapshot().status.last_reconcile.clone().unwrap();
    assert_eq!(report.failed, []);
    assert_eq!(report.started, ["alpha"]);
    assert!(model(&handle, "alpha").error.is_none());
}

#[tokio::test(start_paused = true)]
async fn on_demand_weights_are_unloaded_after_the_idle_time_counted_from_last_use() {
    let (handle, fake) = start_fake(
        "models:\n  - {name: alpha, model_path: a, engine: fake, state: running, idle_unload_after: 60s}\n",
    )
    .await;
    fake.behave("alpha", Behaviour::healthy());
    ready(&handle, "alpha", Duration::from_secs(5)).await;
    let (reply, answer) = oneshot::channel();
    handle
        .events
        .send(Event::Model {
            name: ModelName::new("alpha").unwrap(),
            verb: Verb::Load,
            reply,
        })
        .unwrap();
    answer.await.unwrap().unwrap();
    until("alpha loaded", Duration::from_secs(5), || {
        model(&handle, "alpha").memory.state == "loaded"
    })
    .await;
    let loaded_at = fake.times("load alpha")[0];
    assert!(model(&handle, "alpha").memory.unload_at.is_some());
    assert!(
        model(&handle, "alpha").override_.is_none(),
        "an on-demand load is no override"
    );

    // A request 30 s in (the worker reports it at its next health probe) moves the deadline.
    tokio::time::sleep(Duration::from_secs(30)).await;
    fake.state.lock().unwrap().idle_ms.insert("alpha".into(), 0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    fake.state.lock().unwrap().idle_ms.remove("alpha");
    let used_at = fake.epoch.elapsed().as_secs_f64();

    until("alpha unloaded", Duration::from_secs(120), || {
        model(&handle, "alpha").memory.state == "unloaded"
    })
    .await;
    let unloaded_at = fake.times("unload alpha")[0];
    assert!(
        unloaded_at - loaded_at > 85.0,
        "unloaded too early: {unloaded_at}"
    );
    assert!(
        (unloaded_at - used_at - 60.0).abs() < 1.5,
        "{used_at} {unloaded_at}"
    );
    let report = handle.snapshot().status.last_reconcile.clone().unwrap();
    assert_eq!(report.unloaded, ["alpha"]);
    assert_eq!(
        model(&handle, "alpha").worker.phase,
        "ready",
        "the worker stays up"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stop_that_never_finishes_is_reported_not_waited_for() {
    let models = "models:\n  - {name: alpha, model_path: a, engine: fake, state: running}\n";
    let (handle, fake) = start_fake(models).await;
    fake.behave("alpha", Behaviour::healthy());
    ready(&handle, "alpha", Duration::from_secs(5)).await;
    fake.behave(
        "alpha",
        Behaviour {
            healthy_after: Some(Duration::ZERO),
            stuck: true,
            ..Behaviour::default()
        },
    );
    save(&handle, &models.replace("state: running", "state: stopped"));
    until("the stop failed", Duration::from_secs(30), || {
        model(&handle, "alpha").error.is_some()
    })
    .await;
    // stop_timeout 1 s: 2 x 1 s plus 10 s of grace after SIGKILL.
    let alpha = model(&handle, "alpha");
    assert_eq!(
        alpha.error.as_deref(),
        Some("stop failed: the worker did not exit within 12s, even after SIGKILL")
    );
}

/// At most `max_concurrent` (8 here) actions run at once, and a save's stops all finish before
/// any of its starts begins, so a start never finds its memory or port still held.
#[tokio::test(start_paused = true)]
async fn stops_go_before_starts_and_at_most_eight_run_at_once() {
    let models = |running: std::ops::Range<usize>| {
        let mut yaml = String::from("models:\n");
        for i in 0..12 {
            let state = if running.contains(&i) {
                "running"
            } else {
                "stopped"
            };
            yaml.push_str(&format!(
                "  - {{name: m{i:02}, model_path: a, engine: fake, state: {state}}}\n"
            ));
        }
        yaml
    };
    let (handle, fake) = start_fake(&models(2..12)).await;
    for i in 0..12 {
        let slow = Behaviour {
            healthy_after: Some(Duration::from_secs(1)),
            ..Behaviour::default()
        };
        fake.behave(&format!("m{i:02}"), slow);
    }
    let converged = |generation: u64| {
        let snapshot = handle.snapshot();
        snapshot.status.summary == crate::status::Summary::Converged
            && snapshot.status.observed_generation == generation
    };
    until("ten running", Duration::from_secs(30), || converged(1)).await;
    let spawns: Vec<f64> = fake
        .log()
        .into_iter()
        .filter(|(_, what)| what.starts_with("spawn"))
        .map(|(t, _)| t)
        .collect();
    assert_eq!(spawns.len(), 10);
    let at_once = spawns.iter().filter(|t| **t < 0.5).count();
    assert_eq!(
        at_once, 8,
        "eight start at once, two wait for a slot: {spawns:?}"
    );

    let before = fake.log().len();
    // The models to start sort before those to stop: only the planner's waves order them.
    save(&handle, &models(0..10));
    until("m00 and m01 running", Duration::from_secs(30), || {
        converged(2)
    })
    .await;
    let log: Vec<String> = fake.actions()[before..].to_vec();
    assert_eq!(
        log.len(),
        4,
        "only the four changed models were touched: {log:?}"
    );
    let mut stops: Vec<&str> = log[..2].iter().map(String::as_str).collect();
    stops.sort();
    assert_eq!(stops, ["stop m10", "stop m11"], "stops first: {log:?}");
    let mut starts: Vec<&str> = log[2..].iter().map(String::as_str).collect();
    starts.sort();
    assert_eq!(starts, ["spawn m00", "spawn m01"], "then starts: {log:?}");
}

/// Sends an imperative call and waits for its answer.
async fn command(handle: &Handle, name: &str, verb: Verb) {
    let (reply, answer) = oneshot::channel();
    handle
        .events
        .send(Event::Model {
            name: ModelName::new(name).unwrap(),
            verb,
            reply,
        })
        .unwrap();
    answer.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failing_load_backs_off_and_the_report_stays_small() {
    let (handle, fake) =
        start_fake("models:\n  - {name: alpha, model_path: a, engine: fake, state: loaded}\n")
            .await;
    fake.behave(
        "alpha",
        Behaviour {
            load_fails: true,
            ..Behaviour::healthy()
        },
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    // 0.5 s doubling with jitter: at most seven attempts in 30 s, not thousands.
    let loads = fake.times("load alpha");
    assert!(
        (3..=7).contains(&loads.len()),
        "{} loads in 30 s: {loads:?}",
        loads.len()
    );
    for (i, pair) in loads.windows(2).enumerate() {
        let base = 0.5 * f64::from(1 << i);
        assert!(
            pair[1] - pair[0] >= base - 0.05,
            "retry {i} after {:.2}s, before its backoff of {base}s",
            pair[1] - pair[0]
        );
    }
    let alpha = model(&handle, "alpha");
    assert_eq!(alpha.worker.phase, "ready", "the worker itself is fine");
    assert!(alpha.next_retry_at.is_some());
    let report = handle.snapshot().status.last_reconcile.clone().unwrap();
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    assert_eq!(report.failed[0].action, "load");
    assert_eq!(report.loaded, Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn a_stop_supersedes_a_load_in_flight() {
    let (handle, fake) =
        start_fake("models:\n  - {name: alpha, model_path: a, engine: fake, state: loaded}\n")
            .await;
    fake.behave(
        "alpha",
        Behaviour {
            load_takes: Duration::from_secs(3600),
            ..Behaviour::healthy()
        },
    );
    until("alpha loading", Duration::from_secs(5), || {
        model(&handle, "alpha").memory.state == "loading"
    })
    .await;
    let asked = fake.epoch.elapsed().as_secs_f64();
    command(&handle, "alpha", Verb::Stop).await;
    until("alpha stopped", Duration::from_secs(30), || {
        model(&handle, "alpha").worker.phase == "stopped"
    })
    .await;
    let stopped = fake.times("stop alpha")[0];
    assert!(
        stopped - asked < 1.0,
        "the load in flight was cancelled at once: stopped {:.2}s after the call",
        stopped - asked
    );
    assert_eq!(fake.live(), 0);
    let override_ = model(&handle, "alpha").override_.map(|o| o.state);
    assert_eq!(override_.as_deref(), Some("stopped"));
}

#[tokio::test(start_paused = true)]
async fn a_hung_worker_is_stopped_at_once_and_comes_back_on_its_port() {
    let (handle, fake) =
        start_fake("models:\n  - {name: alpha, model_path: a, engine: fake, state: running}\n")
            .await;
    fake.behave("alpha", Behaviour::healthy());
    ready(&handle, "alpha", Duration::from_secs(5)).await;
    // Hung: the process lives, but answers nothing (SIGSTOP).
    fake.behave("alpha", Behaviour::default());
    until("alpha judged dead", Duration::from_secs(10), || {
        model(&handle, "alpha").error.is_some()
    })
    .await;
    let judged = fake.epoch.elapsed().as_secs_f64();
    until("the hung worker stopped", Duration::from_secs(2), || {
        fake.live() == 0
    })
    .await;
    let stopped = fake.times("stop alpha")[0];
    assert!(
        stopped - judged < 0.1,
        "stopped at once, not after a backoff"
    );
    let alpha = model(&handle, "alpha");
    assert_eq!(alpha.worker.phase, "backoff");
    assert_eq!(alpha.worker.pid, None, "no live process shows as backoff");
    assert!(alpha.next_retry_at.is_some());

    fake.behave("alpha", Behaviour::healthy());
    until("alpha back", Duration::from_secs(10), || {
        fake.times("spawn alpha").len() == 2 && model(&handle, "alpha").worker.phase == "ready"
    })
    .await;
    let ports = fake.ports("alpha");
    assert_eq!(ports[0], ports[1], "it keeps its port");
    assert!(
        fake.times("spawn alpha")[1] > stopped + 0.45,
        "after the backoff"
    );
}

#[tokio::test(start_paused = true)]
async fn a_load_longer_than_the_health_interval_does_not_spin_the_loop() {
    let (handle, fake) =
        start_fake("models:\n  - {name: alpha, model_path: a, engine: fake, state: running}\n")
            .await;
    fake.behave("alpha", Behaviour::healthy());
    ready(&handle, "alpha", Duration::from_secs(5)).await;
    // Let a probe fall due, so its time is in the past while the load runs.
    tokio::time::sleep(Duration::from_millis(900)).await;
    fake.behave(
        "alpha",
        Behaviour {
            load_takes: Duration::from_secs(60),
            ..Behaviour::healthy()
        },
    );
    let before = handle.journal.metrics().passes;
    command(&handle, "alpha", Verb::Load).await;
    // The probe falls due while the load runs. A loop that spins on it never lets the paused
    // clock move on, so count its passes over a fixed number of turns of the scheduler instead.
    tokio::time::advance(Duration::from_millis(200)).await;
    for _ in 0..500 {
        tokio::task::yield_now().await;
    }
    let passes = handle.journal.metrics().passes - before;
    assert!(passes <= 5, "{passes} passes while a load runs");
    until("alpha loaded", Duration::from_secs(70), || {
        model(&handle, "alpha").memory.state == "loaded"
    })
    .await;
    // The call, loading, loaded, done: a handful, not one per turn.
    let passes = handle.journal.metrics().passes - before;
    assert!(passes <= 10, "{passes} passes during a 60 s load");
}

#[tokio::test(start_paused = true)]
async fn pinning_during_a_slow_start_keeps_the_worker_and_then_loads() {
    let models = "models:\n  - {name: alpha, model_path: a, engine: fake, state: running}\n";
    let (handle, fake) = start_fake(models).await;
    fake.behave(
        "alpha",
        Behaviour {
            healthy_after: Some(Duration::from_millis(1500)),
            ..Behaviour::default()
        },
    );
    until("alpha starting", Duration::from_secs(1), || {
        model(&handle, "alpha").worker.phase == "starting"
    })
    .await;
    let pid = model(&handle, "alpha").worker.pid;
    save(&handle, &models.replace("state: running", "state: loaded"));
    until("alpha loaded", Duration::from_secs(10), || {
        model(&handle, "alpha").memory.state == "loaded"
    })
    .await;
    assert_eq!(model(&handle, "alpha").worker.pid, pid);
    assert_eq!(fake.actions(), ["spawn alpha", "load alpha"]);
}

#[tokio::test(start_paused = true)]
async fn a_save_keeps_the_backoff_of_models_it_does_not_change() {
    let models = "models:
  - {name: alpha, model_path: a, engine: fake, state: running}
  - {name: beta, model_path: b, engine: fake, state: running}
";
    let (handle, fake) = start_fake(models).await;
    fake.behave("beta", Behaviour::healthy());
    // alpha never becomes healthy: it fails and backs off, further each time.
    until("alpha's third failure", Duration::from_secs(60), || {
        fake.times("spawn alpha").len() == 3 && model(&handle, "alpha").worker.phase == "backoff"
    })
    .await;
    let retry = model(&handle, "alpha").next_retry_at.clone();
    assert!(retry.is_some());
    save(&handle, &models.replace("model_path: b", "model_path: b2"));
    until("beta restarted", Duration::from_secs(10), || {
        fake.times("spawn beta").len() == 2 && model(&handle, "beta").worker.phase == "ready"
    })
    .await;
    assert_eq!(model(&handle, "alpha").next_retry_at, retry);
    assert_eq!(
        fake.times("spawn alpha").len(),
        3,
        "alpha was retried early"
    );
}

/// Three models of 100 MiB (110 MiB measured, with the fake worker's own 10 MiB) in a group whose
/// budget holds two: loading the third evicts the least recently used by bytes.
const BUDGETED: &str = "
groups:
  - {name: g, memory: 250MiB}
models:
  - {name: alpha, model_path: a, engine: fake, state: running, group: g}
  - {name: beta, model_path: b, engine: fake, state: running, group: g}
  - {name: gamma, model_path: c, engine: fake, state: running, group: g}
";

async fn budgeted(alpha_frees_after: Duration) -> (Handle, Arc<FakeWorkers>) {
    let (handle, fake) = start_fake(BUDGETED).await;
    for name in ["alpha", "beta", "gamma"] {
        fake.behave(
            name,
            Behaviour {
                bytes: 100 << 20,
                frees_after: if name == "alpha" {
                    alpha_frees_after
                } else {
                    Duration::ZERO
                },
                ..Behaviour::healthy()
            },
        );
    }
    for name in ["alpha", "beta", "gamma"] {
        ready(&handle, name, Duration::from_secs(5)).await;
    }
    for name in ["alpha", "beta"] {
        command(&handle, name, Verb::Load).await;
        until(&format!("{name} loaded"), Duration::from_secs(5), || {
            model(&handle, name).memory.state == "loaded"
        })
        .await;
        // Its load is measured: the planner knows its bytes from now on.
        let memory = model(&handle, name).memory;
        assert_eq!(memory.measured_bytes, Some(110 << 20), "{name}");
        assert_eq!(memory.bytes_source.as_deref(), Some("rss"), "{name}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    (handle, fake)
}

/// Loads gamma and samples what the fake workers hold until it is loaded: the most they held
/// at once.
async fn load_gamma(handle: &Handle, fake: &FakeWorkers, limit: Duration) -> u64 {
    command(handle, "gamma", Verb::Load).await;
    let mut peak = 0;
    until("gamma loaded", limit, || {
        peak = peak.max(fake.resident());
        model(handle, "gamma").memory.state == "loaded"
    })
    .await;
    peak
}

#[tokio::test(start_paused = true)]
async fn a_load_past_the_budget_evicts_by_bytes_after_the_memory_is_measured_gone() {
    // alpha's weights linger for 3 s after its unload (a slow allocator, a GPU driver).
    let (handle, fake) = budgeted(Duration::from_secs(3)).await;
    let peak = load_gamma(&handle, &fake, Duration::from_secs(10)).await;
    // Never 3 × 110 MiB at once: gamma's load waited for alpha's memory to go.
    assert!(peak <= 250 << 20, "the workers held {peak} bytes at once");
    let unloaded = fake.times("unload alpha");
    let loaded = fake.times("load gamma");
    assert_eq!(unloaded.len(), 1, "{:?}", fake.log());
    assert!(
        loaded[0] - unloaded[0] >= 3.0,
        "gamma loaded {}s after alpha's unload, before its memory was gone",
        loaded[0] - unloaded[0]
    );
    assert_eq!(model(&handle, "beta").memory.state, "loaded");
    let alpha = model(&handle, "alpha").memory;
    assert_eq!(alpha.state, "unloaded");
    // What alpha measured stays known for its next load.
    assert_eq!(alpha.bytes, Some(110 << 20));
    let status = handle.snapshot().status.clone();
    assert_eq!(status.groups[0].memory_used, 220 << 20);
    assert_eq!(status.groups[0].memory_budget, Some(250 << 20));
}

#[tokio::test(start_paused = true)]
async fn memory_that_never_frees_holds_the_next_load_only_for_the_timeout() {
    let (handle, fake) = budgeted(Duration::from_secs(3600)).await;
    let limit = super::execute::FREED_TIMEOUT + Duration::from_secs(5);
    load_gamma(&handle, &fake, limit).await;
    let waited = fake.times("load gamma")[0] - fake.times("unload alpha")[0];
    let timeout = super::execute::FREED_TIMEOUT.as_secs_f64();
    assert!(
        (timeout..timeout + 1.0).contains(&waited),
        "gamma's load waited {waited}s for alpha's memory, not the {timeout}s timeout"
    );
}

#[tokio::test(start_paused = true)]
async fn a_footprint_that_grows_by_more_than_a_tenth_is_measured_again_and_said() {
    let (handle, fake) =
        start_fake("models:\n  - {name: alpha, model_path: a, engine: fake, state: loaded}\n")
            .await;
    fake.behave(
        "alpha",
        Behaviour {
            bytes: 100 << 20,
            ..Behaviour::healthy()
        },
    );
    until("alpha loaded", Duration::from_secs(5), || {
        model(&handle, "alpha").memory.state == "loaded"
    })
    .await;
    let measured = || -> Vec<u64> {
        handle
            .journal
            .recent("alpha")
            .iter()
            .filter_map(|e| e.bytes)
            .collect()
    };
    assert_eq!(measured(), [110 << 20], "the load's measurement");
    // Its weights grow (a cache, longer contexts): measured again within MEASURE_EVERY and a
    // probe interval, the planner's figure follows, and followers of the events are told.
    fake.grow(100 << 20);
    let wait = super::probe::MEASURE_EVERY + Duration::from_secs(2);
    until("alpha measured again", wait, || measured().len() == 2).await;
    assert_eq!(measured(), [110 << 20, 210 << 20]);
    assert_eq!(model(&handle, "alpha").memory.bytes, Some(210 << 20));
    // Drift within a tenth keeps the figure and says nothing.
    fake.grow(10 << 20);
    tokio::time::sleep(super::probe::MEASURE_EVERY * 3).await;
    assert_eq!(measured().len(), 2, "{:?}", measured());
    assert_eq!(model(&handle, "alpha").memory.bytes, Some(210 << 20));
}
