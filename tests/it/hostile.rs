//! What a careless operator and an attacker found (issue 11), each against a real daemon: secrets
//! kept from workers, one daemon per log_path, saves applied only once written, every stop path
//! running `stop_command`, failures that back off, hung and stuck workers dealt with.

use std::io::Write;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::support::{QUICK_ENGINE, TempHub, hub_bin, is_alive, pids, sha256, wait_until};

/// alpha and beta run on the quick engine.
const BOTH: &str = "models:
  - {name: alpha, model_path: models/alpha.txt, engine: quick, state: running}
  - {name: beta, model_path: models/beta.txt, engine: quick, state: running}
";

async fn start(models: &str) -> TempHub {
    TempHub::start(&format!("{QUICK_ENGINE}{models}")).await
}

/// The NUL-separated environment of a process.
fn environ(pid: u64) -> Vec<String> {
    let bytes = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    bytes
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

#[tokio::test]
async fn workers_get_a_clean_environment_and_log_apart_from_the_daemon() {
    let token = "a-long-enough-admin-token-0123456789";
    let yaml = format!(
        "{QUICK_ENGINE}models:
  - {{name: hub, model_path: models/alpha.txt, engine: quick, state: running, env: {{FROM_YAML: yes}}}}
"
    );
    let hub = TempHub::start_with_env(
        &yaml,
        &[],
        &[("HUB_TOKEN", token), ("SOME_DAEMON_SECRET", "hunter2")],
    )
    .await;
    let status = hub.converged().await;
    let pid = pids(&status)["hub"].unwrap();
    let env = environ(pid);
    assert!(env.iter().any(|v| v == "FROM_YAML=yes"), "{env:?}");
    assert!(env.iter().any(|v| v.starts_with("HUB_OWNER=")), "{env:?}");
    assert!(env.iter().any(|v| v.starts_with("PATH=")), "{env:?}");
    for secret in ["HUB_TOKEN=", "SOME_DAEMON_SECRET="] {
        assert!(
            !env.iter().any(|v| v.starts_with(secret)),
            "{secret} reached the worker: {env:?}"
        );
    }
    // A model named `hub` logs under workers/, never into the daemon's own hub.log.
    let logs = hub.dir.path().join("logs");
    let stdout = std::fs::read_link(format!("/proc/{pid}/fd/1")).unwrap();
    assert_eq!(stdout, logs.join("workers/hub.log").canonicalize().unwrap());
    let daemon_log = std::fs::read_to_string(logs.join("hub.log")).unwrap();
    assert!(daemon_log.contains("hub listening on"), "{daemon_log}");
    assert_eq!(
        hub.model("hub").await["worker"]["log_file"],
        logs.join("workers/hub.log").display().to_string()
    );
}

#[tokio::test]
async fn a_second_daemon_on_the_same_log_path_fails_at_once_naming_the_first() {
    let hub = start(BOTH).await;
    let before = hub.converged().await;
    let second = std::process::Command::new(hub_bin())
        .args(["serve", "-f"])
        .arg(hub.config())
        .args(["--port", "0"])
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    let holder = format!("hub (pid {}) already runs with log_path", hub.daemon_pid());
    assert!(stderr.contains(&holder), "{stderr}");
    assert_eq!(
        pids(&hub.status().await),
        pids(&before),
        "the first daemon's workers were touched"
    );
}

/// The quick engine, with a stop_command that leaves a marker file per stop.
fn boxed(hub_dir: &std::path::Path) -> String {
    let marker = hub_dir.join("stopped-{name}");
    format!(
        "{QUICK_ENGINE}  boxed:
    command: [\"{{hub}}\", worker, --name, \"{{name}}\", --model-path, \"{{model_path}}\", --host, \"{{host}}\", --port, \"{{port}}\"]
    health: {{interval: 100ms, start_timeout: 2s}}
    stop_timeout: 500ms
    stop_command: [touch, \"{}\"]
models:
  - {{name: alpha, model_path: models/alpha.txt, engine: boxed, state: running}}
",
        marker.display()
    )
}

#[tokio::test]
async fn shutdown_sigterm_and_recovery_all_run_the_stop_command() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("stopped-alpha");
    let mut hub = TempHub::start(&boxed(dir.path())).await;
    hub.converged().await;
    hub.shutdown().await;
    assert!(marker.exists(), "hub shutdown did not run stop_command");

    std::fs::remove_file(&marker).unwrap();
    let mut hub = hub.restart().await;
    hub.converged().await;
    hub.stop_with(Signal::SIGTERM).await;
    assert!(marker.exists(), "SIGTERM did not run stop_command");

    // A daemon that died leaves its worker; the next one, told the model is gone, stops it the
    // engine's way from what the state file recorded.
    std::fs::remove_file(&marker).unwrap();
    let mut hub = hub.restart().await;
    let pid = pids(&hub.converged().await)["alpha"].unwrap();
    hub.kill_daemon();
    hub.write_config(&boxed(dir.path()).replace("state: running", "state: stopped"));
    let hub = hub.restart().await;
    hub.converged().await;
    assert!(!is_alive(pid as u32));
    assert!(marker.exists(), "recovery did not run stop_command");
}

#[tokio::test]
async fn a_save_written_in_two_chunks_is_read_once_complete() {
    let hub = start(BOTH).await;
    let before = hub.converged().await;
    // The first chunk alone is valid YAML without beta; the whole is the same file as before.
    let text = hub.render(&format!("{QUICK_ENGINE}{BOTH}"));
    let split = text.find("  - {name: beta").unwrap();
    let mut file = std::fs::File::create(hub.config()).unwrap();
    file.write_all(&text.as_bytes()[..split]).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    file.write_all(&text.as_bytes()[split..]).unwrap();
    drop(file);
    hub.resynced().await;
    let status = hub.status().await;
    assert_eq!(status["generation"], 1, "{status:#}\n{}", hub.stderr());
    assert_eq!(pids(&status), pids(&before), "a worker was restarted");
    assert_eq!(hub.counter("hub_config_applied_total").await, 0);
    assert_eq!(hub.counter("hub_config_rejected_total").await, 0);
}

#[tokio::test]
async fn a_slow_writer_is_applied_once_when_it_is_done() {
    let hub = start(BOTH).await;
    let before = hub.converged().await;
    let after = format!("{QUICK_ENGINE}{BOTH}").replace(
        "beta.txt, engine: quick, state: running",
        "beta.txt, engine: quick, state: stopped",
    );
    let text = hub.render(&after);
    let mut file = std::fs::File::create(hub.config()).unwrap();
    for chunk in text.as_bytes().chunks(text.len().div_ceil(10)) {
        file.write_all(chunk).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(file);
    let expected = sha256(&text);
    let status = wait_until("the slow save applied", || async {
        let status = hub.status().await;
        (status["config"]["sha256"] == expected.as_str() && status["summary"] == "converged")
            .then_some(status)
    })
    .await;
    assert_eq!(status["generation"], 2);
    assert_eq!(pids(&status)["alpha"], pids(&before)["alpha"]);
    assert_eq!(hub.counter("hub_config_applied_total").await, 1);
    assert_eq!(hub.counter("hub_config_rejected_total").await, 0);
}

#[tokio::test]
async fn touching_the_file_after_an_apply_puts_the_file_back_in_force() {
    let file = format!("{QUICK_ENGINE}{BOTH}").replace(
        "beta.txt, engine: quick, state: running",
        "beta.txt, engine: quick, state: stopped",
    );
    let hub = TempHub::start(&file).await;
    hub.converged().await;
    let applied = hub.dir.path().join("applied.yaml");
    std::fs::write(&applied, hub.render(&format!("{QUICK_ENGINE}{BOTH}"))).unwrap();
    let out = hub.cli(&["apply", "-f", applied.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("beta running from the apply", || async {
        let beta = hub.model("beta").await;
        (beta["worker"]["phase"] == "ready").then_some(())
    })
    .await;
    // A resync alone never undoes the apply.
    hub.resynced().await;
    assert_eq!(hub.model("beta").await["worker"]["phase"], "ready");

    let touched = std::process::Command::new("touch")
        .arg(hub.config())
        .status()
        .unwrap();
    assert!(touched.success());
    let expected = sha256(&hub.render(&file));
    let status = wait_until("the file back in force", || async {
        let status = hub.status().await;
        (status["config"]["sha256"] == expected.as_str() && status["summary"] == "converged")
            .then_some(status)
    })
    .await;
    assert_eq!(status["config"]["source"], "file");
    assert_eq!(hub.model("beta").await["worker"]["phase"], "stopped");
}

#[tokio::test]
async fn fixing_the_file_clears_the_rejection_and_the_restart_warning() {
    let file = format!("{QUICK_ENGINE}{BOTH}");
    let hub = TempHub::start(&file).await;
    let before = hub.converged().await;
    hub.save_config(&format!("{file}  - {{name: broken"));
    wait_until("the broken edit rejected", || async {
        (!hub.status().await["config"]["rejected"].is_null()).then_some(())
    })
    .await;
    hub.save_config(&format!("port: 8123\n{file}"));
    wait_until("the port warning", || async {
        let status = hub.status().await;
        (status["config"]["rejected"].is_null()
            && status["warnings"].as_array().unwrap().len() == 1)
            .then_some(())
    })
    .await;
    hub.save_config(&file);
    let status = wait_until("the file back as it was", || async {
        let status = hub.status().await;
        (status["config"]["sha256"] == before["config"]["sha256"]).then_some(status)
    })
    .await;
    assert!(status["config"]["rejected"].is_null(), "{status:#}");
    assert_eq!(status["warnings"], Value::Array(vec![]), "{status:#}");
    assert_eq!(pids(&status), pids(&before));
}

#[tokio::test]
async fn a_fixed_port_held_by_a_live_auto_assigned_worker_is_rejected_with_its_line() {
    let hub = start(BOTH).await;
    let before = hub.converged().await;
    let alpha_port = hub.model("alpha").await["worker"]["port"].as_u64().unwrap();
    // beta asks for alpha's port.
    let yaml = format!(
        "{QUICK_ENGINE}models:
  - {{name: alpha, model_path: models/alpha.txt, engine: quick, state: running}}
  - {{name: beta, model_path: models/beta.txt, engine: quick, state: running,
     port: {alpha_port}}}
"
    );
    hub.save_config(&yaml);
    let line = hub
        .render(&yaml)
        .lines()
        .position(|l| l.contains(&format!("port: {alpha_port}}}")))
        .unwrap()
        + 1;
    let rejected = wait_until("the port rejected", || async {
        let rejected = hub.status().await["config"]["rejected"].clone();
        (!rejected.is_null()).then_some(rejected)
    })
    .await;
    let error = &rejected["errors"][0];
    assert_eq!(error["path"], "models[1].port", "{rejected:#}");
    assert_eq!(error["line"], line, "{rejected:#}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("held by model \"alpha\""),
        "{rejected:#}"
    );
    let status = hub.status().await;
    assert_eq!(status["generation"], 1);
    assert_eq!(pids(&status), pids(&before));
}

#[tokio::test]
async fn a_stop_cancels_a_load_stuck_reading_a_fifo() {
    let hub = start(
        "models:
  - {name: alpha, model_path: models/stuck, engine: quick, state: loaded}
",
    )
    .await;
    let fifo = hub.dir.path().join("models/stuck");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let pid = wait_until("alpha loading from the fifo", || async {
        let alpha = hub.model("alpha").await;
        (alpha["memory"]["state"] == "loading").then(|| alpha["worker"]["pid"].as_u64())
    })
    .await
    .unwrap();
    let out = hub.cli(&["stop-model", "alpha"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let asked = std::time::Instant::now();
    wait_until("alpha stopped", || async {
        (hub.model("alpha").await["worker"]["phase"] == "stopped").then_some(())
    })
    .await;
    // stop_timeout is 500 ms: the stop did not wait for the load.
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
    assert!(!is_alive(pid as u32));
}

#[tokio::test]
async fn a_hung_worker_is_stopped_and_comes_back_on_its_port() {
    let hub = start(
        "models:
  - {name: alpha, model_path: models/alpha.txt, engine: quick, state: running}
",
    )
    .await;
    let alpha = hub.converged().await["models"][0].clone();
    let (pid, port) = (
        alpha["worker"]["pid"].as_u64().unwrap(),
        alpha["worker"]["port"].clone(),
    );
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
    let alpha = wait_until("alpha back with a new process", || async {
        let alpha = hub.model("alpha").await;
        (alpha["worker"]["phase"] == "ready" && alpha["worker"]["pid"] != pid).then_some(alpha)
    })
    .await;
    assert_eq!(alpha["worker"]["port"], port, "{alpha:#}");
    assert!(!is_alive(pid as u32), "the hung process was left behind");
}

#[tokio::test]
async fn a_model_file_that_never_ends_fails_its_load_and_backs_off() {
    let hub = start(
        "models:
  - {name: alpha, model_path: /dev/zero, engine: quick, state: loaded}
",
    )
    .await;
    let alpha = wait_until("the load failed", || async {
        let alpha = hub.model("alpha").await;
        alpha["error"].is_string().then_some(alpha)
    })
    .await;
    assert!(
        alpha["error"]
            .as_str()
            .unwrap()
            .contains("not a regular file"),
        "{alpha:#}"
    );
    assert!(alpha["next_retry_at"].is_string());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let failed = hub
        .counter("hub_actions_total{action=\"load\",result=\"failed\"}")
        .await;
    // 0.5 s doubling: a handful in 3 s, where a hot loop made thousands.
    assert!((1..=6).contains(&failed), "{failed} failed loads");
    let status = hub.status().await;
    assert_eq!(status["models"][0]["worker"]["phase"], "ready");
    assert!(status["last_reconcile"]["failed"].as_array().unwrap().len() <= 1);
}

#[tokio::test]
async fn a_state_file_that_cannot_be_written_shows_in_the_warnings_until_it_can() {
    let file = format!("{QUICK_ENGINE}{BOTH}");
    let hub = TempHub::start(&file.replace(
        "beta.txt, engine: quick, state: running",
        "beta.txt, engine: quick, state: stopped",
    ))
    .await;
    hub.converged().await;
    let state = hub.dir.path().join("logs/state.json");
    std::fs::remove_file(&state).unwrap();
    std::fs::create_dir_all(state.join("blocker")).unwrap();
    hub.save_config(&file);
    let warnings = wait_until("the warning", || async {
        let warnings = hub.status().await["warnings"].clone();
        (warnings.as_array().unwrap().len() == 1).then_some(warnings)
    })
    .await;
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .starts_with("cannot write the state file"),
        "{warnings:#}"
    );
    std::fs::remove_dir_all(&state).unwrap();
    hub.save_config(&format!("{file}# touched\n"));
    wait_until("the warning gone", || async {
        let status = hub.status().await;
        (status["generation"] == 3 && status["warnings"].as_array().unwrap().is_empty())
            .then_some(())
    })
    .await;
    assert!(state.is_file());
}

#[tokio::test]
async fn a_file_with_thousands_of_problems_shows_the_first_hundred() {
    let file = format!("{QUICK_ENGINE}{BOTH}");
    let hub = TempHub::start(&file).await;
    hub.converged().await;
    let mut broken = format!("{QUICK_ENGINE}models:\n");
    for i in 0..2000 {
        broken.push_str(&format!("  - {{name: BAD{i}, model_path: x}}\n"));
    }
    hub.save_config(&broken);
    let errors = wait_until("the edit rejected", || async {
        let rejected = hub.status().await["config"]["rejected"].clone();
        (!rejected.is_null()).then(|| rejected["errors"].as_array().unwrap().clone())
    })
    .await;
    assert_eq!(errors.len(), 101);
    assert_eq!(
        errors[100]["message"],
        "and 1900 more problems: `hub validate` lists them all"
    );
}
