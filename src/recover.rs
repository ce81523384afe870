//! Starting over after a daemon restart, crashed or not: find every worker an earlier daemon of
//! this hub started (they carry its owner mark), adopt each that is the same process as its state
//! file record, answers health and still matches hub.yaml, and stop the rest. A restart therefore
//! reloads nobody's weights needlessly and leaves no orphan or duplicate; a pid now owned by an
//! unrelated process carries no mark and is never signalled.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::{DEFAULT_HOST, Desired, DesiredState, ModelName};
use crate::engine::{self, Vars};
use crate::observed::{MemoryState, ModelObserved, Observed};
use crate::statefile::{self, Record};
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
    let records: Vec<Record> = match statefile::read(&state_path) {
        Ok(Some(state)) if state.owner == supervisor.owner() => state.workers,
        Ok(Some(_)) => {
            recovered.warnings.push(format!(
                "{} was written for another log_path; ignoring it",
                state_path.display()
            ));
            Vec::new()
        }
        Ok(None) => Vec::new(),
        Err(reason) => {
            recovered.warnings.push(format!(
                "{reason}; workers found running without a record are stopped and started afresh"
            ));
            Vec::new()
        }
    };
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
                    recovered
                        .observed
                        .models
                        .insert(name.clone(), observed(desired, &name, record));
                    recovered.adopted.push(name);
                }
                Err(e) => {
                    tracing::warn!(model = %name, pid = leader.pid, "cannot adopt: {e:#}");
                    to_stop.push(leader.clone());
                }
            },
            Err(why) => {
                tracing::info!(model = %leader.model, pid = leader.pid, "not adopting: {why}");
                to_stop.push(leader.clone());
            }
        }
    }
    // Children of workers that were not adopted, whose leader may already be gone.
    for child in found.iter().filter(|f| f.pid != f.pgid) {
        if !adopted_pgids.contains(&child.pgid) && !to_stop.iter().any(|s| s.pgid == child.pgid) {
            to_stop.push(child.clone());
        }
    }

    let mut stops = tokio::task::JoinSet::new();
    for stray in to_stop.clone() {
        let timeout = ModelName::new(&stray.model)
            .ok()
            .and_then(|n| desired.models.get(&n))
            .map_or(Duration::from_secs(10), |s| s.run.engine.stop_timeout);
        stops.spawn(async move { supervisor::stop_found(&stray, timeout).await });
    }
    while stops.join_next().await.is_some() {}
    recovered.stopped = to_stop;
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
    if spec.state == DesiredState::Stopped {
        return Err("its model is to be stopped".into());
    }
    if recovered.observed.models.contains_key(&name) {
        return Err("another worker of the model was adopted".into());
    }
    if record.spec_hash != spec.run.spec_hash() {
        return Err("its spec differs from hub.yaml".into());
    }
    let vars = Vars {
        name: name.as_str(),
        model_path: &spec.run.model_path,
        port: record.port,
        host: DEFAULT_HOST,
        hub: "",
    };
    let probe = engine::probe(client, &engine::url(&vars, &spec.run.engine.health.path)).await;
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
    obs
}

/// The state file's view of the observed state: every live worker with a known identity.
pub fn records(observed: &Observed) -> Vec<Record> {
    let mut records = Vec::new();
    for (name, obs) in &observed.models {
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
            log_file: w.log_file.as_ref().map(|p| p.display().to_string()),
        });
    }
    records
}
