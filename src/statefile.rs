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
    pub log_file: Option<String>,
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
                log_file: None,
            }],
            overrides: vec![OverrideRecord {
                model: "beta".into(),
                state: crate::config::DesiredState::Stopped,
                entry_hash: "e".into(),
                at: "2026-11-23T00:00:00Z".into(),
                by: "stop".into(),
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
}
