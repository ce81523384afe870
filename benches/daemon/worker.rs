//! Part 5: the built-in worker on its own: spawn to healthy, and loading a 100 MB file.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::harness::{self, HUB, free_port};
use crate::support::{Samples, millis, ms, row};
use crate::{client, proc_status_kib};

pub async fn builtin_worker(runs: u64) -> anyhow::Result<()> {
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
pub fn write_big_file(path: &Path, size: usize) -> anyhow::Result<()> {
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
pub struct Worker {
    child: Child,
}

impl Worker {
    pub fn spawn(model_path: &Path, port: u16, dir: &Path) -> anyhow::Result<Worker> {
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

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls `/health` every millisecond, as closely as a caller can see readiness.
    pub async fn wait_healthy(&mut self, http: &reqwest::Client, port: u16) -> anyhow::Result<()> {
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

    pub fn stop(&mut self) {
        harness::stop(&mut self.child);
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        harness::stop(&mut self.child);
    }
}
