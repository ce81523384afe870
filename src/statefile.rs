//! The state file, `<log_path>/state.json`: the workers this daemon runs (pid, process start
//! time, port, spec hash, memory), written atomically on every change, so that the next daemon
//! can adopt them instead of reloading anyone's weights.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    pub version: u32,
    /// The owner id of the hub that wrote it (see `supervisor::owner_id`).
    pub owner: String,
    pub workers: Vec<Record>,
    /// Imperative calls that contradict hub.yaml, kept across daemon restarts (SPEC section 4).
    /// Absent in files written before overrides were recorded.
    #[serde(default)]
    pub overrides: Vec<OverrideRecord>,
    /// Each model's footprint as last measured, so a restarted daemon plans its loads by the
    /// bytes they took before (SPEC section 12). Absent in files written before budgets.
    #[serde(default)]
    pub footprints: Vec<FootprintRecord>,
}

/// A model's last measured footprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FootprintRecord {
    pub model: String,
    pub bytes: u64,
    /// `engine`, `nvml` or `rss`.
    pub source: crate::measure::Source,
}

/// A model's override: the state an API call set, and the hub.yaml entry it was set against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverrideRecord {
    pub model: String,
    pub state: crate::config::DesiredState,
    /// `ModelSpec::entry_hash` of the entry: a different entry clears the override.
    pub entry_hash: String,
    pub at: String,
    /// The call that set it: `start`, `stop`, `load` or `unload`.
    pub by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub model: String,
    pub pid: u32,
    /// Clock ticks after boot when the process started: with the pid, its identity.
    pub start_time: u64,
    pub port: u16,
    pub spec_hash: String,
    pub started_at: Option<String>,
    pub restarts: u32,
    /// Whether its weights were loaded, and whether on demand (not pinned).
    pub loaded: bool,
    pub on_demand: bool,
    /// What its processes held before its weights were loaded, measured: its unload has freed
    /// them once it is back near this. Absent in files written before budgets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<u64>,
    pub log_file: Option<String>,
    /// The engine's `stop_command`, rendered for this worker, so a daemon that does not adopt it
    /// still stops it the engine's way (a container too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_command: Option<Vec<String>>,
}

pub fn path(log_path: &Path) -> PathBuf {
    log_path.join("state.json")
}

/// Reads the state file: `Ok(None)` if there is none, `Err` with a reason if it cannot be used.
pub fn read(path: &Path) -> Result<Option<StateFile>, String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let state: StateFile = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not a valid state file: {e}", path.display()))?;
    if state.version != VERSION {
        return Err(format!(
            "{} has version {}, this hub writes {VERSION}",
            path.display(),
            state.version
        ));
    }
    Ok(Some(state))
}

/// Writes the state file atomically: a temp file beside it, renamed over it, so a daemon killed at
/// any point leaves either the old file or the new one, never half of one.
///
/// Deliberately not fsynced. The file describes live processes, and what could lose an unsynced
/// write (a power cut, a kernel crash) kills those processes too, so the next daemon finds only
/// stale pids either way (and treats a damaged file as missing). Two fsyncs per change, in the
/// loop that owns the state, cost most of a save's spawn time on an ordinary disk.
pub fn write(path: &Path, state: &StateFile) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let temp = dir.join(format!(".state.json.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&temp)?);
        serde_json::to_writer_pretty(&mut file, state)?;
        file.write_all(b"\n")?;
        file.into_inner().map_err(|e| e.into_error())?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// The lock a daemon holds on its `log_path` for as long as it runs: `<log_path>/hub.lock`.
pub fn lock_path(log_path: &Path) -> PathBuf {
    log_path.join("hub.lock")
}

/// Held while the daemon runs; the lock goes with the process, however it ends.
#[derive(Debug)]
pub struct Lock {
    _file: std::fs::File,
}

/// Takes the exclusive lock on `log_path`, so no two daemons share one: they would adopt each
/// other's workers, start duplicates on an edit, and stop each other's workers on shutdown.
/// Fails at once, naming the pid that holds it.
pub fn lock(log_path: &Path) -> anyhow::Result<Lock> {
    use anyhow::Context;
    use std::io::{Read, Seek};
    let path = lock_path(log_path);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "another process".to_string(),
                pid => format!("hub (pid {pid})"),
            };
            anyhow::bail!(
                "{holder} already runs with log_path {}: two daemons on one log_path would adopt and stop each other's workers. Stop it (`hub stop`), or give this one another `log_path`",
                log_path.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(Lock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_state_reads_back_and_bad_files_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = path(dir.path());
        assert_eq!(read(&path), Ok(None));
        let state = StateFile {
            version: VERSION,
            owner: "abc".into(),
            workers: vec![Record {
                model: "alpha".into(),
                pid: 42,
                start_time: 7,
                port: 47850,
                spec_hash: "h".into(),
                started_at: None,
                restarts: 1,
                loaded: true,
                on_demand: false,
                baseline: Some(20 << 20),
                log_file: None,
                stop_command: Some(vec!["docker".into(), "stop".into(), "hub-alpha".into()]),
            }],
            overrides: vec![OverrideRecord {
                model: "beta".into(),
                state: crate::config::DesiredState::Stopped,
                entry_hash: "e".into(),
                at: "2026-11-23T00:00:00Z".into(),
                by: "stop".into(),
            }],
            footprints: vec![FootprintRecord {
                model: "alpha".into(),
                bytes: 7 << 30,
                source: crate::measure::Source::Nvml,
            }],
        };
        write(&path, &state).unwrap();
        assert_eq!(read(&path), Ok(Some(state)));
        std::fs::write(&path, "{\"version\": 1, \"own").unwrap();
        let error = read(&path).unwrap_err();
        assert!(error.contains("is not a valid state file"), "{error}");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp files left behind");
    }

    #[test]
    fn a_second_lock_on_one_log_path_fails_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap();
        let error = lock(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains(&format!("hub (pid {}) already runs", std::process::id())),
            "{error}"
        );
        drop(held);
        lock(dir.path()).expect("the lock is free once its holder is gone");
    }
}
