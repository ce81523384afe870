//! Part 4: scale. 1,000 models with 200 workers: time to converge from cold (against one
//! worker's start, in alternating rounds), then idle RSS and CPU, and CPU per health probe.

use std::time::{Duration, Instant};

use crate::daemon::{Daemon, converged_at};
use crate::harness::free_port;
use crate::support::{Samples, millis, ms, row, verdict};
use crate::{config, cpu_seconds, every_fifth_running, pids, proc_status_kib, unchanged};

/// SPEC section 10's targets.
pub const RSS_TARGET_MB: f64 = 50.0;
pub const IDLE_CPU_TARGET_PERCENT: f64 = 1.0;
/// Issue 20: 200 workers from cold within this many times 200 x one worker's start divided by
/// the concurrency.
pub const COLD_TARGET: f64 = 2.0;
/// `hub serve`'s default `--max-concurrent`.
const MAX_CONCURRENT: f64 = 8.0;
const WORKERS: usize = 200;
/// The built-in engine's health interval: each ready worker is probed this often.
const PROBE_INTERVAL_S: f64 = 5.0;

/// Starts a daemon on `models` models of which `running` run, and waits until they do; returns
/// it with the startup reconcile's duration (spawn to healthy, the hub's own time included).
async fn cold(models: usize, running: usize) -> anyhow::Result<(Daemon, f64)> {
    // The startup reconcile's report may already be replaced by a later one (a resync, say)
    // when the status is read: then that daemon does not count, and a fresh one is started.
    for _ in 0..3 {
        let (hub, took) = cold_once(models, running).await?;
        match took {
            Some(took) => return Ok((hub, took)),
            None => hub.shutdown().await?,
        }
    }
    anyhow::bail!("no startup reconcile seen in 3 tries")
}

async fn cold_once(models: usize, running: usize) -> anyhow::Result<(Daemon, Option<f64>)> {
    let port = free_port()?;
    let state: fn(usize) -> &'static str = if running == 1 {
        |i| if i == 0 { "running" } else { "stopped" }
    } else {
        every_fifth_running
    };
    let text = config(port, models, state, unchanged);
    let hub = Daemon::start(&text, models, &[])?;
    let status = hub
        .wait_for(
            "workers running",
            Duration::from_secs(600),
            Duration::from_millis(50),
            move |s| converged_at(s, 1) && s["counts"]["running"] == running,
        )
        .await?
        .0;
    let report = &status["last_reconcile"];
    let took = report["duration_ms"]
        .as_f64()
        .filter(|_| report["trigger"] == "startup");
    Ok((hub, took))
}

pub async fn scale(idle_seconds: u64, rounds: u64) -> anyhow::Result<()> {
    const PART: &str = "4 scale";
    println!("scale: 1,000 models, {WORKERS} workers, then idle for {idle_seconds} s");
    // Alternating rounds: one worker from cold, then 200 (and the other way round).
    let rounds = rounds.max(1) as usize;
    let (mut ratios, mut colds, mut ones) = (Vec::new(), Vec::new(), Vec::new());
    let mut kept = None;
    for round in 0..rounds {
        let one_first = round % 2 == 0;
        let mut one = 0.0;
        if one_first {
            let (hub, took) = cold(1, 1).await?;
            hub.shutdown().await?;
            one = took;
        }
        let (hub, many) = cold(1_000, WORKERS).await?;
        // Where the time went: CPU of the daemon and of its workers since their start, against
        // the machine's cores (the expected time assumes 8 starts run truly in parallel).
        let status = hub.status().await?;
        let daemon_cpu = cpu_seconds(hub.pid)? * 1000.0;
        let workers_cpu: f64 = pids(&status)
            .values()
            .filter_map(|pid| cpu_seconds(*pid).ok())
            .sum::<f64>()
            * 1000.0;
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        println!(
            "  round {round}: CPU since start (in clock ticks): daemon {}, 200 workers {}, on {cores} cores",
            ms(daemon_cpu),
            ms(workers_cpu)
        );
        if round + 1 == rounds {
            kept = Some(hub);
        } else {
            hub.shutdown().await?;
        }
        if !one_first {
            let (hub, took) = cold(1, 1).await?;
            hub.shutdown().await?;
            one = took;
        }
        let expected = WORKERS as f64 * one / MAX_CONCURRENT;
        println!(
            "  round {round}: {WORKERS} workers from cold in {}, one worker in {} (expected {})",
            ms(many),
            ms(one),
            ms(expected)
        );
        ratios.push(many / expected);
        colds.push(many);
        ones.push(one);
    }
    let hub = kept.expect("at least one round");
    let (ratios, colds, ones) = (
        Samples::new(ratios),
        Samples::new(colds),
        Samples::new(ones),
    );

    // Let the start-up settle, then measure what an idle daemon costs.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cpu_before = cpu_seconds(hub.pid)?;
    let wall = Instant::now();
    tokio::time::sleep(Duration::from_secs(idle_seconds)).await;
    let cpu = cpu_seconds(hub.pid)? - cpu_before;
    let elapsed = wall.elapsed().as_secs_f64();
    let idle_cpu = cpu / elapsed * 100.0;
    // Every ready worker is probed once per interval; nothing else runs while idle.
    let probes = WORKERS as f64 * elapsed / PROBE_INTERVAL_S;
    let per_probe = cpu * 1000.0 / probes;
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
    println!(
        "  idle: {idle_cpu:.2}% of a core, {per_probe:.3} ms of CPU per health probe ({probes:.0} probes)"
    );

    row(
        PART,
        "1,000 models, 200 workers: time to converge from cold: median (min-max)",
        &format!(
            "{} ({}-{})",
            ms(colds.median()),
            ms(colds.min()),
            ms(colds.max())
        ),
        "-",
        "-",
    );
    row(
        PART,
        "one worker from cold (spawn to healthy): median (min-max)",
        &format!(
            "{} ({}-{})",
            ms(ones.median()),
            ms(ones.min()),
            ms(ones.max())
        ),
        "-",
        "-",
    );
    row(
        PART,
        "200 workers from cold over 200 x one worker / --max-concurrent 8: median (min-max)",
        &format!(
            "{:.2}x ({:.2}-{:.2}, {} rounds)",
            ratios.median(),
            ratios.min(),
            ratios.max(),
            ratios.len()
        ),
        &format!("< {COLD_TARGET}x"),
        verdict(ratios.median() < COLD_TARGET && ratios.len() >= 5),
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
        "daemon CPU per health probe, idle (200 workers every 5 s)",
        &format!("{per_probe:.3} ms"),
        "-",
        "-",
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
