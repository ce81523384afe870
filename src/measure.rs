//! How much memory a model's worker holds: its footprint, measured after every load from the
//! best source there is. The engine's own report (`engine.memory` in hub.yaml), else the GPU
//! memory of the worker's processes through NVML where an NVIDIA driver is present (loaded at run
//! time: hub runs without one), else the resident memory of the worker's process tree from
//! `/proc`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use nvml_wrapper::Nvml;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::supervisor::{all_pids, is_alive, process_group};

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

/// How long an engine gets to answer its memory probe: a report that slow is no better than
/// the process's own numbers, and the loop should not wait on it.
pub const ENGINE_TIMEOUT: Duration = Duration::from_secs(2);

/// Measures footprints. One per daemon: it looks for NVML once.
pub struct Meter {
    client: reqwest::Client,
    /// NVML and its device count, or why there is none.
    nvml: Result<(Arc<Nvml>, u32), String>,
}

impl Meter {
    /// A meter that asks engines through `client`. Looks for an NVIDIA driver once, and says at
    /// info level which source hub will use. Initialising NVML is a `dlopen` and a driver call,
    /// done once at startup, so it runs here and not on a blocking thread.
    pub fn new(client: reqwest::Client) -> Meter {
        let nvml =
            Nvml::init()
                .map_err(|e| e.to_string())
                .and_then(|nvml| match nvml.device_count() {
                    Ok(count) => Ok((Arc::new(nvml), count)),
                    Err(e) => Err(format!("cannot count GPUs: {e}")),
                });
        let meter = Meter { client, nvml };
        tracing::info!("memory: measuring footprints by {}", meter.describe());
        meter
    }

    /// Which sources this meter has besides the engines' own reports, for logs and status:
    /// `nvml (2 GPUs), else rss`, or `rss (no NVIDIA driver: <reason>)`.
    pub fn describe(&self) -> String {
        match &self.nvml {
            Ok((_, 1)) => "nvml (1 GPU), else rss".to_string(),
            Ok((_, count)) => format!("nvml ({count} GPUs), else rss"),
            Err(reason) => format!("rss (no NVIDIA driver: {reason})"),
        }
    }

    /// The footprint of `target` from the best source that answers; `None` when none does (the
    /// process is gone).
    pub async fn measure(&self, target: &Target) -> Option<Footprint> {
        if let Some((url, pointer)) = &target.engine {
            match self.engine_bytes(url, pointer).await {
                Ok(bytes) => {
                    return Some(Footprint {
                        bytes,
                        source: Source::Engine,
                    });
                }
                Err(reason) => {
                    tracing::debug!(pid = target.pid, %url, %pointer, "memory: no engine report: {reason}")
                }
            }
        }
        let tree = process_tree(target.pid)?;
        if let Ok((nvml, _)) = &self.nvml {
            let nvml = nvml.clone();
            let pids = tree.clone();
            // NVML calls block on the driver (milliseconds, more on a busy box): off the runtime.
            match tokio::task::spawn_blocking(move || gpu_bytes(&nvml, &pids)).await {
                Ok(Ok(bytes)) if bytes > 0 => {
                    return Some(Footprint {
                        bytes,
                        source: Source::Nvml,
                    });
                }
                // A process tree on no GPU (or, in a container, pids NVML knows by other
                // numbers) is measured by its resident memory.
                Ok(Ok(_)) => {
                    tracing::debug!(
                        pid = target.pid,
                        "memory: no GPU memory in the process tree"
                    )
                }
                Ok(Err(e)) => tracing::debug!(pid = target.pid, "memory: nvml failed: {e}"),
                Err(e) => tracing::debug!(pid = target.pid, "memory: nvml task failed: {e}"),
            }
        }
        let bytes = rss_bytes(&tree.into_iter().collect::<Vec<_>>())?;
        Some(Footprint {
            bytes,
            source: Source::Rss,
        })
    }

    async fn engine_bytes(&self, url: &str, pointer: &str) -> Result<u64, String> {
        let response = self
            .client
            .get(url)
            .timeout(ENGINE_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("answered {status}"));
        }
        let body: Value = response
            .json()
            .await
            .map_err(|e| format!("not JSON: {e}"))?;
        bytes_at(&body, pointer)
    }
}

/// The byte count at `pointer` in an engine's answer: an unsigned integer, or a non-negative
/// float (rounded).
pub fn bytes_at(body: &Value, pointer: &str) -> Result<u64, String> {
    let value = body
        .pointer(pointer)
        .ok_or_else(|| format!("nothing at {pointer:?}"))?;
    if let Some(bytes) = value.as_u64() {
        return Ok(bytes);
    }
    match value.as_f64() {
        Some(float) if float.is_finite() && float >= 0.0 && float < u64::MAX as f64 => {
            Ok(float.round() as u64)
        }
        _ => Err(format!("{value} at {pointer:?} is no byte count")),
    }
}

/// The GPU memory the processes `pids` use, summed over every device's compute and graphics
/// processes. A process in both lists of a device is counted once.
fn gpu_bytes(nvml: &Nvml, pids: &BTreeSet<u32>) -> Result<u64, nvml_wrapper::error::NvmlError> {
    use nvml_wrapper::enums::device::UsedGpuMemory;
    let mut used: HashMap<(u32, u32), u64> = HashMap::new();
    for index in 0..nvml.device_count()? {
        let device = nvml.device_by_index(index)?;
        let compute = device.running_compute_processes()?;
        // Graphics processes are unsupported on many data-centre GPUs: not an error here.
        let graphics = device.running_graphics_processes().unwrap_or_default();
        for process in compute.into_iter().chain(graphics) {
            if let (true, UsedGpuMemory::Used(bytes)) =
                (pids.contains(&process.pid), process.used_gpu_memory)
            {
                let entry = used.entry((index, process.pid)).or_default();
                *entry = (*entry).max(bytes);
            }
        }
    }
    Ok(used.values().sum())
}

/// The worker's process tree: `pid` and every descendant still in its process group; `None`
/// when `pid` is gone. Descendants are found through `/proc/<pid>/task/<tid>/children`; where the
/// kernel has no such file, every process in the group is.
pub fn process_tree(pid: u32) -> Option<BTreeSet<u32>> {
    if !is_alive(pid) {
        return None;
    }
    let group = process_group(pid)?;
    let mut tree = BTreeSet::from([pid]);
    if !std::path::Path::new(&format!("/proc/{pid}/task/{pid}/children")).exists() {
        tree.extend(
            all_pids()
                .into_iter()
                .filter(|p| process_group(*p) == Some(group) && is_alive(*p)),
        );
        return Some(tree);
    }
    let mut todo = vec![pid];
    while let Some(parent) = todo.pop() {
        for child in children(parent) {
            if process_group(child) == Some(group) && tree.insert(child) {
                todo.push(child);
            }
        }
    }
    Some(tree)
}

/// The children of every thread of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// The resident memory of `pids` together, from `/proc/<pid>/statm`; `None` if none is alive.
pub fn rss_bytes(pids: &[u32]) -> Option<u64> {
    let page = page_size();
    let mut total = None;
    for pid in pids {
        let Ok(statm) = std::fs::read_to_string(format!("/proc/{pid}/statm")) else {
            continue;
        };
        let Some(pages) = resident_pages(&statm) else {
            continue;
        };
        *total.get_or_insert(0) += pages * page;
    }
    total
}

/// Field 2 of `/proc/<pid>/statm`: resident pages.
fn resident_pages(statm: &str) -> Option<u64> {
    statm.split_whitespace().nth(1)?.parse().ok()
}

/// The kernel's page size (4 KiB on most x86, 16 or 64 KiB on some ARM).
fn page_size() -> u64 {
    use nix::unistd::{SysconfVar, sysconf};
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| match sysconf(SysconfVar::PAGE_SIZE) {
        Ok(Some(size)) if size > 0 => size as u64,
        _ => 4096,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_byte_count_is_an_unsigned_integer_or_a_non_negative_float() {
        let body = json!({
            "memory": {"used": 1234, "float": 2.6, "zero": 0},
            "negative": -1,
            "text": "12",
            "loaded": true,
            "null": null,
            "list": [7],
        });
        let cases = [
            ("/memory/used", Ok(1234)),
            ("/memory/float", Ok(3)),
            ("/memory/zero", Ok(0)),
            ("/list/0", Ok(7)),
            ("/negative", Err("-1 at \"/negative\" is no byte count")),
            ("/text", Err("\"12\" at \"/text\" is no byte count")),
            ("/loaded", Err("true at \"/loaded\" is no byte count")),
            ("/null", Err("null at \"/null\" is no byte count")),
            (
                "/memory",
                Err("{\"float\":2.6,\"used\":1234,\"zero\":0} at \"/memory\" is no byte count"),
            ),
            ("/missing", Err("nothing at \"/missing\"")),
            ("memory/used", Err("nothing at \"memory/used\"")),
        ];
        for (pointer, want) in cases {
            let got = bytes_at(&body, pointer);
            assert_eq!(got, want.map_err(String::from), "{pointer}");
        }
    }

    #[test]
    fn statm_field_two_is_resident_pages() {
        assert_eq!(resident_pages("5284 1234 800 200 0 400 0\n"), Some(1234));
        assert_eq!(resident_pages("0 0 0 0 0 0 0"), Some(0));
        assert_eq!(resident_pages("5284"), None);
        assert_eq!(resident_pages(""), None);
        assert_eq!(resident_pages("5284 x 800"), None);
    }

    #[test]
    fn this_process_is_its_own_tree_and_resident() {
        let me = std::process::id();
        let tree = process_tree(me).unwrap();
        assert!(tree.contains(&me));
        assert!(rss_bytes(&[me]).unwrap() > 0);
        assert_eq!(page_size() % 4096, 0);
    }

    #[test]
    fn a_process_that_is_gone_measures_nothing() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(process_tree(pid), None);
        assert_eq!(rss_bytes(&[pid]), None);
    }
}
