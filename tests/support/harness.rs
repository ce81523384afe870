//! The daemon harness that the integration tests (`tests/it`) and the daemon benchmark
//! (`benches/daemon`) share: start `hub serve` in a directory and read the address it prints,
//! save a file as editors do, pick free ports, stop a child process, and find what a hub left
//! running with the harness's own `/proc` reader (never the daemon's, so a bug there cannot hide
//! a leak).
//!
//! Both include this file by path (`#[path = "..."] mod harness;`): plain `cargo test` and
//! `cargo bench` build it, with no feature to turn on and no crate to add. It returns errors; the
//! tests turn them into panics, the benchmark into an error row.

#![allow(dead_code)] // Each includer uses a different part.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The `hub` binary cargo built for this test or benchmark.
pub const HUB: &str = env!("CARGO_BIN_EXE_hub");

/// How long a daemon (or worker) gets to print its address or to exit: generous, because CI
/// machines are shared and slow.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// `hub serve -f DIR/hub.yaml --port 0`, then whatever `configure` adds (arguments,
/// environment), with stderr appended to `DIR/daemon.stderr`. Returns the running child and the
/// URL of its "hub: listening on URL" line. A daemon that prints no address in [`PATIENCE`] is
/// stopped, and its stderr is in the error.
pub fn serve(dir: &Path, configure: impl FnOnce(&mut Command)) -> anyhow::Result<(Child, String)> {
    serve_on(dir, 0, configure)
}

/// [`serve`] on a given port (0: any free one).
pub fn serve_on(
    dir: &Path,
    port: u16,
    configure: impl FnOnce(&mut Command),
) -> anyhow::Result<(Child, String)> {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("daemon.stderr"))?;
    let mut command = Command::new(HUB);
    command
        .args(["serve", "-f"])
        .arg(dir.join("hub.yaml"))
        .args(["--port", &port.to_string()]);
    configure(&mut command);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .context("cannot run hub serve")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    // The first line is the address; the rest is read and dropped, so the daemon never blocks on
    // a full pipe.
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    let url = match rx.recv_timeout(PATIENCE) {
        Ok(line) => line
            .strip_prefix("hub: listening on ")
            .map(str::to_string)
            .with_context(|| format!("unexpected first line {line:?}")),
        Err(_) => Err(anyhow::anyhow!(
            "hub serve printed no address; stderr:\n{}",
            daemon_stderr(dir)
        )),
    };
    match url {
        Ok(url) => Ok((child, url)),
        Err(error) => {
            stop(&mut child);
            Err(error)
        }
    }
}

/// What the daemon [`serve`] started in `dir` wrote to stderr.
pub fn daemon_stderr(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("daemon.stderr")).unwrap_or_default()
}

/// Saves `text` to `path` as editors do: a temp file beside it, renamed over it.
pub fn save_like_an_editor(path: &Path, text: &str) -> std::io::Result<()> {
    let temp = path.with_file_name(".hub.yaml.swp");
    std::fs::write(&temp, text)?;
    std::fs::rename(&temp, path)
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// SIGTERM, up to [`PATIENCE`] to exit, then SIGKILL; always reaped. Whether it exited on the
/// SIGTERM (or had already).
pub fn stop(child: &mut Child) -> bool {
    if child.try_wait().ok().flatten().is_some() {
        return true;
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let started = Instant::now();
    while child.try_wait().ok().flatten().is_none() {
        if started.elapsed() > PATIENCE {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// Waits up to `within` for `child` to exit on its own (after a shutdown or a signal).
pub async fn exited(child: &mut Child, within: Duration) -> anyhow::Result<ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if started.elapsed() > within {
            bail!("did not exit within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Everything a hub in `dir` with `log_path` started that still lives: processes carrying its
/// owner mark or working in its directory.
pub fn leftovers(dir: &Path, log_path: &Path) -> Vec<u32> {
    let mut left = marked_by(log_path);
    left.extend(processes_in(dir));
    left.sort_unstable();
    left.dedup();
    left
}

/// SIGKILL to each of `pids`.
pub fn kill_all(pids: &[u32]) {
    for pid in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Live processes marked as workers of the hub whose `log_path` is `log_path`: `HUB_OWNER` in
/// their environment holds the first 16 hex digits of the SHA-256 of the canonical path.
pub fn marked_by(log_path: &Path) -> Vec<u32> {
    let Ok(canonical) = log_path.canonicalize() else {
        return Vec::new();
    };
    let owner = hub::sha256_hex(canonical.display().to_string().as_bytes())[..16].to_string();
    let mark = format!("HUB_OWNER={owner}");
    all_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == mark.as_bytes()))
                && is_alive(*pid)
        })
        .collect()
}

/// Pids of live processes whose current directory is `dir`.
pub fn processes_in(dir: &Path) -> Vec<u32> {
    let Ok(dir) = dir.canonicalize() else {
        return Vec::new();
    };
    all_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == dir)
                && is_alive(*pid)
        })
        .collect()
}

/// Whether `pid` is a live process (not a zombie).
pub fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// A `kB` line of `/proc/PID/status`, such as `VmRSS`, in KiB.
pub fn proc_status_kib(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .with_context(|| format!("no {key} for pid {pid}"))?;
    Ok(line.trim().trim_end_matches("kB").trim().parse()?)
}

/// Every pid in `/proc`.
fn all_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect()
}
