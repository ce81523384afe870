//! The daemon under test: `hub serve --port 0` on a hub.yaml in a temp dir, read and saved as
//! an operator would.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use time::OffsetDateTime;

use crate::save::Save;
use crate::{HUB, between, client, processes_in, save_file, stop_child, support, time_at};

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

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("hub.yaml")
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.stderr")).unwrap_or_default()
    }

    /// Saves hub.yaml as editors do: a temp file beside it, renamed over it.
    pub fn save(&self, text: &str) -> anyhow::Result<()> {
        save_file(&self.config(), text)
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

pub fn converged_at(status: &Value, generation: u64) -> bool {
    status["summary"] == "converged"
        && status["generation"].as_u64() >= Some(generation)
        && status["observed_generation"] == status["generation"]
}
