//! Worker processes: spawn (no shell, own process group, output to a log file), watch for exit,
//! stop (SIGTERM, then SIGKILL to the whole group). The only module that creates or signals
//! processes, and it only ever signals processes it started.

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::{mpsc, watch};

use crate::config::ModelName;

/// Worker logs larger than this are rotated to `<name>.log.1` when the worker starts.
pub const LOG_ROTATE_BYTES: u64 = 16 * 1024 * 1024;

/// How a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl ExitInfo {
    /// The shell's convention: the exit code, or 128 + the signal number.
    pub fn code_or_signal(&self) -> i32 {
        self.code
            .unwrap_or_else(|| 128 + self.signal.unwrap_or_default())
    }
}

/// Sent when any worker exits, whether hub stopped it or not.
#[derive(Debug, Clone)]
pub struct Exit {
    pub name: ModelName,
    pub pid: u32,
    pub info: ExitInfo,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct SpawnRequest<'a> {
    pub name: &'a ModelName,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: &'a Path,
    pub log_dir: &'a Path,
}

#[derive(Debug, Clone)]
pub struct Spawned {
    pub pid: u32,
    pub log_file: PathBuf,
}

#[derive(Clone)]
struct Live {
    pid: u32,
    exited: watch::Receiver<Option<ExitInfo>>,
}

/// The table of live workers. Cheap to clone; every clone sees the same processes.
#[derive(Clone)]
pub struct Supervisor {
    live: Arc<Mutex<HashMap<ModelName, Live>>>,
    exits: mpsc::UnboundedSender<Exit>,
}

impl Supervisor {
    /// `exits` receives every worker exit.
    pub fn new(exits: mpsc::UnboundedSender<Exit>) -> Supervisor {
        Supervisor {
            live: Arc::default(),
            exits,
        }
    }

    /// Starts a worker. It runs in its own process group with stdin closed and stdout and stderr
    /// appended to `<log_dir>/<name>.log`.
    pub fn spawn(&self, request: SpawnRequest<'_>) -> anyhow::Result<Spawned> {
        let name = request.name.clone();
        if self.pid(&name).is_some() {
            bail!("model {name:?} already has a live worker");
        }
        let Some((program, args)) = request.argv.split_first() else {
            bail!("the engine's command is empty");
        };
        std::fs::create_dir_all(request.log_dir).with_context(|| {
            format!("cannot create log directory {}", request.log_dir.display())
        })?;
        let log_file = request.log_dir.join(format!("{name}.log"));
        rotate_if_large(&log_file);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_file)
            .with_context(|| format!("cannot open log file {}", log_file.display()))?;
        let log_err = log
            .try_clone()
            .context("cannot duplicate the log file handle")?;

        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .envs(request.env.iter().map(|(k, v)| (k, v)))
            .current_dir(request.cwd)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .kill_on_drop(false);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot run {program:?}"))?;
        let pid = child
            .id()
            .context("the worker exited before it could be watched")?;

        let (exited_tx, exited_rx) = watch::channel(None);
        self.live.lock().expect("supervisor table lock").insert(
            name.clone(),
            Live {
                pid,
                exited: exited_rx,
            },
        );
        let live = self.live.clone();
        let exits = self.exits.clone();
        tokio::spawn(async move {
            let info = match child.wait().await {
                Ok(status) => ExitInfo {
                    code: status.code(),
                    signal: status.signal(),
                },
                Err(_) => ExitInfo {
                    code: None,
                    signal: None,
                },
            };
            {
                let mut live = live.lock().expect("supervisor table lock");
                if live.get(&name).is_some_and(|l| l.pid == pid) {
                    live.remove(&name);
                }
            }
            exited_tx.send_replace(Some(info));
            let _ = exits.send(Exit { name, pid, info });
        });
        Ok(Spawned { pid, log_file })
    }

    /// The pid of the model's live worker, if any.
    pub fn pid(&self, name: &ModelName) -> Option<u32> {
        let live = self.live.lock().expect("supervisor table lock");
        live.get(name).map(|l| l.pid)
    }

    /// Names of every model with a live worker.
    pub fn names(&self) -> Vec<ModelName> {
        let live = self.live.lock().expect("supervisor table lock");
        live.keys().cloned().collect()
    }

    /// Resolves when the model's current worker exits; immediately if there is none.
    pub async fn wait_exit(&self, name: &ModelName) -> Option<ExitInfo> {
        let live = {
            let table = self.live.lock().expect("supervisor table lock");
            table.get(name).cloned()
        };
        let mut exited = live?.exited;
        let info = exited.wait_for(Option::is_some).await.ok()?;
        *info
    }

    /// Stops the model's worker: the engine's `stop_command` if any, then SIGTERM to its process
    /// group, SIGKILL after `stop_timeout`, and a final SIGKILL for anything left in the group.
    /// Returns how it exited, or `None` if there was no live worker.
    pub async fn stop(
        &self,
        name: &ModelName,
        stop_timeout: Duration,
        stop_command: Option<Vec<String>>,
    ) -> Option<ExitInfo> {
        let pid = self.pid(name)?;
        if let Some(argv) = stop_command {
            run_stop_command(&argv, stop_timeout).await;
        }
        signal_group(pid, Signal::SIGTERM);
        let exit = match tokio::time::timeout(stop_timeout, self.wait_exit(name)).await {
            Ok(exit) => exit,
            Err(_) => {
                tracing::warn!(model = %name, pid, "worker ignored SIGTERM for {stop_timeout:?}; sending SIGKILL");
                signal_group(pid, Signal::SIGKILL);
                self.wait_exit(name).await
            }
        };
        // Children the worker forked may outlive it in the group; they go too.
        signal_group(pid, Signal::SIGKILL);
        exit
    }
}

fn signal_group(pgid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pgid) else { return };
    if raw <= 1 {
        return;
    }
    if let Err(e) = killpg(Pid::from_raw(raw), signal)
        && e != nix::errno::Errno::ESRCH
    {
        tracing::warn!(pgid, ?signal, "cannot signal process group: {e}");
    }
}

async fn run_stop_command(argv: &[String], timeout: Duration) {
    let Some((program, args)) = argv.split_first() else {
        return;
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(timeout, command.status()).await {
        Ok(Ok(status)) if status.success() => {}
        Ok(Ok(status)) => tracing::warn!(?argv, "stop_command exited with {status}"),
        Ok(Err(e)) => tracing::warn!(?argv, "cannot run stop_command: {e}"),
        Err(_) => tracing::warn!(?argv, "stop_command timed out after {timeout:?}"),
    }
}

fn rotate_if_large(log_file: &Path) {
    if std::fs::metadata(log_file).is_ok_and(|m| m.len() > LOG_ROTATE_BYTES) {
        let mut rotated = log_file.as_os_str().to_owned();
        rotated.push(".1");
        let _ = std::fs::rename(log_file, rotated);
    }
}

/// Picks a worker port: `preferred` if it is free, else the first free port from `start` that is
/// not in `taken` and can be bound on loopback right now.
pub fn pick_port(preferred: Option<u16>, start: u16, taken: &HashSet<u16>) -> Option<u16> {
    if let Some(port) = preferred
        && !taken.contains(&port)
        && port_is_free(port)
    {
        return Some(port);
    }
    (start..=u16::MAX).find(|p| !taken.contains(p) && port_is_free(*p))
}

/// Whether a TCP port can be bound on 127.0.0.1 now. Another process may take it before the
/// worker binds; the worker then fails to start and the retry picks another.
pub fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}
