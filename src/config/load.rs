//! From bytes to [`Desired`]: read with a size limit, parse YAML, check the JSON Schema, then the
//! semantic rules the schema cannot express. Every problem is collected and reported at once, each
//! with its JSON path and, where it can be known, the line and column in the file.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::convert::convert;
use super::desired::Desired;
use super::file::HubFile;
use super::problem::{Problem, Rejection};
use super::validate::{nul_problems, schema_problems};
use super::{locate, nesting, yaml};

/// hub.yaml files larger than this are refused before parsing.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Reads a config file as UTF-8 text, refusing what is too large or not text.
pub fn read(path: &Path) -> Result<String, Rejection> {
    use std::io::Read;
    let label = path.display().to_string();
    let file = std::fs::File::open(path)
        .map_err(|e| Rejection::whole_file(&label, format!("cannot read the file: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Rejection::whole_file(&label, format!("cannot read the file: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Rejection::whole_file(
            &label,
            format!("the file is larger than the limit of {MAX_FILE_BYTES} bytes"),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        let column = valid.iter().rev().take_while(|b| **b != b'\n').count() + 1;
        Rejection {
            file: label.clone(),
            problems: vec![Problem {
                path: String::new(),
                line: Some(line),
                column: Some(column),
                message: "the file is not valid UTF-8 text".to_string(),
                at_key: false,
                pointer: String::new(),
            }],
        }
    })
}

/// Parses and validates hub.yaml text. `file` names it in errors; relative paths in it
/// (`log_path`, and the workers' working directory) are taken from `base_dir`.
pub fn parse(text: &str, file: &str, base_dir: &Path) -> Result<Desired, Rejection> {
    let reject = |problems: Vec<Problem>| Rejection {
        file: file.to_string(),
        problems,
    };
    // A byte order mark is invisible in an editor; without it lines and columns stay where the
    // operator sees them.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Before the parser: libyaml's time grows with the square of the nesting depth.
    if let Some((line, column)) = nesting::too_deep(text) {
        return Err(reject(vec![Problem {
            path: String::new(),
            line: Some(line),
            column: Some(column),
            message: format!(
                "nesting deeper than {} levels: hub.yaml never needs more than a few",
                nesting::MAX_DEPTH
            ),
            at_key: false,
            pointer: String::new(),
        }]));
    }
    let value = yaml::to_json(text);
    let (value, notes) = match value {
        Ok(parsed) => parsed,
        Err(e) => {
            let message = yaml_message(&e);
            // serde_yaml points a duplicate key at its mapping; point at the second key instead.
            let location = duplicate_key_of(&message)
                .and_then(|key| locate::second_key(text, key))
                .or_else(|| e.location().map(|l| (l.line(), l.column())));
            return Err(reject(vec![Problem {
                path: String::new(),
                line: location.map(|l| l.0),
                column: location.map(|l| l.1),
                message: format!("invalid YAML: {message}"),
                at_key: false,
                pointer: String::new(),
            }]));
        }
    };
    if value.is_null() {
        return Err(reject(vec![Problem {
            path: String::new(),
            line: None,
            column: None,
            message: "the file is empty: it needs at least `models:`".to_string(),
            at_key: false,
            pointer: String::new(),
        }]));
    }

    let mut problems = schema_problems(&value, &notes);
    let mut nul = Vec::new();
    nul_problems(&value, &mut String::new(), &mut nul);
    if !nul.is_empty() {
        // A request path with a NUL already has the schema's word for it.
        let seen: HashSet<String> = problems.iter().map(|p| p.pointer.clone()).collect();
        problems.extend(nul.into_iter().filter(|p| !seen.contains(&p.pointer)));
    }
    if problems.is_empty() {
        match serde_json::from_value::<HubFile>(value) {
            Ok(hub) => match convert(hub, base_dir) {
                Ok(desired) => return Ok(desired),
                Err(semantic) => problems = semantic,
            },
            // The schema is generated from these types, so this is a bug, but report it as a
            // problem rather than panic on operator input.
            Err(e) => problems.push(Problem::at("", format!("{e}"))),
        }
    }
    locate::fill_lines(text, &mut problems);
    problems.sort_by_key(|p| (p.line.unwrap_or(usize::MAX), p.column.unwrap_or(0)));
    Err(reject(problems))
}

/// Reads and parses a file.
pub fn load(path: &Path) -> Result<(String, Desired), Rejection> {
    let text = read(path)?;
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let desired = parse(&text, &path.display().to_string(), &base_dir)?;
    Ok((text, desired))
}

/// serde_yaml's messages end with " at line N column M", which we print separately.
/// The key of serde_yaml's `duplicate entry with key "name"` message.
fn duplicate_key_of(message: &str) -> Option<&str> {
    let start = message.find("duplicate entry with key \"")? + "duplicate entry with key \"".len();
    message[start..].strip_suffix('"')
}

fn yaml_message(e: &serde_yaml::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    match text.as_str() {
        "repetition limit exceeded" | "recursion limit exceeded" => format!(
            "{text}: aliases or nesting expand too far (a YAML alias bomb?); write the values out"
        ),
        // libyaml's scanner and parser errors: say where to look.
        _ if e.location().is_some()
            && !text.contains("duplicate entry")
            && !text.contains("a key must be a string") =>
        {
            format!("{text} (check the indentation and quoting here and on the line above)")
        }
        _ => text,
    }
}
