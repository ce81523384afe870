//! Watching hub.yaml the way it is really saved: editors rename over it, git replaces it, a
//! Kubernetes ConfigMap swaps a `..data` symlink whose events never name the file. So we watch
//! the parent directory, re-read on any event there (after a short quiet period), hash the
//! bytes, and pass on only content that differs from the last seen. A periodic resync or
//! `POST /hub/reload` also re-reads, so a lost event only delays a change.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use notify::{RecursiveMode, Watcher};
use tokio::sync::{Notify, mpsc};

use crate::config;
use crate::reconcile::{ConfigUpdate, Event};
use crate::sha256_hex;

/// Events closer together than this are one save.
pub const DEBOUNCE: Duration = Duration::from_millis(10);
/// How long a file that is missing or empty may take to come back before that counts as an edit:
/// editors and git delete then write, `>` truncates then writes.
pub const SETTLE: Duration = Duration::from_millis(500);
/// A stream of events is cut off after this long, so a busy directory still gets read.
const MAX_DEBOUNCE: Duration = Duration::from_millis(250);

/// Watches `path` until the loop's channel closes. `last_seen` is the hash of the content the
/// daemon started from. `reread` forces a read even without a file event.
pub fn spawn(
    path: PathBuf,
    last_seen: String,
    events: mpsc::UnboundedSender<Event>,
    reread: Arc<Notify>,
) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reads (our own included) change nothing; logs and the state file are ours.
        let relevant = match &event {
            Ok(event) => {
                !matches!(event.kind, notify::EventKind::Access(_))
                    && !event.paths.iter().all(|p| is_ours(p))
            }
            Err(_) => true,
        };
        if relevant {
            let _ = tx.send(());
        }
    })
    .context("cannot create a file watcher")?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("cannot watch {}", dir.display()))?;

    tokio::spawn(async move {
        // The watcher stops when dropped; this task owns it.
        let _watcher = watcher;
        let mut last_seen = last_seen;
        loop {
            let forced = tokio::select! {
                got = rx.recv() => {
                    if got.is_none() {
                        return;
                    }
                    false
                }
                () = reread.notified() => true,
            };
            if !forced {
                debounce(&mut rx).await;
            }
            let mut update = read(&path).await;
            // Mid-save, the file may be gone or empty for a moment: wait for the rest of the
            // save rather than report it, unless nothing more happens.
            while looks_mid_save(&path) && more_within(&mut rx, SETTLE).await {
                debounce(&mut rx).await;
                update = read(&path).await;
            }
            // A resync catches lost events: it passes on only content not seen yet, so it never
            // undoes a `hub apply` (the next save of the file does).
            if update.sha256 == last_seen {
                continue;
            }
            last_seen = update.sha256.clone();
            if events.send(Event::Config(update)).is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// Waits until no event has arrived for [`DEBOUNCE`], or [`MAX_DEBOUNCE`] has passed.
async fn debounce(rx: &mut mpsc::UnboundedReceiver<()>) {
    let give_up = tokio::time::Instant::now() + MAX_DEBOUNCE;
    loop {
        let quiet = tokio::time::sleep(DEBOUNCE);
        tokio::select! {
            got = rx.recv() => if got.is_none() { return },
            () = quiet => return,
            () = tokio::time::sleep_until(give_up) => return,
        }
    }
}

/// Whether the file is missing or empty, as it is between the steps of many saves.
fn looks_mid_save(path: &Path) -> bool {
    std::fs::metadata(path).map_or(true, |m| m.len() == 0)
}

/// Whether another event arrives within `wait`.
async fn more_within(rx: &mut mpsc::UnboundedReceiver<()>, wait: Duration) -> bool {
    matches!(tokio::time::timeout(wait, rx.recv()).await, Ok(Some(())))
}

/// Reads, hashes and validates the file, off the async threads.
pub async fn read(path: &Path) -> ConfigUpdate {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || read_now(&path))
        .await
        .expect("reading the config does not panic")
}

fn read_now(path: &Path) -> ConfigUpdate {
    match config::read(path) {
        Ok(text) => {
            let sha256 = sha256_hex(text.as_bytes());
            let base_dir = path.parent().unwrap_or(Path::new("."));
            let result = config::parse(&text, &path.display().to_string(), base_dir);
            ConfigUpdate {
                path: path.to_path_buf(),
                sha256,
                text,
                result,
            }
        }
        Err(rejection) => ConfigUpdate {
            path: path.to_path_buf(),
            // The hash of a message, so a file that stays unreadable is reported once.
            sha256: sha256_hex(rejection.to_string().as_bytes()),
            text: String::new(),
            result: Err(rejection),
        },
    }
}

/// Files hub itself writes beside hub.yaml when `log_path` is its directory.
fn is_ours(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    path.extension().is_some_and(|e| e == "log")
        || name == "state.json"
        || name == "hub.lock"
        || name == "hub.pid"
        || name.starts_with(".state.json.")
}
