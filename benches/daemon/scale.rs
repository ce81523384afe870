//! Part 4: scale. 1,000 models with 200 workers: time to converge from cold, idle RSS and CPU.

use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::daemon::{Daemon, converged_at};
use crate::harness::free_port;
use crate::support::{Samples, millis, ms, row, verdict};
use crate::{
    between, config, cpu_seconds, every_fifth_running, pids, proc_status_kib, time_at, unchanged,
};

/// SPEC section 10's targets.
pub const RSS_TARGET_MB: f64 = 50.0;
pub const IDLE_CPU_TARGET_PERCENT: f64 = 1.0;

pub async fn scale(idle_seconds: u64) -> anyhow::Result<()> {
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
