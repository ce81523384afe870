//! `hub validate` and `hub schema`: no daemon needed.

use std::path::Path;
use std::process::ExitCode;

pub fn validate(file: &Path) -> anyhow::Result<ExitCode> {
    match crate::config::load(file) {
        Ok((_, desired)) => {
            println!(
                "{}: valid ({} models, {} groups)",
                file.display(),
                desired.models.len(),
                desired.groups.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(rejection) => {
            println!("{rejection}");
            let n = rejection.problems.len();
            println!("{n} problem{}", if n == 1 { "" } else { "s" });
            Ok(ExitCode::FAILURE)
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct SchemaArgs {
    /// Print the hub.yaml reference (docs/hub-yaml.md) generated from the schema instead.
    #[arg(long)]
    markdown: bool,
}

pub fn schema(args: &SchemaArgs) -> anyhow::Result<ExitCode> {
    if args.markdown {
        print!("{}", crate::config::reference::markdown());
    } else {
        println!("{}", serde_json::to_string_pretty(crate::config::schema())?);
    }
    Ok(ExitCode::SUCCESS)
}
