//! `hub diff`: the config text diff and the plan, exactly what `hub apply` would do.
//! Exit 0 when nothing would change, 1 when something would, 2 on error (as kubectl diff).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::FileArg;
use super::client::Client;
use crate::api::{PlanReply, planned_models, text_diff};
use crate::config::{self, Desired};

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    #[command(flatten)]
    file: FileArg,
    /// Plan FILE against OLD as if OLD had converged; needs no daemon (for reviewing changes in CI).
    #[arg(long, value_name = "OLD")]
    against: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Text)]
    output: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub async fn run(args: DiffArgs, url: Option<String>) -> anyhow::Result<ExitCode> {
    let path = &args.file.file;
    let (text, desired) = load_or_print(path)?;
    let reply = match &args.against {
        Some(old_path) => {
            let (old_text, old) = load_or_print(old_path)?;
            offline_plan(&old, &old_text, old_path, &desired, &text, path)
        }
        None => {
            let client = Client::new(url, path);
            let query = [("file", path.display().to_string())];
            client.post_query("/hub/plan", &query, text).await?
        }
    };
    match args.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&reply)?),
        Format::Text => print_text(&reply, args.against.is_some()),
    }
    Ok(if reply.changed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Loads a config file, printing its problems (and failing) if it is invalid.
pub fn load_or_print(path: &Path) -> anyhow::Result<(String, Desired)> {
    match config::load(path) {
        Ok(loaded) => Ok(loaded),
        Err(rejection) => {
            eprintln!("{rejection}");
            Err(anyhow::anyhow!(
                "{} is invalid ({} problems)",
                path.display(),
                rejection.problems.len()
            ))
        }
    }
}

fn offline_plan(
    old: &Desired,
    old_text: &str,
    old_path: &Path,
    new: &Desired,
    new_text: &str,
    new_path: &Path,
) -> PlanReply {
    let observed = crate::plan::converged(old);
    let plan = crate::plan::plan(new, &observed, time::OffsetDateTime::now_utc());
    let diff = text_diff(
        old_text,
        new_text,
        &old_path.display().to_string(),
        &new_path.display().to_string(),
    );
    PlanReply {
        generation: 0,
        changed: !diff.is_empty() || !plan.is_noop(),
        diff,
        models: planned_models(&plan),
    }
}

fn print_text(reply: &PlanReply, offline: bool) {
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    for line in reply.diff.lines() {
        let paint = match line.as_bytes().first() {
            _ if !color => None,
            _ if line.starts_with("+++") || line.starts_with("---") => Some("1"),
            Some(b'+') => Some("32"),
            Some(b'-') => Some("31"),
            Some(b'@') => Some("36"),
            _ => None,
        };
        match paint {
            Some(code) => println!("\x1b[{code}m{line}\x1b[0m"),
            None => println!("{line}"),
        }
    }
    if !reply.diff.is_empty() {
        println!();
    }
    if offline {
        println!("Plan (as if the old file had converged):");
    } else {
        println!("Plan (against desired generation {}):", reply.generation);
    }
    for model in &reply.models {
        println!("  {}", model.line);
    }
    if !reply.changed {
        println!("No changes.");
    }
}

/// Reads FILE for commands that send it to the daemon.
pub fn read_text(path: &Path) -> anyhow::Result<String> {
    load_or_print(path)
        .map(|(text, _)| text)
        .with_context(|| format!("cannot use {}", path.display()))
}
