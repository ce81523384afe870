//! The CLI against a running daemon, pinned by golden transcripts (through `golden::check`):
//! diff, apply, status, errors, watch, logs, and the detached daemon of `hub start`/`hub stop`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use crate::golden::{check, normalize};
use crate::support::{TempHub, free_port, hub_bin, is_alive, processes_in, wait_until};

const HUB: &str = "
log_path: {log_path}
model_starting_port: {starting_port}
groups:
  - {name: tier_one, max_loaded: 1}
models:
  - {name: alpha, model_path: models/alpha.txt, state: loaded, group: tier_one}
  - {name: beta, model_path: models/beta.txt, state: running, group: tier_one}
  - {name: gamma, model_path: models/gamma.txt, state: stopped}
";

/// A command's outcome as a transcript: the command, its exit code, stdout and stderr.
fn transcript(args: &[&str], out: &Output, dir: &Path) -> String {
    let text = format!(
        "$ hub {}\nexit {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        out.status
            .code()
            .map_or("signal".to_string(), |c| c.to_string()),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    normalize(&text, dir)
}

/// Runs the CLI against the hub and returns its normalized transcript.
fn run(hub: &TempHub, args: &[&str]) -> String {
    transcript(args, &hub.cli(args), hub.dir.path())
}

/// A process whose output is collected as it comes; killed when dropped.
pub struct Spawned {
    pub child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Spawned {
    pub fn new(mut command: Command) -> Spawned {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hub");
        let collect = |pipe: Box<dyn std::io::Read + Send>| {
            let text = Arc::new(Mutex::new(String::new()));
            let sink = text.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut sink = sink.lock().unwrap();
                    sink.push_str(&line);
                    sink.push('\n');
                }
            });
            text
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        Spawned {
            child,
            stdout,
            stderr,
        }
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for the process to exit by itself.
    pub async fn exited(&mut self) -> std::process::ExitStatus {
        wait_until("the command exits", || {
            let exited = self.child.try_wait().unwrap();
            async move { exited }
        })
        .await
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn diff_and_apply_print_what_they_do() {
    let hub = TempHub::start(HUB).await;
    hub.converged().await;
    let dir = hub.dir.path();
    let edited = std::fs::read_to_string(hub.config())
        .unwrap()
        .replace("models/beta.txt", "models/delta.txt")
        .replace("state: stopped", "state: running");
    std::fs::write(dir.join("edited.yaml"), &edited).unwrap();

    let mut out = run(&hub, &["diff", "-f", "edited.yaml"]);
    out += &run(&hub, &["diff", "-f", "edited.yaml", "-o", "json"]);
    out += &run(&hub, &["apply", "-f", "edited.yaml", "--dry-run"]);
    // A diff at generation 1 then someone else's change: apply --expect-generation refuses.
    out += &run(
        &hub,
        &["apply", "-f", "hub.yaml", "--expect-generation", "2"],
    );
    out += &run(
        &hub,
        &[
            "apply",
            "-f",
            "edited.yaml",
            "--wait",
            "--expect-generation",
            "1",
        ],
    );
    out += &run(&hub, &["diff", "-f", "edited.yaml"]);
    // Applying what is applied changes nothing and says so.
    out += &run(&hub, &["apply", "-f", "edited.yaml", "--wait"]);
    check("cli_diff_apply", &out);
}

#[tokio::test]
async fn invalid_files_unknown_models_and_an_absent_daemon_are_one_clear_line() {
    let hub = TempHub::start(HUB).await;
    hub.converged().await;
    std::fs::write(
        hub.dir.path().join("bad.yaml"),
        "models:\n  - name: alpha\n    model_path: a.txt\n    state: sleeping\n    grup: x\n",
    )
    .unwrap();
    let mut out = run(&hub, &["diff", "-f", "bad.yaml"]);
    out += &run(&hub, &["apply", "-f", "bad.yaml"]);
    out += &run(&hub, &["status", "nope"]);
    out += &run(&hub, &["start-model", "nope"]);
    out += &run(&hub, &["logs", "nope"]);
    out += &run(&hub, &["logs", "../etc"]);
    out += &run(&hub, &["stop-model", "Bad/Name", "alpha"]);
    let args = ["status", "--url", "http://127.0.0.1:1"];
    out += &transcript(&args, &hub.cli(&args), hub.dir.path());
    let args = ["diff", "-f", "hub.yaml", "--url", "http://127.0.0.1:1"];
    out += &transcript(&args, &hub.cli(&args), hub.dir.path());
    check("cli_errors", &out);
}

#[tokio::test]
async fn status_shows_a_table_json_and_a_models_events() {
    let hub = TempHub::start(HUB).await;
    hub.converged().await;
    let out = hub.cli(&["status"]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    let header = table.lines().nth(1).unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        [
            "NAME",
            "DESIRED",
            "PHASE",
            "MEMORY",
            "IN-FLIGHT",
            "QUEUED",
            "PID",
            "PORT",
            "UPTIME",
            "RESTARTS",
            "GROUP",
            "IN-SYNC",
            "BYTES"
        ]
    );
    // The summary, the header, three models and the group's line.
    assert_eq!(table.lines().count(), 6, "{table}");
    assert_eq!(
        table.lines().last(),
        Some("group tier_one: 1 of 1 loaded"),
        "{table}"
    );

    let out = hub.cli(&["status", "-o", "json", "alpha"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["models"].as_array().unwrap().len(), 1);
    assert_eq!(json["models"][0]["name"], "alpha");

    // A stopped model: no pid, no uptime, no events yet; deterministic enough to pin.
    let mut out = run(&hub, &["status", "gamma"]);
    out += &run(&hub, &["start-model", "gamma"]);
    check("cli_status_model", &out);
}

/// `hub models` sends an inference key (`/v1` needs one when the daemon has keys), prints the
/// gateway's list as a table, and passes its JSON through.
#[tokio::test]
async fn models_lists_what_clients_can_ask_for() {
    let hub = TempHub::start_with_env(HUB, &[], &[("HUB_API_KEYS", "sk-one,sk-two")]).await;
    hub.converged().await;
    let models = |env: &[(&str, &str)], args: &[&str]| {
        transcript(args, &hub.cli_with_env(args, env), hub.dir.path())
    };
    let mut out = models(&[("HUB_API_KEYS", "")], &["models"]);
    out += &models(&[("HUB_API_KEYS", "sk-wrong")], &["models"]);
    out += &models(&[("HUB_API_KEYS", " sk-two ,sk-one")], &["models"]);
    check("cli_models", &out);

    let args = ["models", "-o", "json"];
    let json = hub.cli_with_env(&args, &[("HUB_API_KEYS", "sk-one")]);
    assert!(json.status.success(), "{json:?}");
    let list: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["alpha", "beta", "gamma"]);
}

#[tokio::test]
async fn watch_prints_each_event_as_it_happens() {
    let hub = TempHub::start(HUB).await;
    hub.converged().await;
    let mut watch = Spawned::new(hub.cli_command(&["watch", "gamma", "--count", "2"]));
    wait_until("watch connected", || async {
        watch.stderr().contains("watching hub at").then_some(())
    })
    .await;
    let out = hub.cli(&["start-model", "gamma"]);
    assert!(out.status.success(), "{out:?}");
    let status = watch.exited().await;
    assert!(status.success(), "{}", watch.stderr());
    let text = format!(
        "$ hub watch gamma --count 2\n--- stdout\n{}--- stderr\n{}",
        watch.stdout(),
        watch.stderr()
    );
    check("cli_watch", &normalize(&text, hub.dir.path()));

    // JSON lines, every model.
    let mut watch = Spawned::new(hub.cli_command(&["watch", "-o", "json", "--count", "1"]));
    wait_until("watch connected", || async {
        watch.stderr().contains("watching hub at").then_some(())
    })
    .await;
    let out = hub.cli(&["stop-model", "gamma"]);
    assert!(out.status.success(), "{out:?}");
    watch.exited().await;
    let event: serde_json::Value = serde_json::from_str(watch.stdout().trim()).unwrap();
    assert_eq!(event["model"], "gamma");
    assert_eq!(event["kind"], "phase");
}

#[tokio::test]
async fn logs_print_the_tail_and_follow() {
    let hub = TempHub::start(HUB).await;
    hub.converged().await;
    let out = run(&hub, &["logs", "beta", "--tail", "1"]);
    check("cli_logs", &out);

    let logs = Spawned::new(hub.cli_command(&["logs", "beta", "-f", "--tail", "1"]));
    wait_until("the tail", || async {
        logs.stdout().contains("listening on").then_some(())
    })
    .await;
    for verb in ["stop-model", "start-model"] {
        let out = hub.cli(&[verb, "beta"]);
        assert!(out.status.success(), "{out:?}");
    }
    wait_until("the restart's lines", || async {
        let out = logs.stdout();
        (out.contains("SIGTERM") && out.matches("listening on").count() == 2).then_some(())
    })
    .await;
}

/// Stops whatever `hub start` left in a directory, even if the test failed half-way.
struct StartedIn<'a>(&'a Path);

impl Drop for StartedIn<'_> {
    fn drop(&mut self) {
        for pid in processes_in(self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[tokio::test]
async fn start_launches_a_detached_daemon_and_stop_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = StartedIn(dir.path());
    std::fs::write(dir.path().join("a.txt"), "weights of a small model\n").unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("hub.yaml"),
        format!(
            "port: {port}\nlog_path: logs\nmodel_starting_port: {}\nmodels:\n  - {{name: alpha, model_path: a.txt, state: running}}\n",
            free_port()
        ),
    )
    .unwrap();
    let hub = |args: &[&str]| {
        Command::new(hub_bin())
            .args(args)
            .env_remove("HUB_URL")
            .env_remove("HUB_TOKEN")
            .env("NO_COLOR", "1")
            .current_dir(dir.path())
            .output()
            .unwrap()
    };

    let out = hub(&["start", "-f", "hub.yaml"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("hub started (pid "), "{stdout}");
    assert!(stdout.contains("\nNAME "), "the status table: {stdout}");
    let pid: u32 = std::fs::read_to_string(dir.path().join("logs/hub.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(is_alive(pid));
    assert!(stdout.contains(&format!("(pid {pid})")), "{stdout}");
    assert!(dir.path().join("logs/hub.out").exists());

    // Started again, it only prints the status.
    let out = hub(&["start", "-f", "hub.yaml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        stdout.starts_with(&format!(
            "hub is already running at http://127.0.0.1:{port}\n"
        )),
        "{stdout}"
    );
    let alpha = wait_until("alpha running", || async {
        let out = hub(&["status", "-o", "json", "alpha"]);
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let alpha = status["models"][0].clone();
        (alpha["worker"]["phase"] == "ready").then_some(alpha)
    })
    .await;
    let worker = alpha["worker"]["pid"].as_u64().unwrap() as u32;

    let out = hub(&["stop", "-f", "hub.yaml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(stdout, format!("hub stopped (pid {pid})\n"));
    // `stop` returned only once the daemon had exited, and it stopped its worker.
    assert!(!is_alive(pid));
    assert!(!is_alive(worker));
    assert!(!dir.path().join("logs/hub.pid").exists());
    assert_eq!(processes_in(dir.path()), Vec::<u32>::new());

    let out = hub(&["stop", "-f", "hub.yaml"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("hub is not running at http://127.0.0.1:{port}\n")
    );
}

#[tokio::test]
async fn apply_exits_non_zero_when_a_model_fails_or_the_wait_times_out() {
    let hub = TempHub::start(HUB).await;
    hub.converged().await;
    let dir = hub.dir.path();

    // gamma's weights do not exist: its load fails.
    let failing = std::fs::read_to_string(hub.config()).unwrap().replace(
        "{name: gamma, model_path: models/gamma.txt, state: stopped}",
        "{name: gamma, model_path: models/missing.txt, state: loaded}",
    );
    std::fs::write(dir.join("failing.yaml"), failing).unwrap();
    let mut out = run(&hub, &["apply", "-f", "failing.yaml", "--wait"]);

    // On a fresh hub, delta takes far longer to start than apply waits.
    let hub = TempHub::start(HUB).await;
    hub.converged().await;
    let slow = std::fs::read_to_string(hub.config()).unwrap()
        + "  - {name: delta, model_path: models/delta.txt, state: running, args: [--start-delay, 1h]}\n";
    std::fs::write(hub.dir.path().join("slow.yaml"), slow).unwrap();
    out += &run(
        &hub,
        &["apply", "-f", "slow.yaml", "--wait", "--timeout", "300ms"],
    );
    check("cli_apply_failures", &out);
}

#[tokio::test]
async fn diff_shows_overrides_and_what_a_reset_would_clear() {
    let hub = TempHub::start(HUB).await;
    hub.converged().await;
    let out = hub.cli(&["start-model", "gamma"]);
    assert!(out.status.success(), "{out:?}");
    let mut out = run(&hub, &["diff", "-f", "hub.yaml"]);
    out += &run(&hub, &["diff", "-f", "hub.yaml", "--reset-overrides"]);
    out += &run(
        &hub,
        &["apply", "-f", "hub.yaml", "--reset-overrides", "--wait"],
    );
    out += &run(&hub, &["diff", "-f", "hub.yaml"]);
    check("cli_diff_overrides", &out);
}

#[tokio::test]
async fn watch_of_an_unknown_model_says_so_once_and_exits() {
    let hub = TempHub::start(HUB).await;
    hub.converged().await;
    let out = hub.cli(&["watch", "nosuch"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("404"), "{stderr}");
    assert!(!stderr.contains("retrying"), "{stderr}");
}
