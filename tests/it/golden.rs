//! Golden files for CLI output: every test that pins what the CLI prints goes through [`check`],
//! which compares with `tests/it/golden/NAME.txt` (rewritten with `UPDATE_GOLDEN=1`).
//! [`normalize`] replaces what differs between runs (pids, ports, times, the temp dir).
//!
//! The tests here render from fixed values (tables, diffs, events) and pin `hub --help`; the CLI
//! tests against a running daemon use the same helper.

use std::path::{Path, PathBuf};

use hub::cli::render::{self, Paint};
use hub::wire::{
    ConfigStatus, Counts, FailedAction, GroupStatus, HubEvent, MemoryStatus, ModelEntry, ModelList,
    ModelStatus, Outcome, OverrideStatus, PlanReply, PlannedModel, RejectedEdit, Report, Status,
    Summary, WorkerStatus,
};

use crate::support::hub_bin;

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/golden")
        .join(format!("{name}.txt"))
}

/// Compares `actual` with the golden file `name`, or rewrites it under `UPDATE_GOLDEN=1`.
pub fn check(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "no golden file {}: run `UPDATE_GOLDEN=1 cargo test` and review it",
            path.display()
        )
    });
    if expected != actual {
        let diff = similar::TextDiff::from_lines(&expected, actual)
            .unified_diff()
            .header("golden", "actual")
            .to_string();
        panic!(
            "output differs from {} (rerun with UPDATE_GOLDEN=1 if the change is intended):\n{diff}",
            path.display()
        );
    }
}

/// Replaces what differs between runs: the temp dir, times, pids and ports (after `pid `,
/// `port `, `"pid": `, `"port": `, `127.0.0.1:`), and runs of spaces inside a line (which align
/// columns whose width depends on them).
pub fn normalize(text: &str, dir: &Path) -> String {
    let mut text = text.to_string();
    if let Ok(canonical) = dir.canonicalize() {
        text = text.replace(&canonical.display().to_string(), "<dir>");
    }
    text = text.replace(&dir.display().to_string(), "<dir>");
    for (prefix, placeholder) in [
        ("pid ", "<pid>"),
        ("\"pid\": ", "<pid>"),
        ("port ", "<port>"),
        ("\"port\": ", "<port>"),
        ("127.0.0.1:", "<port>"),
        ("model_starting_port: ", "<port>"),
    ] {
        text = replace_number_after(&text, prefix, placeholder);
    }
    let text = replace_times(&text);
    text.lines()
        .map(|line| {
            // Indentation stays; runs of spaces inside a line shrink to two.
            let body = line.trim_start_matches(' ');
            let mut out = line[..line.len() - body.len()].to_string();
            let mut spaces = 0;
            for c in body.chars() {
                if c == ' ' {
                    spaces += 1;
                    continue;
                }
                out.push_str(&" ".repeat(spaces.min(2)));
                spaces = 0;
                out.push(c);
            }
            out + "\n"
        })
        .collect()
}

fn replace_number_after(text: &str, prefix: &str, placeholder: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let after = &rest[at + prefix.len()..];
        let digits = after.chars().take_while(char::is_ascii_digit).count();
        out.push_str(&rest[..at + prefix.len()]);
        if digits > 0 {
            out.push_str(placeholder);
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

/// `2026-11-23T10:00:00.123Z` and `10:00:00.123Z` become `<time>`.
fn replace_times(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        if let Some(len) = time_at(&bytes[i..]) {
            out.push_str("<time>");
            i += len;
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The length of a time at the start of `s`, if one is there.
fn time_at(s: &[u8]) -> Option<usize> {
    let shape = |s: &[u8], pattern: &str| {
        s.len() >= pattern.len()
            && pattern.bytes().zip(s).all(|(p, c)| match p {
                b'd' => c.is_ascii_digit(),
                p => p == *c,
            })
    };
    let mut len = 0;
    if shape(s, "dddd-dd-ddT") {
        len = 11;
    }
    if !shape(&s[len..], "dd:dd:dd") {
        return None;
    }
    len += 8;
    if s.get(len) == Some(&b'.') {
        len += 1;
        len += s[len..].iter().take_while(|c| c.is_ascii_digit()).count();
    }
    (s.get(len) == Some(&b'Z')).then_some(len + 1)
}

#[test]
fn normalize_replaces_pids_ports_times_and_the_temp_dir() {
    let dir = Path::new("/tmp/hub-test");
    let text = "pid 4242, port 47850 at http://127.0.0.1:8000 since 2026-11-23T10:00:00.12Z\n\
                10:00:01Z  phase   /tmp/hub-test/logs/alpha.log  \"pid\": 7\n";
    assert_eq!(
        normalize(text, dir),
        "pid <pid>, port <port> at http://127.0.0.1:<port> since <time>\n\
         <time>  phase  <dir>/logs/alpha.log  \"pid\": <pid>\n"
    );
}

const NOW: &str = "2026-11-23T10:00:00Z";

/// A closed set's value from its JSON word, as the daemon would send it.
fn word<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_json::from_value(serde_json::Value::from(text)).unwrap()
}

fn model(name: &str, desired: &str, phase: &str, memory: &str) -> ModelStatus {
    let running = phase == "ready";
    ModelStatus {
        name: name.to_string(),
        engine: "builtin".to_string(),
        model_type: Some("lm".to_string()),
        group: None,
        desired: desired.to_string(),
        worker: WorkerStatus {
            phase: word(phase),
            pid: running.then_some(4242),
            port: running.then_some(47850),
            started_at: running.then(|| "2026-11-23T09:57:55Z".to_string()),
            restarts: 0,
            exit_code: None,
            exited_at: None,
            log_file: Some(format!("/var/log/hub/{name}.log")),
            on_demand: false,
        },
        memory: MemoryStatus {
            state: word(memory),
            loaded_at: None,
            last_activity: None,
            unload_at: None,
            in_flight: 0,
            queued: 0,
            bytes: None,
            bytes_source: None,
            measured_bytes: None,
        },
        in_sync: true,
        override_: None,
        error: None,
        next_retry_at: None,
        on_demand: true,
    }
}

fn report() -> Report {
    Report {
        generation: 3,
        trigger: "config".to_string(),
        started_at: "2026-11-23T09:59:59.990Z".to_string(),
        finished_at: Some("2026-11-23T09:59:59.994Z".to_string()),
        duration_ms: 4.2,
        started: vec!["alpha".to_string()],
        stopped: vec!["gamma".to_string(), "delta".to_string()],
        restarted: vec![],
        loaded: vec!["alpha".to_string()],
        unloaded: vec![],
        unchanged: vec!["beta".to_string()],
        failed: vec![FailedAction {
            model: "omega".to_string(),
            action: "start".to_string(),
            error: "port 47999 is in use".to_string(),
            count: 3,
        }],
    }
}

/// A status with every kind of row: pinned and loaded, an override, a crash loop, a stopped
/// model, one that requests started (and are being served), a group, a rejected edit and a
/// warning.
fn status() -> Status {
    let mut alpha = model("alpha", "loaded", "ready", "loaded");
    alpha.group = Some("tier_one".to_string());
    alpha.memory.bytes = Some(7 << 30);
    alpha.memory.bytes_source = Some("nvml".to_string());
    alpha.memory.measured_bytes = Some(7 << 30);
    let mut beta = model("beta-long-name", "running", "ready", "unloaded");
    beta.group = Some("tier_one".to_string());
    beta.worker.pid = Some(1234567);
    beta.worker.port = Some(47851);
    beta.worker.started_at = Some("2026-11-21T07:30:00Z".to_string());
    beta.worker.restarts = 2;
    beta.memory.bytes = Some(15 << 29);
    beta.memory.bytes_source = Some("declared".to_string());
    let mut gamma = model("gamma", "running", "stopped", "unloaded");
    gamma.override_ = Some(OverrideStatus {
        state: "stopped".to_string(),
        by: "stop".to_string(),
        at: "2026-11-23T09:00:00Z".to_string(),
    });
    beta.memory.in_flight = 3;
    beta.memory.queued = 12;
    let mut delta = model("delta", "stopped", "ready", "loaded");
    delta.worker.on_demand = true;
    delta.worker.pid = Some(5150);
    delta.worker.port = Some(47852);
    delta.memory.in_flight = 1;
    let mut omega = model("omega", "running", "backoff", "unloaded");
    omega.in_sync = false;
    omega.worker.restarts = 5;
    omega.error = Some("start failed: port 47999 is in use".to_string());
    omega.next_retry_at = Some("2026-11-23T10:00:08Z".to_string());
    Status {
        timestamp: NOW.to_string(),
        generation: 3,
        observed_generation: 3,
        summary: Summary::Degraded,
        config: ConfigStatus {
            path: "/etc/hub/hub.yaml".to_string(),
            sha256: "ab".repeat(32),
            applied_at: "2026-11-23T09:59:59Z".to_string(),
            source: "file".to_string(),
            rejected: Some(RejectedEdit {
                at: "2026-11-23T09:59:30Z".to_string(),
                sha256: "cd".repeat(32),
                errors: vec![
                    serde_json::from_value(serde_json::json!({
                        "path": "groups[0].max_laoded", "line": 10, "column": 5,
                        "message": "unknown key `max_laoded` (did you mean `max_loaded`?)"
                    }))
                    .unwrap(),
                ],
            }),
        },
        counts: Counts {
            models: 5,
            running: 3,
            loaded: 2,
            failed: 1,
        },
        last_reconcile: Some(report()),
        models: vec![alpha, beta, gamma, delta, omega],
        groups: vec![GroupStatus {
            name: "tier_one".to_string(),
            max_loaded: Some(1),
            members: vec!["alpha".to_string(), "beta-long-name".to_string()],
            loaded: vec!["alpha".to_string()],
            memory_budget: Some(24 << 30),
            memory_used: 7 << 30,
        }],
        warnings: vec![
            "host, port or log_path changed: they take effect when hub serve restarts".to_string(),
        ],
    }
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::parse(NOW, &time::format_description::well_known::Rfc3339).unwrap()
}

#[test]
fn the_status_table() {
    check("status_table", &render::status_table(&status(), now()));
}

#[test]
fn the_status_table_of_an_empty_hub() {
    let mut status = status();
    status.models.clear();
    status.groups.clear();
    status.warnings.clear();
    status.config.rejected = None;
    status.summary = Summary::Converged;
    status.counts = Counts::default();
    check("status_table_empty", &render::status_table(&status, now()));
}

/// `GET /v1/models` with a model of each kind: loaded and served, unloaded behind its group, one
/// left stopped that requests may start (with some queued for it), one they may not.
fn model_list() -> ModelList {
    let entry = |id: &str, desired: &str, phase: &str, memory: &str| ModelEntry {
        id: id.to_string(),
        object: "model".to_string(),
        created: 1_795_428_000,
        owned_by: "hub".to_string(),
        model_type: Some("lm".to_string()),
        group: None,
        desired: desired.to_string(),
        phase: phase.to_string(),
        memory: memory.to_string(),
        ready: phase == "ready" && memory == "loaded",
        on_demand: true,
        in_flight: 0,
        queued: 0,
    };
    let mut alpha = entry("alpha", "loaded", "ready", "loaded");
    alpha.group = Some("tier_one".to_string());
    alpha.in_flight = 2;
    let mut beta = entry("beta-long-name", "running", "ready", "unloaded");
    beta.group = Some("tier_one".to_string());
    let mut delta = entry("delta", "stopped", "starting", "unloaded");
    delta.model_type = Some("embedding".to_string());
    delta.queued = 7;
    let mut omega = entry("omega", "stopped", "stopped", "unloaded");
    omega.model_type = None;
    omega.on_demand = false;
    ModelList {
        object: "list".to_string(),
        data: vec![alpha, beta, delta, omega],
    }
}

#[test]
fn the_models_table() {
    check("models_table", &render::models_table(&model_list()));
}

#[test]
fn the_models_table_of_an_empty_hub() {
    let mut list = model_list();
    list.data.clear();
    check("models_table_empty", &render::models_table(&list));
}

fn plan_reply() -> PlanReply {
    let planned = |name: &str, line: &str, actions: &[&str], result: Outcome| PlannedModel {
        name: name.to_string(),
        line: line.to_string(),
        actions: actions.iter().map(ToString::to_string).collect(),
        result,
        clears_override: line.contains("[clears override]"),
        bytes: None,
        evicts: Vec::new(),
    };
    PlanReply {
        generation: 7,
        diff: "--- applied (generation 7)\n+++ hub.yaml\n@@ -1,3 +1,3 @@\n models:\n-  - {name: alpha, model_path: a.txt, state: running}\n+  - {name: alpha, model_path: b.txt, state: running}\n   - {name: beta, model_path: b.txt}\n".to_string(),
        changed: true,
        models: vec![
            planned("alpha", "~ alpha  restart (model_path changed)", &["restart"], Outcome::Restarted),
            planned("beta", "= beta  unchanged", &[], Outcome::Unchanged),
            planned("delta", "↓ delta  unload", &["unload"], Outcome::Unloaded),
            planned("epsilon", "↑ epsilon  load", &["load"], Outcome::Loaded),
            planned("gamma", "+ gamma  start, load", &["start", "load"], Outcome::Started),
            planned("omega", "- omega  stop", &["stop"], Outcome::Stopped),
            planned("zeta", "= zeta  unchanged [clears override]", &[], Outcome::Unchanged),
        ],
    }
}

#[test]
fn the_diff_plain() {
    check(
        "diff_plain",
        &render::diff_text(&plan_reply(), false, Paint(false)),
    );
}

#[test]
fn the_diff_coloured_for_a_terminal() {
    check(
        "diff_color",
        &render::diff_text(&plan_reply(), false, Paint(true)),
    );
}

#[test]
fn the_diff_with_no_changes_and_offline() {
    let reply = PlanReply {
        generation: 0,
        diff: String::new(),
        changed: false,
        models: vec![plan_reply().models[1].clone()],
    };
    check(
        "diff_unchanged_offline",
        &render::diff_text(&reply, true, Paint(false)),
    );
}

#[test]
fn the_event_lines() {
    let event = |kind: &str, model: Option<&str>, message: &str| HubEvent {
        time: "2026-11-23T10:00:00.123Z".to_string(),
        kind: kind.to_string(),
        model: model.map(ToString::to_string),
        message: message.to_string(),
        reason: None,
        report: None,
        bytes: None,
        bytes_source: None,
    };
    let mut reconcile = event(
        "reconcile",
        None,
        "generation 3 reconciled (config) in 4.2 ms",
    );
    reconcile.report = Some(report());
    let events = [
        event("phase", Some("alpha"), "starting: pid 4242, port 47850"),
        event("memory", Some("alpha"), "loaded"),
        event(
            "action",
            Some("omega"),
            "start failed: port 47999 is in use",
        ),
        event("exit", Some("beta-long-name"), "exited with code 137"),
        event(
            "health",
            Some("beta-long-name"),
            "health check failed (1 of 3)",
        ),
        event("config", None, "hub.yaml rejected: 1 problem"),
        reconcile,
    ];
    let mut out = String::new();
    for event in &events {
        out.push_str(&render::event_line(event));
        out.push('\n');
    }
    out.push_str(&render::model_events("alpha", &events[..2]));
    out.push_str(&render::model_events("gamma", &[]));
    check("event_lines", &out);
}

#[test]
fn the_help() {
    let out = std::process::Command::new(hub_bin())
        .arg("--help")
        .env_remove("HUB_URL")
        .output()
        .unwrap();
    assert!(out.status.success());
    check("help", &String::from_utf8(out.stdout).unwrap());
}
