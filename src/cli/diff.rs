//! `hub diff`: the config text diff and the plan, exactly what `hub apply` would do.
//! Exit 0 when nothing would change, 1 when something would, 2 on error (as kubectl diff).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::FileArg;
use super::client::Client;
use super::render;
use crate::config::{self, Desired};
use crate::planned;
use crate::wire::{PlanQuery, PlanReply};

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    #[command(flatten)]
    file: FileArg,
    /// Plan FILE against OLD as if OLD had converged; needs no daemon (for reviewing changes in CI).
    #[arg(long, value_name = "OLD")]
    against: Option<PathBuf>,
    /// Plan as `hub apply --reset-overrides` would: every override dropped.
    #[arg(long, conflicts_with = "against")]
    reset_overrides: bool,
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
            let query = PlanQuery {
                file: Some(path.display().to_string()),
                reset_overrides: args.reset_overrides,
            };
            client.post_query("/hub/plan", &query, text).await?
        }
    };
    match args.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&reply)?),
        Format::Text => {
            let paint = render::Paint(
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            );
            print!(
                "{}",
                render::diff_text(&reply, args.against.is_some(), paint)
            );
        }
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
    let diff = planned::text_diff(
        old_text,
        new_text,
        &old_path.display().to_string(),
        &new_path.display().to_string(),
    );
    planned::reply(0, &plan, diff)
}

/// Reads FILE for commands that send it to the daemon.
pub fn read_text(path: &Path) -> anyhow::Result<String> {
    load_or_print(path).map(|(text, _)| text)
}
