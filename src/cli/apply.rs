//! `hub apply`: make FILE the desired state and print `model/NAME <result>` per model.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;

use super::FileArg;
use super::client::Client;
use super::diff::read_text;
use crate::api::PlanReply;
use crate::reconcile::ApplyReply;
use crate::status::{Report, Status, Summary};

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    file: FileArg,
    /// Print what would happen, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Follow progress until converged or failed.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "5m", value_parser = super::duration_arg)]
    timeout: Duration,
    /// Refuse to apply if the desired state is no longer at this generation (from `hub diff`).
    #[arg(long, value_name = "N")]
    expect_generation: Option<u64>,
    /// Drop every override set by imperative calls, so hub.yaml is followed exactly.
    #[arg(long)]
    reset_overrides: bool,
}

pub async fn run(args: ApplyArgs, url: Option<String>) -> anyhow::Result<ExitCode> {
    let path = &args.file.file;
    let text = read_text(path)?;
    let client = Client::new(url, path);
    let file = path.display().to_string();
    if args.dry_run {
        let reply: PlanReply = client
            .post_query("/hub/plan", &[("file", file)], text)
            .await?;
        for model in &reply.models {
            println!("model/{} {} (dry run)", model.name, model.result);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut query = vec![("file", file)];
    if let Some(generation) = args.expect_generation {
        query.push(("expect_generation", generation.to_string()));
    }
    if args.reset_overrides {
        query.push(("reset_overrides", "true".to_string()));
    }
    let reply: ApplyReply = client.post_query("/hub/apply", &query, text).await?;
    if !args.wait {
        for (name, result) in &reply.results {
            println!("model/{name} {result}");
        }
        return Ok(ExitCode::SUCCESS);
    }

    let deadline = tokio::time::Instant::now() + args.timeout;
    let status = loop {
        let status: Status = client.get("/hub/status").await?;
        let settled = status.observed_generation >= reply.generation
            && status.summary != Summary::Progressing;
        if settled {
            break status;
        }
        if tokio::time::Instant::now() >= deadline {
            for (name, _) in &reply.results {
                println!(
                    "model/{name} {}",
                    result_of(name, status.last_reconcile.as_ref())
                );
            }
            bail!(
                "not converged after {:?} (summary: {:?})",
                args.timeout,
                status.summary
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut failed = false;
    for (name, _) in &reply.results {
        let result = result_of(name, status.last_reconcile.as_ref());
        failed |= result == "failed";
        println!("model/{name} {result}");
    }
    let errors: BTreeMap<&str, &str> = status
        .models
        .iter()
        .filter_map(|m| Some((m.name.as_str(), m.error.as_deref()?)))
        .collect();
    for (name, error) in &errors {
        eprintln!("error: model/{name}: {error}");
    }
    Ok(if failed || !errors.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The most telling thing the reconcile did to a model.
fn result_of(name: &str, report: Option<&Report>) -> &'static str {
    let Some(report) = report else {
        return "unchanged";
    };
    let has = |list: &Vec<String>| list.iter().any(|n| n == name);
    if report.failed.iter().any(|f| f.model == name) {
        "failed"
    } else if has(&report.restarted) {
        "restarted"
    } else if has(&report.started) {
        "started"
    } else if has(&report.stopped) {
        "stopped"
    } else if has(&report.loaded) {
        "loaded"
    } else if has(&report.unloaded) {
        "unloaded"
    } else {
        "unchanged"
    }
}
