//! How the daemon ends and begins again, as systemd and operators drive it: SIGTERM and SIGINT
//! stop every worker; `--keep-workers` (on `serve`, or on `hub shutdown`) leaves them for the
//! next daemon, which adopts the very same processes with their weights still loaded.

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::support::{QUICK_ENGINE, TempHub, is_alive, pids};

const MODELS: &str = "models:
  - {name: alpha, model_path: models/alpha.txt, engine: quick, state: loaded}
  - {name: beta, model_path: models/beta.txt, engine: quick, state: running}
";

fn yaml() -> String {
    format!("{QUICK_ENGINE}{MODELS}")
}

/// Nothing this hub started lives, and its state file names no process.
fn nothing_left(hub: &TempHub) {
    assert_eq!(hub.leftovers(), Vec::<u32>::new(), "processes left behind");
    let state = std::fs::read_to_string(hub.dir.path().join("logs/state.json")).unwrap();
    let state: Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["workers"], serde_json::json!([]));
}

#[tokio::test]
async fn sigterm_and_sigint_stop_every_worker() {
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let mut hub = TempHub::start(&yaml()).await;
        let status = hub.converged().await;
        assert_eq!(pids(&status).values().flatten().count(), 2);
        hub.stop_with(signal).await;
        nothing_left(&hub);
    }
}

/// The next daemon adopted exactly `before`'s workers: same pids, no restart, weights loaded.
fn adopted(before: &Value, after: &Value) {
    assert_eq!(pids(after), pids(before), "the same processes");
    for model in after["models"].as_array().unwrap() {
        assert_eq!(model["worker"]["restarts"], 0, "{model:#}");
    }
    assert_eq!(after["models"][0]["memory"]["state"], "loaded");
    assert_eq!(
        after["last_reconcile"]["started"],
        serde_json::json!([]),
        "{after:#}"
    );
}

#[tokio::test]
async fn serve_keep_workers_leaves_them_on_sigterm_for_the_next_daemon() {
    let mut hub = TempHub::start_with(&yaml(), &["--keep-workers"]).await;
    let before = hub.converged().await;
    hub.stop_with(Signal::SIGTERM).await;
    for pid in pids(&before).values().flatten() {
        assert!(is_alive(*pid as u32), "worker {pid} was stopped");
    }
    let mut hub = hub.restart().await;
    let after = hub.converged().await;
    adopted(&before, &after);
    // A plain shutdown through the API stops them, whatever `serve` was told.
    hub.shutdown().await;
    nothing_left(&hub);
}

#[tokio::test]
async fn shutdown_keep_workers_then_a_new_daemon_adopts_them() {
    let mut hub = TempHub::start(&yaml()).await;
    let before = hub.converged().await;
    let out = hub.cli(&["shutdown", "--keep-workers"]);
    assert!(out.status.success(), "{out:?}");
    hub.wait_exit().await;
    for pid in pids(&before).values().flatten() {
        assert!(is_alive(*pid as u32), "worker {pid} was stopped");
    }
    let hub = hub.restart().await;
    let after = hub.converged().await;
    adopted(&before, &after);
}
