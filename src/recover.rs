//! Starting over after a daemon restart, crashed or not: restore the overrides whose hub.yaml
//! entry did not change, find every worker an earlier daemon of this hub started (they carry its
//! owner mark), adopt each that is the same process as its state file record, answers health and
//! still matches hub.yaml (or its override), and stop the rest. A restart therefore
//! reloads nobody's weights needlessly and leaves no orphan or duplicate; a pid now owned by an
//! unrelated process carries no mark and is never signalled.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::{Desired, DesiredState, ModelName};
use crate::engine::{self};
use crate::observed::{MemoryState, ModelObserved, Observed, Override};
use crate::statefile::{self, FootprintRecord, OverrideRecord, Record};
use crate::supervisor::{self, Found, Supervisor};

/// What recovery found and did.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The adopted workers, as the loop's starting observed state.
    pub observed: Observed,
    pub adopted: Vec<ModelName>,
    /// Workers and stray children that were stopped.
    pub stopped: Vec<Found>,
    pub warnings: Vec<String>,
}

pub async fn recover(
    desired: &Desired,
    supervisor: &Supervisor,
    client: &reqwest::Client,
    log_path: &Path,
) -> Recovered {
    let mut recovered = Recovered::default();
    let state_path = statefile::path(log_path);
    let (records, overrides, footprints) = match statefile::read(&state_path) {
        Ok(Some(state)) if state.owner == supervisor.owner() => {
            (state.workers, state.overrides, state.footprints)
        }
        Ok(Some(_)) => {
            recovered.warnings.push(format!(
                "{} was written for another log_path; ignoring it",
                state_path.display()
            ));
            Default::default()
        }
        Ok(None) => Default::default(),
        Err(reason) => {
            recovered.warnings.push(format!(
                "{reason}; workers found running without a record are stopped and started afresh"
            ));
            Default::default()
        }
    };
    // Overrides first: a worker an override keeps running is adopted although hub.yaml says
    // `stopped`.
    for (name, o) in restore_overrides(desired, &overrides) {
        recovered.observed.models.entry(name).or_default().override_ = Some(Box::new(o));
    }
    // What each model of hub.yaml measured last: its next load is planned by those bytes.
    for record in footprints {
        let Some((name, _)) = desired.models.get_key_value(record.model.as_str()) else {
            continue;
        };
        recovered
            .observed
            .models
            .entry(name.clone())
            .or_default()
            .footprint = Some(crate::measure::Footprint {
            bytes: record.bytes,
            source: record.source,
        });
    }
    let found = supervisor::discover(supervisor.owner());
    let record_of = |f: &Found| {
        records
            .iter()
            .find(|r| r.pid == f.pid && r.start_time == f.start_time && r.model == f.model)
    };

    let mut adopted_pgids = HashSet::new();
    let mut to_stop = Vec::new();
    let mut leaders: Vec<&Found> = found.iter().filter(|f| f.pid == f.pgid).collect();
    // Of two workers for one model, keep the one the state file names.
    leaders.sort_by_key(|f| record_of(f).is_none());
    for leader in leaders {
        match adoptable(desired, &recovered, record_of(leader), client).await {
            Ok((name, record)) => match supervisor.adopt(&name, leader.pid, leader.start_time) {
                Ok(()) => {
                    adopted_pgids.insert(leader.pgid);
                    let mut adopted = observed(desired, &name, record);
                    if let Some(restored) = recovered.observed.models.remove(&name) {
                        adopted.override_ = restored.override_;
                        adopted.footprint = restored.footprint;
                    }
                    recovered.observed.models.insert(name.clone(), adopted);
                    recovered.adopted.push(name);
                }
                Err(e) => {
                    tracing::warn!(model = %name, pid = leader.pid, "cannot adopt: {e:#}");
                    to_stop.push((leader.clone(), record_of(leader).cloned()));
                }
            },
            Err(why) => {
                tracing::info!(model = %leader.model, pid = leader.pid, "not adopting: {why}");
                to_stop.push((leader.clone(), record_of(leader).cloned()));
            }
        }
    }
    // Children of workers that were not adopted, whose leader may already be gone.
    for child in found.iter().filter(|f| f.pid != f.pgid) {
        if !adopted_pgids.contains(&child.pgid)
            && !to_stop.iter().any(|(s, _)| s.pgid == child.pgid)
        {
            to_stop.push((child.clone(), None));
        }
    }

    let mut stops = tokio::task::JoinSet::new();
    for (stray, record) in to_stop.clone() {
        let timeout = ModelName::new(&stray.model)
            .ok()
            .and_then(|n| desired.models.get(&n))
            .map_or(Duration::from_secs(10), |s| s.run.engine.stop_timeout);
        let stop_command = record.and_then(|r| r.stop_command);
        stops.spawn(async move { supervisor::stop_found(&stray, timeout, stop_command).await });
    }
    while stops.join_next().await.is_some() {}
    recovered.stopped = to_stop.into_iter().map(|(found, _)| found).collect();
    if !recovered.adopted.is_empty() || !recovered.stopped.is_empty() {
        tracing::info!(
            adopted = ?recovered.adopted,
            stopped = recovered.stopped.len(),
            "recovered workers of an earlier daemon"
        );
    }
    recovered
}

/// Whether a found worker may be adopted, and if so for which model, with its record.
async fn adoptable<'a>(
    desired: &Desired,
    recovered: &Recovered,
    record: Option<&'a Record>,
    client: &reqwest::Client,
) -> Result<(ModelName, &'a Record), String> {
    let record = record.ok_or("no state file record matches it")?;
    let name = ModelName::new(&record.model)?;
    let spec = desired
        .models
        .get(&name)
        .ok_or("its model is no longer in hub.yaml")?;
    let known = recovered.observed.models.get(&name);
    let state = known
        .and_then(|obs| obs.override_.as_ref())
        .map_or(spec.state, |o| o.state);
    if state == DesiredState::Stopped {
        return Err("its model is to be stopped".into());
    }
    if known.is_some_and(|obs| obs.worker.pid.is_some()) {
        return Err("another worker of the model was adopted".into());
    }
    if record.spec_hash != spec.run.spec_hash() {
        return Err("its spec differs from hub.yaml".into());
    }
    let url = engine::health_url(name.as_str(), &spec.run, record.port, "");
    let probe = engine::probe(client, &url).await;
    if !probe.healthy {
        return Err(format!("it does not answer health on port {}", record.port));
    }
    Ok((name, record))
}

fn observed(desired: &Desired, name: &ModelName, record: &Record) -> ModelObserved {
    let spec = &desired.models[name];
    let parse = |t: &Option<String>| {
        t.as_deref()
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
    };
    let started_at = parse(&record.started_at);
    let loaded = record.loaded && spec.run.engine.has_memory_control();
    let mut obs = ModelObserved::ready(spec.run.clone(), loaded);
    obs.worker.pid = Some(record.pid);
    obs.worker.start_time = Some(record.start_time);
    obs.worker.port = Some(record.port);
    obs.worker.started_at = started_at;
    obs.worker.restarts = record.restarts;
    obs.worker.log_file = record.log_file.as_ref().map(Into::into);
    obs.memory.loaded_at = started_at.filter(|_| loaded);
    obs.memory.on_demand = loaded && record.on_demand;
    obs.memory.baseline = record.baseline;
    obs
}

/// The state file's view of the observed state: every live worker with a known identity, and
/// every override.
pub fn records(observed: &Observed, hub_exe: &str) -> Records {
    let mut records = Vec::new();
    let mut overrides = Vec::new();
    let mut footprints = Vec::new();
    for (name, obs) in &observed.models {
        if let Some(footprint) = obs.footprint {
            footprints.push(FootprintRecord {
                model: name.to_string(),
                bytes: footprint.bytes,
                source: footprint.source,
            });
        }
        if let Some(o) = &obs.override_ {
            overrides.push(OverrideRecord {
                model: name.to_string(),
                state: o.state,
                entry_hash: o.spec.entry_hash(),
                at: crate::rfc3339(o.at),
                by: o.by.to_string(),
            });
        }
        let w = &obs.worker;
        let (Some(pid), Some(start_time), Some(port), Some(run)) =
            (w.pid, w.start_time, w.port, w.run.as_ref())
        else {
            continue;
        };
        records.push(Record {
            model: name.to_string(),
            pid,
            start_time,
            port,
            spec_hash: run.spec_hash(),
            started_at: w.started_at.map(crate::rfc3339),
            restarts: w.restarts,
            loaded: obs.memory.state == MemoryState::Loaded,
            on_demand: obs.memory.on_demand,
            baseline: obs.memory.baseline,
            log_file: w.log_file.as_ref().map(|p| p.display().to_string()),
            stop_command: crate::engine::stop_argv(
                run,
                &crate::engine::Vars::of(name.as_str(), run, port, hub_exe),
            ),
        });
    }
    (records, overrides, footprints)
}

/// What the state file records: the workers, the overrides, the footprints.
pub type Records = (Vec<Record>, Vec<OverrideRecord>, Vec<FootprintRecord>);

/// The recorded overrides that still hold: their model is in hub.yaml with the very entry they
/// were set against. Any other is cleared, as a change of the entry clears it while the daemon runs.
fn restore_overrides(desired: &Desired, records: &[OverrideRecord]) -> Vec<(ModelName, Override)> {
    let mut restored = Vec::new();
    for record in records {
        let Ok(name) = ModelName::new(&record.model) else {
            continue;
        };
        let Some(spec) = desired.models.get(&name) else {
            continue;
        };
        let by = crate::wire::Verb::parse(&record.by).map(crate::wire::Verb::as_str);
        let at = OffsetDateTime::parse(&record.at, &Rfc3339).ok();
        if let (Some(by), Some(at)) = (by, at)
            && record.entry_hash == spec.entry_hash()
            && record.state != spec.state
        {
            let spec = spec.clone();
            let state = record.state;
            restored.push((
                name,
                Override {
                    state,
                    spec,
                    at,
                    by,
                },
            ));
        }
    }
    restored
}
