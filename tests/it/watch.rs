//! Every real way a file gets saved, against a running daemon: each must converge to the new
//! content exactly once, disturb nothing else, and never show a transient state as a rejected
//! edit.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{TempHub, names, pids, sha256, wait_until};

/// alpha runs throughout; the edit starts beta.
const BEFORE: &str = "
log_path: {log_path}
model_starting_port: {starting_port}
models:
  - {name: alpha, model_path: models/alpha.txt, state: running}
  - {name: beta, model_path: models/beta.txt, state: stopped}
";

fn after() -> String {
    BEFORE.replace("beta.txt, state: stopped", "beta.txt, state: running")
}

/// Starts a hub on [`BEFORE`] and returns it with its status.
async fn started() -> (TempHub, Value) {
    let hub = TempHub::start(BEFORE).await;
    let status = hub.converged().await;
    (hub, status)
}

/// Checks that the hub applied [`after`] exactly once and touched nothing else.
async fn applied_once(hub: &TempHub, before: &Value) {
    let expected = sha256(&hub.render(&after()));
    let status = wait_until("the edit applied and converged", || async {
        let status = hub.status().await;
        (status["config"]["sha256"] == expected.as_str() && status["summary"] == "converged")
            .then_some(status)
    })
    .await;
    assert_eq!(status["generation"], 2, "one new generation: {status:#}");
    assert_eq!(names(&status["last_reconcile"]["started"]), ["beta"]);
    assert_eq!(
        pids(&status)["alpha"],
        pids(before)["alpha"],
        "alpha was disturbed"
    );
    assert!(status["config"]["rejected"].is_null(), "{status:#}");
    // A resync (every 2 s in tests) re-reads the file; nothing may be applied again.
    hub.resynced().await;
    let later = hub.status().await;
    assert_eq!(later["generation"], 2);
    assert_eq!(hub.counter("hub_config_applied_total").await, 1);
    assert_eq!(
        hub.counter("hub_config_rejected_total").await,
        0,
        "a step of the save was reported as a rejected edit"
    );
}

fn run(dir: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn an_in_place_write() {
    let (hub, before) = started().await;
    std::fs::write(hub.config(), hub.render(&after())).unwrap();
    applied_once(&hub, &before).await;
}

#[tokio::test]
async fn a_temp_file_renamed_over_it() {
    let (hub, before) = started().await;
    hub.save_config(&after());
    applied_once(&hub, &before).await;
}

#[tokio::test]
async fn a_vim_style_save() {
    let (hub, before) = started().await;
    let backup = hub.dir.path().join("hub.yaml~");
    std::fs::rename(hub.config(), &backup).unwrap();
    std::fs::write(hub.config(), hub.render(&after())).unwrap();
    std::fs::remove_file(&backup).unwrap();
    applied_once(&hub, &before).await;
}

#[tokio::test]
async fn sed_in_place() {
    let (hub, before) = started().await;
    run(
        hub.dir.path(),
        "sed",
        &[
            "-i",
            "s/beta.txt, state: stopped/beta.txt, state: running/",
            "hub.yaml",
        ],
    );
    applied_once(&hub, &before).await;
}

#[tokio::test]
async fn a_git_checkout_of_another_revision() {
    let (hub, before) = started().await;
    let dir = hub.dir.path();
    let git = |args: &[&str]| {
        let mut all = vec!["-c", "user.name=hub", "-c", "user.email=hub@example.com"];
        all.extend_from_slice(args);
        run(dir, "git", &all);
    };
    git(&["init", "-q"]);
    git(&["add", "hub.yaml"]);
    git(&["commit", "-qm", "before"]);
    // Commit the edit without touching the working tree, then check it out as a pull would.
    std::fs::write(dir.join(".edit"), hub.render(&after())).unwrap();
    let blob = Command::new("git")
        .args(["hash-object", "-w", ".edit"])
        .current_dir(dir)
        .output()
        .unwrap();
    let blob = String::from_utf8(blob.stdout).unwrap();
    std::fs::remove_file(dir.join(".edit")).unwrap();
    git(&[
        "update-index",
        "--cacheinfo",
        &format!("100644,{},hub.yaml", blob.trim()),
    ]);
    git(&["commit", "-qm", "after"]);
    git(&["checkout", "-qf", "HEAD"]);
    applied_once(&hub, &before).await;
}

#[tokio::test]
async fn a_kubernetes_configmap_update() {
    let (hub, before) = started().await;
    let dir = hub.dir.path();
    // The layout kubelet makes: hub.yaml -> ..data/hub.yaml, ..data -> ..<timestamp>/.
    let publish = |stamp: &str, yaml: &str| {
        let version = dir.join(stamp);
        std::fs::create_dir(&version).unwrap();
        std::fs::write(version.join("hub.yaml"), hub.render(yaml)).unwrap();
        std::os::unix::fs::symlink(stamp, dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    };
    publish("..2026_11_23_10_00_00.1", BEFORE);
    std::os::unix::fs::symlink("..data/hub.yaml", dir.join("hub.yaml.link")).unwrap();
    std::fs::rename(dir.join("hub.yaml.link"), hub.config()).unwrap();
    // The same content behind a symlink: nothing to apply.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hub.status().await["generation"], 1);

    publish("..2026_11_23_10_05_00.2", &after());
    std::fs::remove_dir_all(dir.join("..2026_11_23_10_00_00.1")).unwrap();
    applied_once(&hub, &before).await;
}

/// Deleted and written anew within the settle time: one save, never a rejected edit.
#[tokio::test]
async fn delete_then_recreate() {
    let (hub, before) = started().await;
    std::fs::remove_file(hub.config()).unwrap();
    tokio::time::sleep(hub::watch::SETTLE / 5).await;
    std::fs::write(hub.config(), hub.render(&after())).unwrap();
    applied_once(&hub, &before).await;
}

/// Missing for longer than the settle time: that is an edit, shown as rejected (nothing
/// changes), until the file is back.
#[tokio::test]
async fn missing_past_the_settle_time_is_rejected_until_it_is_back() {
    let (hub, before) = started().await;
    std::fs::remove_file(hub.config()).unwrap();
    wait_until("the missing file rejected", || async {
        let status = hub.status().await;
        (!status["config"]["rejected"].is_null()).then_some(())
    })
    .await;
    assert_eq!(pids(&hub.status().await), pids(&before));
    std::fs::write(hub.config(), hub.render(&after())).unwrap();
    let expected = sha256(&hub.render(&after()));
    let status = wait_until("the file back and applied", || async {
        let status = hub.status().await;
        (status["config"]["sha256"] == expected.as_str() && status["summary"] == "converged")
            .then_some(status)
    })
    .await;
    assert!(status["config"]["rejected"].is_null(), "{status:#}");
    assert_eq!(pids(&status)["alpha"], pids(&before)["alpha"]);
}

/// Truncated, then written through the same open file after longer than the settle time: the
/// writer has not closed the file, so the save is not over.
#[tokio::test]
async fn truncate_then_write_in_two_steps() {
    let (hub, before) = started().await;
    use std::io::Write;
    let mut file = std::fs::File::create(hub.config()).unwrap();
    file.sync_all().unwrap();
    tokio::time::sleep(hub::watch::SETTLE * 3 / 2).await;
    file.write_all(hub.render(&after()).as_bytes()).unwrap();
    drop(file);
    applied_once(&hub, &before).await;
}

#[tokio::test]
async fn two_hundred_saves_in_a_second_end_in_the_last_content() {
    let (hub, before) = started().await;
    for i in 0..200 {
        let yaml = if i == 199 {
            after()
        } else {
            format!("{BEFORE}# save {i}\n")
        };
        hub.save_config(&yaml);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let expected = sha256(&hub.render(&after()));
    let status = wait_until("the last save applied", || async {
        let status = hub.status().await;
        (status["config"]["sha256"] == expected.as_str() && status["summary"] == "converged")
            .then_some(status)
    })
    .await;
    // Intermediate contents may be seen (each distinct, each at most once), but the last one
    // wins, alpha is never disturbed, and nothing is re-applied afterwards.
    let generation = status["generation"].as_u64().unwrap();
    assert!((2..=201).contains(&generation), "{generation}");
    assert_eq!(pids(&status)["alpha"], pids(&before)["alpha"]);
    assert_eq!(status["models"][1]["worker"]["phase"], "ready");
    let applied = hub.counter("hub_config_applied_total").await;
    assert_eq!(
        applied,
        generation - 1,
        "each generation is one applied content"
    );
    hub.resynced().await;
    assert_eq!(hub.status().await["generation"], generation);
}

#[tokio::test]
async fn an_empty_missing_or_unreadable_file_changes_nothing() {
    let (hub, before) = started().await;
    let rejected_with = |prefix: &'static str| {
        let hub = &hub;
        async move {
            wait_until(prefix, || async {
                let status = hub.status().await;
                let message = status["config"]["rejected"]["errors"][0]["message"].clone();
                message
                    .as_str()
                    .is_some_and(|m| m.starts_with(prefix))
                    .then_some(())
            })
            .await
        }
    };
    // Empty, and left empty; then missing, and left missing.
    std::fs::write(hub.config(), "").unwrap();
    rejected_with("the file is empty: it needs at least `models:`").await;
    std::fs::remove_file(hub.config()).unwrap();
    rejected_with("cannot read the file").await;
    // Unreadable: a directory where the file was (permissions do not stop root).
    std::fs::create_dir(hub.config()).unwrap();
    hub.resynced().await;
    let status = hub.status().await;
    assert_eq!(status["generation"], 1);
    assert_eq!(
        pids(&status),
        pids(&before),
        "a worker changed across rejected edits"
    );
    std::fs::remove_dir(hub.config()).unwrap();
    hub.save_config(&after());
    let expected = sha256(&hub.render(&after()));
    let status = wait_until("the valid save applied", || async {
        let status = hub.status().await;
        (status["config"]["sha256"] == expected.as_str() && status["summary"] == "converged")
            .then_some(status)
    })
    .await;
    assert!(status["config"]["rejected"].is_null());
    assert_eq!(status["generation"], 2);
    // Each distinct broken state was logged once.
    let log = hub.stderr();
    assert_eq!(log.matches("rejected an edit").count(), 3, "{log}");
}
