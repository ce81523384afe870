//! Watching hub.yaml the way it is really saved: editors rename over it, git replaces it, a
//! Kubernetes ConfigMap swaps a `..data` symlink whose events never name the file, a script
//! writes it in several chunks. So we watch the parent directory, re-read on any event there once
//! the save has ended (see [`spawn`]), hash the bytes, and pass on content that differs from the
//! last seen, or any save of the file itself. A periodic resync or `POST /hub/reload` also
//! re-reads, so a lost event only delays a change.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config;
use crate::reconcile::{ConfigUpdate, Event, Handle};
use crate::sha256_hex;

/// Events closer together than this are one save.
pub const DEBOUNCE: Duration = Duration::from_millis(10);
/// After an event that completes a save (the writer closed the file, or renamed it into place),
/// the file holds the whole save: only the other events of the same save (a backup deleted, a
/// mode set) are waited for, and those come within microseconds.
pub const COMPLETE_QUIET: Duration = Duration::from_millis(1);
/// How long a file that is missing or empty may take to come back before that counts as an edit:
/// editors and git delete then write, `>` truncates then writes.
pub const SETTLE: Duration = Duration::from_millis(500);
/// How long a writer that has not closed the file may pause between writes before what it wrote
/// so far is read. Every editor and `>` closes the file when done, which ends the wait at once;
/// only a writer that keeps it open waits this long, so it is generous.
pub const WRITE_SETTLE: Duration = Duration::from_secs(2);
/// A stream of events is cut off after this long, so a busy directory still gets read.
const MAX_DEBOUNCE: Duration = Duration::from_millis(250);
/// New content read without an event about the file is passed on only after this long without
/// another event.
const CONFIRM: Duration = Duration::from_millis(20);
/// A resync reads only after this long without a file event.
const RESYNC_QUIET: Duration = Duration::from_millis(50);
/// A writer that keeps the file open and writing is waited for at most this long.
const MAX_WRITE: Duration = Duration::from_secs(10);

/// What one file event says about the watched file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Something changed in the directory (a rename, a create, a delete, another file).
    Changed,
    /// The watched file was written and its writer has not closed it yet: more may follow.
    Writing,
    /// The watched file's writer closed it, or a file was renamed onto it: the save is complete.
    Complete,
}

/// Watches `path` until the loop's channel closes. `last_seen` is the hash of the content the
/// daemon started from. `reread` forces a read even without a file event (the resync).
///
/// A save is read once its writer is done: when it closes the file (inotify's close-after-write),
/// renames it into place, or, for a writer that keeps the file open, after [`WRITE_SETTLE`]
/// without a write. So a save written in several `write()`s is never applied half-way.
pub fn spawn(path: PathBuf, last_seen: String, hub: &Handle) -> anyhow::Result<()> {
    let (events, reread, journal) = (hub.events.clone(), hub.reread.clone(), hub.journal.clone());
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let file_name = path.file_name().map(ToOwned::to_owned);
    let (tx, mut rx) = mpsc::unbounded_channel::<(Seen, bool)>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        use notify::EventKind;
        use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
        let Ok(event) = event else {
            // The watcher lost track (an overflow): read to be sure.
            let _ = tx.send((Seen::Changed, false));
            return;
        };
        // Logs, the lock and the state file are ours.
        if event.paths.iter().all(|p| is_ours(p)) {
            return;
        }
        let is_file =
            |p: &PathBuf| p.file_name().is_some() && p.file_name() == file_name.as_deref();
        let names_file = event.paths.iter().any(is_file);
        // A rename's last path is where the file went.
        let placed = event.paths.last().is_some_and(is_file);
        let seen = match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) if names_file => Seen::Complete,
            EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both)) if placed => {
                Seen::Complete
            }
            // Reads (our own included) change nothing.
            EventKind::Access(_) => return,
            EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) if names_file => Seen::Writing,
            _ => Seen::Changed,
        };
        if names_file {
            tracing::trace!(kind = ?event.kind, ?seen, "hub.yaml event");
        }
        let _ = tx.send((seen, names_file));
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
            let first = tokio::select! {
                got = rx.recv() => match got {
                    Some(seen) => Some(seen),
                    None => return,
                },
                () = reread.notified() => None,
            };
            // A resync that finds a save in progress (events queued or arriving in a moment)
            // waits for it like any save, rather than read it half-written.
            let forced = first.is_none();
            let mut pending = match first {
                Some(first) => Some(first),
                None => next_within(&mut rx, RESYNC_QUIET).await,
            };
            // Whether an event named the file itself: a save of it (even of the same bytes: a
            // touch, a re-save) puts the file back in force after a `hub apply`, where a resync
            // passes on only content not seen yet, so it never undoes an apply.
            let mut named = false;
            let mut confirms = 0;
            let update = loop {
                if let Some((seen, names_file)) = pending.take() {
                    named |= names_file;
                    named |= settle(&mut rx, seen).await;
                }
                let mut update = read(&path).await;
                // Mid-save, the file may be gone or empty for a moment: wait for the rest of the
                // save rather than report it, unless nothing more happens.
                while looks_mid_save(&path) {
                    let Some((seen, names_file)) = next_within(&mut rx, SETTLE).await else {
                        break;
                    };
                    named |= names_file;
                    named |= settle(&mut rx, seen).await;
                    update = read(&path).await;
                }
                // New content that no event about the file announced (read for another file's
                // event, or a resync) may be a write that began a moment ago, its events still on
                // their way: it counts once the directory has been quiet a little longer (or,
                // in a directory that is never quiet, after a few tries).
                if !named && update.sha256 != last_seen && confirms < 10 {
                    confirms += 1;
                    pending = next_within(&mut rx, CONFIRM).await;
                    if pending.is_some() {
                        continue;
                    }
                }
                break update;
            };
            if update.sha256 != last_seen || named {
                last_seen = update.sha256.clone();
                if events.send(Event::Config(update)).is_err() {
                    return;
                }
            }
            if forced {
                journal.count(|m| m.resyncs += 1);
            }
        }
    });
    Ok(())
}

/// Waits for the save that `first` began to end: until no event has come for [`DEBOUNCE`] (at
/// most [`MAX_DEBOUNCE`] in all), or [`COMPLETE_QUIET`] when the last event completed the save;
/// and while the file is being written and not yet closed, until it is closed or
/// [`WRITE_SETTLE`] passes without a write (at most [`MAX_WRITE`]). Returns whether any event
/// named the file.
async fn settle(rx: &mut mpsc::UnboundedReceiver<(Seen, bool)>, first: Seen) -> bool {
    let start = tokio::time::Instant::now();
    let mut last = first;
    let mut writing = first == Seen::Writing;
    let mut named = false;
    loop {
        let (quiet, limit) = match (writing, last) {
            (true, _) => (WRITE_SETTLE, MAX_WRITE),
            (false, Seen::Complete) => (COMPLETE_QUIET, MAX_DEBOUNCE),
            (false, _) => (DEBOUNCE, MAX_DEBOUNCE),
        };
        let got = tokio::select! {
            got = rx.recv() => got,
            () = tokio::time::sleep(quiet) => return named,
            () = tokio::time::sleep_until(start + limit) => return named,
        };
        let Some((seen, names_file)) = got else {
            return named;
        };
        named |= names_file;
        last = seen;
        match seen {
            Seen::Writing => writing = true,
            Seen::Complete => writing = false,
            Seen::Changed => {}
        }
    }
}

/// Whether the file is missing or empty, as it is between the steps of many saves.
fn looks_mid_save(path: &Path) -> bool {
    std::fs::metadata(path).map_or(true, |m| m.len() == 0)
}

/// The next event, if one arrives within `wait`.
async fn next_within(
    rx: &mut mpsc::UnboundedReceiver<(Seen, bool)>,
    wait: Duration,
) -> Option<(Seen, bool)> {
    tokio::time::timeout(wait, rx.recv()).await.ok().flatten()
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
