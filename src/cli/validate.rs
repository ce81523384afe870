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

pub fn schema() -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(crate::config::schema())?);
    Ok(ExitCode::SUCCESS)
}
