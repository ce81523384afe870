//! The hub.yaml reference (`docs/hub-yaml.md`), generated from the JSON Schema so the two cannot
//! drift: `hub schema --markdown` prints it, and a test fails when the committed file is stale.

use serde_json::Value;

use super::schema;

/// The reference as Markdown.
pub fn markdown() -> String {
    let root = schema();
    let defs = root.get("$defs").cloned().unwrap_or_default();
    let mut out = String::from(
        "# hub.yaml reference\n\n\
         Generated from `schemas/hub.schema.json` by `hub schema --markdown`; do not edit by hand.\n\
         Every key is checked: an unknown key is an error that suggests the nearest valid one, and\n\
         every problem in a file is reported at once with its line and column (`hub validate`).\n\n",
    );
    section(&mut out, "Top level", root);
    for (name, title) in [
        ("ModelFile", "A model (`models[]`)"),
        ("GroupFile", "A memory group (`groups[]`)"),
        ("EngineFile", "An engine (`engines.NAME`)"),
        ("HealthFile", "A readiness probe (`engines.NAME.health`)"),
        (
            "HttpCallFile",
            "A load or unload request (`engines.NAME.load`, `.unload`)",
        ),
        (
            "MemoryProbeFile",
            "An engine's memory report (`engines.NAME.memory`)",
        ),
    ] {
        if let Some(def) = defs.get(name) {
            section(&mut out, title, def);
        }
    }
    out.push_str("## Values\n\n");
    for (name, title) in [
        ("DesiredState", "state"),
        ("LogLevel", "log_level"),
        ("HttpMethod", "method"),
    ] {
        if let Some(def) = defs.get(name) {
            let values: Vec<String> = enum_values(def)
                .into_iter()
                .map(|(v, d)| match d {
                    Some(d) => format!("- `{v}`: {d}"),
                    None => format!("- `{v}`"),
                })
                .collect();
            out.push_str(&format!("`{title}`:\n\n{}\n\n", values.join("\n")));
        }
    }
    out.trim_end().to_string() + "\n"
}

fn section(out: &mut String, title: &str, def: &Value) {
    out.push_str(&format!("## {title}\n\n"));
    if let Some(description) = def.get("description").and_then(Value::as_str) {
        out.push_str(&format!("{}\n\n", one_line(description)));
    }
    out.push_str("| key | type | required | meaning |\n| --- | --- | --- | --- |\n");
    let required: Vec<&str> = def
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(properties) = def.get("properties").and_then(Value::as_object) {
        for (key, property) in properties {
            let description = property
                .get("description")
                .and_then(Value::as_str)
                .map(one_line)
                .unwrap_or_default();
            out.push_str(&format!(
                "| `{key}` | {} | {} | {} |\n",
                type_of(property).replace('|', "\\|"),
                if required.contains(&key.as_str()) {
                    "yes"
                } else {
                    ""
                },
                description.replace('|', "\\|")
            ));
        }
    }
    out.push('\n');
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A short type for a property schema: `string`, `integer 1024–65535`, `list of string`, ...
fn type_of(property: &Value) -> String {
    if let Some(reference) = property.get("$ref").and_then(Value::as_str) {
        return reference_name(reference);
    }
    if let Some(options) = property.get("anyOf").and_then(Value::as_array) {
        let types: Vec<String> = options
            .iter()
            .filter(|o| o.get("type") != Some(&Value::from("null")))
            .map(type_of)
            .collect();
        return types.join(" or ");
    }
    let kind = match property.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".to_string(),
    };
    let mut text = match kind.as_str() {
        "array" => format!(
            "list of {}",
            property.get("items").map_or("any".to_string(), type_of)
        ),
        "object" => match property.get("additionalProperties") {
            Some(Value::Object(values)) if !values.is_empty() => {
                format!("map of name to {}", type_of(&Value::Object(values.clone())))
            }
            _ => "map".to_string(),
        },
        other => other.to_string(),
    };
    let min = property.get("minimum").and_then(Value::as_u64);
    let max = property.get("maximum").and_then(Value::as_u64);
    match (min, max) {
        (Some(min), Some(max)) => text.push_str(&format!(" {min}–{max}")),
        (Some(min), None) => text.push_str(&format!(" ≥ {min}")),
        _ => {}
    }
    if let Some(pattern) = property.get("pattern").and_then(Value::as_str) {
        text.push_str(&format!(" matching `{pattern}`"));
    }
    text
}

fn reference_name(reference: &str) -> String {
    let name = reference.rsplit('/').next().unwrap_or(reference);
    match name {
        "DesiredState" => "state".into(),
        "LogLevel" => "log level".into(),
        "HttpMethod" => "HTTP method".into(),
        "ModelFile" => "model".into(),
        "GroupFile" => "group".into(),
        "EngineFile" => "engine".into(),
        "HealthFile" => "probe".into(),
        "HttpCallFile" => "request".into(),
        "MemoryProbeFile" => "memory report".into(),
        other => other.into(),
    }
}

/// An enum's values with their descriptions (schemars writes documented variants as `oneOf` of
/// `const`, undocumented ones as `enum`).
fn enum_values(def: &Value) -> Vec<(String, Option<String>)> {
    if let Some(values) = def.get("enum").and_then(Value::as_array) {
        return values
            .iter()
            .filter_map(Value::as_str)
            .map(|v| (v.to_string(), None))
            .collect();
    }
    def.get("oneOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|o| {
            let value = o.get("const").and_then(Value::as_str)?;
            let description = o.get("description").and_then(Value::as_str).map(one_line);
            Some((value.to_string(), description))
        })
        .collect()
}
