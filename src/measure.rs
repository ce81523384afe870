//! How much memory a model's worker holds: its footprint, measured after every load from the
//! best source there is. The engine's own report (`engine.memory` in hub.yaml), else the GPU
//! memory of the worker's processes through NVML where an NVIDIA driver is present (loaded at run
//! time: hub runs without one), else the resident memory of the worker's process tree from
//! `/proc`.

use serde::{Deserialize, Serialize};

/// Where a model's footprint comes from, best first after `declared` (hub.yaml's estimate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Declared,
    Engine,
    Nvml,
    Rss,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Declared => "declared",
            Source::Engine => "engine",
            Source::Nvml => "nvml",
            Source::Rss => "rss",
        }
    }
}

/// A measured footprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    pub bytes: u64,
    pub source: Source,
}

/// What to measure: a worker's process (the leader of its group), and where its engine reports
/// its own memory, if it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub pid: u32,
    /// The engine's report: the URL to `GET`, and the JSON pointer to the bytes in its answer.
    pub engine: Option<(String, String)>,
}

/// Measures footprints. One per daemon: it looks for NVML once.
pub struct Meter {
    client: reqwest::Client,
}

impl Meter {
    pub fn new(client: reqwest::Client) -> Meter {
        Meter { client }
    }

    /// The footprint of `target` from the best source that answers; `None` when none does (the
    /// process is gone).
    pub async fn measure(&self, target: &Target) -> Option<Footprint> {
        let _ = &self.client;
        let bytes = rss_bytes(&[target.pid])?;
        Some(Footprint {
            bytes,
            source: Source::Rss,
        })
    }
}

/// The resident memory of `pids` together, from `/proc/<pid>/statm`; `None` if none is alive.
pub fn rss_bytes(pids: &[u32]) -> Option<u64> {
    let page = 4096u64;
    let mut total = None;
    for pid in pids {
        let Ok(statm) = std::fs::read_to_string(format!("/proc/{pid}/statm")) else {
            continue;
        };
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        *total.get_or_insert(0) += pages * page;
    }
    total
}
