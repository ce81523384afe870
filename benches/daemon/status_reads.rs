//! Part 3: status reads. `GET /hub/status` under wrk against nginx serving the same bytes, in
//! alternating rounds, quiet and during a reconcile storm.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::daemon::Daemon;
use crate::harness::free_port;
use crate::support::{self, Samples, ms, row, verdict};
use crate::{config, env_number, harness, installed, ten_running, unchanged};

/// SPEC section 10's targets.
pub const STATUS_RATIO_TARGET: f64 = 0.80;
pub const STATUS_P99_TARGET_MS: f64 = 5.0;

/// The reconcile storm: one save this often.
pub const STORM_EVERY: Duration = Duration::from_millis(50);

/// Alternating rounds per ratio (nginx, hub, nginx, hub, ...): one round per side is noise on a
/// small shared machine, where two back-to-back runs of the same server differ by 10% or more.
pub const MIN_ROUNDS: u64 = 5;

pub async fn status_reads(seconds: u64, rounds: u64) -> anyhow::Result<()> {
    const PART: &str = "3 status reads";
    if !installed("wrk") || !installed("nginx") {
        // A skipped part is a missed target, never a quiet gap in the table.
        for when in ["quiet", "storm"] {
            row(
                PART,
                &format!("{when}: skipped"),
                "wrk or nginx is not installed (bench/run installs them: apt-get install nginx-light wrk)",
                &format!(">= {:.0}% of nginx", STATUS_RATIO_TARGET * 100.0),
                "MISS",
            );
        }
        return Ok(());
    }
    // One wrk thread and one nginx worker: on a 2-core machine wrk takes one core and the server
    // the other; more wrk threads only fight the server for its core.
    let threads = env_number("HUB_BENCH_WRK_THREADS", 1);
    let connections = env_number("HUB_BENCH_WRK_CONNECTIONS", 32);
    println!(
        "status reads: wrk -t{threads} -c{connections} -d{seconds}s --latency, {rounds} alternating rounds (nginx, hub), quiet then during a storm"
    );
    let port = free_port()?;
    let on = config(port, 100, ten_running, unchanged);
    let hub = Daemon::start(&on, 100, &[])?;
    hub.converged(1, Duration::from_secs(30)).await?;
    let body = hub
        .http
        .get(format!("{}/hub/status", hub.url))
        .send()
        .await?
        .bytes()
        .await?;
    let nginx = Nginx::start(&body)?;
    let served = nginx.wait_ready(&hub.http).await?;
    ensure!(served == body, "nginx does not serve the status bytes");
    let hub_url = format!("{}/hub/status", hub.url);
    let alternate = || async {
        let mut pairs = Vec::new();
        for round in 1..=rounds {
            println!("  round {round} of {rounds}");
            let nginx_run = wrk(&nginx.url, threads, connections, seconds).await?;
            let hub_run = wrk(&hub_url, threads, connections, seconds).await?;
            pairs.push((hub_run, nginx_run));
        }
        anyhow::Ok(pairs)
    };

    let quiet = alternate().await?;
    let generation = hub.status().await?["generation"].as_u64().unwrap_or(0);
    let actions_before = worker_actions(&hub).await?;
    let storm = Storm::start(hub.config(), on.clone());
    let stormy = alternate().await;
    let saves = storm.stop().await;
    let stormy = stormy?;
    // Let the last save settle, so its start and stop are counted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let generations = hub.status().await?["generation"].as_u64().unwrap_or(0) - generation;
    let actions = worker_actions(&hub).await?.since(&actions_before);
    hub.save(&on)?;
    drop(nginx);
    hub.shutdown().await?;

    row(
        PART,
        "GET /hub/status body (100 models, 10 running)",
        &format!("{} bytes", body.len()),
        "-",
        "-",
    );
    let enough = rounds >= MIN_ROUNDS;
    let shortfall = if enough {
        String::new()
    } else {
        format!(" (fewer than {MIN_ROUNDS} rounds: cannot pass)")
    };
    for (when, pairs) in [("quiet", &quiet), ("storm", &stormy)] {
        let ratios = Samples::new(pairs.iter().map(|(h, n)| h.rps / n.rps).collect());
        let hub_rps = Samples::new(pairs.iter().map(|(h, _)| h.rps).collect());
        let nginx_rps = Samples::new(pairs.iter().map(|(_, n)| n.rps).collect());
        let hub_p99 = Samples::new(pairs.iter().map(|(h, _)| h.p99_ms).collect());
        let nginx_p99 = Samples::new(pairs.iter().map(|(_, n)| n.p99_ms).collect());
        row(
            PART,
            &format!(
                "{when}: hub / nginx requests per second, median of {} rounds (min-max)",
                ratios.len()
            ),
            &format!(
                "{:.0}% ({:.0}-{:.0}%); hub {:.0} ({:.0}-{:.0}), nginx {:.0} ({:.0}-{:.0}){shortfall}",
                ratios.median() * 100.0,
                ratios.min() * 100.0,
                ratios.max() * 100.0,
                hub_rps.median(),
                hub_rps.min(),
                hub_rps.max(),
                nginx_rps.median(),
                nginx_rps.min(),
                nginx_rps.max(),
            ),
            &format!(">= {:.0}%", STATUS_RATIO_TARGET * 100.0),
            verdict(enough && ratios.median() >= STATUS_RATIO_TARGET),
        );
        row(
            PART,
            &format!(
                "{when}: hub p99, median of {} rounds (min-max); nginx p99",
                hub_p99.len()
            ),
            &format!(
                "{} ({}-{}); nginx {} ({}-{})",
                ms(hub_p99.median()),
                ms(hub_p99.min()),
                ms(hub_p99.max()),
                ms(nginx_p99.median()),
                ms(nginx_p99.min()),
                ms(nginx_p99.max()),
            ),
            &format!("< {STATUS_P99_TARGET_MS} ms"),
            verdict(enough && hub_p99.median() < STATUS_P99_TARGET_MS),
        );
        let hub_errors: Vec<&str> = pairs
            .iter()
            .flat_map(|(h, _)| h.errors.iter().map(String::as_str))
            .collect();
        let nginx_errors: Vec<&str> = pairs
            .iter()
            .flat_map(|(_, n)| n.errors.iter().map(String::as_str))
            .collect();
        for (server, errors) in [("hub", hub_errors), ("nginx", nginx_errors)] {
            if !errors.is_empty() {
                row(
                    PART,
                    &format!("{when}: {server} errors"),
                    &errors.join("; "),
                    "none",
                    "MISS",
                );
            }
        }
    }
    row(
        PART,
        "storm: saves written / generations applied / workers started / workers stopped",
        &format!(
            "{saves} / {generations} / {} / {} in {:.0} s (one save every {} ms, each starts one worker and stops another)",
            actions.started,
            actions.stopped,
            (2 * rounds * seconds) as f64,
            STORM_EVERY.as_millis()
        ),
        "-",
        "-",
    );
    ensure!(
        actions.started > 0 && actions.stopped > 0,
        "the storm started {} and stopped {} workers: it did not exercise the reconciler",
        actions.started,
        actions.stopped
    );
    Ok(())
}

/// Saves the config every [`STORM_EVERY`] so that each save is a new generation whose pass
/// really acts: besides the ten always running, one more model runs, a different one each save
/// (m0010, m0011, ... m0019, round again), so every save starts one worker and stops another.
pub struct Storm {
    task: tokio::task::JoinHandle<()>,
    saves: Arc<AtomicUsize>,
}

impl Storm {
    pub fn start(path: PathBuf, text: String) -> Storm {
        let texts: Vec<String> = (10..20).map(|i| with_running(&text, i)).collect();
        let saves = Arc::new(AtomicUsize::new(0));
        let counter = saves.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(STORM_EVERY);
            for text in texts.iter().cycle() {
                tick.tick().await;
                if harness::save_like_an_editor(&path, text).is_ok() {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Storm { task, saves }
    }

    pub async fn stop(self) -> usize {
        self.task.abort();
        let _ = self.task.await;
        self.saves.load(Ordering::Relaxed)
    }
}

/// `text` with model `i` set to `state: running`.
pub fn with_running(text: &str, i: usize) -> String {
    let name = support::model_name(i);
    text.lines()
        .map(|line| {
            if line.starts_with(&format!("  - {{name: {name},")) {
                line.replace("state: stopped", "state: running")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Workers started and stopped so far, as the daemon's `hub_actions_total` counts them (ok or
/// superseded by a newer save: either way the reconciler acted).
pub struct WorkerActions {
    started: u64,
    stopped: u64,
}

impl WorkerActions {
    pub fn since(&self, before: &WorkerActions) -> WorkerActions {
        WorkerActions {
            started: self.started - before.started,
            stopped: self.stopped - before.stopped,
        }
    }
}

pub async fn worker_actions(hub: &Daemon) -> anyhow::Result<WorkerActions> {
    let text = hub
        .http
        .get(format!("{}/metrics", hub.url))
        .send()
        .await?
        .text()
        .await?;
    let count = |action: &str| -> u64 {
        text.lines()
            .filter(|line| line.starts_with(&format!("hub_actions_total{{action=\"{action}\",")))
            .filter(|line| !line.contains("result=\"failed\""))
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<u64>().ok())
            .sum()
    };
    Ok(WorkerActions {
        started: count("start"),
        stopped: count("stop"),
    })
}

/// What wrk measured.
pub struct Wrk {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// wrk's `Non-2xx` and `Socket errors` lines.
    pub errors: Vec<String>,
}

/// wrk on `url`, with a Lua `script` (`-s`) if given, such as one that makes every request a
/// POST.
pub async fn wrk_with(
    url: &str,
    threads: u64,
    connections: u64,
    seconds: u64,
    script: Option<&std::path::Path>,
) -> anyhow::Result<Wrk> {
    let mut command = tokio::process::Command::new("wrk");
    if let Some(script) = script {
        command.arg("-s").arg(script);
    }
    let output = command
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("--latency")
        .arg(url)
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot run wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    ensure!(output.status.success(), "wrk failed: {text}");
    parse_wrk(&text).with_context(|| format!("cannot read wrk's output:\n{text}"))
}

/// [`wrk_with`], printing what it measured.
pub async fn wrk(url: &str, threads: u64, connections: u64, seconds: u64) -> anyhow::Result<Wrk> {
    let result = wrk_with(url, threads, connections, seconds, None).await?;
    println!(
        "  {url} (-c{connections}): {:.0} req/s, p50 {}, p99 {}{}",
        result.rps,
        ms(result.p50_ms),
        ms(result.p99_ms),
        if result.errors.is_empty() {
            String::new()
        } else {
            format!(", errors: {}", result.errors.join("; "))
        }
    );
    Ok(result)
}

pub fn parse_wrk(text: &str) -> anyhow::Result<Wrk> {
    let mut rps = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut errors = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(value) = line.strip_prefix("Requests/sec:") {
            rps = Some(value.trim().parse::<f64>()?);
        } else if let Some(value) = line.strip_prefix("50%") {
            p50 = Some(wrk_duration_ms(value.trim())?);
        } else if let Some(value) = line.strip_prefix("99%") {
            p99 = Some(wrk_duration_ms(value.trim())?);
        } else if line.starts_with("Non-2xx") || line.starts_with("Socket errors") {
            errors.push(line.to_string());
        }
    }
    Ok(Wrk {
        rps: rps.context("no Requests/sec line")?,
        p50_ms: p50.context("no 50% line (was --latency passed?)")?,
        p99_ms: p99.context("no 99% line (was --latency passed?)")?,
        errors,
    })
}

/// wrk's `812.00us`, `1.23ms`, `1.02s`, `2.00m` in milliseconds.
pub fn wrk_duration_ms(text: &str) -> anyhow::Result<f64> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .context("no unit")?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse()?;
    Ok(match unit {
        "us" => number / 1000.0,
        "ms" => number,
        "s" => number * 1000.0,
        "m" => number * 60_000.0,
        other => bail!("unknown unit {other:?}"),
    })
}

/// nginx in the foreground on a loopback port, serving one file at `/hub/status`.
pub struct Nginx {
    dir: tempfile::TempDir,
    child: Child,
    url: String,
}

impl Nginx {
    pub fn start(body: &[u8]) -> anyhow::Result<Nginx> {
        let dir = tempfile::tempdir()?;
        let root = dir.path();
        std::fs::create_dir_all(root.join("www/hub"))?;
        std::fs::write(root.join("www/hub/status"), body)?;
        // nginx's workers may run as another user, who must be able to read the file.
        for path in [root, &root.join("www"), &root.join("www/hub")] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
        }
        let port = free_port()?;
        let root_text = root.display();
        // As served in production: sendfile, an open-file cache.
        let http = format!(
            "    sendfile on;
    tcp_nopush on;
    open_file_cache max=16 inactive=60s;
    server {{
        listen 127.0.0.1:{port};
        root {root_text}/www;
    }}
"
        );
        Nginx::run(dir, &http, format!("http://127.0.0.1:{port}/hub/status"))
    }

    /// nginx with `http` (directives and server blocks) inside its `http` block, in `dir`, where
    /// its config, pid file, logs and temp files go; `url` is what the benchmark reads.
    pub fn run(dir: tempfile::TempDir, http: &str, url: String) -> anyhow::Result<Nginx> {
        let root = dir.path();
        std::fs::create_dir_all(root.join("temp"))?;
        let user = if nix::unistd::geteuid().is_root() {
            "user root;"
        } else {
            ""
        };
        let root_text = root.display();
        // No access log, long keep-alive (hub's server keeps connections as long as the client
        // wants, so nginx may too). One worker process: wrk takes the other core of the 2-core
        // machine the figures are taken on.
        let conf = format!(
            "{user}
daemon off;
master_process on;
worker_processes 1;
pid {root_text}/nginx.pid;
error_log {root_text}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    default_type application/json;
    client_body_temp_path {root_text}/temp/body;
    proxy_temp_path {root_text}/temp/proxy;
    fastcgi_temp_path {root_text}/temp/fastcgi;
    uwsgi_temp_path {root_text}/temp/uwsgi;
    scgi_temp_path {root_text}/temp/scgi;
{http}}}
"
        );
        let conf_path = root.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new("nginx")
            .arg("-p")
            .arg(root)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(root.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(root.join("nginx.stderr"))?)
            .spawn()
            .context("cannot run nginx")?;
        Ok(Nginx { dir, child, url })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// What nginx said on stderr and in its error log, for an error message.
    pub fn log(&self) -> String {
        ["nginx.stderr", "error.log"]
            .iter()
            .filter_map(|name| std::fs::read_to_string(self.dir.path().join(name)).ok())
            .collect::<Vec<_>>()
            .join("")
    }

    /// Waits until nginx answers and returns what it serves.
    pub async fn wait_ready(&self, http: &reqwest::Client) -> anyhow::Result<Vec<u8>> {
        let started = Instant::now();
        loop {
            if let Ok(response) = http.get(&self.url).send().await
                && response.status().is_success()
            {
                return Ok(response.bytes().await?.to_vec());
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!("nginx did not answer within 10 s: {}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers, then exits.
        harness::stop(&mut self.child);
    }
}
