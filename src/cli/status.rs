//! `hub status`: a table of every model (or the named ones, with their recent events), or the
//! status JSON. `hub models`: what a client of the gateway can ask for (`GET /v1/models`).

use std::io::Write;
use std::process::ExitCode;

use anyhow::bail;
use time::OffsetDateTime;

use super::FileArg;
use super::client::{self, Client};
use super::render;
use crate::config::ModelName;
use crate::wire::{ModelDetail, ModelList, Status};

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

#[derive(Debug, clap::Args)]
pub struct ModelsArgs {
    #[command(flatten)]
    file: FileArg,
    /// Output format (json: the daemon's `/v1/models` answer as it is).
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

/// `hub models`: every model of hub.yaml as the gateway lists it, with whether a request would be
/// served now or wait for a start or load.
pub async fn models(args: ModelsArgs, url: Option<String>) -> anyhow::Result<ExitCode> {
    // `/v1` takes an inference key as well as the token.
    let client = Client::new(url, &args.file.file).with_token(client::gateway_key());
    let mut out = std::io::stdout().lock();
    match args.output {
        Format::Json => {
            let no_query: [(&str, &str); 0] = [];
            let (body, _) = client.get_raw("/v1/models", &no_query).await?;
            out.write_all(&body)?;
            if !body.ends_with(b"\n") {
                writeln!(out)?;
            }
        }
        Format::Table => {
            let list: ModelList = client.get("/v1/models").await?;
            write!(out, "{}", render::models_table(&list))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
