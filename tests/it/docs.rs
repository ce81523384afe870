//! The README's CLI and API tables match the code: every subcommand in `hub --help` has a row and
//! every row names a real subcommand; every operation in the OpenAPI document has a row and every
//! row names a real operation.

use std::collections::BTreeSet;

use crate::support::hub_bin;

fn readme_section(heading: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("README.md has no `## {heading}` section"));
    let rest = &readme[start + heading.len() + 5..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    rest[..end].to_string()
}

/// The first cells of the section's table rows.
fn first_cells(section: &str) -> Vec<String> {
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            // Cells are split on `|` not escaped as `\|`.
            let row = l.replace("\\|", "\u{1}");
            row.split('|')
                .nth(1)
                .unwrap_or("")
                .replace('\u{1}', "|")
                .trim()
                .to_string()
        })
        .collect()
}

fn subcommands() -> BTreeSet<String> {
    let out = std::process::Command::new(hub_bin())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(ToString::to_string)
        .collect()
}

#[test]
fn the_readme_cli_table_matches_hub_help() {
    let commands = subcommands();
    assert!(commands.contains("diff"), "{commands:?}");
    let mut documented = BTreeSet::new();
    for cell in first_cells(&readme_section("CLI")) {
        // `hub start-model|stop-model MODEL...`, `hub reload`, `hub shutdown [--keep-workers]`
        for part in cell.split('`').filter(|p| p.starts_with("hub ")) {
            let names = part["hub ".len()..].split_whitespace().next().unwrap_or("");
            documented.extend(names.split('|').map(ToString::to_string));
        }
    }
    let missing: Vec<_> = commands.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&commands).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "README.md's CLI table: missing {missing:?}, not in `hub --help` {unknown:?}"
    );
}

#[test]
fn the_readme_api_table_matches_the_openapi_document() {
    let doc: serde_json::Value = serde_json::from_str(&hub::api::openapi_json()).unwrap();
    let mut operations = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            operations.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    let mut documented = BTreeSet::new();
    for cell in first_cells(&readme_section("HTTP API")) {
        let cell = cell.trim_matches('`');
        let operation = cell.split('?').next().unwrap_or(cell).to_string();
        documented.insert(operation);
    }
    let missing: Vec<_> = operations.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&operations).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "README.md's API table: missing {missing:?}, not in /openapi.json {unknown:?}"
    );
}
