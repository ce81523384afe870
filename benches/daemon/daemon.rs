//! The daemon under test: `hub serve --port 0` on a hub.yaml in a temp dir, read and saved as
//! an operator would.

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::Value;
use time::OffsetDateTime;

use crate::save::Save;
use crate::{between, client, harness, support, time_at};

/// How often a waiting loop reads `/hub/status` (100 models).
pub const POLL: Duration = Duration::from_millis(5);

/// `hub serve --port 0` on a hub.yaml in a fresh temp dir. Dropping it stops it and anything it
/// left behind.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub pid: u32,
    pub url: String,
    pub http: reqwest::Client,
}

impl Daemon {
    /// Writes `text` as hub.yaml and a small `models/<name>.txt` (and `-v2.txt`) for each of
    /// `models` models, then starts the daemon and waits for its address.
    pub fn start(text: &str, models: usize, args: &[&str]) -> anyhow::Result<Daemon> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("models"))?;
        for i in 0..models {
            let name = support::model_name(i);
            let weights = format!("{name} weights: the quick brown fox jumps over the lazy dog\n");
            std::fs::write(dir.path().join(format!("models/{name}.txt")), &weights)?;
            std::fs::write(dir.path().join(format!("models/{name}-v2.txt")), &weights)?;
        }
        std::fs::write(dir.path().join("hub.yaml"), text)?;
        let (child, url) = harness::serve(dir.path(), |command| {
            command.args(args);
        })?;
        Ok(Daemon {
            dir,
            pid: child.id(),
            child: Some(child),
            url,
            http: client(),
        })
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("hub.yaml")
    }

    /// Saves hub.yaml as editors do: a temp file beside it, renamed over it.
    pub fn save(&self, text: &str) -> anyhow::Result<()> {
        Ok(harness::save_like_an_editor(&self.config(), text)?)
    }

    pub async fn status(&self) -> anyhow::Result<Value> {
        let response = self
            .http
            .get(format!("{}/hub/status", self.url))
            .send()
            .await?;
        Ok(response.json().await?)
    }

    /// Polls the status until `done` holds; returns it and when it was first seen.
    pub async fn wait_for(
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

    pub async fn converged(&self, generation: u64, timeout: Duration) -> anyhow::Result<Value> {
        let what = format!("generation {generation} converged");
        Ok(self
            .wait_for(&what, timeout, POLL, |s| converged_at(s, generation))
            .await?
            .0)
    }

    /// Saves `text`, a new generation, and waits until it has converged with `running` workers.
    pub async fn timed_save(&self, text: &str, running: u64) -> anyhow::Result<Save> {
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
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.http
            .post(format!("{}/hub/shutdown", self.url))
            .header(hub::api::CLIENT_HEADER, "bench")
            .send()
            .await?;
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Err(error) = harness::exited(&mut child, Duration::from_secs(120)).await {
            self.child = Some(child);
            bail!("the daemon {error:#} of a shutdown");
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            harness::stop(&mut child);
        }
        // A daemon killed half-way may leave workers: they carry its owner mark and run in the
        // config's directory.
        let dir = self.dir.path();
        harness::kill_all(&harness::leftovers(dir, &dir.join("logs")));
    }
}

pub fn converged_at(status: &Value, generation: u64) -> bool {
    status["summary"] == "converged"
        && status["generation"].as_u64() >= Some(generation)
        && status["observed_generation"] == status["generation"]
}
