//! Worker processes: spawn (no shell, own process group, output to a log file), watch for exit,
//! stop (SIGTERM, then SIGKILL to the whole group), and after a daemon restart find and adopt
//! the workers an earlier daemon started. The only module that creates or signals processes, and
//! it only ever signals processes it started: every worker carries this hub's owner mark in its
//! environment, and a process is signalled only while its start time still matches.

mod discover;
mod ports;
mod procfs;

pub use discover::{Found, discover, owner_id, stop_found};
pub use ports::{pick_port, port_is_free};
pub use procfs::{all_pids, is_alive, process_group, process_start_time};

use std::collections::HashMap;
use std::fs::OpenOptions;
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

/// The folder under `log_path` that holds the workers' logs, apart from the daemon's own files
/// (`hub.log`, `state.json`), so no model name can write into them.
pub const WORKER_LOG_DIR: &str = "workers";

/// The log file of model `name`'s worker: `<log_path>/workers/<name>.log`.
pub fn worker_log(log_path: &Path, name: &ModelName) -> PathBuf {
    log_path.join(WORKER_LOG_DIR).join(format!("{name}.log"))
}

/// The variables a worker inherits from the daemon: what a program needs to run at all (where
/// programs and libraries are, whose home, which language and time zone) and which devices it
/// may use. Nothing else passes, so the daemon's secrets (`HUB_TOKEN`, inference keys) and
/// whatever else its environment holds never reach a third-party server or its log; hub.yaml's
/// `env` (the engine's and the model's) adds what a worker needs beyond these.
const INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "LD_LIBRARY_PATH",
    "XDG_RUNTIME_DIR",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
];

/// Whether the daemon's variable `key` passes to its workers; see [`INHERITED_ENV`].
pub fn inherited(key: &str) -> bool {
    INHERITED_ENV.contains(&key) || key.starts_with("LC_")
}

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
    /// The process's start time (clock ticks after boot), which tells it from a later process
    /// that reuses its pid.
    pub start_time: Option<u64>,
    pub log_file: PathBuf,
}

/// The environment variable that marks a worker as started by a hub, with the hub's owner id.
pub const OWNER_VAR: &str = "HUB_OWNER";
/// The environment variable naming the worker's model.
pub const MODEL_VAR: &str = "HUB_MODEL";

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
    owner: Arc<str>,
}

impl Supervisor {
    /// `exits` receives every worker exit. `owner` marks the workers this hub starts (see
    /// [`owner_id`]), so a later daemon can find them.
    pub fn new(exits: mpsc::UnboundedSender<Exit>, owner: &str) -> Supervisor {
        Supervisor {
            live: Arc::default(),
            exits,
            owner: owner.into(),
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Starts a worker. It runs in its own process group with stdin closed, stdout and stderr
    /// appended to [`worker_log`], and a clean environment: the [`inherited`] basics, the
    /// request's `env`, and the owner mark.
    pub fn spawn(&self, request: SpawnRequest<'_>) -> anyhow::Result<Spawned> {
        let name = request.name.clone();
        if self.pid(&name).is_some() {
            bail!("model {name:?} already has a live worker");
        }
        let Some((program, args)) = request.argv.split_first() else {
            bail!("the engine's command is empty");
        };
        let log_file = worker_log(request.log_dir, &name);
        let log_dir = log_file.parent().unwrap_or(request.log_dir);
        std::fs::create_dir_all(log_dir)
            .with_context(|| format!("cannot create log directory {}", log_dir.display()))?;
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
            .env_clear()
            .envs(std::env::vars_os().filter(|(k, _)| k.to_str().is_some_and(inherited)))
            .envs(request.env.iter().map(|(k, v)| (k, v)))
            .env(OWNER_VAR, &*self.owner)
            .env(MODEL_VAR, name.as_str())
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
        let start_time = process_start_time(pid);

        self.watch_exit(name, pid, async move {
            match child.wait().await {
                Ok(status) => ExitInfo {
                    code: status.code(),
                    signal: status.signal(),
                },
                Err(_) => ExitInfo {
                    code: None,
                    signal: None,
                },
            }
        });
        Ok(Spawned {
            pid,
            start_time,
            log_file,
        })
    }

    /// Takes over a worker an earlier daemon started: the same process (pid and start time),
    /// leading its own process group. Its exit is watched through a pidfd, since it is not our
    /// child and cannot be waited for.
    pub fn adopt(&self, name: &ModelName, pid: u32, start_time: u64) -> anyhow::Result<()> {
        if process_start_time(pid) != Some(start_time) {
            bail!("process {pid} is gone, or is another process now");
        }
        if process_group(pid) != Some(pid) {
            bail!("process {pid} does not lead its own process group");
        }
        let exit = pidfd::exit_of(pid).context("cannot watch the process")?;
        self.watch_exit(name.clone(), pid, async move {
            exit.await;
            // Not our child: its exit status went to whoever reaps it.
            ExitInfo {
                code: None,
                signal: None,
            }
        });
        Ok(())
    }

    /// Registers a live worker and, when `exited` resolves, takes it out of the table, wakes
    /// whoever waits for it, and reports the exit.
    fn watch_exit(
        &self,
        name: ModelName,
        pid: u32,
        exited: impl Future<Output = ExitInfo> + Send + 'static,
    ) {
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
            let info = exited.await;
            {
                let mut live = live.lock().expect("supervisor table lock");
                if live.get(&name).is_some_and(|l| l.pid == pid) {
                    live.remove(&name);
                }
            }
            exited_tx.send_replace(Some(info));
            let _ = exits.send(Exit { name, pid, info });
        });
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

mod pidfd {
    //! Waiting for a process that is not our child, through a pidfd (Linux 5.3+): it becomes
    //! readable when the process exits.

    use std::os::fd::{FromRawFd, OwnedFd};

    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;

    /// A future that resolves when `pid` exits.
    pub fn exit_of(pid: u32) -> std::io::Result<impl std::future::Future<Output = ()> + Send> {
        let pid = nix::libc::pid_t::try_from(pid)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new file descriptor or -1; it
        // reads and writes no memory of ours.
        let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
        let fd = i32::try_from(fd).map_err(|_| std::io::Error::last_os_error())?;
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the descriptor was just created for us and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an OwnedFd is a valid open descriptor, and the AsyncFd owns it for its whole
        // life, so it stays open and the same.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        Ok(async move {
            let _ = fd.readable().await;
        })
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
