//! `hub logs NAME [-f]`: a worker's log through the daemon (`GET /hub/models/{name}/logs`): the
//! last lines, then, with `-f`, whatever is appended, by polling from the last offset.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::client::Client;
use crate::wire::{LOG_OFFSET_HEADER, LogsQuery, MAX_TAIL};

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The model whose worker log to show.
    model: String,
    /// The hub.yaml file, to find the daemon (`-f` is --follow here, as in `tail -f`).
    #[arg(long = "file", default_value = "hub.yaml", env = "HUB_CONFIG")]
    file: PathBuf,
    /// Keep printing what the worker writes (until interrupted).
    #[arg(short = 'f', long)]
    follow: bool,
    /// How many of the last lines to show first.
    #[arg(long, default_value_t = 100, value_name = "N",
          value_parser = clap::value_parser!(u64).range(0..=MAX_TAIL as u64))]
    tail: u64,
}

/// How often `-f` asks for more.
const POLL: Duration = Duration::from_millis(500);

pub async fn run(args: LogsArgs, url: Option<String>) -> anyhow::Result<ExitCode> {
    let client = Client::new(url, &args.file);
    let name = super::model_name(&args.model)?;
    let path = format!("/hub/models/{name}/logs");
    let mut out = std::io::stdout().lock();
    let tail = LogsQuery {
        tail: Some(usize::try_from(args.tail)?),
        since: None,
    };
    let (text, mut offset) = read(&client, &path, &tail).await?;
    out.write_all(&text)?;
    out.flush()?;
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        tokio::time::sleep(POLL).await;
        let since = LogsQuery {
            tail: None,
            since: Some(offset),
        };
        let (text, next) = read(&client, &path, &since).await?;
        out.write_all(&text)?;
        out.flush()?;
        offset = next;
    }
}

async fn read(client: &Client, path: &str, query: &LogsQuery) -> anyhow::Result<(Vec<u8>, u64)> {
    let (text, headers) = client.get_raw(path, query).await?;
    let offset = headers
        .get(LOG_OFFSET_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .context("hub's answer has no log offset: is the daemon older than this CLI?")?;
    Ok((text, offset))
}
