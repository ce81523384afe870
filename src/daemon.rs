//! The daemon as a library call, as mini-redis's `server::run(listener, shutdown)`: the caller
//! reads hub.yaml, takes the lock and binds the listener (so it can print the address and refuse
//! a bad file before anything starts); `run` recovers the workers an earlier daemon left, starts
//! the reconcile loop, the file watcher and the API, and returns once every worker is stopped
//! (or left running, for `keep_workers`) after `shutdown` completes or `POST /hub/shutdown`.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::api::Access;
use crate::config::Desired;
use crate::reconcile::{self, Event};
use crate::supervisor::{self, Supervisor};
use crate::{recover, statefile};

/// Everything a daemon runs with besides its listener.
pub struct Config {
    /// hub.yaml, the path watched: its directory canonical, the file itself not resolved (it may
    /// be a symlink whose target changes).
    pub config_path: PathBuf,
    /// hub.yaml's text as read at start, and what it validated into.
    pub text: String,
    pub desired: Desired,
    /// The lock on `desired`'s `log_path`, held until `run` returns: one daemon per log_path.
    pub lock: statefile::Lock,
    /// The `hub` executable, for the built-in engine's `{hub}`.
    pub hub_exe: PathBuf,
    /// Who may call the API.
    pub access: Access,
    /// Leave the workers running when `shutdown` completes, for the next daemon to adopt.
    pub keep_workers: bool,
    /// How often to re-read hub.yaml and re-check everything without events.
    pub resync_every: Duration,
    /// At most this many models act at once (at least 1).
    pub max_concurrent: usize,
    /// The longest wait between retries of a failing model.
    pub max_backoff: Duration,
    /// How long a client may take to send a request's headers, or keep a connection idle.
    pub header_read_timeout: Duration,
}

/// Runs the daemon on `listener` until `shutdown` completes (then stops the workers unless
/// `keep_workers`) or an API call shuts it down, and returns when the loop has ended and the API
/// has answered what it was answering (at most 5 s more).
pub async fn run(
    listener: std::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Config {
        config_path,
        text,
        desired,
        lock: _lock,
        hub_exe,
        access,
        keep_workers,
        resync_every,
        max_concurrent,
        max_backoff,
        header_read_timeout,
    } = config;
    // The API thread's runtime takes the socket as it is: it must not block.
    listener
        .set_nonblocking(true)
        .context("cannot hand the listener to the API thread")?;
    let log_path = desired.settings.log_path.clone();
    let owner = supervisor::owner_id(&log_path);
    let (exits_tx, exits_rx) = tokio::sync::mpsc::unbounded_channel();
    let supervisor = Supervisor::new(exits_tx, &owner);
    let client = crate::engine::client();
    let recovered = recover::recover(&desired, &supervisor, &client, &log_path).await;
    for warning in &recovered.warnings {
        tracing::warn!("{warning}");
    }
    let options = reconcile::Options {
        config_path: config_path.clone(),
        hub_exe,
        resync_every,
        max_concurrent: max_concurrent.max(1),
        state_path: Some(statefile::path(&log_path)),
        owner,
        max_backoff,
    };
    let sha256 = crate::sha256_hex(text.as_bytes());
    let meter = Arc::new(crate::measure::Meter::new(client.clone()));
    let workers = Arc::new(reconcile::RealWorkers {
        supervisor,
        client,
        meter,
    });
    let (reconciler, events, handle) = reconcile::start(
        options,
        desired,
        text,
        workers,
        exits_rx,
        recovered.observed,
        recovered.warnings,
    );
    crate::watch::spawn(config_path, sha256, &handle)?;
    let shutdowns = handle.events.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = shutdowns.send(Event::Shutdown { keep_workers });
    });

    let app = crate::api::router(handle, access);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let server = crate::api::serve_on_own_thread(listener, app, header_read_timeout, async move {
        let _ = done_rx.await;
    })
    .context("cannot start the API thread")?;
    reconciler.run(events).await;
    let _ = done_tx.send(());
    // Connections finish the answer they are sending; a stuck one does not hold up the exit.
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    tracing::info!("hub stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Config, run};
    use std::time::Duration;

    /// The daemon runs on whatever listener it is handed (here `127.0.0.1:0`, bound by the test)
    /// and ends when its shutdown future completes: no signal, no process of its own.
    #[tokio::test]
    async fn serves_the_listener_it_is_given_until_shutdown_completes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.yaml");
        std::fs::write(&path, "log_path: logs\nmodels: []\n").unwrap();
        let (text, desired) = crate::config::load(&path).unwrap();
        std::fs::create_dir_all(&desired.settings.log_path).unwrap();
        let lock = crate::statefile::lock(&desired.settings.log_path).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hub/status", listener.local_addr().unwrap());
        let config = Config {
            config_path: path,
            text,
            desired,
            lock,
            hub_exe: "/nonexistent/hub".into(),
            access: crate::api::Access::new(None, "127.0.0.1", &[]).unwrap(),
            keep_workers: false,
            resync_every: Duration::from_secs(30),
            max_concurrent: 8,
            max_backoff: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let daemon = tokio::spawn(run(listener, config, async {
            let _ = stopped.await;
        }));

        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let status: serde_json::Value = http.get(&url).send().await.unwrap().json().await.unwrap();
        assert_eq!(status["generation"], 1, "{status:#}");

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), daemon)
            .await
            .expect("the daemon ends once its shutdown completes")
            .unwrap()
            .unwrap();
        assert!(
            http.get(&url).send().await.is_err(),
            "the API stopped listening"
        );
    }
}
