//! `hub status`: a table of every model (or the named ones), or the status JSON.

use std::process::ExitCode;

use anyhow::bail;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::FileArg;
use super::client::Client;
use crate::status::{ModelStatus, Status};

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Only these models.
    models: Vec<String>,
    #[command(flatten)]
    file: FileArg,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

pub async fn run(args: StatusArgs, url: Option<String>) -> anyhow::Result<ExitCode> {
    let client = Client::new(url, &args.file.file);
    let mut status: Status = client.get("/hub/status").await?;
    if !args.models.is_empty() {
        for name in &args.models {
            if !status.models.iter().any(|m| &m.name == name) {
                bail!("unknown model {name:?}");
            }
        }
        status.models.retain(|m| args.models.contains(&m.name));
    }
    match args.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&status)?),
        Format::Table => print!("{}", table(&status, OffsetDateTime::now_utc())),
    }
    Ok(ExitCode::SUCCESS)
}

/// The status as a plain text table.
pub fn table(status: &Status, now: OffsetDateTime) -> String {
    let mut out = format!(
        "generation {} (observed {}), {:?}: {} models, {} running, {} loaded, {} failed\n",
        status.generation,
        status.observed_generation,
        status.summary,
        status.counts.models,
        status.counts.running,
        status.counts.loaded,
        status.counts.failed,
    )
    .to_lowercase();
    if let Some(rejected) = &status.config.rejected {
        out.push_str(&format!(
            "last edit of {} was rejected at {}:\n",
            status.config.path, rejected.at
        ));
        for error in &rejected.errors {
            let at = match (error.line, error.column) {
                (Some(l), Some(c)) => format!("{l}:{c}: "),
                _ => String::new(),
            };
            out.push_str(&format!("  {at}{}: {}\n", error.path, error.message));
        }
    }
    let header = [
        "NAME", "DESIRED", "PHASE", "MEMORY", "PID", "PORT", "UPTIME", "RESTARTS", "GROUP",
        "IN-SYNC",
    ];
    let rows: Vec<[String; 10]> = status.models.iter().map(|m| row(m, now)).collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    for model in &status.models {
        if let Some(error) = &model.error {
            out.push_str(&format!("{}: {error}\n", model.name));
        }
    }
    out
}

fn row(m: &ModelStatus, now: OffsetDateTime) -> [String; 10] {
    let dash = || "-".to_string();
    let uptime = m
        .worker
        .started_at
        .as_deref()
        .filter(|_| m.worker.phase == "ready")
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        .map_or_else(dash, |t| human_duration((now - t).whole_seconds()));
    let desired = match &m.override_ {
        Some(o) => format!("{} (override: {})", m.desired, o.state),
        None => m.desired.clone(),
    };
    [
        m.name.clone(),
        desired,
        m.worker.phase.clone(),
        m.memory.state.clone(),
        m.worker.pid.map_or_else(dash, |p| p.to_string()),
        m.worker.port.map_or_else(dash, |p| p.to_string()),
        uptime,
        m.worker.restarts.to_string(),
        m.group.clone().unwrap_or_else(dash),
        if m.in_sync { "yes" } else { "no" }.to_string(),
    ]
}

fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}
