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
//!
//! The split of a save comes from the status the daemon publishes (`config.applied_at`, each
//! worker's `started_at`, `last_reconcile.finished_at`; microseconds) and the time of the
//! write; validate and plan are too short to see there and are timed in this process on the same
//! file with the same code. Run with `cargo bench --bench daemon`, or everything with `bench/run`.
//! `HUB_BENCH_PARTS=2,5` picks parts; `HUB_BENCH_RUNS`, `HUB_BENCH_WRK_SECONDS`,
//! `HUB_BENCH_ROUNDS` (at least 5 for a ratio to pass) and `HUB_BENCH_IDLE_SECONDS` shorten them;
//! `HUB_BENCH_VERBOSE=1` prints every timed save.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use support::{Models, Rows, Samples, hub_yaml, millis, ms, row, verdict};

/// The release build of hub that `cargo bench` built beside this program.
const HUB: &str = env!("CARGO_BIN_EXE_hub");

/// SPEC section 10's targets.
const OVERHEAD_TARGET_MS: f64 = 25.0;
const TOTAL_TARGET_MS: f64 = 250.0;
const STATUS_RATIO_TARGET: f64 = 0.80;
const STATUS_P99_TARGET_MS: f64 = 5.0;
const RSS_TARGET_MB: f64 = 50.0;
const IDLE_CPU_TARGET_PERCENT: f64 = 1.0;

/// How often a waiting loop reads `/hub/status` (100 models).
const POLL: Duration = Duration::from_millis(5);
/// The reconcile storm: one save this often.
const STORM_EVERY: Duration = Duration::from_millis(50);

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
    let parts = std::env::var("HUB_BENCH_PARTS").unwrap_or_else(|_| "2,3,4,5".to_string());
    let wanted = |part: &str| parts.split(',').any(|p| p.trim() == part);
    let runs = env_number("HUB_BENCH_RUNS", 20);
    let wrk_seconds = env_number("HUB_BENCH_WRK_SECONDS", 10);
    let idle_seconds = env_number("HUB_BENCH_IDLE_SECONDS", 30);
    let rounds = env_number("HUB_BENCH_ROUNDS", MIN_ROUNDS).max(1);
    let mut failed = false;
    let mut report = |part: &str, result: anyhow::Result<()>| {
        if let Err(e) = result {
            eprintln!("part {part} failed: {e:#}");
            row(part, "error", &format!("{e:#}"), "-", "ERROR");
            failed = true;
        }
    };
    if wanted("2") {
        report("2 save to converged", save_to_converged(runs).await);
    }
    if wanted("3") {
        report("3 status reads", status_reads(wrk_seconds, rounds).await);
    }
    if wanted("4") {
        report("4 scale", scale(idle_seconds).await);
    }
    if wanted("5") {
        report("5 built-in worker", builtin_worker(runs).await);
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// The configs.

fn all_stopped(_: usize) -> &'static str {
    "stopped"
}

fn ten_running(i: usize) -> &'static str {
    if i < 10 { "running" } else { "stopped" }
}

fn every_fifth_running(i: usize) -> &'static str {
    if i.is_multiple_of(5) {
        "running"
    } else {
        "stopped"
    }
}

fn unchanged(_: usize) -> bool {
    false
}

fn first_changed(i: usize) -> bool {
    i == 0
}

fn header(starting_port: u16) -> String {
    format!("log_path: logs\nmodel_starting_port: {starting_port}\n")
}

fn config(
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
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Part 2: save to converged.

/// What one timed save showed. Times are the daemon's, from its status, except `written` (just
/// before the save) and `seen` (when a poll first saw it converged).
struct Save {
    written: OffsetDateTime,
    applied: OffsetDateTime,
    spawned: Vec<OffsetDateTime>,
    finished: OffsetDateTime,
    seen: OffsetDateTime,
    status: Value,
}

impl Save {
    fn last_spawn(&self) -> OffsetDateTime {
        self.spawned.iter().copied().max().unwrap_or(self.applied)
    }
    /// Write to the daemon taking it in: the file event, the debounce, read, hash, validate.
    fn detect_and_validate(&self) -> f64 {
        between(self.written, self.applied)
    }
    /// Taken in to the last worker spawned: plan, and spawning every worker.
    fn plan_and_spawn(&self) -> f64 {
        between(self.applied, self.last_spawn())
    }
    /// Hub's own part: everything up to the last spawn.
    fn overhead(&self) -> f64 {
        between(self.written, self.last_spawn())
    }
    /// The workers' own part: the last spawn to the reconcile's end (the last worker healthy).
    fn readiness(&self) -> f64 {
        between(self.last_spawn(), self.finished)
    }
    fn total(&self) -> f64 {
        between(self.written, self.finished)
    }
    fn total_seen(&self) -> f64 {
        between(self.written, self.seen)
    }
}

async fn save_to_converged(runs: u64) -> anyhow::Result<()> {
    const PART: &str = "2 save to converged";
    let runs = runs.max(1) as usize;
    println!("save to converged: 100 models, a save that starts 10 workers, {runs} runs");
    let port = free_port()?;
    let off = config(port, 100, all_stopped, unchanged);
    let on = config(port, 100, ten_running, unchanged);
    let on_v2 = config(port, 100, ten_running, first_changed);

    // Validate and plan, timed here on the same text with the daemon's code.
    let validate = Samples::new(time_validate(&on, 50)?);
    let plan = Samples::new(time_plan(&off, &on, 200)?);

    // SPEC's target is judged as hub ships: at the default --max-concurrent (8), the last two of
    // the 10 starts wait for a slot. The same saves with --max-concurrent 10 show what that wait
    // costs, and are not judged.
    let mut later = Rows::default();
    let mut split = Vec::new();
    let mut ten_at_once = Vec::new();
    for (args, saves) in [
        (&[][..], &mut split),
        (&["--max-concurrent", "10"][..], &mut ten_at_once),
    ] {
        let hub = Daemon::start(&off, 100, args)?;
        hub.converged(1, Duration::from_secs(30)).await?;
        // One cycle first, so the binary and the files are warm.
        hub.timed_save(&on, 10).await?;
        hub.timed_save(&off, 0).await?;
        for _ in 0..runs {
            saves.push(hub.timed_save(&on, 10).await?);
            hub.timed_save(&off, 0).await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if args.is_empty() {
            // Still at "off": now a save that restarts one model, and saves that change nothing.
            hub.timed_save(&on, 10).await?;
            restart_one(&hub, &on, &on_v2, runs, &mut later).await?;
            no_op_saves(&hub, runs, &mut later).await?;
        }
        hub.shutdown().await?;
    }

    let stat = |saves: &[Save], f: fn(&Save) -> f64| Samples::new(saves.iter().map(f).collect());
    let detect_validate = stat(&split, Save::detect_and_validate);
    let detect = Samples::new(
        split
            .iter()
            .map(|s| s.detect_and_validate() - validate.median())
            .collect(),
    );
    let spawn = Samples::new(
        split
            .iter()
            .map(|s| s.plan_and_spawn() - plan.median())
            .collect(),
    );
    let overhead = stat(&split, Save::overhead);
    let readiness = stat(&split, Save::readiness);
    let total = stat(&split, Save::total);
    let seen = stat(&split, Save::total_seen);
    let seen_less_readiness = stat(&split, |s| s.total_seen() - s.readiness());
    let m_p95 = |s: &Samples| format!("{} ({})", ms(s.median()), ms(s.p95()));
    println!(
        "  detect+validate {}, plan+spawn {}, readiness {}, total {}",
        m_p95(&detect_validate),
        m_p95(&stat(&split, Save::plan_and_spawn)),
        m_p95(&readiness),
        m_p95(&total)
    );
    let split_row = |figure: &str, samples: &Samples| {
        row(
            PART,
            &format!("start 10: {figure}, median (p95)"),
            &m_p95(samples),
            "-",
            "-",
        );
    };
    split_row(
        &format!(
            "detect (file event, {} ms debounce)",
            hub::watch::DEBOUNCE.as_millis()
        ),
        &detect,
    );
    row(
        PART,
        "start 10: validate (read, hash, parse; timed in process), median (p95)",
        &m_p95(&validate),
        "-",
        "-",
    );
    row(
        PART,
        "start 10: plan (timed in process), median (p95)",
        &m_p95(&plan),
        "-",
        "-",
    );
    split_row("spawn 10 workers (8 at once, 2 wait for a slot)", &spawn);
    row(
        PART,
        "start 10: hub's overhead, detect+validate+plan+spawn (default --max-concurrent 8), median (p95)",
        &m_p95(&overhead),
        &format!("< {OVERHEAD_TARGET_MS} ms median"),
        verdict(overhead.median() < OVERHEAD_TARGET_MS),
    );
    split_row("worker readiness (last spawn to last healthy)", &readiness);
    split_row("total, write to daemon's finished_at", &total);
    row(
        PART,
        "start 10: write to /hub/status converged (5 ms poll), median (p95)",
        &m_p95(&seen),
        &format!("< {TOTAL_TARGET_MS} ms + readiness"),
        verdict(seen_less_readiness.median() < TOTAL_TARGET_MS),
    );
    let wide_overhead = stat(&ten_at_once, Save::overhead);
    let wide_spawn = stat(&ten_at_once, Save::plan_and_spawn);
    row(
        PART,
        "start 10, --max-concurrent 10 (not judged): hub's overhead / plan+spawn, medians",
        &format!(
            "{} / {}",
            ms(wide_overhead.median()),
            ms(wide_spawn.median())
        ),
        "-",
        "-",
    );
    later.emit();
    Ok(())
}

/// Saves that change one model's `model_path`, back and forth: only that worker restarts.
async fn restart_one(
    hub: &Daemon,
    on: &str,
    on_v2: &str,
    runs: usize,
    later: &mut Rows,
) -> anyhow::Result<()> {
    const PART: &str = "2 save to converged";
    let before = pids(&hub.status().await?);
    let mut saves = Vec::new();
    let mut disturbed = 0;
    for run in 0..runs {
        let text = if run % 2 == 0 { on_v2 } else { on };
        let save = hub.timed_save(text, 10).await?;
        let report = &save.status["last_reconcile"];
        ensure!(
            report["restarted"] == serde_json::json!(["m0000"]),
            "a one-model change restarted {}",
            report["restarted"]
        );
        let after = pids(&save.status);
        disturbed += before
            .iter()
            .filter(|(name, pid)| name.as_str() != "m0000" && after.get(*name) != Some(pid))
            .count();
        saves.push(save);
    }
    let stat = |f: fn(&Save) -> f64| Samples::new(saves.iter().map(f).collect());
    let m_p95 = |s: Samples| format!("{} ({})", ms(s.median()), ms(s.p95()));
    later.add(
        PART,
        "restart 1: write to converged, median (p95)",
        &m_p95(stat(Save::total_seen)),
        "-",
        "-",
    );
    later.add(
        PART,
        "restart 1: detect+validate / stop+spawn / readiness, medians",
        &format!(
            "{} / {} / {}",
            ms(stat(Save::detect_and_validate).median()),
            ms(stat(Save::plan_and_spawn).median()),
            ms(stat(Save::readiness).median())
        ),
        "-",
        "-",
    );
    later.add(
        PART,
        "restart 1: other running workers disturbed",
        &format!("{disturbed} in {runs} saves"),
        "0",
        verdict(disturbed == 0),
    );
    Ok(())
}

/// Saves of the very bytes already applied: nothing may change, and they should cost little.
async fn no_op_saves(hub: &Daemon, runs: usize, later: &mut Rows) -> anyhow::Result<()> {
    const PART: &str = "2 save to converged";
    let before = hub.status().await?;
    let text = std::fs::read_to_string(hub.config())?;
    let cpu_before = cpu_seconds(hub.pid)?;
    let started = Instant::now();
    for _ in 0..runs {
        hub.save(&text)?;
        // Past the debounce, so every save is read and hashed on its own.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    let cpu = cpu_seconds(hub.pid)? - cpu_before;
    let after = hub.status().await?;
    let same = before["generation"] == after["generation"]
        && before["config"]["applied_at"] == after["config"]["applied_at"]
        && pids(&before) == pids(&after);
    later.add(
        PART,
        "no-op save (same bytes): generation, config and workers unchanged",
        &format!(
            "{} in {runs} saves",
            if same { "unchanged" } else { "CHANGED" }
        ),
        "unchanged",
        verdict(same),
    );
    later.add(
        PART,
        "no-op save: daemon CPU per save",
        &format!(
            "{} ({:.1}% of a core over {:.1} s)",
            ms(cpu * 1000.0 / runs as f64),
            cpu / elapsed.as_secs_f64() * 100.0,
            elapsed.as_secs_f64()
        ),
        "-",
        "-",
    );
    Ok(())
}

/// Validation as the watcher does it: read the file, hash it, parse and check it.
fn time_validate(text: &str, runs: usize) -> anyhow::Result<Vec<f64>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("hub.yaml");
    std::fs::write(&path, text)?;
    let mut samples = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let text = hub::config::read(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
        std::hint::black_box(hub::sha256_hex(text.as_bytes()));
        hub::config::parse(&text, "hub.yaml", dir.path()).map_err(|e| anyhow::anyhow!("{e}"))?;
        samples.push(millis(t.elapsed()));
    }
    Ok(samples)
}

/// The plan of the save: every model stopped before, ten to start.
fn time_plan(before: &str, after: &str, runs: usize) -> anyhow::Result<Vec<f64>> {
    let parse = |text: &str| {
        hub::config::parse(text, "hub.yaml", Path::new("/tmp")).map_err(|e| anyhow::anyhow!("{e}"))
    };
    let observed = hub::plan::converged(&parse(before)?);
    let desired = parse(after)?;
    let now = OffsetDateTime::now_utc();
    let mut samples = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let plan = hub::plan::plan(&desired, &observed, now);
        drop(std::hint::black_box(plan));
        samples.push(millis(t.elapsed()));
    }
    Ok(samples)
}

// ---------------------------------------------------------------------------------------------
// Part 3: status reads against nginx.

/// Alternating rounds per ratio (nginx, hub, nginx, hub, ...): one round per side is noise on a
/// small shared machine, where two back-to-back runs of the same server differ by 10% or more.
const MIN_ROUNDS: u64 = 5;

async fn status_reads(seconds: u64, rounds: u64) -> anyhow::Result<()> {
    const PART: &str = "3 status reads";
    if !installed("wrk") || !installed("nginx") {
        // A skipped part is a missed target, never a quiet gap in the table.
        for when in ["quiet", "storm"] {
            row(
                PART,
                &format!("{when}: skipped"),
                "wrk or nginx is not installed (bench/run installs them: apt-get install nginx-light wrk)",
                &format!(">= {:.0}% of nginx", STATUS_RATIO_TARGET * 100.0),
                "MISS",
            );
        }
        return Ok(());
    }
    // One wrk thread and one nginx worker: on a 2-core machine wrk takes one core and the server
    // the other; more wrk threads only fight the server for its core.
    let threads = env_number("HUB_BENCH_WRK_THREADS", 1);
    let connections = env_number("HUB_BENCH_WRK_CONNECTIONS", 32);
    println!(
        "status reads: wrk -t{threads} -c{connections} -d{seconds}s --latency, {rounds} alternating rounds (nginx, hub), quiet then during a storm"
    );
    let port = free_port()?;
    let on = config(port, 100, ten_running, unchanged);
    let hub = Daemon::start(&on, 100, &[])?;
    hub.converged(1, Duration::from_secs(30)).await?;
    let body = hub
        .http
        .get(format!("{}/hub/status", hub.url))
        .send()
        .await?
        .bytes()
        .await?;
    let nginx = Nginx::start(&body)?;
    let served = nginx.wait_ready(&hub.http).await?;
    ensure!(served == body, "nginx does not serve the status bytes");
    let hub_url = format!("{}/hub/status", hub.url);
    let alternate = || async {
        let mut pairs = Vec::new();
        for round in 1..=rounds {
            println!("  round {round} of {rounds}");
            let nginx_run = wrk(&nginx.url, threads, connections, seconds).await?;
            let hub_run = wrk(&hub_url, threads, connections, seconds).await?;
            pairs.push((hub_run, nginx_run));
        }
        anyhow::Ok(pairs)
    };

    let quiet = alternate().await?;
    let generation = hub.status().await?["generation"].as_u64().unwrap_or(0);
    let actions_before = worker_actions(&hub).await?;
    let storm = Storm::start(hub.config(), on.clone());
    let stormy = alternate().await;
    let saves = storm.stop().await;
    let stormy = stormy?;
    // Let the last save settle, so its start and stop are counted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let generations = hub.status().await?["generation"].as_u64().unwrap_or(0) - generation;
    let actions = worker_actions(&hub).await?.since(&actions_before);
    hub.save(&on)?;
    drop(nginx);
    hub.shutdown().await?;

    row(
        PART,
        "GET /hub/status body (100 models, 10 running)",
        &format!("{} bytes", body.len()),
        "-",
        "-",
    );
    let enough = rounds >= MIN_ROUNDS;
    let shortfall = if enough {
        String::new()
    } else {
        format!(" (fewer than {MIN_ROUNDS} rounds: cannot pass)")
    };
    for (when, pairs) in [("quiet", &quiet), ("storm", &stormy)] {
        let ratios = Samples::new(pairs.iter().map(|(h, n)| h.rps / n.rps).collect());
        let hub_rps = Samples::new(pairs.iter().map(|(h, _)| h.rps).collect());
        let nginx_rps = Samples::new(pairs.iter().map(|(_, n)| n.rps).collect());
        let hub_p99 = Samples::new(pairs.iter().map(|(h, _)| h.p99_ms).collect());
        let nginx_p99 = Samples::new(pairs.iter().map(|(_, n)| n.p99_ms).collect());
        row(
            PART,
            &format!(
                "{when}: hub / nginx requests per second, median of {} rounds (min-max)",
                ratios.len()
            ),
            &format!(
                "{:.0}% ({:.0}-{:.0}%); hub {:.0} ({:.0}-{:.0}), nginx {:.0} ({:.0}-{:.0}){shortfall}",
                ratios.median() * 100.0,
                ratios.min() * 100.0,
                ratios.max() * 100.0,
                hub_rps.median(),
                hub_rps.min(),
                hub_rps.max(),
                nginx_rps.median(),
                nginx_rps.min(),
                nginx_rps.max(),
            ),
            &format!(">= {:.0}%", STATUS_RATIO_TARGET * 100.0),
            verdict(enough && ratios.median() >= STATUS_RATIO_TARGET),
        );
        row(
            PART,
            &format!(
                "{when}: hub p99, median of {} rounds (min-max); nginx p99",
                hub_p99.len()
            ),
            &format!(
                "{} ({}-{}); nginx {} ({}-{})",
                ms(hub_p99.median()),
                ms(hub_p99.min()),
                ms(hub_p99.max()),
                ms(nginx_p99.median()),
                ms(nginx_p99.min()),
                ms(nginx_p99.max()),
            ),
            &format!("< {STATUS_P99_TARGET_MS} ms"),
            verdict(enough && hub_p99.median() < STATUS_P99_TARGET_MS),
        );
        let hub_errors: Vec<&str> = pairs
            .iter()
            .flat_map(|(h, _)| h.errors.iter().map(String::as_str))
            .collect();
        let nginx_errors: Vec<&str> = pairs
            .iter()
            .flat_map(|(_, n)| n.errors.iter().map(String::as_str))
            .collect();
        for (server, errors) in [("hub", hub_errors), ("nginx", nginx_errors)] {
            if !errors.is_empty() {
                row(
                    PART,
                    &format!("{when}: {server} errors"),
                    &errors.join("; "),
                    "none",
                    "MISS",
                );
            }
        }
    }
    row(
        PART,
        "storm: saves written / generations applied / workers started / workers stopped",
        &format!(
            "{saves} / {generations} / {} / {} in {:.0} s (one save every {} ms, each starts one worker and stops another)",
            actions.started,
            actions.stopped,
            (2 * rounds * seconds) as f64,
            STORM_EVERY.as_millis()
        ),
        "-",
        "-",
    );
    ensure!(
        actions.started > 0 && actions.stopped > 0,
        "the storm started {} and stopped {} workers: it did not exercise the reconciler",
        actions.started,
        actions.stopped
    );
    Ok(())
}

/// Saves the config every [`STORM_EVERY`] so that each save is a new generation whose pass
/// really acts: besides the ten always running, one more model runs, a different one each save
/// (m0010, m0011, ... m0019, round again), so every save starts one worker and stops another.
struct Storm {
    task: tokio::task::JoinHandle<()>,
    saves: Arc<AtomicUsize>,
}

impl Storm {
    fn start(path: PathBuf, text: String) -> Storm {
        let texts: Vec<String> = (10..20).map(|i| with_running(&text, i)).collect();
        let saves = Arc::new(AtomicUsize::new(0));
        let counter = saves.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(STORM_EVERY);
            for text in texts.iter().cycle() {
                tick.tick().await;
                if save_file(&path, text).is_ok() {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Storm { task, saves }
    }

    async fn stop(self) -> usize {
        self.task.abort();
        let _ = self.task.await;
        self.saves.load(Ordering::Relaxed)
    }
}

/// `text` with model `i` set to `state: running`.
fn with_running(text: &str, i: usize) -> String {
    let name = support::model_name(i);
    text.lines()
        .map(|line| {
            if line.starts_with(&format!("  - {{name: {name},")) {
                line.replace("state: stopped", "state: running")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Workers started and stopped so far, as the daemon's `hub_actions_total` counts them (ok or
/// superseded by a newer save: either way the reconciler acted).
struct WorkerActions {
    started: u64,
    stopped: u64,
}

impl WorkerActions {
    fn since(&self, before: &WorkerActions) -> WorkerActions {
        WorkerActions {
            started: self.started - before.started,
            stopped: self.stopped - before.stopped,
        }
    }
}

async fn worker_actions(hub: &Daemon) -> anyhow::Result<WorkerActions> {
    let text = hub
        .http
        .get(format!("{}/metrics", hub.url))
        .send()
        .await?
        .text()
        .await?;
    let count = |action: &str| -> u64 {
        text.lines()
            .filter(|line| line.starts_with(&format!("hub_actions_total{{action=\"{action}\",")))
            .filter(|line| !line.contains("result=\"failed\""))
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<u64>().ok())
            .sum()
    };
    Ok(WorkerActions {
        started: count("start"),
        stopped: count("stop"),
    })
}

/// What wrk measured.
struct Wrk {
    rps: f64,
    p99_ms: f64,
    errors: Vec<String>,
}

async fn wrk(url: &str, threads: u64, connections: u64, seconds: u64) -> anyhow::Result<Wrk> {
    let output = tokio::process::Command::new("wrk")
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("--latency")
        .arg(url)
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot run wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    ensure!(output.status.success(), "wrk failed: {text}");
    let result = parse_wrk(&text).with_context(|| format!("cannot read wrk's output:\n{text}"))?;
    println!(
        "  {url}: {:.0} req/s, p99 {}",
        result.rps,
        ms(result.p99_ms)
    );
    Ok(result)
}

fn parse_wrk(text: &str) -> anyhow::Result<Wrk> {
    let mut rps = None;
    let mut p99 = None;
    let mut errors = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(value) = line.strip_prefix("Requests/sec:") {
            rps = Some(value.trim().parse::<f64>()?);
        } else if let Some(value) = line.strip_prefix("99%") {
            p99 = Some(wrk_duration_ms(value.trim())?);
        } else if line.starts_with("Non-2xx") || line.starts_with("Socket errors") {
            errors.push(line.to_string());
        }
    }
    Ok(Wrk {
        rps: rps.context("no Requests/sec line")?,
        p99_ms: p99.context("no 99% line (was --latency passed?)")?,
        errors,
    })
}

/// wrk's `812.00us`, `1.23ms`, `1.02s`, `2.00m` in milliseconds.
fn wrk_duration_ms(text: &str) -> anyhow::Result<f64> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .context("no unit")?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse()?;
    Ok(match unit {
        "us" => number / 1000.0,
        "ms" => number,
        "s" => number * 1000.0,
        "m" => number * 60_000.0,
        other => bail!("unknown unit {other:?}"),
    })
}

/// nginx in the foreground on a loopback port, serving one file at `/hub/status`.
struct Nginx {
    dir: tempfile::TempDir,
    child: Child,
    url: String,
}

impl Nginx {
    fn start(body: &[u8]) -> anyhow::Result<Nginx> {
        let dir = tempfile::tempdir()?;
        let root = dir.path();
        std::fs::create_dir_all(root.join("www/hub"))?;
        std::fs::create_dir_all(root.join("temp"))?;
        std::fs::write(root.join("www/hub/status"), body)?;
        // nginx's workers may run as another user, who must be able to read the file.
        for path in [root, &root.join("www"), &root.join("www/hub")] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
        }
        let port = free_port()?;
        let user = if nix::unistd::geteuid().is_root() {
            "user root;"
        } else {
            ""
        };
        let root_text = root.display();
        // As served in production: sendfile, no access log, long keep-alive (hub's server keeps
        // connections as long as the client wants, so nginx may too). One worker process: wrk
        // takes the other core of the 2-core machine the figures are taken on.
        let conf = format!(
            "{user}
daemon off;
master_process on;
worker_processes 1;
pid {root_text}/nginx.pid;
error_log {root_text}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    open_file_cache max=16 inactive=60s;
    default_type application/json;
    client_body_temp_path {root_text}/temp/body;
    proxy_temp_path {root_text}/temp/proxy;
    fastcgi_temp_path {root_text}/temp/fastcgi;
    uwsgi_temp_path {root_text}/temp/uwsgi;
    scgi_temp_path {root_text}/temp/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root_text}/www;
    }}
}}
"
        );
        let conf_path = root.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new("nginx")
            .arg("-p")
            .arg(root)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(root.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(root.join("nginx.stderr"))?)
            .spawn()
            .context("cannot run nginx")?;
        Ok(Nginx {
            dir,
            child,
            url: format!("http://127.0.0.1:{port}/hub/status"),
        })
    }

    /// Waits until nginx answers and returns what it serves.
    async fn wait_ready(&self, http: &reqwest::Client) -> anyhow::Result<Vec<u8>> {
        let started = Instant::now();
        loop {
            if let Ok(response) = http.get(&self.url).send().await
                && response.status().is_success()
            {
                return Ok(response.bytes().await?.to_vec());
            }
            if started.elapsed() > Duration::from_secs(10) {
                let log = std::fs::read_to_string(self.dir.path().join("nginx.stderr"))
                    .unwrap_or_default();
                bail!("nginx did not answer within 10 s: {log}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers, then exits.
        stop_child(&mut self.child);
    }
}

// ---------------------------------------------------------------------------------------------
// Part 4: scale.

async fn scale(idle_seconds: u64) -> anyhow::Result<()> {
    const PART: &str = "4 scale";
    println!("scale: 1,000 models, 200 workers, then idle for {idle_seconds} s");
    let port = free_port()?;
    let text = config(port, 1_000, every_fifth_running, unchanged);
    let started = OffsetDateTime::now_utc();
    let hub = Daemon::start(&text, 1_000, &[])?;
    let status = hub
        .wait_for(
            "200 workers running",
            Duration::from_secs(600),
            Duration::from_millis(250),
            |s| converged_at(s, 1) && s["counts"]["running"] == 200,
        )
        .await?
        .0;
    let finished = time_at(&status["last_reconcile"]["finished_at"])?;
    let cold = between(started, finished);
    println!("  converged from cold in {}", ms(cold));

    // Let the start-up settle, then measure what an idle daemon costs.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cpu_before = cpu_seconds(hub.pid)?;
    let wall = Instant::now();
    tokio::time::sleep(Duration::from_secs(idle_seconds)).await;
    let cpu = cpu_seconds(hub.pid)? - cpu_before;
    let idle_cpu = cpu / wall.elapsed().as_secs_f64() * 100.0;
    let rss = proc_status_kib(hub.pid, "VmRSS")? as f64 / 1024.0;
    let peak = proc_status_kib(hub.pid, "VmHWM")? as f64 / 1024.0;
    let status = hub.status().await?;
    let workers: Vec<f64> = pids(&status)
        .values()
        .filter_map(|pid| proc_status_kib(*pid, "VmRSS").ok())
        .map(|kib| kib as f64 / 1024.0)
        .collect();
    let workers_total: f64 = workers.iter().sum();
    let worker_median = Samples::new(workers.clone()).median();
    let stopping = Instant::now();
    hub.shutdown().await?;
    let stopped = stopping.elapsed();

    row(
        PART,
        "1,000 models, 200 workers: time to converge from cold",
        &ms(cold),
        "-",
        "-",
    );
    row(
        PART,
        "daemon RSS, idle (peak)",
        &format!("{rss:.1} MB ({peak:.1} MB)"),
        &format!("< {RSS_TARGET_MB} MB"),
        verdict(rss < RSS_TARGET_MB),
    );
    row(
        PART,
        &format!("daemon CPU, idle over {idle_seconds} s"),
        &format!("{idle_cpu:.2}% of a core"),
        &format!("< {IDLE_CPU_TARGET_PERCENT}%"),
        verdict(idle_cpu < IDLE_CPU_TARGET_PERCENT),
    );
    row(
        PART,
        "200 workers' RSS: total (each, median)",
        &format!(
            "{workers_total:.0} MB ({worker_median:.1} MB; {} measured)",
            workers.len()
        ),
        "-",
        "-",
    );
    row(
        PART,
        "shutdown, stopping 200 workers",
        &ms(millis(stopped)),
        "-",
        "-",
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Part 5: the built-in worker on its own.

async fn builtin_worker(runs: u64) -> anyhow::Result<()> {
    const PART: &str = "5 built-in worker";
    let runs = runs.max(1) as usize;
    println!("built-in worker: spawn to healthy ({runs} runs), load of a 100 MB file");
    let dir = tempfile::tempdir()?;
    let small = dir.path().join("small.txt");
    std::fs::write(&small, "the quick brown fox jumps over the lazy dog\n")?;
    let big = dir.path().join("big.txt");
    write_big_file(&big, 100 * 1024 * 1024)?;
    let http = client();

    let mut healthy = Vec::new();
    let mut idle_rss = Vec::new();
    for _ in 0..runs {
        let port = free_port()?;
        let started = Instant::now();
        let mut worker = Worker::spawn(&small, port, dir.path())?;
        worker.wait_healthy(&http, port).await?;
        healthy.push(millis(started.elapsed()));
        idle_rss.push(proc_status_kib(worker.pid(), "VmRSS")? as f64 / 1024.0);
        worker.stop();
    }
    let healthy = Samples::new(healthy);

    let port = free_port()?;
    let mut worker = Worker::spawn(&big, port, dir.path())?;
    worker.wait_healthy(&http, port).await?;
    let url = format!("http://127.0.0.1:{port}");
    let mut loads = Vec::new();
    let mut loaded_rss = 0.0;
    for _ in 0..5 {
        let t = Instant::now();
        let response = http.post(format!("{url}/load")).send().await?;
        ensure!(
            response.status().is_success(),
            "load answered {}",
            response.status()
        );
        loads.push(millis(t.elapsed()));
        loaded_rss = proc_status_kib(worker.pid(), "VmRSS")? as f64 / 1024.0;
        http.post(format!("{url}/unload")).send().await?;
    }
    worker.stop();
    let loads = Samples::new(loads);

    row(
        PART,
        "spawn to healthy, median (p95)",
        &format!("{} ({})", ms(healthy.median()), ms(healthy.p95())),
        "-",
        "-",
    );
    row(
        PART,
        "load of a 100 MB file, median of 5",
        &format!(
            "{} ({:.0} MB/s)",
            ms(loads.median()),
            100.0 / (loads.median() / 1000.0)
        ),
        "-",
        "-",
    );
    row(
        PART,
        "worker RSS: idle / with 100 MB loaded",
        &format!(
            "{:.1} MB / {loaded_rss:.0} MB",
            Samples::new(idle_rss).median()
        ),
        "-",
        "-",
    );
    Ok(())
}

/// Words, so the worker's text generation finds some.
fn write_big_file(path: &Path, size: usize) -> anyhow::Result<()> {
    use std::io::Write;
    let line = b"the quick brown fox jumps over the lazy dog while hub reconciles the machine\n";
    let block: Vec<u8> = line.iter().copied().cycle().take(1 << 20).collect();
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    for _ in 0..size / block.len() {
        file.write_all(&block)?;
    }
    file.flush()?;
    Ok(())
}

/// A `hub worker` started directly, stopped (or killed) when dropped.
struct Worker {
    child: Child,
}

impl Worker {
    fn spawn(model_path: &Path, port: u16, dir: &Path) -> anyhow::Result<Worker> {
        let child = Command::new(HUB)
            .arg("worker")
            .args(["--name", "bench", "--port"])
            .arg(port.to_string())
            .arg("--model-path")
            .arg(model_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("worker.stderr"))?)
            .spawn()
            .context("cannot run hub worker")?;
        Ok(Worker { child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls `/health` every millisecond, as closely as a caller can see readiness.
    async fn wait_healthy(&mut self, http: &reqwest::Client, port: u16) -> anyhow::Result<()> {
        let url = format!("http://127.0.0.1:{port}/health");
        let started = Instant::now();
        loop {
            if let Ok(response) = http.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if let Some(exit) = self.child.try_wait()? {
                bail!("the worker exited with {exit} before it was healthy");
            }
            ensure!(
                started.elapsed() < Duration::from_secs(30),
                "the worker was not healthy within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn stop(&mut self) {
        stop_child(&mut self.child);
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon.

/// `hub serve --port 0` on a hub.yaml in a fresh temp dir. Dropping it stops it and anything it
/// left behind.
struct Daemon {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pid: u32,
    url: String,
    http: reqwest::Client,
}

impl Daemon {
    /// Writes `text` as hub.yaml and a small `models/<name>.txt` (and `-v2.txt`) for each of
    /// `models` models, then starts the daemon and waits for its address.
    fn start(text: &str, models: usize, args: &[&str]) -> anyhow::Result<Daemon> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("models"))?;
        for i in 0..models {
            let name = support::model_name(i);
            let weights = format!("{name} weights: the quick brown fox jumps over the lazy dog\n");
            std::fs::write(dir.path().join(format!("models/{name}.txt")), &weights)?;
            std::fs::write(dir.path().join(format!("models/{name}-v2.txt")), &weights)?;
        }
        std::fs::write(dir.path().join("hub.yaml"), text)?;
        let stderr = std::fs::File::create(dir.path().join("daemon.stderr"))?;
        let mut child = Command::new(HUB)
            .arg("serve")
            .arg("-f")
            .arg(dir.path().join("hub.yaml"))
            .args(["--port", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .context("cannot run hub serve")?;
        let pid = child.id();
        let stdout = child.stdout.take().context("no stdout")?;
        let mut daemon = Daemon {
            dir,
            child: Some(child),
            pid,
            url: String::new(),
            http: client(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).map_err(|_| {
            anyhow::anyhow!("hub serve printed no address; stderr:\n{}", daemon.stderr())
        })?;
        daemon.url = line
            .strip_prefix("hub: listening on ")
            .with_context(|| format!("unexpected first line {line:?}"))?
            .to_string();
        Ok(daemon)
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("hub.yaml")
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.stderr")).unwrap_or_default()
    }

    /// Saves hub.yaml as editors do: a temp file beside it, renamed over it.
    fn save(&self, text: &str) -> anyhow::Result<()> {
        save_file(&self.config(), text)
    }

    async fn status(&self) -> anyhow::Result<Value> {
        let response = self
            .http
            .get(format!("{}/hub/status", self.url))
            .send()
            .await?;
        Ok(response.json().await?)
    }

    /// Polls the status until `done` holds; returns it and when it was first seen.
    async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        every: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<(Value, OffsetDateTime)> {
        let started = Instant::now();
        loop {
            let status = self.status().await?;
            if done(&status) {
                return Ok((status, OffsetDateTime::now_utc()));
            }
            if started.elapsed() > timeout {
                bail!(
                    "timed out after {timeout:?} waiting for {what}: summary {}, generation {} (observed {}), last reconcile failures {}",
                    status["summary"],
                    status["generation"],
                    status["observed_generation"],
                    status["last_reconcile"]["failed"]
                );
            }
            tokio::time::sleep(every).await;
        }
    }

    async fn converged(&self, generation: u64, timeout: Duration) -> anyhow::Result<Value> {
        let what = format!("generation {generation} converged");
        Ok(self
            .wait_for(&what, timeout, POLL, |s| converged_at(s, generation))
            .await?
            .0)
    }

    /// Saves `text`, a new generation, and waits until it has converged with `running` workers.
    async fn timed_save(&self, text: &str, running: u64) -> anyhow::Result<Save> {
        let generation = self.status().await?["generation"].as_u64().unwrap_or(0) + 1;
        let written = OffsetDateTime::now_utc();
        self.save(text)?;
        let (status, seen) = self
            .wait_for(
                &format!("generation {generation} converged"),
                Duration::from_secs(60),
                POLL,
                |s| converged_at(s, generation) && s["counts"]["running"] == running,
            )
            .await?;
        let report = &status["last_reconcile"];
        let applied = time_at(&status["config"]["applied_at"])?;
        let started = report["started"].as_array().cloned().unwrap_or_default();
        let restarted = report["restarted"].as_array().cloned().unwrap_or_default();
        let touched: Vec<&str> = started
            .iter()
            .chain(restarted.iter())
            .filter_map(Value::as_str)
            .collect();
        let mut spawned = Vec::new();
        for model in status["models"].as_array().into_iter().flatten() {
            if touched.contains(&model["name"].as_str().unwrap_or_default()) {
                spawned.push(time_at(&model["worker"]["started_at"])?);
            }
        }
        let save = Save {
            written,
            applied,
            spawned,
            finished: time_at(&report["finished_at"])?,
            seen,
            status,
        };
        if std::env::var_os("HUB_BENCH_VERBOSE").is_some() {
            let mut spawned: Vec<f64> = save
                .spawned
                .iter()
                .map(|t| between(save.written, *t))
                .collect();
            spawned.sort_by(f64::total_cmp);
            eprintln!(
                "save: after the write, ms: applied {:.1}, spawned {spawned:?}, finished {:.1}, seen {:.1}",
                save.detect_and_validate(),
                save.total(),
                save.total_seen()
            );
        }
        Ok(save)
    }

    /// `POST /hub/shutdown` and wait for the daemon (and so its workers) to exit.
    async fn shutdown(mut self) -> anyhow::Result<()> {
        self.http
            .post(format!("{}/hub/shutdown", self.url))
            .header(hub::api::CLIENT_HEADER, "bench")
            .send()
            .await?;
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let started = Instant::now();
        while child.try_wait()?.is_none() {
            if started.elapsed() > Duration::from_secs(120) {
                self.child = Some(child);
                bail!("the daemon did not exit within 120 s of a shutdown");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child);
        }
        // A daemon killed half-way may leave workers: they run in the config's directory.
        for pid in processes_in(self.dir.path()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn converged_at(status: &Value, generation: u64) -> bool {
    status["summary"] == "converged"
        && status["generation"].as_u64() >= Some(generation)
        && status["observed_generation"] == status["generation"]
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a plain HTTP client always builds")
}

fn save_file(path: &Path, text: &str) -> anyhow::Result<()> {
    let temp = path.with_file_name(".hub.yaml.swp");
    std::fs::write(&temp, text)?;
    std::fs::rename(&temp, path)?;
    Ok(())
}

fn time_at(value: &Value) -> anyhow::Result<OffsetDateTime> {
    let text = value
        .as_str()
        .with_context(|| format!("expected a time, got {value}"))?;
    Ok(OffsetDateTime::parse(text, &Rfc3339)?)
}

fn between(from: OffsetDateTime, to: OffsetDateTime) -> f64 {
    (to - from).as_seconds_f64() * 1000.0
}

/// Each model's worker pid, for those that have one.
fn pids(status: &Value) -> BTreeMap<String, u32> {
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

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn installed(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| dir.join(program).is_file())
            || Path::new("/usr/sbin").join(program).is_file()
    })
}

/// SIGTERM, up to 30 s to exit, then SIGKILL; always reaped.
fn stop_child(child: &mut Child) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let started = Instant::now();
    while child.try_wait().ok().flatten().is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A process's user + system CPU time so far, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (_, rest) = stat.rsplit_once(')').context("malformed stat")?;
    // After the command: state is field 3, utime 14 and stime 15.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).context("no utime")?.parse::<u64>()?
        + fields.get(12).context("no stime")?.parse::<u64>()?;
    Ok(ticks as f64 / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A `kB` line of `/proc/PID/status`, such as `VmRSS`.
fn proc_status_kib(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .with_context(|| format!("no {key} for pid {pid}"))?;
    Ok(line.trim().trim_end_matches("kB").trim().parse()?)
}

/// Pids of live processes whose working directory is `dir`.
fn processes_in(dir: &Path) -> Vec<u32> {
    let Ok(dir) = dir.canonicalize() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let cwd = std::fs::read_link(e.path().join("cwd")).ok()?;
            (cwd == dir).then_some(pid)
        })
        .collect()
}
