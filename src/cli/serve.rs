//! `hub serve`: the daemon in the foreground. Loads hub.yaml (refusing to start on a bad one),
//! takes the log_path's lock, starts logging, binds the API and prints its address, then hands
//! over to `daemon::run`, which on SIGTERM/SIGINT or `POST /hub/shutdown` stops every worker
//! before it returns.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::signal::unix::{SignalKind, signal};

use super::FileArg;
use crate::{daemon, statefile};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    file: FileArg,
    /// API bind address, instead of the config's `host`.
    #[arg(long)]
    host: Option<String>,
    /// API port, instead of the config's `port` (0 picks a free one and prints it).
    #[arg(long)]
    port: Option<u16>,
    /// Another name (or IP) under which clients reach the API: a proxy's, a Kubernetes Service's.
    /// On a loopback bind hub refuses requests addressed to any other name (DNS rebinding);
    /// pages served under it may also send writes. Repeat it, or separate names with commas.
    #[arg(
        long = "allowed-host",
        value_name = "NAME",
        env = "HUB_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    allowed_hosts: Vec<String>,
    /// A file of inference keys for the gateway (`/v1`), one per line (`#` comments), besides
    /// those in HUB_API_KEYS (comma separated). Either those or HUB_TOKEN open `/v1`.
    #[arg(long, env = "HUB_API_KEYS_FILE")]
    api_keys_file: Option<std::path::PathBuf>,
    /// How long a client may take to send a request's headers, or keep a connection idle
    /// (default 10s; tests shorten it).
    #[arg(long, value_parser = super::duration_arg, hide = true)]
    header_read_timeout: Option<Duration>,
    /// On shutdown leave the workers running, for the next `hub serve` to adopt.
    #[arg(long)]
    keep_workers: bool,
    /// How often to re-read hub.yaml and re-check everything even without events.
    #[arg(long, default_value = "30s", value_parser = super::duration_arg)]
    resync_every: Duration,
    /// At most this many models' actions run at once.
    #[arg(long, default_value_t = 8)]
    max_concurrent: usize,
    /// The longest wait between retries of a failing model (the backoff doubles up to it).
    #[arg(long, default_value = "60s", value_parser = super::duration_arg)]
    max_backoff: Duration,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let path = absolute(&args.file.file);
    let (text, desired) = match crate::config::load(&path) {
        Ok(loaded) => loaded,
        Err(rejection) => {
            eprintln!("{rejection}");
            bail!(
                "{} is invalid ({} problems); nothing was started",
                path.display(),
                rejection.problems.len()
            );
        }
    };
    let settings = desired.settings.clone();
    std::fs::create_dir_all(&settings.log_path).with_context(|| {
        format!(
            "cannot create log_path {}; set `log_path` in hub.yaml to a writable directory",
            settings.log_path.display()
        )
    })?;
    let lock = statefile::lock(&settings.log_path)?;
    init_tracing(&settings.log_path, settings.log_level.as_str())?;

    let host = args.host.unwrap_or(settings.host.clone());
    let port = args.port.unwrap_or(settings.port);
    let token = std::env::var("HUB_TOKEN").ok().filter(|t| !t.is_empty());
    let api_keys = api_keys(args.api_keys_file.as_deref())?;
    let access = crate::api::Access::with_keys(token, api_keys, &host, &args.allowed_hosts)?;
    let listener = tokio::net::TcpListener::bind((host.as_str(), port))
        .await
        .with_context(|| format!("cannot listen on {host}:{port}"))?;
    let address = listener.local_addr()?;
    // One plain line on stdout, for scripts and tests that asked for port 0.
    println!("hub: listening on http://{address}");
    tracing::info!(config = %path.display(), "hub listening on http://{address}");
    let listener = listener
        .into_std()
        .context("cannot hand the listener to the API thread")?;

    let config = daemon::Config {
        config_path: path,
        text,
        desired,
        lock,
        hub_exe: std::env::current_exe().context("cannot find the hub executable")?,
        access,
        keep_workers: args.keep_workers,
        resync_every: args.resync_every,
        max_concurrent: args.max_concurrent,
        max_backoff: args.max_backoff,
        header_read_timeout: args
            .header_read_timeout
            .unwrap_or(crate::api::DEFAULT_HEADER_READ_TIMEOUT),
    };
    daemon::run(listener, config, signalled()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on the first SIGTERM (as systemd and `hub stop` stop a service) or SIGINT (Ctrl-C).
/// The handlers are installed when the daemon first polls it, once its loop has started; if
/// they cannot be, it never completes and the signals keep their default effect.
async fn signalled() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}

/// The config path with its directory made canonical. The file itself is not resolved: it may be
/// a symlink (a ConfigMap's) whose target changes, and the watched path must stay the same.
fn absolute(path: &std::path::Path) -> PathBuf {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|dir| dir.join(name))
            .unwrap_or(path),
        _ => path,
    }
}

/// How the stderr log looks: colour only on a terminal; no timestamps of its own when stderr is
/// the journal, which stamps every line itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StderrStyle {
    ansi: bool,
    timestamps: bool,
}

impl StderrStyle {
    /// `journal_stream` is `$JOURNAL_STREAM` (`DEVICE:INODE` of the journal's stream, set by
    /// systemd for a service whose output goes to it) and `stderr` the device and inode of our
    /// stderr: they match only when stderr really is the journal, not in a program that merely
    /// inherited the variable and redirected its output.
    fn decide(is_terminal: bool, journal_stream: Option<&str>, stderr: Option<(u64, u64)>) -> Self {
        let journal = journal_stream
            .and_then(|v| v.split_once(':'))
            .and_then(|(dev, ino)| Some((dev.parse::<u64>().ok()?, ino.parse::<u64>().ok()?)))
            .is_some_and(|stream| Some(stream) == stderr);
        StderrStyle {
            ansi: is_terminal && !journal,
            timestamps: !journal,
        }
    }

    fn of_this_process() -> Self {
        use std::os::fd::AsFd;
        use std::os::unix::fs::MetadataExt;
        let stderr = std::io::stderr();
        let identity = stderr
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .and_then(|fd| std::fs::File::from(fd).metadata().ok())
            .map(|m| (m.dev(), m.ino()));
        StderrStyle::decide(
            std::io::IsTerminal::is_terminal(&stderr),
            std::env::var("JOURNAL_STREAM").ok().as_deref(),
            identity,
        )
    }
}

/// Logs to stderr (for systemd and terminals: see [`StderrStyle`]) and to `<log_path>/hub.log`.
/// `RUST_LOG` overrides the config's `log_level`.
fn init_tracing(log_path: &std::path::Path, level: &str) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let file_path = log_path.join("hub.log");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file_path)
        .with_context(|| format!("cannot open {}", file_path.display()))?;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("hub={level},warn")));
    let style = StderrStyle::of_this_process();
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(style.ansi)
        .with_writer(std::io::stderr);
    let stderr = if style.timestamps {
        stderr.boxed()
    } else {
        stderr.without_time().boxed()
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(Arc::new(file)),
        )
        .try_init()
        .ok();
    Ok(())
}

/// The gateway's inference keys: HUB_API_KEYS (comma separated) and the keys file's lines.
fn api_keys(file: Option<&std::path::Path>) -> anyhow::Result<Vec<String>> {
    let mut keys: Vec<String> = std::env::var("HUB_API_KEYS")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(String::from)
        .collect();
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the API keys file {}", file.display()))?;
        keys.extend(
            text.lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .map(String::from),
        );
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::StderrStyle;

    #[test]
    fn stderr_is_plain_off_a_terminal_and_unstamped_in_the_journal() {
        let plain = |ansi, timestamps| StderrStyle { ansi, timestamps };
        // A terminal: colour and time.
        assert_eq!(
            StderrStyle::decide(true, None, Some((1, 2))),
            plain(true, true)
        );
        // A file or pipe: no colour, time kept.
        assert_eq!(
            StderrStyle::decide(false, None, Some((1, 2))),
            plain(false, true)
        );
        // The journal (the variable names our stderr): neither, journald stamps lines itself.
        let journal = Some("1:2");
        assert_eq!(
            StderrStyle::decide(false, journal, Some((1, 2))),
            plain(false, false)
        );
        // Inherited by a program whose stderr went elsewhere: as if unset.
        assert_eq!(
            StderrStyle::decide(false, journal, Some((1, 3))),
            plain(false, true)
        );
        assert_eq!(
            StderrStyle::decide(true, journal, Some((9, 9))),
            plain(true, true)
        );
        // Malformed or unknown.
        assert_eq!(
            StderrStyle::decide(false, Some("x:2"), Some((1, 2))),
            plain(false, true)
        );
        assert_eq!(
            StderrStyle::decide(false, Some(""), None),
            plain(false, true)
        );
        assert_eq!(
            StderrStyle::decide(false, journal, None),
            plain(false, true)
        );
    }
}
