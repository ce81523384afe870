//! `hub status`: a table of every model (or the named ones, with their recent events), or the
//! status JSON.

use std::io::Write;
use std::process::ExitCode;

use anyhow::bail;
use time::OffsetDateTime;

use super::FileArg;
use super::client::Client;
use super::render;
use crate::config::ModelName;
use crate::wire::{ModelDetail, Status};

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Only these models (the table then also lists their recent events).
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
    // A text that is not a model name names no model either.
    let mut names = Vec::with_capacity(args.models.len());
    for text in &args.models {
        match ModelName::new(text) {
            Ok(name) if status.models.iter().any(|m| m.name == name.as_str()) => names.push(name),
            _ => bail!("unknown model {text:?}: `hub status` lists the models"),
        }
    }
    if !names.is_empty() {
        status
            .models
            .retain(|m| names.iter().any(|name| m.name == name.as_str()));
    }
    let mut out = std::io::stdout().lock();
    match args.output {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&status)?)?,
        Format::Table => {
            write!(
                out,
                "{}",
                render::status_table(&status, OffsetDateTime::now_utc())
            )?;
            for name in &names {
                let detail: ModelDetail = client.get(&format!("/hub/models/{name}")).await?;
                write!(
                    out,
                    "{}",
                    render::model_events(name.as_str(), &detail.events)
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
