//! `hub start-model|stop-model|load-model|unload-model`, `hub reload` and `hub shutdown`.

use std::process::ExitCode;
use std::time::Duration;

use super::FileArg;
use super::client::Client;
use crate::config::ModelName;
use crate::wire::{ModelCommandReply, ModelStatus, ShutdownQuery, ShutdownReply, Verb};

#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// The models to act on.
    #[arg(required = true)]
    models: Vec<String>,
    #[command(flatten)]
    file: FileArg,
    /// Return once the daemon accepted the call, without waiting for the model to get there.
    #[arg(long)]
    no_wait: bool,
    /// How long to wait for each model.
    #[arg(long, default_value = "5m", value_parser = super::duration_arg)]
    timeout: Duration,
}

pub async fn run(args: ModelArgs, verb: Verb, url: Option<String>) -> anyhow::Result<ExitCode> {
    let client = Client::new(url, &args.file.file);
    let mut ok = true;
    let mut accepted = Vec::new();
    for text in &args.models {
        let name = match super::model_name(text) {
            Ok(name) => name,
            Err(error) => {
                eprintln!("error: {error:#}");
                ok = false;
                continue;
            }
        };
        let path = format!("/hub/models/{name}/{}", verb.as_str());
        match client.post::<ModelCommandReply>(&path, String::new()).await {
            Ok(reply) => {
                let note = reply
                    .override_
                    .as_ref()
                    .map(|state| format!(" (override: {state} until its hub.yaml entry changes)"))
                    .unwrap_or_default();
                println!("model/{name} {} accepted{note}", verb.as_str());
                accepted.push(name);
            }
            Err(error) => {
                eprintln!("error: model/{name}: {error:#}");
                ok = false;
            }
        }
    }
    if !args.no_wait {
        for name in &accepted {
            match wait_settled(&client, name, args.timeout).await {
                Ok(model) if model.error.is_none() => println!(
                    "model/{name} {} (memory {})",
                    model.worker.phase, model.memory.state
                ),
                Ok(model) => {
                    eprintln!("error: model/{name}: {}", model.error.unwrap_or_default());
                    ok = false;
                }
                Err(error) => {
                    eprintln!("error: model/{name}: {error:#}");
                    ok = false;
                }
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Polls the model until it is in sync or has an error.
async fn wait_settled(
    client: &Client,
    name: &ModelName,
    timeout: Duration,
) -> anyhow::Result<ModelStatus> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let model: ModelStatus = client.get(&format!("/hub/models/{name}")).await?;
        if model.in_sync || model.error.is_some() {
            return Ok(model);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "not settled after {timeout:?} (phase {})",
                model.worker.phase
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn reload(url: Option<String>) -> anyhow::Result<ExitCode> {
    let client = Client::new(url, &FileArg::default_path());
    let _: serde_json::Value = client.post("/hub/reload", String::new()).await?;
    println!("reload requested");
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct ShutdownArgs {
    #[command(flatten)]
    file: FileArg,
    /// Leave the workers running for the next `hub serve` to adopt.
    #[arg(long)]
    keep_workers: bool,
}

pub async fn shutdown(args: ShutdownArgs, url: Option<String>) -> anyhow::Result<ExitCode> {
    let client = Client::new(url, &args.file.file);
    let query = ShutdownQuery {
        keep_workers: args.keep_workers,
    };
    let reply: ShutdownReply = client
        .post_query("/hub/shutdown", &query, String::new())
        .await?;
    println!("shutdown requested (hub pid {})", reply.pid);
    Ok(ExitCode::SUCCESS)
}
