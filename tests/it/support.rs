//! Test support: [`TempHub`] runs a real daemon in a temp dir; [`wait_until`] is the one way
//! tests wait for a condition. Every process a test starts is gone when its `TempHub` drops.
//! Starting the daemon, saves and the `/proc` reader are the harness the daemon benchmark shares
//! (`tests/support/harness.rs`).

use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "../support/harness.rs"]
mod harness;

pub use harness::{is_alive, proc_status_kib, processes_in};

/// The `hub` binary under test.
pub fn hub_bin() -> &'static str {
    harness::HUB
}

/// A daemon running `hub serve` on `127.0.0.1:0` over a hub.yaml in a fresh temp directory.
pub struct TempHub {
    pub dir: tempfile::TempDir,
    pub url: String,
    daemon: Option<Child>,
    http: reqwest::Client,
    starting_port: u16,
    /// Extra `hub serve` arguments, kept for restarts.
    serve_args: Vec<String>,
    /// Extra environment for the daemon, kept for restarts.
    serve_env: Vec<(String, String)>,
    /// The port the daemon listens on: 0 (any) until a restart asks for the same one.
    port: u16,
}

impl TempHub {
    /// Writes `models/<name>.txt` for every `model_path: models/<name>.txt` and `hub.yaml`
    /// (with `{log_path}` and `{starting_port}` filled in), then starts the daemon.
    pub async fn start(yaml: &str) -> TempHub {
        TempHub::start_with(yaml, &[]).await
    }

    /// [`TempHub::start`] with extra `hub serve` arguments.
    pub async fn start_with(yaml: &str, serve_args: &[&str]) -> TempHub {
        TempHub::start_with_env(yaml, serve_args, &[]).await
    }

    /// [`TempHub::start_with`] with extra environment for the daemon (`HUB_TOKEN`).
    pub async fn start_with_env(yaml: &str, serve_args: &[&str], env: &[(&str, &str)]) -> TempHub {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("models")).unwrap();
        for i in 0..8 {
            for name in ["alpha", "beta", "gamma", "delta"] {
                let text =
                    format!("{name} weights {i}: the quick brown fox jumps over the lazy dog\n");
                std::fs::write(
                    dir.path().join(format!("models/{name}.txt")),
                    text.repeat(4),
                )
                .unwrap();
            }
        }
        let hub = TempHub {
            dir,
            url: String::new(),
            daemon: None,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            starting_port: free_port(),
            serve_args: serve_args.iter().map(ToString::to_string).collect(),
            serve_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            port: 0,
        };
        hub.write_config(yaml);
        hub.spawn_daemon().await
    }

    async fn spawn_daemon(mut self) -> TempHub {
        let (child, url) = harness::serve_on(self.dir.path(), self.port, |command| {
            command
                .args(["--resync-every", "2s"])
                .args(&self.serve_args)
                .env("RUST_LOG", "hub=debug,hub::watch=trace")
                .envs(self.serve_env.iter().map(|(k, v)| (k, v)));
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
        self.daemon = Some(child);
        self.url = url;
        self
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("hub.yaml")
    }

    /// The text a test's YAML becomes: placeholders filled in.
    pub fn render(&self, yaml: &str) -> String {
        yaml.replace("{log_path}", "logs")
            .replace("{starting_port}", &self.starting_port.to_string())
    }

    /// Writes hub.yaml in place, as `echo > hub.yaml` does.
    pub fn write_config(&self, yaml: &str) {
        std::fs::write(self.config(), self.render(yaml)).unwrap();
    }

    /// Saves hub.yaml as editors do: write a temp file beside it, then rename it over the file.
    pub fn save_config(&self, yaml: &str) {
        harness::save_like_an_editor(&self.config(), &self.render(yaml)).unwrap();
    }

    pub fn stderr(&self) -> String {
        harness::daemon_stderr(self.dir.path())
    }

    pub async fn get(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        response.json().await.unwrap()
    }

    pub async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .header(hub::api::CLIENT_HEADER, "test")
            .body(body.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let code = response.status().as_u16();
        (code, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn status(&self) -> Value {
        self.get("/hub/status").await
    }

    /// The model's entry in `/hub/status`.
    pub async fn model(&self, name: &str) -> Value {
        let status = self.status().await;
        status["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no model {name} in {status:#}"))
    }

    /// Waits until `/hub/status` says converged at the current generation.
    pub async fn converged(&self) -> Value {
        wait_until("converged", || async {
            let status = self.status().await;
            (status["summary"] == "converged").then_some(status)
        })
        .await
    }

    /// Runs the `hub` CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(hub_bin())
            .args(args)
            .env("HUB_URL", &self.url)
            .env("NO_COLOR", "1")
            .current_dir(self.dir.path())
            .output()
            .expect("run hub")
    }

    /// [`TempHub::cli`] with extra environment (`HUB_TOKEN`); `HUB_TOKEN` is otherwise unset.
    pub fn cli_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(hub_bin())
            .args(args)
            .env("HUB_URL", &self.url)
            .env("NO_COLOR", "1")
            .env_remove("HUB_TOKEN")
            .envs(env.iter().copied())
            .current_dir(self.dir.path())
            .output()
            .expect("run hub")
    }

    /// A `hub` command against this daemon, to spawn (for commands that run until stopped).
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(hub_bin());
        command
            .args(args)
            .env("HUB_URL", &self.url)
            .env("NO_COLOR", "1")
            .current_dir(self.dir.path());
        command
    }

    /// Stops the daemon through the API and waits for it to exit.
    pub async fn shutdown(&mut self) {
        let (code, _) = self.post("/hub/shutdown", "").await;
        assert_eq!(code, 202);
        self.exited("").await;
    }

    /// Kills the daemon with SIGKILL, leaving its workers running, as a crash would.
    pub fn kill_daemon(&mut self) {
        let mut child = self.daemon.take().expect("a running daemon");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Starts a new daemon over the same directory (after [`TempHub::kill_daemon`] or
    /// [`TempHub::shutdown`]).
    pub async fn restart(mut self) -> TempHub {
        assert!(self.daemon.is_none(), "the old daemon still runs");
        self.url.clear();
        self.spawn_daemon().await
    }

    /// [`TempHub::restart`] on the port the old daemon listened on, so that a client holding its
    /// URL (a browser's page) finds the new one.
    pub async fn restart_on_same_port(mut self) -> TempHub {
        self.port = self
            .url
            .rsplit(':')
            .next()
            .and_then(|port| port.trim_end_matches('/').parse().ok())
            .expect("the old daemon's URL has a port");
        self.restart().await
    }

    /// The running daemon's pid.
    pub fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().expect("a running daemon").id()
    }

    /// One counter from `/metrics` (0 when absent).
    pub async fn counter(&self, name: &str) -> u64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Waits until the daemon has re-read hub.yaml on its periodic resync (every 2 s in tests),
    /// and handed what it read to the loop: whatever a lost file event hid has then been seen.
    pub async fn resynced(&self) {
        let before = self.counter("hub_resyncs_total").await;
        wait_until("a resync", || async {
            (self.counter("hub_resyncs_total").await > before).then_some(())
        })
        .await;
    }

    /// Waits for the daemon to exit on its own (after `hub shutdown`, say).
    pub async fn wait_exit(&mut self) {
        self.exited("").await;
    }

    /// Stops the daemon with `signal` (SIGTERM, SIGINT: what systemd and Ctrl-C send) and waits
    /// for it to exit.
    pub async fn stop_with(&mut self, signal: nix::sys::signal::Signal) {
        let pid = self.daemon_pid();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
        self.exited(&format!(" on {signal}")).await;
    }

    /// Waits for the daemon to exit. One that does not stays in `self`, so that the drop stops
    /// it and whatever it started.
    async fn exited(&mut self, after: &str) {
        let child = self.daemon.as_mut().expect("a running daemon");
        if let Err(e) = harness::exited(child, TIMEOUT).await {
            panic!("daemon did not exit{after}: {e:#}");
        }
        self.daemon = None;
    }

    /// Processes whose working directory is this hub's directory: its workers.
    pub fn workers(&self) -> Vec<u32> {
        processes_in(self.dir.path())
    }
}

impl TempHub {
    /// Everything this hub started that still lives: processes carrying its owner mark (found by
    /// the tests' own `/proc` reader, not the daemon's) or working in its directory.
    pub fn leftovers(&self) -> Vec<u32> {
        harness::leftovers(self.dir.path(), &self.dir.path().join("logs"))
    }
}

impl Drop for TempHub {
    /// Every test ends with a graceful shutdown (SIGTERM, as systemd stops a service), and fails
    /// if anything it started is left or the state file still names a process. Whatever is left
    /// is killed, never leaked, whether the test passed or not.
    fn drop(&mut self) {
        let stuck = self
            .daemon
            .take()
            .is_some_and(|mut child| !harness::stop(&mut child));
        let left = self.leftovers();
        harness::kill_all(&left);
        if std::thread::panicking() {
            return;
        }
        assert!(
            !stuck,
            "the daemon did not exit within {:?} of SIGTERM",
            harness::PATIENCE
        );
        assert!(left.is_empty(), "processes left behind: {left:?}");
        let state = self.dir.path().join("logs/state.json");
        if let Ok(text) = std::fs::read_to_string(&state) {
            let state: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                state["workers"],
                serde_json::json!([]),
                "the state file names a process after shutdown"
            );
        }
    }
}

/// A port that was free a moment ago, used as `model_starting_port` so concurrent tests'
/// workers start in different places.
pub fn free_port() -> u16 {
    harness::free_port().expect("a loopback port to bind")
}

/// The built-in worker as a named engine with short probes and timeouts, so tests of failures
/// are quick: prefix a test's `models:` with it.
pub const QUICK_ENGINE: &str = r#"
log_path: {log_path}
model_starting_port: {starting_port}
engines:
  quick:
    command: ["{hub}", worker, --name, "{name}", --model-path, "{model_path}", --host, "{host}", --port, "{port}"]
    health: {interval: 100ms, start_timeout: 2s}
    stop_timeout: 500ms
    load: {path: /load}
    unload: {path: /unload}
"#;

/// How long [`wait_until`] waits: generous, because CI machines are shared and slow.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Polls `check` until it returns `Some`, or panics after [`TIMEOUT`] naming what it waited for.
pub async fn wait_until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < TIMEOUT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The pids of the named models, from a status snapshot.
pub fn pids(status: &Value) -> std::collections::BTreeMap<String, Option<u64>> {
    status["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["worker"]["pid"].as_u64(),
            )
        })
        .collect()
}

pub fn names(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

/// Lowercase hex SHA-256 of a text, as `config.sha256` shows it.
pub fn sha256(text: &str) -> String {
    hub::sha256_hex(text.as_bytes())
}
