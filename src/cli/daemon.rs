//! `hub start` and `hub stop`: the seed's workflow around `hub serve`.
//!
//! `start` launches `hub serve` detached (its own process group, output to `<log_path>/hub.out`,
//! pid in `<log_path>/hub.pid`), waits until it answers and prints the status; if a daemon already
//! answers it only prints the status. `stop` asks the daemon to shut down and waits for its
//! process to exit.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use time::OffsetDateTime;

use super::FileArg;
use super::client::{Client, is_unreachable};
use super::diff::load_or_print;
use super::render;
use crate::wire::{Health, ShutdownQuery, ShutdownReply, Status};

#[derive(Debug, clap::Args)]
pub struct StartArgs {
    #[command(flatten)]
    file: FileArg,
    /// How long to wait for the daemon to answer.
    #[arg(long, default_value = "30s", value_parser = super::duration_arg)]
    timeout: Duration,
}

#[derive(Debug, clap::Args)]
pub struct StopArgs {
    #[command(flatten)]
    file: FileArg,
    /// Leave the workers running for the next `hub serve` to adopt.
    #[arg(long)]
    keep_workers: bool,
    /// How long to wait for the daemon to exit.
    #[arg(long, default_value = "2m", value_parser = super::duration_arg)]
    timeout: Duration,
}

/// The daemon's pid file under `log_path`.
pub fn pid_file(log_path: &Path) -> PathBuf {
    log_path.join("hub.pid")
}

/// The detached daemon's stdout and stderr under `log_path` (its log proper is `hub.log`).
pub fn out_file(log_path: &Path) -> PathBuf {
    log_path.join("hub.out")
}

const POLL: Duration = Duration::from_millis(100);

pub async fn start(args: StartArgs, url: Option<String>) -> anyhow::Result<ExitCode> {
    let path = std::path::absolute(&args.file.file).unwrap_or(args.file.file.clone());
    let (_, desired) = load_or_print(&path)?;
    let client = Client::new(url, &path);
    if client.get::<Health>("/health").await.is_ok() {
        println!("hub is already running at {}", client.base());
        print_status(&client).await?;
        return Ok(ExitCode::SUCCESS);
    }

    let log_path = &desired.settings.log_path;
    std::fs::create_dir_all(log_path).with_context(|| {
        format!(
            "cannot create log_path {}; set `log_path` in hub.yaml to a writable directory",
            log_path.display()
        )
    })?;
    let out_path = out_file(log_path);
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&out_path)
        .with_context(|| format!("cannot open {}", out_path.display()))?;
    let err = out
        .try_clone()
        .context("cannot duplicate the output file handle")?;
    let exe = std::env::current_exe().context("cannot find the hub executable")?;
    let mut child = std::process::Command::new(exe)
        .arg("serve")
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own process group: a Ctrl-C in this terminal does not reach it.
        .process_group(0)
        .spawn()
        .context("cannot start `hub serve`")?;
    let pid = child.id();
    let pid_path = pid_file(log_path);
    std::fs::write(&pid_path, format!("{pid}\n"))
        .with_context(|| format!("cannot write {}", pid_path.display()))?;

    let deadline = tokio::time::Instant::now() + args.timeout;
    loop {
        if client.get::<Health>("/health").await.is_ok() {
            break;
        }
        if let Some(exit) = child.try_wait().context("cannot check on `hub serve`")? {
            let _ = std::fs::remove_file(&pid_path);
            bail!(
                "`hub serve` exited ({exit}) before it answered; the end of {}:\n{}",
                out_path.display(),
                last_lines(&out_path, 10)
            );
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "`hub serve` (pid {pid}) did not answer at {} within {:?}; see {} (`hub stop` stops it)",
                client.base(),
                args.timeout,
                out_path.display()
            );
        }
        tokio::time::sleep(POLL).await;
    }
    println!(
        "hub started (pid {pid}) at {}; log {}",
        client.base(),
        log_path.join("hub.log").display()
    );
    print_status(&client).await?;
    Ok(ExitCode::SUCCESS)
}

async fn print_status(client: &Client) -> anyhow::Result<()> {
    let status: Status = client.get("/hub/status").await?;
    print!(
        "{}",
        render::status_table(&status, OffsetDateTime::now_utc())
    );
    Ok(())
}

pub async fn stop(args: StopArgs, url: Option<String>) -> anyhow::Result<ExitCode> {
    let path = &args.file.file;
    let client = Client::new(url, path);
    let query = ShutdownQuery {
        keep_workers: args.keep_workers,
    };
    let reply: ShutdownReply = match client
        .post_query("/hub/shutdown", &query, String::new())
        .await
    {
        Ok(reply) => reply,
        Err(error) if is_unreachable(&error) => {
            println!("hub is not running at {}", client.base());
            return Ok(ExitCode::SUCCESS);
        }
        Err(error) => return Err(error),
    };
    let deadline = tokio::time::Instant::now() + args.timeout;
    while alive(reply.pid) {
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "hub (pid {}) is still stopping after {:?}; its workers may be slow to stop",
                reply.pid,
                args.timeout
            );
        }
        tokio::time::sleep(POLL).await;
    }
    // The pid file `hub start` wrote, if it is this daemon's.
    if let Ok((_, desired)) = crate::config::load(path) {
        let pid_path = pid_file(&desired.settings.log_path);
        let recorded = std::fs::read_to_string(&pid_path).unwrap_or_default();
        if recorded.trim() == reply.pid.to_string() {
            let _ = std::fs::remove_file(&pid_path);
        }
    }
    println!("hub stopped (pid {})", reply.pid);
    Ok(ExitCode::SUCCESS)
}

/// Whether a process runs (a zombie, exited but not yet reaped, does not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) if Path::new("/proc/self/stat").exists() => false,
        // No procfs: ask the kernel whether the pid exists.
        Err(_) => i32::try_from(pid)
            .is_ok_and(|pid| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()),
    }
}

/// The last `n` lines of a file, for an error message.
fn last_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
