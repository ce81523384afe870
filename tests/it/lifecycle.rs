//! How the daemon ends and begins again, as systemd and operators drive it: SIGTERM and SIGINT
//! stop every worker; `--keep-workers` (on `serve`, or on `hub shutdown`) leaves them for the
//! next daemon, which adopts the very same processes with their weights still loaded; the
//! systemd unit in `manifests/systemd/` restarts hub that way.

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

/// The settings of `manifests/systemd/hub.service` that its restart path rests on.
fn unit_settings() -> Vec<(String, String)> {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/manifests/systemd/hub.service"
    ))
    .unwrap();
    unit.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// What `manifests/systemd/hub.service` does, played with a real daemon: `hub shutdown
/// --keep-workers` ends the daemon and leaves its workers (KillMode=process: systemd signals
/// only the daemon), systemd starts `hub serve` again (Restart=always, on a clean exit too), and
/// the new daemon adopts the very same workers, reloading nothing. Then `systemctl stop hub`:
/// SIGTERM to the daemon alone, which stops every worker itself.
#[tokio::test]
async fn the_systemd_units_restart_keeps_workers_and_its_stop_stops_them() {
    let settings = unit_settings();
    let value = |key: &str| {
        settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(value("KillMode"), Some("process"));
    assert_eq!(value("Restart"), Some("always"));
    assert_eq!(
        value("KillSignal"),
        None,
        "systemctl stop must send SIGTERM"
    );
    let exec = value("ExecStart").unwrap();
    assert!(
        exec.contains(" serve ") && !exec.contains("--keep-workers"),
        "{exec}: on SIGTERM the daemon must stop its workers"
    );

    let mut hub = TempHub::start(&yaml()).await;
    let before = hub.converged().await;
    let out = hub.cli(&["shutdown", "--keep-workers"]);
    assert!(out.status.success(), "{out:?}");
    hub.wait_exit().await;
    for pid in pids(&before).values().flatten() {
        assert!(is_alive(*pid as u32), "worker {pid} was stopped");
    }
    let mut hub = hub.restart().await;
    let after = hub.converged().await;
    adopted(&before, &after);
    hub.stop_with(Signal::SIGTERM).await;
    nothing_left(&hub);
}

/// Under systemd stderr is the journal, which stamps every line itself: hub then writes neither
/// timestamps nor colour. `JOURNAL_STREAM` names the journal's stream by device and inode; here
/// it names the file stderr goes to, as systemd's does. Off the journal lines keep their time.
#[tokio::test]
async fn in_the_journal_log_lines_carry_no_timestamp() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::MetadataExt;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hub.yaml");
    std::fs::write(
        &config,
        "log_path: logs\nmodels:\n  - {name: alpha, model_path: alpha.txt}\n",
    )
    .unwrap();
    let stderr_path = dir.path().join("stderr");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let meta = stderr.metadata().unwrap();
    let mut child = std::process::Command::new(crate::support::hub_bin())
        .args(["serve", "--port", "0", "-f"])
        .arg(&config)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let url = first
        .trim()
        .strip_prefix("hub: listening on ")
        .unwrap_or_else(|| panic!("{first:?}"))
        .to_string();
    // Up and converged, so its SIGTERM handler is in place.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    crate::support::wait_until("converged", || async {
        let status: Value = http
            .get(format!("{url}/hub/status"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (status["summary"] == "converged").then_some(())
    })
    .await;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success());
    let journal = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(journal.contains("hub listening on"), "{journal}");
    for line in journal.lines() {
        assert!(!line.starts_with(|c: char| c.is_ascii_digit()), "{line:?}");
        assert!(!line.contains('\x1b'), "{line:?}");
    }
    // The same daemon's own log file, like any stderr that is not the journal, keeps the time.
    let file = std::fs::read_to_string(dir.path().join("logs/hub.log")).unwrap();
    assert!(file.starts_with("20"), "{file}");
}

/// Workers run in the unit's sandbox and must still open `/dev/nvidia*`, which also appear after
/// hub starts (`/dev/nvidia-uvm` on first CUDA use). Any `DeviceAllow=`, or `ProtectClock=yes`
/// (which implies one), turns systemd's device policy into an allow-list that shuts them out.
#[test]
fn the_systemd_unit_leaves_gpu_devices_reachable() {
    for (key, value) in unit_settings() {
        let refused = match key.as_str() {
            "DeviceAllow" | "DevicePolicy" => true,
            "PrivateDevices" | "ProtectClock" => value == "yes" || value == "true",
            _ => false,
        };
        assert!(
            !refused,
            "hub.service: {key}={value} hides the GPUs from workers"
        );
    }
}
