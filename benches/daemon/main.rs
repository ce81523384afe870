//! End-to-end benchmarks of the real daemon (SPEC section 10): `target/release/hub serve` on a
//! temp dir with built-in workers, driven as an operator would, measured from outside.
//!
//! 2. Save to converged: a 100-model hub.yaml saved so that 10 workers start, split into detect,
//!    validate, plan, spawn and worker readiness, at the default `--max-concurrent`; a save that
//!    changes nothing; a save that restarts one model.
//! 3. Status reads: `GET /hub/status` under wrk against nginx serving the same bytes from a
//!    file, in alternating rounds (nginx, hub, nginx, hub, ...), quiet and during a reconcile
//!    storm (a save every 50 ms, each starting one worker and stopping another). Each ratio is
//!    the median of the rounds, printed with its spread.
//! 4. Scale: 1,000 models with 200 workers: time to converge from cold, idle RSS and CPU.
//! 5. The built-in worker: spawn to healthy, and loading a 100 MB file.
//! 6. The gateway: one worker reached directly, through nginx `proxy_pass` and through hub's
//!    `/v1` by model name, in alternating rounds: small completions under wrk (requests per
//!    second, and the added p50 on one connection), 64 concurrent streams (tokens per second);
//!    a cold request's time to first token split into the worker's start and load and hub's
//!    overhead; two models thrashing one `max_loaded: 1` slot under 100 clients (swaps, lost
//!    requests).
//!
//! The split of a save comes from the status the daemon publishes (`config.applied_at`, each
//! worker's `started_at`, `last_reconcile.finished_at`; microseconds) and the time of the
//! write; validate and plan are too short to see there and are timed in this process on the same
//! file with the same code. Run with `cargo bench --bench daemon`, or everything with `bench/run`.
//! `HUB_BENCH_PARTS=2,5` picks parts (all by default); `HUB_BENCH_RUNS`, `HUB_BENCH_WRK_SECONDS`,
//! `HUB_BENCH_ROUNDS` (at least 5 for a ratio to pass) and `HUB_BENCH_IDLE_SECONDS` shorten them;
//! `HUB_BENCH_VERBOSE=1` prints every timed save and cold request. `HUB_BENCH_WRK_SECONDS` is
//! also how long the gateway's streams and thrash run (its one-connection wrk runs half as long).
//!
//! One file per part (`save.rs`, `status_reads.rs`, `scale.rs`, `worker.rs`, `gateway.rs`);
//! `daemon.rs` is the daemon under test; this file picks the parts, writes the configs and holds
//! small helpers.

#[path = "../support/mod.rs"]
mod support;

#[path = "../../tests/support/harness.rs"]
mod harness;

mod daemon;
mod gateway;
mod save;
mod scale;
mod status_reads;
mod worker;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use support::{Models, hub_yaml, row};

fn main() -> ExitCode {
    if !support::benchmarking() {
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run())
}

async fn run() -> ExitCode {
    let parts = std::env::var("HUB_BENCH_PARTS").unwrap_or_else(|_| "2,3,4,5,6".to_string());
    let wanted = |part: &str| parts.split(',').any(|p| p.trim() == part);
    let runs = env_number("HUB_BENCH_RUNS", 20);
    let wrk_seconds = env_number("HUB_BENCH_WRK_SECONDS", 10);
    let idle_seconds = env_number("HUB_BENCH_IDLE_SECONDS", 30);
    let rounds = env_number("HUB_BENCH_ROUNDS", status_reads::MIN_ROUNDS).max(1);
    let mut failed = false;
    let mut report = |part: &str, result: anyhow::Result<()>| {
        if let Err(e) = result {
            eprintln!("part {part} failed: {e:#}");
            row(part, "error", &format!("{e:#}"), "-", "ERROR");
            failed = true;
        }
    };
    if wanted("2") {
        report("2 save to converged", save::save_to_converged(runs).await);
    }
    if wanted("3") {
        report(
            "3 status reads",
            status_reads::status_reads(wrk_seconds, rounds).await,
        );
    }
    if wanted("4") {
        report("4 scale", scale::scale(idle_seconds, rounds).await);
    }
    if wanted("5") {
        report("5 built-in worker", worker::builtin_worker(runs).await);
    }
    if wanted("6") {
        report(gateway::PART, gateway::gateway(wrk_seconds, rounds).await);
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// The configs.

pub fn all_stopped(_: usize) -> &'static str {
    "stopped"
}

pub fn ten_running(i: usize) -> &'static str {
    if i < 10 { "running" } else { "stopped" }
}

pub fn every_fifth_running(i: usize) -> &'static str {
    if i.is_multiple_of(5) {
        "running"
    } else {
        "stopped"
    }
}

pub fn unchanged(_: usize) -> bool {
    false
}

pub fn first_changed(i: usize) -> bool {
    i == 0
}

pub fn header(starting_port: u16) -> String {
    format!("log_path: logs\nmodel_starting_port: {starting_port}\n")
}

pub fn config(
    starting_port: u16,
    count: usize,
    state: fn(usize) -> &'static str,
    changed: fn(usize) -> bool,
) -> String {
    hub_yaml(
        &header(starting_port),
        &Models {
            count,
            state,
            changed,
            groups: false,
            budgets: false,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a plain HTTP client always builds")
}

pub fn time_at(value: &Value) -> anyhow::Result<OffsetDateTime> {
    let text = value
        .as_str()
        .with_context(|| format!("expected a time, got {value}"))?;
    Ok(OffsetDateTime::parse(text, &Rfc3339)?)
}

pub fn between(from: OffsetDateTime, to: OffsetDateTime) -> f64 {
    (to - from).as_seconds_f64() * 1000.0
}

/// Each model's worker pid, for those that have one.
pub fn pids(status: &Value) -> BTreeMap<String, u32> {
    status["models"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let pid = m["worker"]["pid"].as_u64()?;
            Some((m["name"].as_str()?.to_string(), pid as u32))
        })
        .collect()
}

pub fn installed(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| dir.join(program).is_file())
            || Path::new("/usr/sbin").join(program).is_file()
    })
}

/// A process's user + system CPU time so far, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (_, rest) = stat.rsplit_once(')').context("malformed stat")?;
    // After the command: state is field 3, utime 14 and stime 15.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).context("no utime")?.parse::<u64>()?
        + fields.get(12).context("no stime")?.parse::<u64>()?;
    Ok(ticks as f64 / clock_ticks_per_second())
}

pub fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

pub use harness::proc_status_kib;
