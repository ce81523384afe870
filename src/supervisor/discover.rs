//! Finding the workers an earlier daemon of this hub started, by the owner mark in their
//! environment, and stopping those that are not adopted.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::procfs::{all_pids, is_alive, process_group, process_start_time};
use super::{MODEL_VAR, OWNER_VAR, run_stop_command, signal_group};

/// A process that carries this hub's owner mark: a worker an earlier daemon started, or a child
/// such a worker forked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub pid: u32,
    pub pgid: u32,
    pub start_time: u64,
    pub model: String,
}

/// Every live process marked with `owner`, found through `/proc`.
pub fn discover(owner: &str) -> Vec<Found> {
    let mark = format!("{OWNER_VAR}={owner}");
    let model_prefix = format!("{MODEL_VAR}=");
    let mut found = Vec::new();
    for pid in all_pids() {
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        if !vars.contains(&mark.as_bytes()) {
            continue;
        }
        let model = vars
            .iter()
            .find_map(|v| v.strip_prefix(model_prefix.as_bytes()))
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .unwrap_or_default();
        let (Some(start_time), Some(pgid)) = (process_start_time(pid), process_group(pid)) else {
            continue;
        };
        if !is_alive(pid) {
            continue;
        }
        found.push(Found {
            pid,
            pgid,
            start_time,
            model,
        });
    }
    found.sort_by_key(|f| f.pid);
    found
}

/// Stops a marked process group that no daemon watches: the engine's `stop_command` if its
/// record named one, SIGTERM, then SIGKILL after `timeout`. Signals go only while the leader is
/// still the process that was found, or, once it is gone, to what is left of its group (which
/// only marked processes can be in).
pub async fn stop_found(found: &Found, timeout: Duration, stop_command: Option<Vec<String>>) {
    let alive = || process_start_time(found.pid) == Some(found.start_time) && is_alive(found.pid);
    if let Some(argv) = stop_command
        && alive()
    {
        run_stop_command(&argv, timeout).await;
    }
    if alive() {
        signal_group(found.pgid, Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + timeout;
        while alive() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    signal_group(found.pgid, Signal::SIGKILL);
}

/// The owner id of the hub whose log directory is `log_path`: workers started by hubs with
/// different log directories never mistake each other for their own.
pub fn owner_id(log_path: &Path) -> String {
    let path = std::fs::canonicalize(log_path).unwrap_or_else(|_| log_path.to_path_buf());
    crate::sha256_hex(path.as_os_str().as_encoded_bytes())[..16].to_string()
}
