//! `hub apply`: make FILE the desired state and print `model/NAME <result>` per model. With
//! `--wait` it follows the reconcile until the generation has converged or failed, and prints what
//! the reconcile did (its report), so the lines are what happened, not what was planned.

use std::process::ExitCode;
use std::time::Duration;

use super::FileArg;
use super::client::Client;
use super::diff::read_text;
use super::render::{apply_line, planned_line, result_of};
use crate::wire::{ApplyQuery, ApplyResponse, Outcome, PlanQuery, PlanReply, Status, Summary};

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
    let file = Some(path.display().to_string());
    if args.dry_run {
        let query = PlanQuery {
            file,
            reset_overrides: args.reset_overrides,
        };
        let reply: PlanReply = client.post_query("/hub/plan", &query, text).await?;
        for model in &reply.models {
            println!(
                "{} (dry run)",
                planned_line(&model.name, model.bytes, &model.evicts, model.result)
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let query = ApplyQuery {
        file,
        reset_overrides: args.reset_overrides,
        expect_generation: args.expect_generation,
    };
    let reply: ApplyResponse = client.post_query("/hub/apply", &query, text).await?;
    if !args.wait {
        for model in &reply.models {
            println!(
                "{}",
                planned_line(&model.name, model.bytes, &model.evicts, model.result)
            );
        }
        return Ok(ExitCode::SUCCESS);
    }

    let deadline = tokio::time::Instant::now() + args.timeout;
    let (status, settled) = loop {
        let status: Status = client.get("/hub/status").await?;
        if settled(&status, reply.generation) {
            break (status, true);
        }
        if tokio::time::Instant::now() >= deadline {
            break (status, false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // A new generation's report says what converging it took; without one (the file was what
    // was applied already), the plan at apply time is the answer.
    let report = status
        .last_reconcile
        .as_ref()
        .filter(|r| reply.changed && r.generation == reply.generation);
    let mut failed = false;
    for model in &reply.models {
        let result = match report {
            Some(report) => result_of(&model.name, Some(report)),
            None => model.result,
        };
        failed |= result == Outcome::Failed;
        if !settled && result == Outcome::Unchanged && model.result != Outcome::Unchanged {
            // Timed out before the reconcile got to it.
            println!("{} (in progress)", apply_line(&model.name, model.result));
        } else {
            println!(
                "{}",
                planned_line(&model.name, model.bytes, &model.evicts, result)
            );
        }
    }
    for model in &status.models {
        if let Some(error) = &model.error {
            eprintln!("error: model/{}: {error}", model.name);
            failed = true;
        }
    }
    if let Some(report) = &status.last_reconcile
        && report.generation > reply.generation
    {
        eprintln!(
            "note: the desired state moved on to generation {} while waiting (a save of the watched file or another apply)",
            report.generation
        );
    }
    if !settled {
        anyhow::bail!(
            "generation {} has not converged after {:?} (summary: {:?}); `hub status` shows where it is",
            reply.generation,
            args.timeout,
            status.summary
        );
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Whether the reconcile of `generation` has ended: converged, or every model that is not in
/// sync has failed (and is backing off, which would go on forever).
fn settled(status: &Status, generation: u64) -> bool {
    if status.generation < generation {
        return false;
    }
    match status.summary {
        Summary::Converged => status.observed_generation >= generation,
        Summary::Degraded => status.models.iter().all(|m| m.in_sync || m.error.is_some()),
        Summary::Progressing => false,
    }
}
